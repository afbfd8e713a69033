"""The strong-line baseline on a mock dr10 release: accuracy per S/N_r bin and throughput.

Builds (or reuses, from the cache) the bagpipes library, writes a mock release with the
dr10 spec's redshift and S/N distributions, ingests it, runs the strong-line fits over the
store's chunks with Dask, and compares N2 and O3N2 metallicities - on the PP04 scale and
calibrated on the library - with the injected 12 + log(O/H) of the star-forming galaxies.
These are the figures the metallicity CNN has to beat. Prints JSON; keeps
bench/results/baseline.json.

Usage: python bench/baseline.py [--library-size 2000] [--n 5000] [--cache DIR]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from _common import emit, held_out_release, strong_line_metallicities

SNR_BINS = [3, 5, 7, 10, 15, 25, np.inf]


def metrics(residual: pd.Series, n_total: int) -> dict:
    r = residual.dropna()
    if len(r) < 5:
        return {"n": int(len(r)), "completeness": round(len(r) / max(n_total, 1), 3)}
    return {"n": int(len(r)), "completeness": round(len(r) / n_total, 3), "bias": round(float(r.mean()), 4),
            "sigma": round(float(r.std()), 4), "median": round(float(r.median()), 4),
            "nmad": round(float(1.4826 * np.median(np.abs(r - r.median()))), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library-size", type=int, default=2000)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--cache", default=None, help="library cache (default $SURVEY_ML_CACHE or ~/.cache/survey_ml)")
    args = parser.parse_args()

    from survey_ml.cluster.client import connect

    work = Path(tempfile.mkdtemp(prefix="survey_ml_baseline_"))
    client = connect(dashboard_address="127.0.0.1:0", quiet=True)
    try:
        library, mock, release = held_out_release(work, args.library_size, args.n, args.cache, client)
        results, seconds, library_cal = strong_line_metallicities(release, library)
        n_workers = len(client.scheduler_info()["workers"])
    finally:
        client.close()
    truth = pd.read_parquet(mock.truth)[["obsid", "oh12", "starforming", "snr_r_requested", "z_true"]]
    rows = release.objects[["obsid", "snrr"]].merge(truth, on="obsid")
    report = {}
    sf = rows["starforming"].to_numpy()
    for name, values in results.items():
        per = {}
        for k, index in enumerate(("n2", "o3n2")):
            residual = pd.Series(values[:, k] - rows["oh12"].to_numpy())[sf]
            snr = rows["snrr"].to_numpy()[sf]
            bins = {f"[{lo},{hi})": metrics(residual[(snr >= lo) & (snr < hi)], int(((snr >= lo) & (snr < hi)).sum()))
                    for lo, hi in zip(SNR_BINS[:-1], SNR_BINS[1:])}
            usable = snr >= 3
            per[index] = {"all_snr_ge_3": metrics(residual[usable], int(usable.sum())), "by_snr_r": bins}
        report[name] = per
    emit("baseline", {
        "n_spectra": args.n, "n_starforming": int(sf.sum()), "library_size": library.n, "n_workers": n_workers,
        "residual": "measured - injected 12+log(O/H), star-forming galaxies (truth), S/N_r from the header",
        "library_calibration": {"n2": [round(library_cal.n2_zero, 4), round(library_cal.n2_slope, 4),
                                       round(library_cal.n2_sigma, 4)],
                                "o3n2": [round(library_cal.o3n2_zero, 4), round(library_cal.o3n2_slope, 4),
                                         round(library_cal.o3n2_sigma, 4)]},
        "metrics": report,
        "throughput_spectra_per_s": {k: round(args.n / v, 1) for k, v in seconds.items()},
    })
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
