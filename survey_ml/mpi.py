"""``mpirun -n N python -m survey_ml.mpi <survey-ml command>``: one MPI job, one Dask cluster.

Inside a batch allocation, dask-mpi turns the MPI ranks into a cluster: rank 0 runs the
scheduler, rank 1 runs the client - here any ``survey-ml`` subcommand, as ``python -m
survey_ml`` would (:func:`run_survey_ml`) - and ranks 2 to N-1 are workers. When the command
returns, the cluster shuts down and every rank exits::

    mpirun -n 66 python -m survey_ml.mpi --memory-limit 3.5GiB \\
        run-catalog dr10 --input /data/lamost/dr10 --out /scratch/$USER/dr10

Rank 1 waits for all N-2 workers before the command starts, and hands the scheduler's
address to it through ``$SURVEY_ML_SCHEDULER`` (so :func:`survey_ml.cluster.connect` uses
this cluster whatever ``--cluster`` says). The launcher's own options come before the
command. Workers are single-threaded by default, with ``OMP_NUM_THREADS`` (and the MKL /
OpenBLAS equivalents) set to their thread count unless already set, so 32 ranks on a
32-core node do not each start 32 BLAS threads. The dashboard listens on localhost of
rank 0's node (``ssh -L 8787:localhost:8787 <that node>``).

Needs ``pip install 'survey_ml[hpc]'`` (dask-mpi, mpi4py) and an MPI: the site's, or the
``mpich`` wheel from PyPI, which brings its own ``mpirun``.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["mpi_run", "mpi_client", "start_cluster", "main", "SCHEDULER_ENV"]

#: Environment variable naming an existing scheduler (``tcp://host:8786``): set by
#: :func:`mpi_run` for the command it runs, read by :func:`survey_ml.cluster.connect`.
SCHEDULER_ENV = "SURVEY_ML_SCHEDULER"

_HINT = "pip install 'survey_ml[hpc]' mpi4py (and an MPI: the site's, or `pip install mpich`)"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _comm():
    """MPI's world communicator (importing mpi4py initialises MPI)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"survey_ml.mpi needs mpi4py and an MPI library: {_HINT}") from exc
    return MPI.COMM_WORLD


def start_cluster(*, nthreads: int = 1, memory_limit: str | float = "auto", local_directory: str | None = None,
                  interface: str | None = None, protocol: str | None = None,
                  dashboard_address: str = "127.0.0.1:8787", worker_class: str = "distributed.Worker",
                  wait_timeout: float = 300.0, comm=None):
    """Make this MPI job a Dask cluster; return a client on rank 1, serve on the others.

    Parameters
    ----------
    nthreads : int
        Threads per worker rank (torch follows it: :func:`survey_ml.infer.predict_spectra`).
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
        raise ImportError(f"survey_ml.mpi needs dask-mpi: {_HINT}") from exc
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
        Not inside ``mpirun ... python -m survey_ml.mpi`` (no scheduler announced).
    """
    import dask.config
    from distributed import Client

    address = os.environ.get(SCHEDULER_ENV) or dask.config.get("scheduler_address", default=None)
    if not address:
        raise RuntimeError("--cluster mpi works inside an MPI job started as "
                           "`mpirun -n N python -m survey_ml.mpi <command>` (N >= 3): no scheduler was announced")
    return Client(address)


def _executed_per_rank(client) -> dict[str, int]:
    """Tasks each worker rank has run (worker names are MPI ranks)."""
    counts = client.run(lambda dask_worker: (str(dask_worker.name), dask_worker.state.executed_count))
    return dict(sorted(counts.values(), key=lambda item: int(item[0]) if item[0].isdigit() else 0))


def mpi_run(command: Sequence[str] | Callable[[Any], Any], **options: Any) -> Any:
    """Run a survey-ml command (or a function of a client) on this MPI job's cluster.

    Parameters
    ----------
    command : list of str or callable
        ``survey-ml`` arguments (``["run-catalog", "dr10", "--input", ...]``), run by
        :func:`run_survey_ml`; or ``function(client)``.
    **options
        Passed to :func:`start_cluster`.

    Returns
    -------
    int or object
        On rank 1: the command's exit status (or the function's result). Other ranks never
        return (see :func:`start_cluster`).
    """
    client = start_cluster(**options)
    size = len(client.scheduler_info()["workers"])
    print(f"survey_ml.mpi: scheduler {client.scheduler.address} (rank 0), {size} workers (ranks 2-{size + 1}), "
          f"dashboard port {client.scheduler_info()['services'].get('dashboard')} on rank 0's node", flush=True)
    os.environ[SCHEDULER_ENV] = client.scheduler.address  # connect() in the command uses this cluster
    try:
        if callable(command):
            return command(client)
        return run_survey_ml(command)
    finally:
        try:
            print(f"survey_ml.mpi: tasks run per worker rank {_executed_per_rank(client)}", flush=True)
            client.retire_workers(close_workers=True)  # let the workers go before dask-mpi stops the scheduler
        finally:
            client.close()


def run_survey_ml(argv: Sequence[str]) -> int:
    """Run ``survey-ml argv`` in this process, as ``python -m survey_ml argv`` would.

    The package's ``__main__`` runs through :mod:`runpy` (with ``sys.argv`` set to the
    command for its duration) rather than this module importing :mod:`survey_ml.cli`: the
    CLI sits above this module (cli -> cluster -> mpi), and the launcher is the CLI's
    caller, not a module it may depend on.

    Parameters
    ----------
    argv : list of str
        ``survey-ml`` arguments (``["run-catalog", "dr10", "--input", ...]``).

    Returns
    -------
    int
        The command's exit status (argparse errors and ``sys.exit`` in a command included).
    """
    saved = sys.argv
    sys.argv = ["survey-ml", *argv]
    try:
        runpy.run_module("survey_ml", run_name="__main__", alter_sys=False)  # ends in sys.exit(main())
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The launcher's options; everything from the first non-option is the survey-ml command."""
    p = argparse.ArgumentParser(
        prog="mpirun -n N python -m survey_ml.mpi",
        description="Run a survey-ml command on a Dask cluster made of this MPI job's ranks: rank 0 "
                    "scheduler, rank 1 the command, ranks 2.. workers.",
        epilog="example: mpirun -n 34 python -m survey_ml.mpi --memory-limit 3.5GiB run-catalog dr10 "
               "--input /data/dr10 --out /scratch/dr10")
    p.add_argument("--nthreads", type=int, default=1, help="threads per worker rank (default 1)")
    p.add_argument("--memory-limit", default="auto",
                   help="memory per worker rank before spilling, e.g. 3.5GiB (default auto: the node's memory "
                        "times nthreads / cores)")
    p.add_argument("--local-directory", default=None, help="worker scratch, e.g. $TMPDIR (node-local disk)")
    p.add_argument("--interface", default=None, help="network interface, e.g. ib0")
    p.add_argument("--protocol", default=None, help="tcp (default), ucx, ...")
    p.add_argument("--dashboard-address", default="127.0.0.1:8787",
                   help="rank 0's dashboard (default 127.0.0.1:8787: that node only)")
    p.add_argument("--worker-class", default="distributed.Worker",
                   choices=["distributed.Worker", "distributed.Nanny"], help="worker rank type")
    p.add_argument("--wait-timeout", type=float, default=300.0, help="seconds to wait for the worker ranks")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="the survey-ml subcommand and its arguments (run-catalog dr10 --input ...)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m survey_ml.mpi``: every rank runs it."""
    args = build_parser().parse_args(argv)
    if not args.command:
        build_parser().error("give the survey-ml command to run, e.g. run-catalog dr10 --input ...")
    return int(mpi_run(args.command, nthreads=args.nthreads, memory_limit=args.memory_limit,
                       local_directory=args.local_directory, interface=args.interface, protocol=args.protocol,
                       dashboard_address=args.dashboard_address, worker_class=args.worker_class,
                       wait_timeout=args.wait_timeout) or 0)


if __name__ == "__main__":
    sys.exit(main())
