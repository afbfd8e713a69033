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
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import emit

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

    import dask.array as da

    from survey_ml.baseline import PP04, calibrate_strong_lines, strong_line_metallicity
    from survey_ml.cluster import connect
    from survey_ml.simulate.library import LibraryConfig, build_library
    from survey_ml.simulate.release import ObservationPlan, simulate_release
    from survey_ml.spec import load_release_spec
    from survey_ml.store import ingest, open_release

    work = Path(tempfile.mkdtemp(prefix="survey_ml_baseline_"))
    spec = load_release_spec("dr10")
    client = connect(dashboard_address="127.0.0.1:0", quiet=True)
    try:
        library = build_library(LibraryConfig(n=args.library_size, seed=0), cache_dir=args.cache, client=client)
        mock = simulate_release(library, work / "mock", args.n, seed=11, plan=ObservationPlan.from_spec(spec),
                                client=client)
        ingest(mock.catalogue, work / "store", "dr10", client=client, chunk_rows=512)
        release = open_release(work / "store")
        sf_lib = library.truth[library.truth["starforming"]]
        library_cal = calibrate_strong_lines(sf_lib["nii6584"], sf_lib["ha"], sf_lib["oiii5007"], sf_lib["hb"],
                                             sf_lib["oh12"])
        wave = release.wavelength()
        z = da.from_array(release.objects["z"].to_numpy(), chunks=(release.array("flux").chunks[0],))
        results, seconds = {}, {}
        for cal in (PP04, library_cal):
            def block(f, i, m, zz, cal=cal):
                frame = strong_line_metallicity(wave, f, i, m, zz[:, 0], calibration=cal)
                return frame[["oh12_n2", "oh12_o3n2"]].to_numpy(dtype=np.float64)

            arrays = [release.array(a) for a in ("flux", "ivar", "mask")]
            lazy = da.map_blocks(block, *arrays, z[:, None], dtype=np.float64,
                                 chunks=(arrays[0].chunks[0], (2,)), meta=np.empty((0, 2)))
            t = time.perf_counter()
            results[cal.name] = lazy.compute()
            seconds[cal.name] = time.perf_counter() - t
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
