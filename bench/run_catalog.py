"""Throughput of run-catalog dr10: an ingested store of >= 50,000 spectra to a finished catalog.

Three figures measured in one run on this machine, all doing the same work per spectrum
(read the chunk from Zarr, put it on the model grid, min-max normalise, run the metallicity
and the star-forming networks):

1. ``run_catalog`` on a LocalCluster (one worker process per core, one torch thread each):
   end to end from the store to a finished catalog (Parquet parts, FITS export, report);
2. a plain single-process torch loop over the same Zarr chunks (torch given every core),
   no Dask, no Parquet - the Dask overhead is (1) against (2);
3. this machine's float32 matmul peak (torch, every core) converted to spectra/s with the
   two networks' FLOPs - how far the CNN itself is from the hardware.

The store is written the way a user gets one: parametric mock LAMOST files (damaged ones
included) ingested with ``survey_ml.store.ingest``. Prints JSON; keeps
bench/results/run_catalog.json.

Usage: python bench/run_catalog.py [--n 50000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import emit, matmul_peak_flops


def plain_loop(store: Path, weights: dict[str, str], threads: int, cuts: dict, batch_size: int) -> tuple[int, float]:
    """Same arrays, same preprocessing and networks, one process, a for loop over the chunks."""
    import torch
    import zarr

    from survey_ml.core.inference import forward_batches, load_model
    from survey_ml.core.lines import line_features
    from survey_ml.core.spectra import model_inputs, select_rows
    from survey_ml.store import open_release

    torch.set_num_threads(threads)
    release = open_release(store)
    models = [load_model(w, "cpu")[0] for w in weights.values()]
    arrays = {n: zarr.open_array(str(release.zarr_path / "spectra" / n), mode="r") for n in ("flux", "ivar", "mask")}
    objects = release.objects
    keep_all = objects["status"].isin(["ok", "masked_values"]).to_numpy() & select_rows(
        objects["z"].to_numpy(float), objects["snrr"].to_numpy(float), cuts)
    wave = release.wavelength()
    start, done = time.perf_counter(), 0
    for a in range(0, release.n_rows, release.chunk_rows):
        b = min(a + release.chunk_rows, release.n_rows)
        flux, ivar, mask = (arrays[n][a:b] for n in ("flux", "ivar", "mask"))
        keep = keep_all[a:b]
        x = model_inputs(flux[keep], ivar[keep], mask[keep], wave, in_channels=2)
        lines = None   # the fitted lines, once per chunk, for the networks that read them (as run-catalog)
        if any(getattr(model, "n_lines", 0) for model in models):
            lines = line_features(flux[keep], ivar[keep], mask[keep], wave, objects["z"].to_numpy(float)[a:b][keep])
        for model in models:
            forward_batches(model, x, batch_size, lines=lines if getattr(model, "n_lines", 0) else None)
        done += b - a
    return done, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--keep", default=None, help="keep the mock files and store here (reused if present)")
    args = parser.parse_args()

    from survey_ml.cluster.client import connect
    from survey_ml.core.inference import load_model, shipped_weights
    from survey_ml.models.spectral_cnn import forward_flops
    from survey_ml.dask.runner import run_catalog
    from survey_ml.simulate import DEFECTS, inject_defect, write_mock_release
    from survey_ml.config import load_release_spec
    from survey_ml.store import ingest, open_release

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="survey_ml_run_catalog_"))
    spec = load_release_spec("dr10")
    cores = os.cpu_count() or 1
    client = connect(n_workers=cores, dashboard_address="127.0.0.1:0", quiet=True)
    try:
        store = work / "store"
        t_ingest = None
        if not (store / "objects.parquet").exists():
            mock = write_mock_release(work / "mock", args.n, seed=5, client=client)
            step = min(1000, args.n // len(DEFECTS))  # one damaged file per kind, also in a small run
            for k, defect in enumerate(DEFECTS):
                inject_defect(mock.files[step * k + 7], defect)
            t = time.perf_counter()
            ingest(mock.catalogue, store, "dr10", client=client, chunk_rows=int(spec["ingest"]["chunk_rows"]))
            t_ingest = time.perf_counter() - t
        n_rows = open_release(store).n_rows
        out = work / "run"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        report = run_catalog("dr10", store=store, out=out, client=client, progress=False)
        t_dask = time.perf_counter() - t
        t_infer = report.timings["inference"]
        n_workers = len(client.scheduler_info()["workers"])
    finally:
        client.close()

    weights = {task: str(shipped_weights(task)) for task in ("metallicity", "sfclass")}
    batch_size = int(spec["tasks"]["metallicity"]["batch_size"])
    n_loop, t_loop = plain_loop(store, weights, cores, spec["cuts"], batch_size)
    flops = sum(forward_flops(load_model(w, "cpu")[0]) for w in weights.values())
    peak = matmul_peak_flops(threads=cores)
    predicted = sum(v for k, v in report.status_counts.items() if k in ("ok", "masked_values"))
    emit("run_catalog", {
        "n_rows": n_rows, "n_predicted": predicted, "chunk_rows": int(spec["ingest"]["chunk_rows"]),
        "n_workers": n_workers, "threads_per_worker": 1, "batch_size": batch_size, "status_counts": report.status_counts,
        "ingest_seconds": None if t_ingest is None else round(t_ingest, 1),
        "run_catalog": {"seconds_end_to_end": round(t_dask, 2), "spectra_per_s_end_to_end": round(n_rows / t_dask, 1),
                        "seconds_inference": round(t_infer, 2), "spectra_per_s_inference": round(n_rows / t_infer, 1)},
        "plain_torch_loop": {"threads": cores, "seconds": round(t_loop, 2), "spectra_per_s": round(n_loop / t_loop, 1)},
        "dask_overhead_vs_plain_loop": round(t_infer / t_loop - 1, 3),
        "dask_overhead_end_to_end_vs_plain_loop": round(t_dask / t_loop - 1, 3),
        "network_flops_per_spectrum": {"both_networks": flops},
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "matmul_peak_as_spectra_per_s": round(peak / flops, 1),
        "fraction_of_matmul_peak_end_to_end": round((n_rows / t_dask) / (peak / flops), 3),
    })
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
