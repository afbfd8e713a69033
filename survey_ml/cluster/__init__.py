"""Where the work runs: the Dask cluster of a command (:mod:`.client`: local, dask-cuda, HPC
batch jobs through :mod:`.hpc`, an MPI job through :mod:`.mpi`) and ``run_blocks``, the one
way survey_ml maps a function over blocks, on the cluster or in this process.

Everything above this package (stores, simulators, training, tasks, the catalog engine)
reaches a cluster only through it; it imports nothing of survey_ml but itself.
"""
from .client import connect, current_client, run_blocks

__all__ = ["connect", "current_client", "run_blocks"]
