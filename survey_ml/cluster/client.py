"""connect(): the Dask cluster every survey_ml command runs on.

One function gives every command its cluster, so the same ``run-catalog`` goes from a laptop
to a GPU node to an HPC allocation by one option (``--cluster``):

``local`` (default)
    A LocalCluster of worker processes on this machine (or an existing scheduler given by
    address / ``$SURVEY_ML_SCHEDULER``).
``cuda``
    A dask-cuda ``LocalCUDACluster``: one worker per visible GPU, each pinned to its own
    device (``CUDA_VISIBLE_DEVICES`` puts it first, so ``torch.device("cuda")`` is that GPU).
    Without dask-cuda or without a GPU it falls back to CPU workers and says why.
``slurm`` / ``pbs``
    A dask-jobqueue cluster built from the release spec and ``jobqueue.yaml``
    (:func:`survey_ml.cluster.hpc.jobqueue_cluster`), scaled to ``jobs`` batch jobs.
``mpi``
    Inside ``mpirun -n N python -m survey_ml.cli.mpi_launch ...``: dask-mpi already started the scheduler
    and workers; connect to them (:mod:`survey_ml.cluster.mpi`).

Nothing CUDA-related is initialised in this (client) process: GPUs are counted through NVML
by dask-cuda, so worker processes own their devices.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, LocalCluster, as_completed

from .mpi import SCHEDULER_ENV  # defined by the launcher that sets it; re-exported here

__all__ = ["connect", "current_client", "run_blocks", "gpu_count", "cuda_cluster", "SCHEDULER_ENV", "CLUSTER_KINDS"]

#: What ``connect(cluster=...)`` / ``--cluster`` accepts.
CLUSTER_KINDS = ("local", "cuda", "slurm", "pbs", "mpi")


def gpu_count() -> tuple[int, str]:
    """How many CUDA GPUs dask-cuda would use here, and why none when zero.

    Counted the way dask-cuda counts them (``CUDA_VISIBLE_DEVICES``, else NVML), without
    creating a CUDA context in this process.

    Returns
    -------
    n : int
        Visible GPUs (0 when dask-cuda is missing or no GPU/driver is found).
    reason : str
        Empty when ``n > 0``; else what is missing, in words a user can act on.
    """
    try:
        from dask_cuda.utils import get_n_gpus
    except ModuleNotFoundError as exc:
        if exc.name == "dask_cuda":
            return 0, "dask-cuda is not installed (pip install 'survey_ml[gpu]')"
        return 0, f"dask-cuda cannot be imported: {exc} (a CUDA runtime/driver is missing?)"
    except ImportError as exc:  # dask-cuda present, its CUDA bindings are not
        return 0, f"dask-cuda cannot be imported: {exc} (a CUDA runtime/driver is missing?)"
    try:
        n = int(get_n_gpus())
    except Exception as exc:  # no NVIDIA driver / NVML: the usual case on a CPU machine
        return 0, f"no CUDA GPU found ({type(exc).__name__}: {exc})".strip()
    return (n, "") if n > 0 else (0, "no CUDA GPU visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)")


def cuda_cluster(*, dashboard_address: str = "127.0.0.1:8787", memory_limit: str | float | None = "auto",
                 threads_per_worker: int | None = None, n_workers: int | None = None, fallback: bool = True,
                 quiet: bool = False):
    """A dask-cuda LocalCUDACluster (one worker per GPU), or CPU workers when there is no GPU.

    Parameters
    ----------
    dashboard_address, memory_limit
        As for :func:`connect`.
    threads_per_worker : int, optional
        Default: the CPU cores per GPU. The networks run on the GPU, but the rest of a block
        (Zarr read, preprocessing, the redshift template fit: ~75% of the CPU work of a dr10
        chunk) runs on the worker's CPU threads, so several blocks in flight keep one GPU fed.
        A fallback CPU cluster uses 1 thread per worker.
    n_workers : int, optional
        GPUs to use (default: all visible); also the CPU worker count of a fallback.
    fallback : bool
        Without dask-cuda or a GPU, start a CPU LocalCluster (True, with a message saying
        why) or raise RuntimeError (False).
    quiet : bool
        No fallback message on stdout (a ``RuntimeWarning`` is still issued).

    Returns
    -------
    cluster
        ``LocalCUDACluster``, or ``LocalCluster`` on fallback; ``cluster.survey_ml_kind`` is
        ``"cuda"`` or ``"local (cuda fallback: <reason>)"``.
    """
    n_gpus, reason = gpu_count()
    if n_gpus:
        from dask_cuda import LocalCUDACluster

        visible = list(range(n_gpus))[: n_workers or n_gpus]
        threads = threads_per_worker or max(1, (os.cpu_count() or 1) // len(visible))
        cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=visible, threads_per_worker=threads,
                                   memory_limit=memory_limit, dashboard_address=dashboard_address,
                                   host="127.0.0.1", protocol="tcp")
        cluster.survey_ml_kind = "cuda"
        return cluster
    if not fallback:
        raise RuntimeError(f"--cluster cuda: {reason}")
    text = f"survey_ml: --cluster cuda: {reason}; falling back to CPU workers (a LocalCluster), same code path"
    warnings.warn(text, RuntimeWarning, stacklevel=2)
    if not quiet:
        print(text, flush=True)
    cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=threads_per_worker or 1,
                           memory_limit=memory_limit, dashboard_address=dashboard_address, host="127.0.0.1",
                           protocol="tcp://")
    cluster.survey_ml_kind = f"local (cuda fallback: {reason})"
    return cluster


def connect(scheduler: str | None = None, *, cluster: str = "local", n_workers: int | None = None,
            threads_per_worker: int | None = None, memory_limit: str | float | None = "auto",
            dashboard_address: str = "127.0.0.1:8787", processes: bool = True,
            jobs: int | None = None, gpus: int | None = None, spec: dict[str, Any] | None = None,
            quiet: bool = False) -> Client:
    """Return a distributed Client: an existing scheduler, or a new cluster of the kind asked for.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler. Defaults to ``$SURVEY_ML_SCHEDULER``; when neither
        is set, a cluster of kind ``cluster`` is started.
    cluster : {"local", "cuda", "slurm", "pbs", "mpi"}
        What to start (see the module docstring). ``cuda`` falls back to CPU workers with
        a message when there is no GPU or no dask-cuda.
    n_workers : int, optional
        LocalCluster workers (default: one per CPU core); ``cuda``: GPUs to use.
    threads_per_worker : int, optional
        Threads per worker. Default 1 for CPU workers (numeric libraries parallelise inside
        a task instead); for ``cuda`` the CPU cores per GPU (see :func:`cuda_cluster`).
    memory_limit : str or float, optional
        Per-worker memory limit passed to LocalCluster.
    dashboard_address : str
        Where the dashboard listens; bound to localhost by default so it is not exposed.
        ``"127.0.0.1:0"`` picks a free port.
    processes : bool
        Worker processes (True) or threads in this process.
    jobs, gpus, spec
        ``slurm`` / ``pbs``: batch jobs to scale to, GPUs per job, and the release spec whose
        ``[cluster.<kind>]`` table sets the resources (see :func:`survey_ml.cluster.hpc.jobqueue_cluster`);
        ``None`` leaves them to the spec / ``jobqueue.yaml`` / survey_ml's defaults.
    quiet : bool
        Do not print the dashboard link.

    Returns
    -------
    distributed.Client
        Closing it also closes a LocalCluster it started.

    Notes
    -----
    Workers are spawned processes: scripts calling this need the
    ``if __name__ == "__main__":`` guard.
    """
    if cluster not in CLUSTER_KINDS:
        raise ValueError(f"cluster must be one of {', '.join(CLUSTER_KINDS)}, not {cluster!r}")
    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if address:
        client = Client(address)
        kind = f"scheduler {address}"
    elif cluster == "mpi":
        from .mpi import mpi_client

        client, kind = mpi_client(), "mpi"
    else:
        if cluster == "cuda":
            started = cuda_cluster(dashboard_address=dashboard_address, memory_limit=memory_limit,
                                   threads_per_worker=threads_per_worker, n_workers=n_workers, quiet=quiet)
        elif cluster in ("slurm", "pbs"):
            from .hpc import jobqueue_cluster

            started = jobqueue_cluster(cluster, jobs=jobs, gpus=gpus, spec=spec, dashboard_address=dashboard_address)
            started.survey_ml_kind = cluster
        else:
            started = LocalCluster(n_workers=n_workers or os.cpu_count() or 1,
                                   threads_per_worker=threads_per_worker or 1, processes=processes,
                                   memory_limit=memory_limit, dashboard_address=dashboard_address,
                                   host="127.0.0.1", protocol="tcp://")
            started.survey_ml_kind = "local"
        client = Client(started)
        client._survey_ml_owns_cluster = True  # noqa: SLF001 - closed with the client
        kind = started.survey_ml_kind
        if cluster in ("slurm", "pbs"):  # the scheduler names its network address; the dashboard is on localhost
            from .hpc import dashboard_link

            client.survey_ml_dashboard = dashboard_link(started)
    client.survey_ml_kind = kind
    if not quiet:
        link = getattr(client, "survey_ml_dashboard", None) or client.dashboard_link
        print(f"survey_ml: {kind} cluster, Dask dashboard at {link}", flush=True)
    return client


def current_client(client: Client | None | bool = None) -> Client | None:
    """``client`` itself; for ``None`` the client this process already has, if any; for ``False`` none."""
    if client is None:
        from distributed import default_client

        try:
            return default_client()
        except ValueError:
            return None
    return client or None


def run_blocks(function: Callable[..., Any], blocks: Sequence[tuple], client: Client | None = None,
               desc: str = "", progress: bool = False,
               on_result: Callable[[int, Any], None] | None = None,
               recover: Callable[[int, Exception], Any] | None = None) -> list[Any]:
    """``function(*block)`` for every block, on the cluster or in this process; results in block order.

    With a client, each block is one task (``pure=False``: blocks write files), gathered as
    they finish so a progress bar can follow; without one, a plain loop here.
    ``on_result(k, result)`` is called here, on the client, as block ``k`` finishes (e.g.
    :meth:`survey_ml.report.progress.RunJournal.block_callback` keeps the run's progress on disk);
    for a block that raised it gets the exception, just before it is re-raised.
    ``recover(k, error)``, if given, is asked first about a block that raised: what it returns
    is the block's result (it may run parts of the block again); if it raises, that stands.
    """
    from tqdm.auto import tqdm

    def finished(k: int, get: Callable[[], Any]) -> None:
        try:
            try:
                results[k] = get()
            except Exception as err:
                if recover is None:
                    raise
                results[k] = recover(k, err)
        except Exception as err:
            if on_result is not None:
                on_result(k, err)
            raise
        if on_result is not None:
            on_result(k, results[k])
        bar.update(1)

    results: list[Any] = [None] * len(blocks)
    with tqdm(total=len(blocks), desc=desc, unit="block", disable=not progress) as bar:
        if client:
            futures = {client.submit(function, *block, pure=False): k for k, block in enumerate(blocks)}
            # the client's own loop: as_completed defaults to the default client's, and a future
            # lost with a killed worker is then awaited on the wrong loop (RuntimeError)
            for future in as_completed(futures, loop=client.loop):
                finished(futures[future], future.result)
        else:
            for k, block in enumerate(blocks):
                finished(k, lambda block=block: function(*block))
    return results
