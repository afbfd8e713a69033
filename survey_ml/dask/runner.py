"""``run-catalog``: any release spec end to end, through one runner.

::

    survey files --ingest--> store (Zarr + row table)       (or a mock release when no data is given)
        --tasks that learn from the release (kinematics solo / combined)-->
        --Dask, one task per Zarr chunk: the spec's tasks--> catalog/part-NNNNNN.parquet
        --> tasks' sample-level steps --> <catalog>.fits, MZR / TFR fits and plots, report.json, report.html

The same code runs ``dr10`` (spectra: metallicity, sfclass, redshift), ``manga-dr17`` and
``sami-dr3`` (maps: kinematics) and any user spec: the tasks a spec names under
``[tasks.*]`` run per block (:func:`survey_ml.dask.blocks.catalog_block`), in the spec's
order, each on the worker's own device. Parts already written by the same tasks, weights,
spec and store are kept, so re-running a command resumes it and never writes a row twice.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .._version import __version__
from ..catalog.hats import export_hats
from ..catalog.parts import export_fits, export_votable, finished_parts, read_catalog, tidy_catalog_dir
from ..relations.catalog import fit_catalog_mzr, fit_catalog_tfr
from .blocks import write_catalog_part
from .catalog import LazyRelease
from .inputs import prepare_store, release_kind
from ..report.progress import RunJournal
from ..report.html import write_html_report
from ..config import load_release_spec, spec_digest
from ..store.lock import FolderLock
from ..tasks.base import Task

__all__ = ["run_catalog", "RunReport"]


@dataclass
class RunReport:
    """What a run-catalog did and where its outputs are (also written as ``report.json``)."""

    release: str
    kind: str
    out: Path
    store: Path
    catalog_dir: Path
    n_rows: int
    parts_total: int
    parts_written: int
    status_counts: dict[str, int]
    timings: dict[str, float]
    tasks: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    mzr: dict[str, Any] | None = None
    tfr: dict[str, Any] = field(default_factory=dict)
    dashboard: str | None = None
    notes: list[str] = field(default_factory=list)

    def lsdb(self, **kwargs: Any):
        """The catalog as an ``lsdb.Catalog`` (lazy, on the current Dask client), from the run's HATS collection."""
        from ..catalog.hats import open_lsdb

        if "hats" not in self.outputs:
            raise FileNotFoundError(f"{self.out}: this run wrote no HATS collection ([outputs] hats in the spec)")
        return open_lsdb(self.outputs["hats"], **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings): the content of ``report.json``."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    def summary(self) -> str:
        """The lines ``survey-ml run-catalog`` prints at the end."""
        unit = "galaxies" if self.kind == "maps" else "rows"
        resumed = self.parts_total - self.parts_written
        lines = [f"run-catalog {self.release}: {self.n_rows} {unit} -> {self.catalog_dir} ({self.parts_written} of "
                 f"{self.parts_total} part{'' if self.parts_total == 1 else 's'} written"
                 + (f", {resumed} already done and kept)" if resumed else ")") + f"; tasks: {', '.join(self.tasks)}"]
        counts = dict(self.status_counts)
        n_flagged = counts.pop("sf_flag", None)
        n_reliable = counts.pop("z_cnn_reliable", None)
        for status, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {status:<16s} {count:8d}")
        if n_flagged is not None:
            lines.append(f"  star-forming (sf_flag, p_starforming >= threshold): {n_flagged}")
        if n_reliable is not None:
            lines.append(f"  redshifts (z_cnn) with z_cnn_flag == 0: {n_reliable}")
        t = self.timings
        rate = t.get("inference_rows_per_s")
        lines.append("  timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items() if not k.endswith("_per_s"))
                     + (f"; inference {rate:.0f} {unit}/s" if rate else ""))
        if self.mzr:
            lines.append(f"  MZR ({self.mzr['n']} sf_flag galaxies): {self.mzr['summary']}")
        elif "sf_flag" in self.status_counts and self.mzr is None:
            lines.append("  MZR: not fitted (no stellar masses: pass --masses)")
        for kind, fit in self.tfr.items():
            if "slope" in fit:
                lines.append(f"  TFR {kind:<8s} slope {fit['slope']:.3f} +- {fit['slope_err']:.3f}, intercept "
                             f"{fit['intercept']:.3f} +- {fit['intercept_err']:.3f} (pivot {fit['pivot']}), rms "
                             f"{fit['rms']:.3f}, {fit['n']} galaxies")
            else:
                lines.append(f"  TFR {kind:<8s} not fitted: {fit.get('error')}")
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  {name:<8s} {path}" for name, path in self.outputs.items()]
        if self.dashboard:
            lines.append(f"  dashboard {self.dashboard}")
        return "\n".join(lines)


def run_catalog(release: str | os.PathLike | dict[str, Any] = "dr10", *, input: str | os.PathLike | None = None,
                store: str | os.PathLike | None = None, out: str | os.PathLike | None = None, client=None,
                masses: str | os.PathLike | None = None, weights: dict[str, str] | None = None,
                tasks: Sequence[str | Task] | None = None, n_mock: int | None = None,
                catalogue: str | os.PathLike | None = None, truth: str | os.PathLike | None = None,
                progress: bool = True) -> RunReport:
    """Run a release spec end to end: (mock or ingest) -> tasks per block -> catalog -> relations -> report.

    Parameters
    ----------
    release : str, path or dict
        Release spec name (``"dr10"``, ``"manga-dr17"``, ``"sami-dr3"``), TOML path, or a parsed spec.
    input : path, optional
        Survey files to ingest: a folder (with the spec's catalogue and files), a catalogue,
        or a file list. With neither ``input`` nor ``store``, a mock release of the spec's
        ``[simulate]`` size is written first, and its truth table gives stellar masses.
    store : path, optional
        An ingested release store (or where to ingest ``input``; default ``<out>/store``).
    out : path, optional
        Output folder (default ``./survey_ml_<release>``).
    client : distributed.Client, optional
        Cluster; default the current client, else a LocalCluster made (and closed) here.
    masses : path, optional
        Stellar-mass table for the MZR (:func:`survey_ml.relations.catalog.attach_masses`).
    weights : dict, optional
        Weights file per task name, overriding the spec's.
    tasks : sequence, optional
        Task names (or Task objects) to run instead of every ``[tasks.*]`` of the spec.
    n_mock : int, optional
        Size of the default mock release.
    catalogue : path, optional
        IFU releases: the DRPall / SAMI catalogue to join (default: the spec's, inside ``input``).
    truth : path, optional
        Truth table of a mock ``input`` (Parquet / CSV / FITS), for the report's predicted-vs-true
        and error-coverage figures; default ``truth.parquet`` beside ``input`` (what ``survey-ml
        simulate`` and ``simulate.crosscheck`` write). Without ``masses``, its ``log_mstar`` gives
        the MZR its stellar masses (the report says so).
    progress : bool
        Progress bars.
    """
    spec = release if isinstance(release, dict) else load_release_spec(release)
    name = spec["release"]["name"]
    out = Path(out or f"survey_ml_{name}")
    # one run per output folder, refused before a cluster starts (a killed run's lock is taken over)
    with FolderLock(out, "run-catalog"):
        return _run_locked(spec, name, out, input, store, client, masses, weights, tasks, n_mock, catalogue, truth,
                           progress)


def _run_locked(spec: dict[str, Any], name: str, out: Path, input, store, client, masses, weights, tasks, n_mock,
                catalogue, truth, progress: bool) -> RunReport:
    """:func:`run_catalog` once its output folder is locked: the cluster, the stages, the report, the journal."""
    import dask

    from ..cluster.client import connect, current_client

    catalog_dir = out / spec.get("outputs", {}).get("catalog", "catalog")
    own_client = client is None and current_client(None) is None
    client = connect(quiet=not progress) if own_client else current_client(client)
    journal = RunJournal(out, name, catalog_dir)
    try:
        report, catalog, run_truth, built = _run(spec, name, out, catalog_dir, input, store, client, masses, weights, tasks,
                                                 n_mock, catalogue, truth, progress, journal)
        report.dashboard = getattr(client, "dashboard_link", None)
        report.provenance |= {"python": platform.python_version(), "dask": dask.__version__}
        report.outputs["report"] = str(out / "report.json")
        report.outputs["html"] = str(out / "report.html")
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
        journal.stage("report")
        write_html_report(out, report.to_dict(), truth=run_truth, catalog=catalog,
                          figures_from_tasks=[f for task in built for f in task.figures(catalog)])
        journal.finish(report.outputs)
        return report
    except BaseException as err:
        journal.fail(err)
        raise
    finally:
        if own_client:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def _has_masses(table: Path) -> bool:
    """Whether a truth table has a stellar-mass column (the parametric mock's has none)."""
    if Path(table).suffix not in (".parquet", ".pq"):
        return False
    import pyarrow.parquet as pq

    return "log_mstar" in pq.read_schema(table).names


def _run(spec: dict[str, Any], name: str, out: Path, catalog_dir: Path, input, store, client, masses, weights,
         tasks, n_mock, catalogue, given_truth, progress: bool, journal: RunJournal) -> tuple[RunReport, pd.DataFrame, Path | None, list[Task]]:
    """The stages of :func:`run_catalog`; returns the report, the finalised catalog, the truth table and the tasks."""
    from ..cluster.client import run_blocks
    from ..core.inference import weights_sha256

    timings: dict[str, float] = {}
    journal.stage("prepare")
    t0 = time.perf_counter()
    store_path, truth = prepare_store(spec, out, input, store, client, n_mock, catalogue, progress)
    truth = Path(given_truth) if given_truth is not None else truth
    timings["prepare"] = time.perf_counter() - t0
    release = LazyRelease(store_path, spec)
    if release.kind != release_kind(spec):
        raise ValueError(f"{store_path} holds {release.kind}, the spec {spec['release'].get('spec_path')} "
                         f"reads {release_kind(spec)}")
    built = release.tasks(tasks, weights)
    if any(type(t).fit_to_release is not Task.fit_to_release for t in built):
        journal.stage("training")
        t0 = time.perf_counter()
        built = [t.fit_to_release(store_path, spec, out, client, progress) for t in built]
        timings["training"] = time.perf_counter() - t0
    provenance = {"version": __version__, "release": name,
                  "spec": Path(spec["release"].get("spec_path", name)).name,
                  "spec_digest": spec_digest(spec, ("cuts", "tasks", "prepare")), "store": str(store_path.resolve()),
                  "tasks": [t.name for t in built],
                  "weights_sha256": {t.name: weights_sha256(t.weights) for t in built if t.weights},
                  "weights": {t.name: Path(t.weights).name for t in built if t.weights}}
    n_chunks = release.npartitions
    require = {k: provenance[k] for k in ("spec_digest", "store", "tasks", "weights_sha256")}
    done = finished_parts(catalog_dir, n_chunks, require=require)
    todo = [k for k in range(n_chunks) if k not in done]
    tidy_catalog_dir(catalog_dir, n_chunks)  # parts of chunks the store lacks, old torn temporaries
    journal.stage("inference", total=n_chunks, kept=done)
    t0 = time.perf_counter()
    results = run_blocks(write_catalog_part, release.catalog_parts(built, catalog_dir, provenance, todo), client,
                         desc="catalog", progress=progress, on_result=journal.block_callback(todo))
    timings["inference"] = time.perf_counter() - t0
    rows_done = sum(r["rows"] for r in results)
    if rows_done:
        timings["inference_rows_per_s"] = rows_done / timings["inference"]

    journal.stage("outputs")
    t0 = time.perf_counter()
    catalog = read_catalog(catalog_dir)
    n_rows = release.store.n_rows
    if len(catalog) != n_rows or not np.array_equal(catalog["row"].to_numpy(), np.arange(n_rows)):
        raise RuntimeError(f"{catalog_dir}: catalog rows do not match the store's {n_rows} rows")
    for task in built:
        catalog = task.finalize(catalog)
    outputs = {"catalog": str(catalog_dir)}
    notes: list[str] = []
    default_fits = f"{name}_{ {'maps': 'kinematics', 'echelle': 'stellar'}.get(release.kind, 'metallicity')}.fits"
    outputs["fits"] = str(export_fits(catalog_dir, out / spec.get("outputs", {}).get("fits", default_fits),
                                      frame=catalog, columns=release.columns(built)))
    if spec.get("outputs", {}).get("votable"):  # for TOPCAT and the VO: units, UCDs, descriptions
        outputs["votable"] = str(export_votable(catalog_dir, out / spec["outputs"]["votable"], frame=catalog,
                                                columns=release.columns(built)))
    if spec.get("outputs", {}).get("hats"):  # for LSDB: HEALPix-partitioned, margin cache, built on this cluster
        finalized = any(type(t).finalize is not Task.finalize for t in built)
        hats = export_hats(catalog_dir, out / spec["outputs"]["hats"], client, name=name,
                           frame=catalog if finalized else None, columns=release.columns(built),
                           margin_arcsec=float(spec["outputs"].get("hats_margin_arcsec", 10.0)))
        outputs["hats"] = str(hats.path)
        if hats.n_unplaced:
            notes.append(f"{hats.n_unplaced} rows without ra/dec are not in the HATS catalog (they are in the "
                         "Parquet parts and the FITS table)")
    mzr, tfr = None, {}
    if masses is None and truth is not None and {"oh12", "sf_flag"} <= set(catalog.columns):
        if _has_masses(truth):
            masses = truth
            notes.append(f"stellar masses for the MZR from the mock release's truth table {truth}")
        else:
            notes.append(f"the mock release's truth table {truth} has no stellar masses (log_mstar)")
    if {"oh12", "sf_flag"} <= set(catalog.columns) and masses is not None:
        mzr, plots = fit_catalog_mzr(catalog, masses, spec, out, name)
        outputs.update(plots)
    if {"vmax_ad_kms", "kin_flag"} <= set(catalog.columns):
        tfr, plots = fit_catalog_tfr(catalog, out, name)
        outputs.update(plots)
    timings["outputs"] = time.perf_counter() - t0
    counts = {str(k): int(v) for k, v in catalog["status"].value_counts().items()}
    if "sf_flag" in catalog:
        counts["sf_flag"] = int(catalog["sf_flag"].sum())
    if "z_cnn_flag" in catalog:
        counts["z_cnn_reliable"] = int((catalog["z_cnn_flag"] == 0).sum())
    report = RunReport(release=name, kind=release.kind, out=out, store=store_path, catalog_dir=catalog_dir,
                       n_rows=n_rows, parts_total=n_chunks, parts_written=len(todo), status_counts=counts,
                       timings=timings, tasks=[t.name for t in built], outputs=outputs, provenance=provenance,
                       mzr=mzr, tfr=tfr, notes=notes)
    return report, catalog, truth, built
