"""Fuzz accounting at scale: good spectra beside ~40 kinds of damaged ones, through the Dask ingest.

Good files: a mock dr10 release (``--n`` spectra, both LAMOST layouts) plus the real LAMOST
files of ``../shared/fixtures/real`` when present. Damaged files: ``--copies`` of every kind
of :data:`survey_ml.simulate.fuzz.DAMAGE` (a decompression bomb of 96 MB among them), each
from another good file under an OBSID of its own. Reported: files tried, damaged files
flagged with the promised status and message (goal 100%), good rows lost (goal 0), good rows
whose stored arrays differ from a clean ingest of the good files alone (goal 0), and the
workers' peak memory (distributed's MemorySampler) against the decompression cap. Prints
JSON; keeps bench/results/fuzz.json.

Usage: python bench/fuzz.py [--n 2000] [--copies 25] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from _common import REPO, emit


def big_bombs(folder: Path, good: Path, gigabytes: float, n: int) -> list[Path]:
    """``n`` copies of a spectrum followed by ``gigabytes`` of zeros, gzipped (a few MB each)."""
    import gzip
    import zlib

    if n <= 0:
        return []
    stream = zlib.compressobj(1, zlib.DEFLATED, 31)
    first = folder / "big_bomb_000.fits.gz"
    zeros = b"\0" * (1 << 24)
    with open(first, "wb") as fh:
        fh.write(stream.compress(gzip.decompress(good.read_bytes())))
        for _ in range(int(gigabytes * 64)):
            fh.write(stream.compress(zeros))
        fh.write(stream.flush())
    paths = [first]
    for k in range(1, n):
        paths.append(folder / f"big_bomb_{k:03d}.fits.gz")
        shutil.copyfile(first, paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="good mock spectra (default 2000)")
    parser.add_argument("--copies", type=int, default=25, help="damaged files per kind of damage (default 25)")
    parser.add_argument("--chunk-rows", type=int, default=256)
    parser.add_argument("--big-bombs", type=int, default=4, help="extra bombs that inflate to --big-bomb-gb each")
    parser.add_argument("--big-bomb-gb", type=float, default=4.0)
    parser.add_argument("--workdir", default=None, help="keep the corpus here (default: a temp dir, removed)")
    args = parser.parse_args()

    from distributed.diagnostics import MemorySampler

    from survey_ml.cluster import connect
    from survey_ml.simulate import write_mock_release
    from survey_ml.simulate.fuzz import DAMAGE, account, write_fuzz_corpus
    from survey_ml.store import ingest, open_release
    from survey_ml.store.kinds.spectra import MAX_DECOMPRESSED_MB

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="survey_ml_fuzz_"))
    client = connect(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0", quiet=True)
    try:
        mock = write_mock_release(work / "mock", args.n, seed=11, client=client)
        good = sorted(mock.spectra_dir.rglob("*.fits.gz"))
        real = REPO.parent / "shared" / "fixtures" / "real" / "lamost"
        good += sorted(real.glob("*.fits.gz")) if real.is_dir() else []
        t0 = time.perf_counter()
        manifest = write_fuzz_corpus(work / "corpus", good, copies=args.copies, seed=1)
        bombs = big_bombs(work / "corpus" / "damaged", good[0], args.big_bomb_gb, args.big_bombs)
        bomb_file_mb = bombs[0].stat().st_size / 2**20 if bombs else 0.0
        manifest = pd.concat([manifest, pd.DataFrame({"file": [str(b) for b in bombs], "damage": "big_bomb",
                                                      "status": "too_large", "says": "decompressed size over"})],
                             ignore_index=True)
        corpus_s = time.perf_counter() - t0
        sampler = MemorySampler()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with sampler.sample("ingest", client=client, measure="process", interval=0.1):
                t0 = time.perf_counter()
                report = ingest(work / "corpus", work / "store", "dr10", client=client, chunk_rows=args.chunk_rows)
                ingest_s = time.perf_counter() - t0
            clean = ingest(work / "corpus" / "good", work / "clean", "dr10", client=client,
                           chunk_rows=args.chunk_rows)
        rows = open_release(work / "store").rows
        figures = account(manifest, rows)
        # good rows stored exactly as a clean ingest of the good files alone stores them
        store, reference = open_release(work / "store"), open_release(work / "clean")
        ours, theirs = store.read_block(0, store.n_rows), reference.read_block(0, reference.n_rows)
        ok = rows[rows["status"] == "ok"]
        where = dict(zip(ok["obsid"], ok["row"]))
        changed = sum(any(not np.array_equal(ours[k][where[o]], theirs[k][i], equal_nan=True) for k in theirs)
                      if o in where else 1 for i, o in enumerate(reference.rows["obsid"]))
        memory = sampler.to_pandas()
        peak_mb = float(memory.max().max() / 2**20) if len(memory) else float("nan")
        by_status = rows["status"].value_counts().to_dict()
    finally:
        client.close()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    emit("fuzz", {
        "good_files": len(good), "kinds_of_damage": len(DAMAGE), "copies_per_kind": args.copies,
        "files_tried": figures["files"], "damaged": figures["damaged"], "flagged_right": figures["flagged_right"],
        "share_flagged_right": round(figures["share_right"], 4), "good_rows_lost": figures["good_rows_lost"],
        "good_rows_changed_vs_clean_ingest": int(changed), "clean_ingest_rows": int(clean.n_rows),
        "wrong": {k: v[:3] for k, v in figures["wrong"].items()},
        "status_counts": {str(k): int(v) for k, v in by_status.items()},
        "peak_worker_memory_mb": round(peak_mb, 1), "decompression_cap_mb": MAX_DECOMPRESSED_MB,
        "bombs_inflate_to_mb": {"bomb": 96, "big_bomb": round(args.big_bomb_gb * 1024)},
        "big_bomb_file_mb": round(bomb_file_mb, 1), "corpus_s": round(corpus_s, 1), "ingest_s": round(ingest_s, 2),
        "files_per_s": round(figures["files"] / ingest_s, 1), "ingest_report_new_rows": int(report.n_new),
        "cluster": "LocalCluster, 2 workers x 1 thread",
        "notes": "peak_worker_memory_mb is the largest process RSS of any worker (MemorySampler, 0.1 s) "
                 "during the corpus ingest: bounded by the cap (64 MB of inflated bytes at most per file) "
                 "plus the worker's baseline, not by the bombs (96 MB, and the big ones)."})


if __name__ == "__main__":
    main()
