"""``mpirun -n N python -m survey_ml.cli.mpi_launch <survey-ml command>``: one MPI job, one Dask cluster.

Every rank runs :func:`main`: rank 0 becomes the scheduler, ranks 2.. the workers
(:func:`survey_ml.cluster.mpi.start_cluster`), and rank 1 runs the survey-ml command on that
cluster, as ``python -m survey_ml`` would (:func:`run_survey_ml`)::

    mpirun -n 66 python -m survey_ml.cli.mpi_launch --memory-limit 3.5GiB \\
        run-catalog dr10 --input /data/lamost/dr10 --out /scratch/$USER/dr10

The launcher's own options come before the command.
"""
from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Sequence

from ..cluster.mpi import mpi_run

__all__ = ["run_survey_ml", "build_parser", "main"]


def run_survey_ml(argv: Sequence[str]) -> int:
    """Run ``survey-ml argv`` in this process, as ``python -m survey_ml argv`` would.

    The package's ``__main__`` runs through :mod:`runpy` (with ``sys.argv`` set to the
    command for its duration) rather than importing :mod:`survey_ml.cli.main`: the launcher
    runs the CLI as a program, exactly as a shell would, and neither depends on the other.

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
        prog="mpirun -n N python -m survey_ml.cli.mpi_launch",
        description="Run a survey-ml command on a Dask cluster made of this MPI job's ranks: rank 0 "
                    "scheduler, rank 1 the command, ranks 2.. workers.",
        epilog="example: mpirun -n 34 python -m survey_ml.cli.mpi_launch --memory-limit 3.5GiB run-catalog dr10 "
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
    """Entry point of ``python -m survey_ml.cli.mpi_launch``: every rank runs it."""
    args = build_parser().parse_args(argv)
    if not args.command:
        build_parser().error("give the survey-ml command to run, e.g. run-catalog dr10 --input ...")
    return int(mpi_run(lambda client: run_survey_ml(args.command), nthreads=args.nthreads, memory_limit=args.memory_limit,
                       local_directory=args.local_directory, interface=args.interface, protocol=args.protocol,
                       dashboard_address=args.dashboard_address, worker_class=args.worker_class,
                       wait_timeout=args.wait_timeout) or 0)


if __name__ == "__main__":
    sys.exit(main())
