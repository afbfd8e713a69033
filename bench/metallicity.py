"""Accuracy of run-catalog dr10 on a held-out mock release, against the strong-line baseline.

The held-out release is re-observed from the seed-0 bagpipes library (the shipped weights
were trained on the seed-1 library: no galaxy in common), with the dr10 spec's redshift and
S/N_r draws. It is run through ``run_catalog`` exactly as a user would (ingest, Dask
inference with the shipped weights, catalog, MZR with the truth table's masses), then:

- metallicity residuals (predicted - injected 12+log(O/H)) of the BPT star-forming galaxies
  (truth), overall for 3 <= S/N_r < 30 and per S/N_r and redshift bin, next to the PP04
  and library-calibrated N2 and O3N2 strong-line fits on the same spectra;
- the error calibration: share of |residual| within 1 and 2 x oh12_err;
- the star-forming classifier: accuracy, precision, recall and F1 per class at p >= 0.5,
  the same at the published confidence rule (0.85), and which populations the errors are;
- MZR closure: the quadratic fitted to the catalog (sf_flag rows, predicted oh12) against
  the one fitted to the injected oh12 of all star-forming galaxies, over 9 < log M* < 11;
- optionally the same for other weights (e.g. the published architecture): --compare.

Prints JSON and keeps bench/results/metallicity.json (+ metallicity_mzr.png).

Usage: python bench/metallicity.py [--library-size 2000] [--n 6000] [--compare NAME=WEIGHTS ...]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import RESULTS, emit, held_out_release, strong_line_metallicities

SNR_BINS = [3, 5, 7, 10, 15, 25, np.inf]
Z_BINS = [0.002, 0.05, 0.1, 0.15, 0.2, 0.3]


def residual_metrics(r: np.ndarray, err: np.ndarray | None = None) -> dict:
    r = np.asarray(r, dtype=float)
    ok = np.isfinite(r)
    if ok.sum() < 5:
        return {"n": int(ok.sum())}
    out = {"n": int(ok.sum()), "bias": round(float(r[ok].mean()), 4), "sigma": round(float(r[ok].std()), 4),
           "nmad": round(float(1.4826 * np.median(np.abs(r[ok] - np.median(r[ok])))), 4)}
    if err is not None and np.isfinite(np.asarray(err, dtype=float)[ok]).all():
        pull = np.abs(r[ok]) / np.asarray(err, dtype=float)[ok]
        out |= {"within_1sigma": round(float(np.mean(pull < 1)), 3), "within_2sigma": round(float(np.mean(pull < 2)), 3)}
    return out


def binned(r: np.ndarray, x: np.ndarray, edges: list[float], err: np.ndarray | None = None) -> dict:
    return {f"[{lo},{hi})": residual_metrics(r[(x >= lo) & (x < hi)], None if err is None else err[(x >= lo) & (x < hi)])
            for lo, hi in zip(edges[:-1], edges[1:])}


def classifier_metrics(p: np.ndarray, truth_sf: np.ndarray, population: np.ndarray, threshold: float) -> dict:
    guess = p >= threshold
    out = {"threshold": threshold, "n": int(len(p)), "accuracy": round(float(np.mean(guess == truth_sf)), 4)}
    for name, want, got in (("starforming", truth_sf, guess), ("not_starforming", ~truth_sf, ~guess)):
        tp = np.sum(want & got)
        precision = tp / max(got.sum(), 1)
        recall = tp / max(want.sum(), 1)
        out[name] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                     "f1": round(float(2 * precision * recall / max(precision + recall, 1e-12)), 4),
                     "support": int(want.sum())}
    wrong = guess != truth_sf
    out["errors_by_population"] = {str(k): int(v) for k, v in pd.Series(population[wrong]).value_counts().items()}
    out["composite_share_of_errors"] = round(float(np.mean(population[wrong] == "composite")), 3) if wrong.any() else 0.0
    return out


def evaluate(catalog: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """All figures for one catalog, rows aligned with ``truth``."""
    from survey_ml.relations.mzr import fit_mzr, quadratic

    predicted = catalog["status"].isin(["ok", "masked_values"]).to_numpy()
    sf_true = truth["starforming"].to_numpy(bool)
    snr = catalog["snr_r"].to_numpy(float)
    z = truth["z_true"].to_numpy(float)
    resid = catalog["oh12"].to_numpy(float) - truth["oh12"].to_numpy(float)
    err = catalog["oh12_err"].to_numpy(float)
    use = predicted & sf_true
    main = use & (snr >= 3) & (snr < 30)
    out = {"metallicity": {
        "snr_3_30": residual_metrics(resid[main], err[main]),
        "by_snr_r": binned(resid[use], snr[use], SNR_BINS, err[use]),
        "by_z": binned(resid[main], z[main], Z_BINS, err[main])}}
    population = truth["population"].astype(str).to_numpy()
    p = catalog["p_starforming"].to_numpy(float)
    out["classifier"] = {"p_ge_0.5": classifier_metrics(p[predicted], sf_true[predicted], population[predicted], 0.5),
                         "p_ge_0.85": classifier_metrics(p[predicted], sf_true[predicted], population[predicted], 0.85)}
    flagged = catalog["sf_flag"].to_numpy(bool)
    out["classifier"]["sf_flag_purity"] = round(float(np.mean(sf_true[flagged])), 4) if flagged.any() else None
    out["classifier"]["sf_flag_completeness"] = round(float(np.mean(flagged[predicted & sf_true])), 4)
    mass = truth["log_mstar"].to_numpy(float)
    fit = fit_mzr(mass[flagged], catalog["oh12"].to_numpy(float)[flagged])
    injected = fit_mzr(mass[sf_true], truth["oh12"].to_numpy(float)[sf_true])
    grid = np.linspace(9.0, 11.0, 41)
    diff = fit(grid) - injected(grid)
    clipped_tremonti = np.minimum(quadratic((-1.492, 1.847, -0.08026), grid), 9.09)
    out["mzr"] = {"catalog_fit": fit.summary(), "injected_fit": injected.summary(),
                  "max_abs_diff_9_11": round(float(np.max(np.abs(diff))), 4),
                  "mean_diff_9_11": round(float(np.mean(diff)), 4),
                  "max_abs_diff_vs_clipped_tremonti_9_11": round(float(np.max(np.abs(fit(grid) - clipped_tremonti))), 4),
                  "coeffs": fit.coeffs.round(4).tolist(), "injected_coeffs": injected.coeffs.round(4).tolist()}
    out["_fits"] = (fit, injected, mass[flagged], catalog["oh12"].to_numpy(float)[flagged])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library-size", type=int, default=2000)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--cache", default=None, help="library cache (default $SURVEY_ML_CACHE or ~/.cache/survey_ml)")
    parser.add_argument("--compare", nargs="*", default=[], help="NAME=WEIGHTS of other metallicity weights")
    args = parser.parse_args()

    from survey_ml.cluster.client import connect
    from survey_ml.dask.runner import run_catalog
    from survey_ml.relations.mzr import plot_mzr

    work = Path(tempfile.mkdtemp(prefix="survey_ml_metallicity_"))
    client = connect(dashboard_address="127.0.0.1:0", quiet=True)
    results: dict = {}
    try:
        library, mock, release = held_out_release(work, args.library_size, args.n, args.cache, client)
        truth = pd.read_parquet(mock.truth).set_index("obsid").loc[release.objects["obsid"]].reset_index()
        t = time.perf_counter()
        report = run_catalog("dr10", store=work / "store", out=work / "run", client=client, masses=mock.truth,
                             progress=False)
        seconds = time.perf_counter() - t
        catalog = pd.read_parquet(report.catalog_dir)
        results["survey_ml"] = evaluate(catalog, truth) | {"seconds": round(seconds, 1),
                                                           "weights": report.provenance["weights"]}
        for item in args.compare:
            name, path = item.split("=", 1)
            other = run_catalog("dr10", store=work / "store", out=work / f"run_{name}", client=client,
                                masses=mock.truth, weights={"metallicity": path}, progress=False)
            results[name] = evaluate(pd.read_parquet(other.catalog_dir), truth)
            results[name].pop("classifier")

        # The strong-line baseline on the same spectra (PP04 and calibrated on the library).
        baseline, _, _ = strong_line_metallicities(release, library)
        sf = truth["starforming"].to_numpy(bool)
        snr = release.objects["snrr"].to_numpy(float)
        main = sf & (snr >= 3) & (snr < 30)
        for cal_name, values in baseline.items():
            for k, index in enumerate(("n2", "o3n2")):
                resid = values[:, k] - truth["oh12"].to_numpy(float)
                results[f"baseline_{cal_name}_{index}"] = {
                    "snr_3_30": residual_metrics(resid[main]), "by_snr_r": binned(resid[sf], snr[sf], SNR_BINS),
                    "completeness": round(float(np.isfinite(resid[main]).mean()), 3)}
    finally:
        client.close()
    fit, injected, x, y = results["survey_ml"].pop("_fits")
    for name in results:
        if isinstance(results[name], dict):
            results[name].pop("_fits", None)
    plot_mzr(fit, x, y, RESULTS / "metallicity_mzr.png", title=f"held-out mock dr10: {fit.summary()}",
             truth=tuple(injected.coeffs))
    emit("metallicity", {
        "n_spectra": args.n, "library_size": library.n, "library_seed": 0, "training_library_seed": 1,
        "n_starforming": int(truth["starforming"].sum()),
        "residual": "predicted - injected 12+log(O/H), BPT star-forming galaxies (truth), S/N_r from the header",
        "published_reference": {"sigma": 0.0829, "bias": -0.0002, "classifier_accuracy": 0.925},
        "results": results})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
