"""Stellar parameters off the training generator: the shipped network on an independently made HARPS release.

:mod:`survey_ml.simulate.harps_mock` writes HARPS e2ds files from one MOOG synthesis per star
at continuous labels of a Galactic population, with its own microturbulence relation,
[alpha/Fe] scatter, line-list errors, macroturbulence, limb darkening, per-order resolution,
flat-field error, radial velocity, counts and read noise, on a real HARPS wavelength solution
and blaze. ``survey-ml run-catalog harps`` runs over the folder like over real data (reader,
store, CCF, resampling, network); the catalog is matched to the truth by object.

Reported per label: MAE, bias, scatter (std and 1.4826 MAD), 1- and 2-sigma coverage of the
calibrated errors, over all stars, by S/N (SN50 < 40, 40-80, > 80), by population (dwarfs and
subgiants, giants and clump) and for the rows the task did not flag; the RV error; the run's
wall time and spectra/s. The mock is cached (``--mock``); synthesis costs ~15 s per star per core.

Usage: python bench/stellar_independent.py [--n 160] [--workers 2] [--mock DIR] [--weights PATH]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import REPO, emit

LABELS = ("teff", "logg", "feh", "vsini")


def label_figures(predicted: np.ndarray, sigma: np.ndarray, true: np.ndarray) -> dict:
    """MAE, bias, std, robust scatter, 1-/2-sigma coverage and median error of one label."""
    residual = predicted - true
    ok = np.isfinite(residual) & np.isfinite(sigma)
    residual, sigma = residual[ok], sigma[ok]
    if not len(residual):
        return {"n": 0}
    pull = np.abs(residual) / sigma
    return {"n": int(len(residual)), "mae": float(np.mean(np.abs(residual))), "bias": float(np.mean(residual)),
            "std": float(np.std(residual)),
            "robust_scatter": float(1.4826 * np.median(np.abs(residual - np.median(residual)))),
            "coverage_1sigma": float(np.mean(pull <= 1.0)), "coverage_2sigma": float(np.mean(pull <= 2.0)),
            "median_err": float(np.median(sigma))}


def figures(matched: pd.DataFrame) -> dict:
    return {label: label_figures(matched[label].to_numpy(float), matched[f"{label}_err"].to_numpy(float),
                                 matched[f"true_{label}"].to_numpy(float)) for label in LABELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=160)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mock", default=None, help="mock folder (default ~/.cache/survey_ml/harps_mock_<n>_<seed>)")
    parser.add_argument("--weights", default=str(REPO / "survey_ml" / "weights" / "stellar.pt"))
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()

    import tempfile

    from distributed import Client, LocalCluster

    from survey_ml import run_catalog
    from survey_ml.simulate.harps_mock import write_harps_mock
    from survey_ml.simulate.stellar_grid import StellarGrid

    report = json.loads(Path(args.weights).with_suffix(".json").read_text())
    grid = StellarGrid(report["grid"])
    mock = Path(args.mock or Path.home() / ".cache" / "survey_ml" / f"harps_mock_{args.n}_{args.seed}")
    out: dict = {"weights": Path(args.weights).name, "mock": str(mock), "n_requested": args.n}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        if not (mock / "truth.parquet").is_file():
            t0 = time.perf_counter()
            write_harps_mock(mock, args.n, seed=args.seed, inside=grid.covers, client=client)
            out["mock_seconds"] = time.perf_counter() - t0
        truth = pd.read_parquet(mock / "truth.parquet")
        run_dir = Path(args.out or tempfile.mkdtemp(prefix="stellar_independent_"))
        t0 = time.perf_counter()
        run = run_catalog("harps", input=mock, out=run_dir, client=client, weights={"stellar": args.weights},
                          progress=False)
        wall = time.perf_counter() - t0
    catalog = pd.read_parquet(run.catalog_dir)
    matched = catalog.merge(truth.rename(columns={k: f"true_{k}" for k in (*LABELS, "rv_kms", "sn50")}),
                            on="object", suffixes=("", "_truth"))
    predicted = matched[matched["status"] == "ok"]
    clean = predicted[predicted["stellar_flag"] == 0]
    giants = predicted["population"].isin(["giant", "clump"])
    out.update({
        "n_stars": int(len(truth)), "n_rows": int(len(catalog)), "n_predicted": int(len(predicted)),
        "n_unflagged": int(len(clean)), "run_seconds": wall, "run_spectra_per_s": len(catalog) / wall,
        "timings": run.timings,
        "all": figures(predicted), "unflagged": figures(clean),
        "dwarfs_subgiants": figures(predicted[~giants]), "giants_clump": figures(predicted[giants]),
        "by_sn50": {name: figures(predicted[mask]) for name, mask in (
            ("lt40", predicted["true_sn50"] < 40), ("40_80", predicted["true_sn50"].between(40, 80)),
            ("gt80", predicted["true_sn50"] > 80))},
        "rv_kms": {"median_abs_error": float(np.median(np.abs(predicted["rv_kms"] - predicted["true_rv_kms"]))),
                   "bias": float(np.median(predicted["rv_kms"] - predicted["true_rv_kms"]))},
        "flags": {str(k): int(v) for k, v in predicted["stellar_flag"].value_counts().items()},
    })
    emit("stellar_independent", out)


if __name__ == "__main__":
    main()
