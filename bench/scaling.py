"""Strong scaling of run-catalog dr10 inference on this machine: 1 worker against 2 workers.

The same store - ``--n`` parametric mock LAMOST spectra, ingested once and cached in
``--work`` - is run through :func:`survey_ml.dask.runner.run_catalog` (every task of the dr10
spec: metallicity, sfclass and the redshift network with its template refinement) on a
LocalCluster of 1 worker x 1 thread and of 2 workers x 1 thread (one torch thread per
worker). Per configuration:

- the cluster is started and every worker pushes a few rows through
  :func:`survey_ml.dask.blocks.catalog_block` first (models loaded, first-call costs paid), so
  neither start-up nor ingest is timed;
- each of ``--repeats`` runs writes a fresh catalog and is timed over the inference stage
  only (``report.timings["inference"]``: first part submitted to last part written); the
  configurations take turns (1, 2, 1, 2, ...), and the best and the median are kept;
- the CPU seconds of every worker process over the run (``time.process_time`` in the
  worker) and the compute time of each task (Dask's task stream) are recorded too.

Efficiency ``T1 / (2 T2)`` splits exactly into two factors: ``CPU1 / CPU2`` (work inflation:
did two workers need more CPU seconds for the same spectra - memory bandwidth, caches?) and
``u2 / u1`` with ``u = CPU / (workers x wall)`` (utilisation: how much of its core a worker
got - a shared machine, the scheduler and file reads show up here, not in the first factor).

The machine's own ceiling is measured in the same run: the very same chunk tasks in a plain
``multiprocessing`` pool of 1 and 2 processes, no Dask (``plain_efficiency``);
``dask_efficiency_over_plain`` is what the engine itself costs beyond what the hardware loses.

A single-process profile (one thread, CPU seconds) of one chunk splits the work per spectrum
into preprocessing, network forward passes and the redshift template fit: the inputs of the
GPU projection (bench/projection.py), with each network's FLOPs per spectrum.

Prints JSON; keeps bench/results/scaling.json.

Usage: python bench/scaling.py [--n 16384] [--chunk-rows 2048] [--repeats 3] [--workers 1 2] [--work DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from _common import emit


def cached_store(work: Path, n: int, chunk_rows: int) -> tuple[Path, float | None]:
    """An ingested dr10 store of ``n`` parametric mock spectra, built once (ingest seconds, None if reused)."""
    from survey_ml.cluster.client import connect
    from survey_ml.simulate import write_mock_release
    from survey_ml.store import ingest, open_release

    store = work / f"store-{n}-{chunk_rows}"
    if (store / "objects.parquet").exists():
        release = open_release(store)
        if release.n_rows == n and release.chunk_rows == chunk_rows:
            return store, None
    shutil.rmtree(store, ignore_errors=True)
    client = connect(n_workers=min(2, os.cpu_count() or 1), dashboard_address="127.0.0.1:0", quiet=True)
    try:
        mock = write_mock_release(work / f"mock-{n}", n, seed=5, client=client)
        t = time.perf_counter()
        ingest(mock.catalogue, store, "dr10", client=client, chunk_rows=chunk_rows)
        seconds = time.perf_counter() - t
    finally:
        client.close()
    shutil.rmtree(work / f"mock-{n}", ignore_errors=True)  # the store holds everything the runs read
    return store, seconds


def warm_worker(store: str, tasks: list, cuts: dict, rows: int = 64) -> float:
    """Run on each worker before timing: load the models, push ``rows`` rows through ``catalog_block``."""
    from survey_ml.dask.blocks import catalog_block
    from survey_ml.store import open_release

    t = time.perf_counter()
    release = open_release(store)
    rows = min(rows, release.n_rows)
    catalog_block(release.read_block(0, rows), release.rows.iloc[:rows], release.info, release.kind, tasks, cuts,
                  threads=1)
    return time.perf_counter() - t


def process_cpu_seconds() -> float:
    """CPU seconds of this (worker) process so far, all its threads."""
    return time.process_time()


def timed_run(client, store: Path, out: Path) -> dict:
    """One run-catalog inference on ``client``'s cluster: wall, worker CPU seconds, task compute seconds."""
    from distributed import get_task_stream

    from survey_ml.dask.runner import run_catalog

    shutil.rmtree(out, ignore_errors=True)
    cpu0 = client.run(process_cpu_seconds)
    with get_task_stream(client=client) as stream:
        report = run_catalog("dr10", store=store, out=out, client=client, progress=False)
    cpu1 = client.run(process_cpu_seconds)
    tasks = [s for s in stream.data if str(s["key"]).startswith("write_catalog_part")]
    compute = [sum(ss["stop"] - ss["start"] for ss in s["startstops"] if ss["action"] == "compute") for s in tasks]
    catalog_bytes = sum(p.stat().st_size for p in (out / "catalog").glob("*.parquet"))
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": report.timings["inference"], "n_rows": report.n_rows,
            "worker_cpu_s": sum(cpu1[w] - cpu0[w] for w in cpu1), "tasks": len(tasks),
            "task_compute_s": float(sum(compute)), "catalog_bytes": catalog_bytes}


def summarise_runs(runs: list[dict], n_workers: int, warm: dict) -> dict:
    """Best-of and median of one configuration's runs; rates, CPU seconds and utilisation of the best run."""
    walls = [r["wall_s"] for r in runs]
    best = runs[int(np.argmin(walls))]
    n_rows = best["n_rows"]
    return {"workers": n_workers, "threads_per_worker": 1, "warm_up_s": {str(k): round(v, 2) for k, v in warm.items()},
            "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in runs],
            "wall_s_best": round(min(walls), 3), "wall_s_median": round(statistics.median(walls), 3),
            "spectra_per_s": round(n_rows / min(walls), 1),
            "per_worker_spectra_per_s": round(n_rows / min(walls) / n_workers, 1),
            "worker_cpu_s": round(best["worker_cpu_s"], 2),
            "spectra_per_cpu_s": round(n_rows / best["worker_cpu_s"], 1),
            "utilisation": round(best["worker_cpu_s"] / (n_workers * best["wall_s"]), 3),
            "task_compute_s": round(best["task_compute_s"], 2),
            "catalog_bytes_per_spectrum": round(best["catalog_bytes"] / n_rows, 1)}


def time_configurations(store: Path, workers: list[int], repeats: int, work: Path, tasks: list, cuts: dict) -> dict:
    """A warmed LocalCluster per configuration (``workers`` x 1 thread), timed in turn ``repeats`` times.

    The configurations take turns (1, 2, 1, 2, ...) so that a change in the machine's other
    load during the benchmark falls on both alike.
    """
    from survey_ml.cluster.client import connect

    clients, warm, runs = {}, {}, {k: [] for k in workers}
    try:
        for k in workers:
            clients[k] = connect(n_workers=k, threads_per_worker=1, dashboard_address="127.0.0.1:0", quiet=True)
            warm[k] = clients[k].run(warm_worker, str(store), tasks, cuts)
        for r in range(repeats):
            for k in workers:
                runs[k].append(timed_run(clients[k], store, work / f"run-{k}w"))
    finally:
        for client in clients.values():
            client.close()
    return {str(k): summarise_runs(runs[k], k, warm[k]) for k in workers}


def _plain_warm(store: str, tasks: list, cuts: dict) -> None:
    import torch

    from survey_ml.dask import blocks

    torch.set_num_threads(1)
    # one torch thread per process, as a Dask worker of 1 thread gets (outside Dask, catalog_block's
    # default, worker_threads(), is every core); write_catalog_part takes no thread count of its own
    blocks.worker_threads = lambda: 1
    warm_worker(store, tasks, cuts)


def plain_processes(store: Path, workers: list[int], repeats: int, work: Path, spec: dict, tasks: list) -> dict:
    """The machine's own ceiling: the same chunk tasks (``dask.blocks.write_catalog_part``, reading Zarr and
    writing parts) in a plain ``multiprocessing`` pool of ``k`` single-threaded processes, no Dask.

    Whatever 2 processes lose against 1 here (shared caches, memory bandwidth, SMT siblings) is
    the hardware's; Dask's efficiency divided by this one is what the engine itself costs.
    """
    import multiprocessing as mp

    from survey_ml.dask.catalog import LazyRelease

    release = LazyRelease(store, spec)
    out = {}
    ctx = mp.get_context("spawn")
    # one BLAS/OpenMP thread per process, as Dask's nanny gives its workers (else 2 processes x
    # 2 BLAS threads oversubscribe 2 cores); spawned children read these when numpy loads
    saved = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({v: "1" for v in saved})
    try:
        # and one torch thread (set by _plain_warm in each process)
        out = _plain_pools(ctx, store, release, workers, repeats, work, tasks)
    finally:
        for v, value in saved.items():
            if value is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = value
    return out


def _plain_pools(ctx, store, release, workers, repeats, work, tasks) -> dict:
    from survey_ml.dask.blocks import write_catalog_part

    out = {}
    for k in workers:
        walls = []
        with ctx.Pool(k, initializer=_plain_warm, initargs=(str(store), tasks, release.cuts)) as pool:
            pool.map(abs, range(4 * k))  # make sure every process has started and warmed
            for r in range(repeats):
                folder = work / f"plain-{k}"
                shutil.rmtree(folder, ignore_errors=True)
                blocks = release.catalog_parts(tasks, folder, {})
                t = time.perf_counter()
                list(pool.starmap(write_catalog_part, blocks, chunksize=1))
                walls.append(time.perf_counter() - t)
                shutil.rmtree(folder, ignore_errors=True)
        out[str(k)] = {"wall_s": [round(w, 3) for w in walls], "wall_s_best": round(min(walls), 3),
                       "spectra_per_s": round(release.store.n_rows / min(walls), 1)}
    return out


def stage_profile(store: Path, spec: dict, weights: dict[str, str], rows: int) -> dict:
    """CPU milliseconds per spectrum of each stage of one chunk, in this process on one thread.

    Stages: reading the chunk from Zarr; the metallicity / sfclass input (``model_inputs``);
    their two forward passes; the redshift input on its setup grid; the redshift network's
    forward pass; the rest of ``predict_redshifts`` (PDF peaks, template refinement, flags).
    """
    import torch

    from survey_ml.core.inference import forward_batches, load_model
    from survey_ml.core.lines import line_features
    from survey_ml.core.redshift_inputs import on_setup_grid, scaled_inputs, setup_of
    from survey_ml.core.spectra import model_inputs
    from survey_ml.core.redshift import predict_redshifts
    from survey_ml.store import open_release

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # numpy's BLAS may then use more threads: CPU seconds still count them all
        threadpool_limits = None
    torch.set_num_threads(1)
    release = open_release(store)
    batch = int(spec["tasks"]["metallicity"].get("batch_size", 512))
    z_batch = int(spec["tasks"].get("redshift", {}).get("batch_size", 256))
    refine = spec["tasks"].get("redshift", {}).get("refine")
    models = {task: load_model(path, "cpu") for task, path in weights.items()}
    wave = release.wavelength()
    limit = threadpool_limits(1) if threadpool_limits else None
    try:
        clock = time.process_time
        t = clock()
        flux, ivar, mask = (release.array(a)[:rows].compute(scheduler="synchronous") for a in ("flux", "ivar", "mask"))
        cpu = {"read_zarr": clock() - t}
        n = len(flux)
        z = release.rows["z"].to_numpy(float)[:n]
        reads_lines = {task: bool(models[task][1]["config"].get("n_lines")) for task in ("metallicity", "sfclass")}
        x = model_inputs(flux[:64], ivar[:64], mask[:64], wave, in_channels=2)  # first-call costs, not timed
        lines = line_features(flux[:64], ivar[:64], mask[:64], wave, z[:64]) if any(reads_lines.values()) else None
        for task in ("metallicity", "sfclass"):
            forward_batches(models[task][0], x, batch, lines=lines if reads_lines[task] else None)
        predict_redshifts(flux[:64], ivar[:64], mask[:64], wave, weights["redshift"], refine=refine, threads=1,
                          batch_size=z_batch, device="cpu")
        t = clock()
        x = model_inputs(flux, ivar, mask, wave, in_channels=2)
        cpu["spectra_inputs"] = clock() - t
        lines = None
        if any(reads_lines.values()):   # the fitted lines, shared by both networks (as run-catalog)
            t = clock()
            lines = line_features(flux, ivar, mask, wave, z)
            cpu["line_features"] = clock() - t
        for task in ("metallicity", "sfclass"):
            t = clock()
            forward_batches(models[task][0], x, batch, lines=lines if reads_lines[task] else None)
            cpu[f"{task}_network"] = clock() - t
        setup = setup_of(models["redshift"][1]["setup"])
        t = clock()
        zx = scaled_inputs(*on_setup_grid(flux, ivar, mask, wave, setup))
        cpu["redshift_inputs"] = clock() - t
        t = clock()
        forward_batches(models["redshift"][0], zx, z_batch)
        cpu["redshift_network"] = clock() - t
        t = clock()
        predict_redshifts(flux, ivar, mask, wave, weights["redshift"], refine=refine, threads=1, batch_size=z_batch,
                          device="cpu")
        z_total = clock() - t
    finally:
        if limit is not None:
            limit.unregister()
    cpu["redshift_peaks_and_template_fit"] = max(
        0.0, z_total - cpu["redshift_inputs"] - cpu["redshift_network"])
    ms = {k: round(1e3 * v / n, 4) for k, v in cpu.items()}
    network = sum(v for k, v in ms.items() if k.endswith("_network"))
    return {"rows": n, "threads": 1, "cpu_ms_per_spectrum": ms,
            "cpu_ms_per_spectrum_total": round(sum(ms.values()), 4),
            "cpu_ms_per_spectrum_networks": round(network, 4),
            "cpu_ms_per_spectrum_not_networks": round(sum(ms.values()) - network, 4),
            "redshift_refine": refine if refine is not None else
            bool(models["redshift"][1].get("refine", {}).get("enabled", True))}


def network_flops(weights: dict[str, str]) -> dict[str, int]:
    """FLOPs of one forward pass of one spectrum (2 per multiply-add) of each network of the spec."""
    from survey_ml.core.inference import load_model
    from survey_ml.models import redshift_cnn, spectral_cnn

    out = {}
    for task, path in weights.items():
        model = load_model(path, "cpu")[0]
        out[task] = int(redshift_cnn.forward_flops(model) if task == "redshift" else spectral_cnn.forward_flops(model))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16_384, help="mock spectra in the store (default 16384)")
    parser.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk = per task (default: the spec's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (best and median kept)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="configurations (workers, 1 thread each)")
    parser.add_argument("--profile-rows", type=int, default=1024, help="rows of the single-process stage profile")
    parser.add_argument("--work", default=str(Path(os.environ.get("SURVEY_ML_CACHE", Path.home() / ".cache"
                                                                   / "survey_ml")) / "bench-scaling"))
    args = parser.parse_args()

    from survey_ml.config import load_release_spec
    from survey_ml.tasks.registry import tasks_from_spec

    spec = load_release_spec("dr10")
    chunk_rows = args.chunk_rows or int(spec["ingest"]["chunk_rows"])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    store, ingest_s = cached_store(work, args.n, chunk_rows)
    tasks = tasks_from_spec(spec)
    weights = {t.name: str(t.weights) for t in tasks if t.weights}
    configs = time_configurations(store, sorted(set(args.workers)), args.repeats, work, tasks, dict(spec.get("cuts", {})))
    plain = plain_processes(store, sorted(set(args.workers)), args.repeats, work, spec, tasks)
    profile = stage_profile(store, spec, weights, min(args.profile_rows, args.n))
    flops = network_flops(weights)

    result = {"n_spectra": args.n, "chunk_rows": chunk_rows, "n_tasks": -(-args.n // chunk_rows),
              "tasks": sorted(weights), "repeats": args.repeats, "store_ingest_s": ingest_s,
              "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "configurations": configs}
    if "1" in configs and len(configs) > 1:
        one = configs["1"]
        result["efficiency"] = {}
        for k, c in configs.items():
            if k == "1":
                continue
            w = int(k)
            result["efficiency"][k] = {
                "wall_best": round(one["wall_s_best"] / (w * c["wall_s_best"]), 3),
                "wall_median": round(one["wall_s_median"] / (w * c["wall_s_median"]), 3),
                "cpu_work_ratio": round(one["worker_cpu_s"] / c["worker_cpu_s"], 3),
                "utilisation_ratio": round(c["utilisation"] / one["utilisation"], 3),
                "speedup": round(one["wall_s_best"] / c["wall_s_best"], 3)}
        result["goal_efficiency"] = 0.9
        result["plain_processes"] = plain
        p1 = plain["1"]["wall_s_best"]
        result["plain_efficiency"] = {k: round(p1 / (int(k) * v["wall_s_best"]), 3) for k, v in plain.items() if k != "1"}
        result["dask_efficiency_over_plain"] = {k: round(v["wall_best"] / result["plain_efficiency"][k], 3)
                                                for k, v in result["efficiency"].items()}
        result["dask_vs_plain_wall"] = {k: round(plain[k]["wall_s_best"] / c["wall_s_best"], 3)
                                        for k, c in configs.items()}
    largest = configs[max(configs, key=int)]
    result["per_worker_spectra_per_s"] = largest["per_worker_spectra_per_s"]
    result["per_worker_spectra_per_s_from"] = f"{largest['workers']} workers x 1 thread, best of {args.repeats}"
    result["stage_profile"] = profile
    result["network_flops_per_spectrum"] = flops
    result["network_flops_per_spectrum_total"] = int(sum(flops.values()))
    emit("scaling", result)


if __name__ == "__main__":
    main()
