"""Redshift accuracy and speed, side by side on the same held-out mock spectra: survey_ml, the
published CNN and redrock.

Held-out spectra are galaxies of the seed-0 library (the networks and templates were made
from the seed-1 library), observed in two setups:

``lamost``  the LAMOST LRS model at 0 < z < 0.5 (the dr10 spec's ``[simulate.wide]`` plan:
            p(z) ~ z^2 exp(-(z / 0.15)^1.5); S/N_r lognormal, median 8);
``deimos``  the DEIMOS-like setup of the published CNN (z uniform 0.1-5.8, 8912 pixels,
            noise 0.2 x std(flux)).

Methods, each timed on ONE core (torch / BLAS limited to one thread; CPU seconds of the
process, so the other core's work does not count):

``survey_ml``            the PDF network as run-catalog runs it (``redshift.pt``: + template chi^2 refinement;
                         ``redshift_deimos.pt``: the network alone, its recipe turns refinement off);
``survey_ml_network``    the PDF network alone (``refine=False``);
``survey_ml_refined``    DEIMOS-like only: with the refinement forced on;
``published``            the published regression CNN (``redshift_published.pt``), trained on the same spectra;
``redrock``              redrock 0.21 (``bench/_redrock.py``): 10 PCA templates of 2,000 training-library
                         galaxies in redrock's template format, a Gaussian R = 1800 resolution matrix on
                         LAMOST (identity on DEIMOS), redrock's own GALAXY scan (dlog10(1+z) = 3e-4).

Figures: NMAD = 1.48 median(|dz| / (1 + z)), eta = share with |dz| / (1 + z) > 0.05, for all
spectra and for S/N_r >= 5 (LAMOST), the same for unflagged spectra, error calibration (share
of |dz| within 1 and 2 sigma), spectra/s per core. Predictions are cached in ``--work`` so a
rerun only computes what is missing. Prints JSON; keeps bench/results/redshift.json and
redshift.png.

Usage: python bench/redshift.py [--n 5000] [--n-deimos 5000] [--redrock-n 5000] [--redrock-n-deimos 300]
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from _common import RESULTS, emit

SETUP_PLAN = {"lamost": "wide", "deimos": None}


def held_out(setup: str, n: int, client):
    """The held-out spectra of a setup (cached beside the seed-0 library)."""
    from survey_ml.simulate.library import LibraryConfig, build_library
    from survey_ml.simulate.release import ObservationPlan
    from survey_ml.config import load_release_spec
    from survey_ml.train.redshift import cached_redshift_set

    library = build_library(LibraryConfig(n=1500, seed=0, wave_min=600.0, wave_max=10000.0), client=client)
    kwargs = {}
    if SETUP_PLAN[setup]:
        kwargs["plan"] = ObservationPlan.from_spec(load_release_spec("dr10"), SETUP_PLAN[setup])
    return cached_redshift_set(library, n, setup, seed=101, client=client, **kwargs)


def _one_core() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def run_survey_ml(data, weights: Path, refine: bool | None) -> tuple[pd.DataFrame, float]:
    from threadpoolctl import threadpool_limits

    from survey_ml.core.redshift import predict_redshifts

    _one_core()
    mask = (data.ivar <= 0).astype(np.uint8)
    predict_redshifts(data.flux[:64], data.ivar[:64], mask[:64], data.wavelength, weights, refine=refine, threads=1)
    with threadpool_limits(1):
        t0 = time.process_time()
        parts = [predict_redshifts(data.flux[a: a + 512], data.ivar[a: a + 512], mask[a: a + 512], data.wavelength,
                                   weights, refine=refine, threads=1) for a in range(0, len(data.flux), 512)]
        seconds = time.process_time() - t0
    res = pd.concat(parts, ignore_index=True)
    return pd.DataFrame({"z": res["z_cnn"], "zerr": res["z_cnn_err"], "flag": res["z_cnn_flag"],
                         "dchi2": res["z_cnn_dchi2"]}), seconds


def run_published(data, weights: Path, setup: str) -> tuple[pd.DataFrame, float]:
    from threadpoolctl import threadpool_limits

    from survey_ml.core.inference import forward_batches, load_model
    from survey_ml.core.redshift_inputs import published_redshift_inputs

    _one_core()
    model, _ = load_model(weights, "cpu")
    mask = (data.ivar <= 0).astype(np.uint8)
    with threadpool_limits(1):
        t0 = time.process_time()
        z = np.concatenate([forward_batches(model, published_redshift_inputs(
            data.flux[a: a + 512], data.ivar[a: a + 512], mask[a: a + 512], data.wavelength, setup), 32)[:, 0]
            for a in range(0, len(data.flux), 512)])
        seconds = time.process_time() - t0
    return pd.DataFrame({"z": z, "zerr": np.nan, "flag": 0, "dchi2": np.nan}), seconds


def _redrock_part(args):
    wave, flux, ivar, folder, lsf = args
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _redrock import run_redrock

    t0 = time.process_time()
    df = run_redrock(wave, flux, ivar, folder, ncpu=1, lsf_resolution=lsf)
    return df, time.process_time() - t0, df.attrs.get("cpu_seconds")


def run_redrock_on(data, setup: str, work: Path, n: int, workers: int) -> tuple[pd.DataFrame, float, dict]:
    """redrock on the first ``n`` spectra, split over ``workers`` one-core processes; CPU seconds summed."""
    from _redrock import write_redrock_templates

    from survey_ml.core.redshift_inputs import setup_of
    from survey_ml.simulate.library import LibraryConfig, build_library
    from survey_ml.core.templates import pca_templates

    s = setup_of(setup)
    library = build_library(LibraryConfig(n=4000, seed=1, wave_min=600.0, wave_max=10000.0))
    rows = np.random.default_rng(0).permutation(library.truth.index[library.truth["ok"]].to_numpy())[:2000]
    lo, hi = s.instrument_wave
    templates = pca_templates(library.wave, library.flux(np.sort(rows)), 10,
                              wave_range=(lo / (1 + s.z_max) / 1.02, hi / (1 + s.z_min) * 1.02),
                              dloglam=1e-4 * np.log(10.0) / 2)
    folder = work / f"rrtemplates-{setup}"
    folder.mkdir(parents=True, exist_ok=True)
    z_min = -0.005 if setup == "lamost" else s.z_min - 0.05
    write_redrock_templates(folder, templates.wave, templates.components, z_min=z_min, z_max=s.z_max + 0.02)
    lsf = 1800.0 if setup == "lamost" else None
    split = np.array_split(np.arange(n), workers)
    jobs = [(data.wavelength, data.flux[i], data.ivar[i], str(folder), lsf) for i in split]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_redrock_part, jobs))
    df = pd.concat([p[0] for p in parts], ignore_index=True)
    seconds = float(sum(p[1] for p in parts))
    out = pd.DataFrame({"z": df["z"].to_numpy(), "zerr": df["zerr"].to_numpy(), "flag": df["zwarn"].to_numpy(),
                        "dchi2": df["deltachi2"].to_numpy()})
    return out, seconds, {"n_components": 10, "n_template_galaxies": 2000, "lsf_resolution": lsf,
                          "scan_dlog10z": 3e-4, "z_range": [z_min, s.z_max + 0.02]}


def scores(z_true: np.ndarray, pred: pd.DataFrame, select: np.ndarray) -> dict:
    from survey_ml.core.metrics import coverage_within, nmad, outlier_fraction

    z, zerr = pred["z"].to_numpy(float)[select], pred["zerr"].to_numpy(float)[select]
    t = z_true[select]
    good = pred["flag"].to_numpy()[select] == 0
    out = {"n": int(select.sum()), "nmad": nmad(t, z), "eta": outlier_fraction(t, z),
           "failed": float(np.mean(~np.isfinite(z)))}
    if np.isfinite(zerr).any():
        out |= {"within_1sigma": coverage_within(z - t, zerr, 1.0), "within_2sigma": coverage_within(z - t, zerr, 2.0),
                "flagged": float(np.mean(~good)), "unflagged_nmad": nmad(t[good], z[good]),
                "unflagged_eta": outlier_fraction(t[good], z[good]),
                "eta_among_flagged": outlier_fraction(t[~good], z[~good]) if (~good).any() else float("nan")}
    return out


def plot(results: dict, preds: dict, truths: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = list(preds)
    methods = ["survey_ml", "published", "redrock"]
    fig, axes = plt.subplots(len(setups), 3, figsize=(13, 4.2 * len(setups)), squeeze=False)
    for r, setup in enumerate(setups):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            if method not in preds[setup]:
                ax.set_visible(False)
                continue
            z = preds[setup][method]["z"].to_numpy(float)
            t = truths[setup][: len(z)]
            ax.scatter(t, (z - t) / (1 + t), s=2, alpha=0.4)
            ax.axhline(0.05, color="r", lw=0.6)
            ax.axhline(-0.05, color="r", lw=0.6)
            ax.set_ylim(-0.2, 0.2)
            m = results[setup][method]["all"]
            ax.set_title(f"{setup}: {method}  NMAD {m['nmad']:.5f}  eta {100 * m['eta']:.2f}%", fontsize=9)
            ax.set_xlabel("true z")
            ax.set_ylabel("(z - z_true) / (1 + z_true)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    from survey_ml.cluster.client import connect
    from survey_ml.core.inference import WEIGHTS_DIR

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="held-out LAMOST spectra")
    parser.add_argument("--n-deimos", type=int, default=5000, help="held-out DEIMOS-like spectra")
    parser.add_argument("--redrock-n", type=int, default=5000, help="LAMOST spectra also fitted by redrock")
    parser.add_argument("--redrock-n-deimos", type=int, default=300, help="DEIMOS-like spectra also fitted by redrock")
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "survey_ml" / "bench-redshift"))
    parser.add_argument("--only", choices=["redrock", "cnn"], default=None, help="compute only these predictions")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    client = connect(quiet=True)
    data = {"lamost": held_out("lamost", args.n, client), "deimos": held_out("deimos", args.n_deimos, client)}
    client.close()
    weights = {"lamost": ("redshift.pt", "redshift_published.pt"),
               "deimos": ("redshift_deimos.pt", "redshift_deimos_published.pt")}
    redrock_n = {"lamost": args.redrock_n, "deimos": args.redrock_n_deimos}
    results, preds, truths, seconds = {}, {}, {}, {}
    for setup, d in data.items():
        preds[setup], seconds[setup], results[setup] = {}, {}, {}
        truths[setup] = d.truth["z_true"].to_numpy(float)
        methods = {"survey_ml": lambda: run_survey_ml(d, WEIGHTS_DIR / weights[setup][0], None),
                   "survey_ml_network": lambda: run_survey_ml(d, WEIGHTS_DIR / weights[setup][0], False),
                   "published": lambda: run_published(d, WEIGHTS_DIR / weights[setup][1], setup)}
        if setup == "deimos":  # refinement is off in the DEIMOS weights (worse there): measured all the same
            methods["survey_ml_refined"] = lambda: run_survey_ml(d, WEIGHTS_DIR / weights[setup][0], True)
        for name, fn in [*methods.items(), ("redrock", None)]:
            cache = work / f"{setup}-{name}-{len(d.flux) if name != 'redrock' else redrock_n[setup]}.parquet"
            if name == "redrock" and redrock_n[setup] <= 0:  # --redrock-n 0: redrock left out (a smoke run)
                continue
            if cache.exists():
                table = pd.read_parquet(cache)
            elif (args.only == "redrock") != (name == "redrock") and args.only is not None:
                continue
            else:
                if name == "redrock":
                    # redrock holds every template at every trial z on the data grid: ~12 GB per process for
                    # the DEIMOS-like grid (2,640 z x 8,912 pixels), so one process there
                    pred, secs, info = run_redrock_on(d, setup, work, redrock_n[setup],
                                                      workers=1 if setup == "deimos" else 2)
                    results[setup]["redrock_setup"] = info
                else:
                    pred, secs = fn()
                table = pred.assign(cpu_seconds=secs)
                table.to_parquet(cache)
            preds[setup][name] = table
            seconds[setup][name] = float(table["cpu_seconds"].iloc[0])
        for name, pred in preds[setup].items():
            n = len(pred)
            t = truths[setup][:n]
            entry = {"all": scores(t, pred, np.ones(n, bool)), "spectra_per_cpu_s": n / seconds[setup][name],
                     "cpu_seconds": seconds[setup][name]}
            if setup == "lamost":
                snr = d.truth["snr_r_requested"].to_numpy(float)[:n]
                entry["snr_r_ge_5"] = scores(t, pred, snr >= 5)
            if name != "redrock" and "redrock" in preds[setup]:
                m = len(preds[setup]["redrock"])
                entry["on_redrock_subset"] = scores(truths[setup][:m], pred.iloc[:m], np.ones(m, bool))
            results[setup][name] = entry
        if "redrock" in preds[setup] and "survey_ml" in preds[setup]:
            results[setup]["speed_ratio_survey_ml_vs_redrock"] = (results[setup]["survey_ml"]["spectra_per_cpu_s"]
                                                                  / results[setup]["redrock"]["spectra_per_cpu_s"])
    if args.only:
        print(f"cached predictions in {work}")
        return
    png = plot(results, preds, truths, RESULTS / "redshift.png")
    emit("redshift", {"n": {s: len(d.flux) for s, d in data.items()}, "redrock_n": redrock_n,
                      "results": results, "plot": png.name})


if __name__ == "__main__":
    main()
