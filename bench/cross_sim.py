"""Cross-simulation validation: the dr10 catalog on mocks from generators the networks were not trained on.

Every mock is a LAMOST-DR10-format release (spec-*.fits.gz + LRS catalogue + truth table)
run through ``run_catalog("dr10", ...)`` exactly as a user would, once per weights set:

``survey``
    survey_ml's own generator (``simulate.release``) on the seed-0 bagpipes library drawn
    from the ``survey`` priors (SDSS scaling relations, logU tied to Z) with the nominal
    LAMOST observation model: the old weights' home ground.
``crosscheck``
    the independently written generator (``simulate.crosscheck``): other SFH families,
    dust laws, the Curti et al. (2020) MZR, logU independent of metallicity, its own LSF,
    sky, flux-calibration and noise model, wrong catalogue redshifts.

Per mock and weights, the figures of issue 15: ``oh12`` bias, sigma, NMAD and the trend of
the residual with the true value (dex per dex) for star-forming galaxies (truth label)
with S/N_r >= 3 and 12+log(O/H) <= 9.09; the 1- and 2-sigma coverage of ``oh12_err``; the
share flagged out-of-distribution; ``z_cnn`` NMAD, outliers and the coverage of
``z_cnn_err``; ``p_starforming`` accuracy against the truth label (BPT star-forming below
Kauffmann et al. 2003 with EW(H-alpha) >= 3 A) at p >= 0.5.

Usage::

    python bench/cross_sim.py --crosscheck /path/to/crosscheck-release \
        --weights shipped= --weights old=/path/to/old/weights/dir

``--weights NAME=DIR`` takes ``metallicity.pt``, ``sfclass.pt`` and ``redshift.pt`` from DIR
where they are there (the shipped ones otherwise; an empty DIR: all shipped). Prints JSON and keeps ``bench/results/cross_sim.json``.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from bench._common import emit
except ImportError:  # run as a script: bench/ is on sys.path, the repository root is not
    from _common import emit

#: Rows the metallicity figures are computed on (the issue's selection).
SNR_MIN, OH12_MAX = 3.0, 9.09


def oh12_figures(catalog: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Metallicity figures on star-forming (truth) rows with S/N_r >= 3 and true oh12 <= 9.09.

    Examples
    --------
    >>> cat = pd.DataFrame({"oh12": [8.5, 8.7, 9.0, 8.0], "oh12_err": [0.1, 0.1, 0.1, 0.1],
    ...                     "snr_r": [10.0, 10.0, 10.0, 1.0], "status": ["ok"] * 4})
    >>> tru = pd.DataFrame({"oh12": [8.45, 8.75, 9.0, 8.0], "starforming": [True, True, True, True]})
    >>> f = oh12_figures(cat, tru)
    >>> f["n"], f["within_1sigma"]
    (3, 1.0)
    """
    true = truth["oh12"].to_numpy(float)
    pred = catalog["oh12"].to_numpy(float)
    use = (truth["starforming"].to_numpy(bool) & (catalog["snr_r"].to_numpy(float) >= SNR_MIN)
           & (true <= OH12_MAX + 1e-6) & np.isfinite(pred))
    r, err = pred[use] - true[use], catalog["oh12_err"].to_numpy(float)[use]
    if use.sum() < 3:
        return {"n": int(use.sum())}
    slope = float(np.polyfit(true[use], r, 1)[0]) if np.ptp(true[use]) > 0 else float("nan")
    out = {"n": int(use.sum()), "bias": round(float(r.mean()), 4), "sigma": round(float(r.std()), 4),
           "nmad": round(float(1.4826 * np.median(np.abs(r - np.median(r)))), 4),
           "trend_dex_per_dex": round(slope, 3),
           "within_1sigma": round(float(np.mean(np.abs(r) < err)), 3),
           "within_2sigma": round(float(np.mean(np.abs(r) < 2 * err)), 3),
           "median_err": round(float(np.median(err)), 4)}
    if "oh12_ood_flag" in catalog:
        out["ood_flagged"] = round(float(np.mean(catalog["oh12_ood_flag"].to_numpy(bool)[use])), 3)
        keep = ~catalog["oh12_ood_flag"].to_numpy(bool)[use]
        if keep.sum() >= 3:
            out["unflagged_sigma"] = round(float(r[keep].std()), 4)
            out["unflagged_bias"] = round(float(r[keep].mean()), 4)
    return out


def redshift_figures(catalog: pd.DataFrame, z_true: np.ndarray) -> dict:
    """z_cnn NMAD of dz/(1+z), outliers (|dz|/(1+z) > 0.01, all and unflagged) and the coverage of z_cnn_err."""
    from survey_ml.core.metrics import nmad, outlier_fraction

    if "z_cnn" not in catalog:
        return {}
    z = catalog["z_cnn"].to_numpy(float)
    ok = np.isfinite(z) & np.isfinite(z_true)
    dz = z[ok] - z_true[ok]
    err = catalog["z_cnn_err"].to_numpy(float)[ok]
    clean = catalog["z_cnn_flag"].to_numpy()[ok] == 0
    return {"n": int(ok.sum()), "nmad": round(nmad(z_true[ok], z[ok]), 6),
            "outliers": round(outlier_fraction(z_true[ok], z[ok]), 4),
            "flagged": round(float(1.0 - clean.mean()), 4),
            "outliers_unflagged": round(outlier_fraction(z_true[ok][clean], z[ok][clean]), 4),
            "within_1sigma": round(float(np.mean(np.abs(dz) < err)), 3),
            "within_2sigma": round(float(np.mean(np.abs(dz) < 2 * err)), 3),
            "median_err": float(np.median(err))}


def classifier_figures(catalog: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """p_starforming >= 0.5 against the truth label: accuracy, recall and precision of star-forming."""
    p = catalog["p_starforming"].to_numpy(float)
    ok = np.isfinite(p)
    label, guess = truth["starforming"].to_numpy(bool)[ok], p[ok] >= 0.5
    return {"n": int(ok.sum()), "accuracy": round(float(np.mean(label == guess)), 4),
            "recall_sf": round(float(np.mean(guess[label])), 4) if label.any() else None,
            "precision_sf": round(float(np.mean(label[guess])), 4) if guess.any() else None,
            "share_sf": round(float(label.mean()), 3)}


def aligned_truth(catalog: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """The truth row of every catalog row (by obsid), with ``z_true`` for the true redshift."""
    truth = truth.rename(columns={"z": "z_true"}) if "z_true" not in truth else truth
    return truth.drop_duplicates("obsid").set_index("obsid").loc[catalog["obsid"].to_numpy()].reset_index()


def evaluate(catalog: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Every figure for one catalog."""
    truth = aligned_truth(catalog, truth)
    return {"oh12": oh12_figures(catalog, truth), "z_cnn": redshift_figures(catalog, truth["z_true"].to_numpy(float)),
            "p_starforming": classifier_figures(catalog, truth)}


def survey_mock(work: Path, n: int, library_size: int, client) -> tuple[Path, Path]:
    """survey_ml's own generator: seed-0 ``survey``-prior library re-observed (seed 11). (input dir, truth)."""
    from survey_ml.simulate.library import LibraryConfig, build_library
    from survey_ml.simulate.release import ObservationPlan, simulate_release
    from survey_ml.config import load_release_spec

    library = build_library(LibraryConfig(n=library_size, seed=0), client=client)
    mock = simulate_release(library, work / "survey_mock", n, seed=11,
                            plan=ObservationPlan.from_spec(load_release_spec("dr10")), client=client)
    return Path(mock.root), Path(mock.truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crosscheck", required=True, help="a release written by survey_ml.simulate.crosscheck")
    parser.add_argument("--n-survey", type=int, default=2000, help="spectra in survey_ml's own mock")
    parser.add_argument("--library-size", type=int, default=4000)
    parser.add_argument("--weights", action="append", default=None,
                        help="NAME=DIR with metallicity.pt / sfclass.pt / redshift.pt (empty DIR: the shipped weights)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--keep", default=None, help="keep the mocks' stores and catalogs in this folder")
    args = parser.parse_args()

    from survey_ml.cluster.client import connect
    from survey_ml.dask.runner import run_catalog

    weights_sets = dict(item.split("=", 1) for item in (args.weights or ["shipped="]))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="survey_ml_cross_sim_"))
    work.mkdir(parents=True, exist_ok=True)
    client = connect(dashboard_address="127.0.0.1:0", quiet=True)
    results: dict = {}
    try:
        crosscheck = Path(args.crosscheck)
        survey_root, survey_truth = survey_mock(work, args.n_survey, args.library_size, client)
        mocks = {"survey": (survey_root, survey_truth), "crosscheck": (crosscheck, crosscheck / "truth.parquet")}
        for mock, (root, truth_path) in mocks.items():
            truth = pd.read_parquet(truth_path)
            store = work / f"store_{mock}"
            for name, folder in weights_sets.items():
                weights = ({task: str(Path(folder) / f"{task}.pt") for task in ("metallicity", "sfclass", "redshift")
                            if (Path(folder) / f"{task}.pt").is_file()} if folder else None) or None
                t = time.perf_counter()
                report = run_catalog("dr10", input=root, store=store, out=work / f"run_{mock}_{name}", client=client,
                                     weights=weights, progress=False)
                catalog = pd.read_parquet(report.catalog_dir)
                results.setdefault(mock, {})[name] = evaluate(catalog, truth) | {
                    "seconds": round(time.perf_counter() - t, 1), "n_rows": int(len(catalog))}
    finally:
        client.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    emit("cross_sim", {"selection": f"oh12: truth star-forming, S/N_r >= {SNR_MIN}, 12+log(O/H) <= {OH12_MAX}; "
                       "p_starforming: every predicted row, label = BPT star-forming (Kauffmann 2003) and "
                       "EW(Ha) >= 3 A on the noise-free lines",
                       "crosscheck": str(args.crosscheck), "weights": weights_sets, "results": results},
         Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
