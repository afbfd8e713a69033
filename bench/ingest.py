"""Ingest throughput: survey_ml's Dask ingest against a plain single-process astropy loop.

Both read the same N LAMOST-format ``.fits.gz`` files in one run. The loop is what one
writes in a notebook: ``fits.open`` each file, take the five arrays and the header fields
into lists, nothing written. survey_ml ingest does more - it also cleans, places every
spectrum on the release grid and writes the Zarr arrays and the Parquet row table - on a
LocalCluster of one worker per core. The same survey_ml ingest is also run in one process
(``client=False``: a plain loop over the blocks), to tell the reader's gain from the
cluster's. Prints
JSON; keeps bench/results/ingest.json.

Usage: python bench/ingest.py [--n 10000] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from _common import emit

HEADER_KEYS = ("OBSID", "RA", "DEC", "Z", "SNRR", "CLASS", "COEFF0", "COEFF1")


def plain_astropy_loop(files: list[str]) -> int:
    """Read every file with astropy in one process; return the number of spectra read."""
    spectra, rows = [], []
    for path in files:
        with fits.open(path) as hdul:
            if hdul[0].header["NAXIS"] == 2:
                data = np.array(hdul[0].data)
            else:
                row = hdul[1].data[0]
                data = np.stack([row[c] for c in ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK")])
            rows.append({k: hdul[0].header.get(k) for k in HEADER_KEYS})
            spectra.append(data)
    return len(spectra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of files (default 10000)")
    parser.add_argument("--workdir", default=None, help="keep the mock files here (default: a temp dir)")
    parser.add_argument("--chunk-rows", type=int, default=1024)
    args = parser.parse_args()

    from survey_ml.cluster.client import connect
    from survey_ml.simulate import write_mock_release
    from survey_ml.store import ingest

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="survey_ml_bench_"))
    t0 = time.perf_counter()
    client = connect(dashboard_address="127.0.0.1:0", quiet=True)
    cluster_start = time.perf_counter() - t0
    n_workers = len(client.scheduler_info()["workers"])
    try:
        spectra = work / "mock" / "spectra"
        if spectra.is_dir() and len(list(spectra.glob("*.fits.gz"))) == args.n:
            files = sorted(str(p) for p in spectra.glob("*.fits.gz"))
        else:
            shutil.rmtree(work / "mock", ignore_errors=True)
            files = write_mock_release(work / "mock", args.n, seed=42, client=client).files
        # warm the page cache once so neither contender pays for cold disk reads
        input_bytes = sum(len(Path(f).read_bytes()) for f in files)

        t = time.perf_counter()
        n_loop = plain_astropy_loop(files)
        loop_s = time.perf_counter() - t

        # The same survey_ml code in one process, no parallelism: separates what the
        # reader gains from what Dask's two workers gain.
        serial_store = work / "store_serial"
        shutil.rmtree(serial_store, ignore_errors=True)
        t = time.perf_counter()
        ingest(files, serial_store, "bench", client=False, chunk_rows=args.chunk_rows)
        serial_s = time.perf_counter() - t
        shutil.rmtree(serial_store, ignore_errors=True)

        store = work / "store"
        shutil.rmtree(store, ignore_errors=True)
        t = time.perf_counter()
        report = ingest(files, store, "bench", client=client, chunk_rows=args.chunk_rows)
        dask_s = time.perf_counter() - t
        size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    finally:
        client.close()
    assert n_loop == report.n_new == args.n
    emit("ingest", {
        "n_files": args.n, "n_workers": n_workers, "chunk_rows": args.chunk_rows,
        "input_mib": round(input_bytes / 2**20, 1),
        "plain_astropy_loop": {"seconds": round(loop_s, 2), "files_per_s": round(args.n / loop_s, 1)},
        "survey_ml_dask_ingest": {"seconds": round(dask_s, 2), "files_per_s": round(args.n / dask_s, 1),
                                  "statuses": report.status_counts,
                                  "store_mib": round(size / 2**20, 1)},
        "survey_ml_ingest_one_process": {"seconds": round(serial_s, 2),
                                         "files_per_s": round(args.n / serial_s, 1)},
        "ratio_dask_over_loop": round(loop_s / dask_s, 3),
        "ratio_dask_over_one_process": round(serial_s / dask_s, 3),
        "parallel_efficiency": round(serial_s / dask_s / n_workers, 3),
        "goal_ratio": 1.6,
        "cluster_start_s": round(cluster_start, 2),
    })
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
