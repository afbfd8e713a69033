"""One MPI job, one Dask cluster: dask-mpi's ranks as scheduler, client and workers.

The launcher is :mod:`survey_ml.cli.mpi_launch` (``mpirun -n N python -m
survey_ml.cli.mpi_launch <survey-ml command>``); this module holds the cluster side.

Inside a batch allocation, dask-mpi turns the MPI ranks into a cluster: rank 0 runs the
scheduler, rank 1 runs the client - here any ``survey-ml`` subcommand, as ``python -m
survey_ml`` would (:func:`survey_ml.cli.mpi_launch.run_survey_ml`) - and ranks 2 to N-1 are workers. When the command
returns, the cluster shuts down and every rank exits::

    mpirun -n 66 python -m survey_ml.cli.mpi_launch --memory-limit 3.5GiB \\
        run-catalog dr10 --input /data/lamost/dr10 --out /scratch/$USER/dr10

Rank 1 waits for all N-2 workers before the command starts, and hands the scheduler's
address to it through ``$SURVEY_ML_SCHEDULER`` (so :func:`survey_ml.cluster.client.connect` uses
this cluster whatever ``--cluster`` says). The launcher's own options come before the
command. Workers are single-threaded by default, with ``OMP_NUM_THREADS`` (and the MKL /
OpenBLAS equivalents) set to their thread count unless already set, so 32 ranks on a
32-core node do not each start 32 BLAS threads. The dashboard listens on localhost of
rank 0's node (``ssh -L 8787:localhost:8787 <that node>``).

Needs ``pip install 'survey_ml[hpc]'`` (dask-mpi, mpi4py) and an MPI: the site's, or the
``mpich`` wheel from PyPI, which brings its own ``mpirun``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["mpi_run", "mpi_client", "start_cluster", "SCHEDULER_ENV"]

#: Environment variable naming an existing scheduler (``tcp://host:8786``): set by
#: :func:`mpi_run` for the command it runs, read by :func:`survey_ml.cluster.client.connect`.
SCHEDULER_ENV = "SURVEY_ML_SCHEDULER"

_HINT = "pip install 'survey_ml[hpc]' mpi4py (and an MPI: the site's, or `pip install mpich`)"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _comm():
    """MPI's world communicator (importing mpi4py initialises MPI)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"survey_ml.cluster.mpi needs mpi4py and an MPI library: {_HINT}") from exc
    return MPI.COMM_WORLD


def start_cluster(*, nthreads: int = 1, memory_limit: str | float = "auto", local_directory: str | None = None,
                  interface: str | None = None, protocol: str | None = None,
                  dashboard_address: str = "127.0.0.1:8787", worker_class: str = "distributed.Worker",
                  wait_timeout: float = 300.0, comm=None):
    """Make this MPI job a Dask cluster; return a client on rank 1, serve on the others.

    Parameters
    ----------
    nthreads : int
        Threads per worker rank (torch follows it: :func:`survey_ml.core.inference.predict_spectra`).
    memory_limit : str or float
        Per-worker memory before spilling: ``"3.5GiB"``, a fraction of the node's memory,
        or ``"auto"`` (the node's memory times ``nthreads`` / its cores: right when the
        ranks fill the node's cores one thread each).
    local_directory : str, optional
        Worker scratch (node-local disk, e.g. ``$TMPDIR``).
    interface, protocol
        Network interface (``"ib0"``) and protocol of scheduler and workers.
    dashboard_address : str
        Where rank 0 serves the dashboard (localhost by default).
    worker_class : str
        ``"distributed.Worker"`` (dask-mpi's default) or ``"distributed.Nanny"``.
    wait_timeout : float
        Seconds rank 1 waits for all worker ranks to register.
    comm : mpi4py.MPI.Intracomm, optional
        Default: ``MPI.COMM_WORLD``.

    Returns
    -------
    distributed.Client
        Only on rank 1, once all ``size - 2`` workers are up. Ranks 0 and >= 2 run the
        scheduler / a worker until rank 1 exits, then leave the process
        (``sys.exit``) without returning.

    Raises
    ------
    ImportError
        mpi4py or dask-mpi is missing.
    dask_mpi.WorldTooSmallException
        Fewer than 3 ranks.
    """
    comm = comm if comm is not None else _comm()
    if comm.Get_rank() >= 2:  # before numpy/torch load on a worker rank
        for variable in _THREAD_VARIABLES:
            os.environ.setdefault(variable, str(nthreads))
    try:
        from dask_mpi import initialize
    except ImportError as exc:
        raise ImportError(f"survey_ml.cluster.mpi needs dask-mpi: {_HINT}") from exc
    from distributed import Client

    initialize(interface=interface, nthreads=nthreads, local_directory=local_directory, memory_limit=memory_limit,
               dashboard_address=dashboard_address, protocol=protocol, worker_class=worker_class, comm=comm,
               exit=True)
    # Only rank 1 gets here: dask-mpi put the scheduler's address in the dask config.
    client = Client()
    client.wait_for_workers(comm.Get_size() - 2, timeout=wait_timeout)
    return client


def mpi_client():
    """A client of the cluster this MPI job runs (for ``connect(cluster="mpi")``).

    Raises
    ------
    RuntimeError
        Not inside ``mpirun ... python -m survey_ml.cli.mpi_launch`` (no scheduler announced).
    """
    import dask.config
    from distributed import Client

    address = os.environ.get(SCHEDULER_ENV) or dask.config.get("scheduler_address", default=None)
    if not address:
        raise RuntimeError("--cluster mpi works inside an MPI job started as "
                           "`mpirun -n N python -m survey_ml.cli.mpi_launch <command>` (N >= 3): no scheduler was announced")
    return Client(address)


def _executed_per_rank(client) -> dict[str, int]:
    """Tasks each worker rank has run (worker names are MPI ranks)."""
    counts = client.run(lambda dask_worker: (str(dask_worker.name), dask_worker.state.executed_count))
    return dict(sorted(counts.values(), key=lambda item: int(item[0]) if item[0].isdigit() else 0))


def mpi_run(command: Callable[[Any], Any], **options: Any) -> Any:
    """Run ``command(client)`` on this MPI job's cluster (rank 1), the other ranks serving it.

    Parameters
    ----------
    command : callable
        ``command(client)``: the launcher's survey-ml command
        (:func:`survey_ml.cli.mpi_launch.run_survey_ml`), or any function of a client.
    **options
        Passed to :func:`start_cluster`.

    Returns
    -------
    int or object
        On rank 1: what ``command`` returns. Other ranks never
        return (see :func:`start_cluster`).
    """
    client = start_cluster(**options)
    size = len(client.scheduler_info()["workers"])
    print(f"survey_ml.cluster.mpi: scheduler {client.scheduler.address} (rank 0), {size} workers (ranks 2-{size + 1}), "
          f"dashboard port {client.scheduler_info()['services'].get('dashboard')} on rank 0's node", flush=True)
    os.environ[SCHEDULER_ENV] = client.scheduler.address  # connect() in the command uses this cluster
    try:
        return command(client)
    finally:
        try:
            print(f"survey_ml.cluster.mpi: tasks run per worker rank {_executed_per_rank(client)}", flush=True)
            client.retire_workers(close_workers=True)  # let the workers go before dask-mpi stops the scheduler
        finally:
            client.close()
