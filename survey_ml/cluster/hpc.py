"""HPC clusters: SLURM and PBS batch jobs of Dask workers, through dask-jobqueue.

The client (``survey-ml ... --cluster slurm``) runs where it is started - a login node or a
small job - with the scheduler in its own process; the workers are batch jobs that
dask-jobqueue submits (``sbatch`` / ``qsub``), each job one node's share of cores, memory
and GPUs. What a job asks for is merged from four places, later ones winning:

1. survey_ml's defaults (:data:`DEFAULTS`);
2. the Dask config ``jobqueue.<kind>`` - ``~/.config/dask/jobqueue.yaml``, or
   ``deploy/jobqueue.yaml`` copied there, or ``DASK_JOBQUEUE__SLURM__QUEUE=...``;
3. the release spec's ``[cluster.slurm]`` / ``[cluster.pbs]`` table;
4. what the caller passes (CLI flags, keyword arguments).

CPU jobs run one single-threaded worker process per core (as the local cluster does: torch
threads follow the worker's thread count). With ``gpus > 0`` a job runs dask-cuda's worker
(``python -m dask_cuda.cli``): one worker per GPU of the job, each pinned to its device,
with the job's memory shared between them; the job asks for the GPUs with
``#SBATCH --gres=gpu:N`` or ``#PBS -l select=1:ncpus=C:ngpus=N:mem=M``.

The scheduler's dashboard listens on localhost of the machine running the client (reach it
with ``ssh -L 8787:localhost:8787 <login node>``). :func:`job_script` shows the batch script
each worker job gets, without starting anything. ``kind="local"`` runs the very same worker
command as local processes instead of batch jobs (dask-jobqueue's LocalCluster): a way to
check a configuration on a login node, and what the tests use.
"""
from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.config

__all__ = ["hpc_settings", "jobqueue_cluster", "job_script", "dashboard_link", "DEFAULTS", "KINDS"]

#: Cluster kinds: batch systems, plus ``local`` (the same worker jobs as local processes).
KINDS = ("slurm", "pbs", "local")

#: survey_ml's own defaults, the lowest layer of :func:`hpc_settings`.
DEFAULTS: dict[str, Any] = {
    "cores": 16,                  # CPU cores per job
    "memory": "60GiB",            # memory per job (below a 64 GB node's usable share)
    "processes": None,            # worker processes per job; None: one per core (one per GPU with gpus)
    "walltime": "02:00:00",
    "jobs": 1,                    # jobs the cluster is scaled to
    "gpus": 0,                    # GPUs per job; > 0: dask-cuda workers, one per GPU
    "job_name": "survey-ml",
    "queue": None,                # SLURM partition / PBS queue
    "account": None,
    "interface": None,            # network interface of workers and scheduler, e.g. "ib0"
    "local_directory": None,      # node-local scratch for spilling, e.g. "$TMPDIR"
    "log_directory": None,
    "job_extra_directives": [],   # more "#SBATCH ..." / "#PBS ..." lines
    "job_script_prologue": [],    # shell lines before the worker starts (module load, venv)
    "worker_extra_args": [],
    "python": None,               # the workers' Python (default: this one)
    "dashboard_address": "127.0.0.1:8787",
}

#: Dask-config spellings that differ from the setting's name.
_CONFIG_ALIASES = {"name": "job_name"}
#: Keyword arguments of the cluster object only (not of a single job).
_CLUSTER_ONLY = {"scheduler_options", "scheduler_cls", "silence_logs", "shared_temp_directory", "name",
                 "asynchronous", "loop", "security", "n_workers"}
#: Where a job script names its scheduler before one exists (as dask-jobqueue writes it).
SCHEDULER_PLACEHOLDER = "tcp://<insert-scheduler-address-here>:8786"
_HINT = "pip install 'survey_ml[hpc]' (dask-jobqueue)"


def _normalise(table: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keys as Python names (``local-directory`` -> ``local_directory``), None values dropped."""
    out = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        name = (aliases or {}).get(name, name)
        if value is not None:
            out[name] = value
    return out


def _jobqueue_shipped_defaults(kind: str) -> dict[str, Any]:
    """dask-jobqueue's own defaults for ``kind`` (empty when it is not installed).

    dask-jobqueue copies them into ``~/.config/dask/jobqueue.yaml`` on first import, so a
    config value equal to one of them says nothing about what the user wants.
    """
    try:
        importlib.import_module("dask_jobqueue")  # registers its defaults with dask.config
    except ImportError:
        return {}
    shipped: dict[str, Any] = {}
    for layer in dask.config.defaults:
        shipped.update(layer.get("jobqueue", {}).get(kind, {}) or {})
    return shipped


def _config_layer(kind: str, config: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``jobqueue.<kind>`` settings a user configured."""
    if config is None:
        section = dask.config.get(f"jobqueue.{kind}", default=None) or {}
        shipped = _jobqueue_shipped_defaults(kind)
        section = {k: v for k, v in section.items() if k not in shipped or shipped[k] != v}
        known = set(DEFAULTS) | {"job_cpu", "job_mem", "resource_spec", "death_timeout", "scheduler_options"}
        return {k: v for k, v in _normalise(section, _CONFIG_ALIASES).items() if k in known}
    if not isinstance(config, Mapping):
        import yaml

        config = yaml.safe_load(Path(config).read_text()) or {}
    return _normalise((config.get("jobqueue", {}) or {}).get(kind, {}) or {}, _CONFIG_ALIASES)


def hpc_settings(kind: str, spec: Mapping[str, Any] | None = None,
                 config: str | os.PathLike | Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The resources of each worker job of a ``kind`` cluster, from every layer that sets them.

    Parameters
    ----------
    kind : {"slurm", "pbs", "local"}
        The batch system (``local``: the same jobs as local processes).
    spec : dict, optional
        A release spec (:func:`survey_ml.config.load_release_spec`); its ``[cluster.<kind>]``
        table overrides the config.
    config : path or dict, optional
        A jobqueue.yaml file (or its parsed tree, ``{"jobqueue": {kind: {...}}}``) to use
        instead of the Dask config. By default the Dask config ``jobqueue.<kind>`` is read,
        ignoring values equal to dask-jobqueue's own defaults (which it copies into
        ``~/.config/dask/jobqueue.yaml``) and keys survey_ml does not set itself (those
        dask-jobqueue still reads from the config).
    **overrides
        The highest layer: ``cores``, ``processes``, ``memory``, ``walltime``, ``queue``,
        ``account``, ``gpus``, ``jobs``, ``local_directory``, ``job_extra_directives``,
        ``python``, ``dashboard_address``, ``scheduler_options``, or any other keyword of the
        dask-jobqueue cluster class. ``None`` means "not given".

    Returns
    -------
    dict
        The merged settings, with ``processes`` resolved: one worker per core, or one per
        GPU when ``gpus > 0`` (dask-cuda starts one worker per GPU).

    Raises
    ------
    ValueError
        An unknown kind, or cores / gpus / jobs / memory that make no sense.

    Examples
    --------
    >>> s = hpc_settings("slurm", config={}, cores=32, memory="120GiB", queue="cpu")
    >>> s["cores"], s["processes"], s["queue"], s["walltime"]
    (32, 32, 'cpu', '02:00:00')
    """
    if kind not in KINDS:
        raise ValueError(f"HPC cluster kind must be one of {', '.join(KINDS)}, not {kind!r}")
    table = ((spec or {}).get("cluster", {}) or {}).get(kind, {}) or {}
    settings: dict[str, Any] = dict(DEFAULTS)
    scheduler_options: dict[str, Any] = {}
    for layer in (_config_layer(kind, config), _normalise(table), _normalise(overrides)):
        scheduler_options.update(layer.pop("scheduler_options", None) or {})
        settings.update(layer)
    if scheduler_options:
        settings["scheduler_options"] = scheduler_options
    _check(settings)
    if settings["gpus"]:
        settings["processes"] = settings["gpus"]
    elif settings["processes"] is None:
        settings["processes"] = settings["cores"]
    return settings


def _check(settings: dict[str, Any]) -> None:
    from dask.utils import parse_bytes

    for key, least in (("cores", 1), ("gpus", 0), ("jobs", 0)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"HPC setting {key} must be an integer >= {least}, not {value!r}")
    processes = settings["processes"]
    if processes is not None and not settings["gpus"] and not (1 <= int(processes) <= settings["cores"]):
        raise ValueError(f"HPC setting processes={processes!r} must be between 1 and cores={settings['cores']}")
    try:
        if parse_bytes(settings["memory"]) <= 0:
            raise ValueError
    except (ValueError, TypeError) as exc:
        raise ValueError(f"HPC setting memory must be a size like '60GiB', not {settings['memory']!r}") from exc


def _jobqueue(kind: str):
    """The dask-jobqueue cluster class of ``kind``, with a clear error when it is missing."""
    try:
        if kind == "local":
            from dask_jobqueue.local import LocalCluster as cls
        elif kind == "pbs":
            from dask_jobqueue import PBSCluster as cls
        else:
            from dask_jobqueue import SLURMCluster as cls
    except ModuleNotFoundError as exc:
        if exc.name != "dask_jobqueue" and not str(exc.name or "").startswith("dask_jobqueue."):
            raise
        raise ImportError(f"--cluster {kind} needs dask-jobqueue, which is not installed: {_HINT}") from exc
    return cls


def _jobqueue_kwargs(kind: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the dask-jobqueue cluster class for ``settings``."""
    from dask.utils import parse_bytes

    s = {k: v for k, v in settings.items() if v is not None}
    s.pop("jobs")
    gpus = s.pop("gpus")
    scheduler_options = {"dashboard_address": s.pop("dashboard_address"), **s.pop("scheduler_options", {})}
    directives = [str(d) for d in s.pop("job_extra_directives", [])]
    for key in ("job_script_prologue", "worker_extra_args"):
        s[key] = [str(item) for item in s.get(key, [])]
    if gpus:
        # dask-cuda's worker starts one Nanny per visible GPU, named <name>-0, <name>-1, ... as
        # dask-jobqueue names the workers of a job with `processes` of them: so each GPU is one
        # process of the job, with one thread and 1/gpus of the job's memory.
        cores = s["cores"]
        s.update(worker_command="dask_cuda.cli", cores=gpus, processes=gpus)
        if kind == "slurm":
            s.setdefault("job_cpu", cores)  # book the job's cores, not just one per GPU
            if not any("gres" in d or d.lstrip("-").startswith(("gpus", "G ")) for d in directives):
                directives.append(f"--gres=gpu:{gpus}")
        elif kind == "pbs":
            from dask_jobqueue.pbs import pbs_format_bytes_ceil

            memory = pbs_format_bytes_ceil(parse_bytes(s["memory"]))
            s.setdefault("resource_spec", f"select=1:ncpus={cores}:ngpus={gpus}:mem={memory}")
    if kind == "local":  # no batch system: nothing to book, no account to charge
        for key in ("account", "job_cpu", "job_mem"):
            s.pop(key, None)
    return {**s, "job_extra_directives": directives, "scheduler_options": scheduler_options}


def job_script(kind: str, *, spec: Mapping[str, Any] | None = None, config=None, **overrides: Any) -> str:
    """The batch script each worker job of :func:`jobqueue_cluster` would be submitted with.

    Built by dask-jobqueue's own job class, as ``cluster.job_script()`` builds it, but
    without starting a scheduler: the scheduler address reads
    ``tcp://<insert-scheduler-address-here>:8786``.

    Parameters
    ----------
    kind, spec, config, **overrides
        As for :func:`hpc_settings` (``jobs``, ``gpus`` included).

    Returns
    -------
    str
        The script: ``#SBATCH`` / ``#PBS`` directives, the prologue, the worker command.
    """
    settings = hpc_settings(kind, spec=spec, config=config, **overrides)
    kwargs = _jobqueue_kwargs(kind, settings)
    job_cls = _jobqueue(kind).job_cls
    job_kwargs = {k: v for k, v in kwargs.items() if k not in _CLUSTER_ONLY}
    return job_cls(SCHEDULER_PLACEHOLDER, name="dummy-name", **job_kwargs).job_script()


def jobqueue_cluster(kind: str, *, jobs: int | None = None, gpus: int | None = None,
                     spec: Mapping[str, Any] | None = None, config=None, **overrides: Any):
    """A dask-jobqueue cluster of ``kind`` (SLURM, PBS or local), scaled to ``jobs`` worker jobs.

    Parameters
    ----------
    kind : {"slurm", "pbs", "local"}
        The batch system.
    jobs : int, optional
        Worker jobs to submit now (default: the settings' ``jobs``, 1); 0 submits none
        (``cluster.scale(jobs=...)`` or ``cluster.adapt(...)`` later).
    gpus : int, optional
        GPUs per job (default: the settings' ``gpus``, 0). With GPUs the workers are
        dask-cuda's, one per GPU.
    spec, config, **overrides
        As for :func:`hpc_settings`.

    Returns
    -------
    dask_jobqueue.SLURMCluster, dask_jobqueue.PBSCluster or dask_jobqueue.local.LocalCluster
        With ``survey_ml_settings`` (the merged settings) set. ``Client(cluster)`` uses it;
        ``cluster.close()`` cancels its jobs.

    Raises
    ------
    ImportError
        dask-jobqueue is not installed (the message names ``pip install 'survey_ml[hpc]'``).
    RuntimeError
        Jobs are asked for but the batch system's submit command (``sbatch``, ``qsub``) is
        not on PATH.

    Notes
    -----
    Call it under ``if __name__ == "__main__":`` in scripts.
    """
    settings = hpc_settings(kind, spec=spec, config=config, jobs=jobs, gpus=gpus, **overrides)
    cls = _jobqueue(kind)
    submit = (cls.job_cls.submit_command or "").split()
    if settings["jobs"] and submit and shutil.which(submit[0]) is None:
        # dask-jobqueue would fail in the background and leave the cluster without workers
        raise RuntimeError(f"--cluster {kind}: `{submit[0]}` is not on PATH here; start survey-ml where "
                           f"{kind.upper()} jobs can be submitted (a login node), or use deploy/ scripts")
    cluster = cls(**_jobqueue_kwargs(kind, settings))
    cluster.survey_ml_settings = settings
    try:
        if settings["jobs"]:
            cluster.scale(jobs=settings["jobs"])
    except Exception:
        cluster.close()
        raise
    return cluster


def dashboard_link(cluster) -> str:
    """Where the dashboard of a cluster's scheduler can really be opened.

    ``cluster.dashboard_link`` names the scheduler's network address, but survey_ml binds the
    dashboard to localhost by default; this gives ``http://127.0.0.1:<port>/status`` then.
    """
    port = cluster.scheduler_info.get("services", {}).get("dashboard")
    address = str(getattr(cluster, "scheduler_spec", {}).get("options", {}).get("dashboard_address") or "")
    host = address.rpartition(":")[0].strip("[]") if ":" in address else ""
    if port is None or host in ("", "0.0.0.0", "::", "*"):
        return cluster.dashboard_link
    return f"http://{host}:{port}/status"
