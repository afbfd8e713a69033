"""connect(): the Dask cluster every survey_ml command runs on."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, LocalCluster, as_completed

__all__ = ["connect", "current_client", "run_blocks", "SCHEDULER_ENV"]

#: Environment variable naming an existing scheduler (``tcp://host:8786``).
SCHEDULER_ENV = "SURVEY_ML_SCHEDULER"


def connect(scheduler: str | None = None, *, n_workers: int | None = None,
            threads_per_worker: int = 1, memory_limit: str | float | None = "auto",
            dashboard_address: str = "127.0.0.1:8787", processes: bool = True,
            quiet: bool = False) -> Client:
    """Return a distributed Client: an existing scheduler, or a new LocalCluster.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler. Defaults to ``$SURVEY_ML_SCHEDULER``; when neither
        is set, a LocalCluster is started.
    n_workers : int, optional
        LocalCluster workers (default: one per CPU core).
    threads_per_worker : int
        Threads per worker (1: numeric libraries parallelise inside a task instead).
    memory_limit : str or float, optional
        Per-worker memory limit passed to LocalCluster.
    dashboard_address : str
        Where the dashboard listens; bound to localhost by default so it is not exposed.
        ``"127.0.0.1:0"`` picks a free port.
    processes : bool
        Worker processes (True) or threads in this process.
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
    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1,
                               threads_per_worker=threads_per_worker, processes=processes,
                               memory_limit=memory_limit, dashboard_address=dashboard_address,
                               host="127.0.0.1", protocol="tcp://")
        client = Client(cluster)
        client._survey_ml_owns_cluster = True  # noqa: SLF001 - closed with the client
    if not quiet:
        print(f"survey_ml: Dask dashboard at {client.dashboard_link}", flush=True)
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
               desc: str = "", progress: bool = False) -> list[Any]:
    """``function(*block)`` for every block, on the cluster or in this process; results in block order.

    With a client, each block is one task (``pure=False``: blocks write files), gathered as
    they finish so a progress bar can follow; without one, a plain loop here.
    """
    from tqdm.auto import tqdm

    results: list[Any] = [None] * len(blocks)
    with tqdm(total=len(blocks), desc=desc, unit="block", disable=not progress) as bar:
        if client:
            futures = {client.submit(function, *block, pure=False): k for k, block in enumerate(blocks)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        else:
            for k, block in enumerate(blocks):
                results[k] = function(*block)
                bar.update(1)
    return results
