"""One block of a release through the tasks a run names: the catalog rows of one Zarr chunk.

:func:`catalog_block` is the per-block function (pure: arrays and rows in, a frame out; no
Dask inside, correct on 0 rows). Every row of the block gets a catalog row:

* the head columns of its input kind (:data:`HEAD_COLUMNS`: identifiers, position, redshift);
* the release ``[cuts]`` (spectra: catalogue z and S/N_r) as ``cut_z`` / ``cut_snr``;
* each task's columns, in the order the tasks are given (:meth:`survey_ml.tasks.Task.run`);
* ``status`` and ``message``: the ingest status, else the first reason a cut or a task
  rejected the row, else ``ok`` / ``masked_values``.

:func:`write_catalog_part` is the Dask task around it: it reads its own chunk from the store
(so arrays never travel between workers), runs the tasks on this worker's device, and writes
the chunk's Parquet part atomically.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..core.inference import default_device, worker_threads
from ..core.quality import USABLE_STATUSES
from ..tasks.base import Block, Column, Task

__all__ = ["catalog_block", "catalog_columns", "write_catalog_part", "HEAD_COLUMNS", "TAIL_COLUMNS"]

#: Columns every catalog of an input kind starts with: (column, row-table source).
HEAD_COLUMNS: dict[str, tuple[tuple[Column, str], ...]] = {
    "spectra": (
        (Column("row", "int64", "", "row of the release store", ucd="meta.record"), "row"),
        (Column("obsid", "int64", "", "survey spectrum identifier (-1 if unknown)", fill=-1, ucd="meta.id;meta.main"),
         "obsid"),
        (Column("ra", "float64", "deg", "right ascension (ICRS)", ucd="pos.eq.ra;meta.main"), "ra"),
        (Column("dec", "float64", "deg", "declination (ICRS)", ucd="pos.eq.dec;meta.main"), "dec"),
        (Column("z", "float64", "", "catalogue redshift", ucd="src.redshift"), "z"),
        (Column("snr_r", "float32", "", "catalogue S/N per pixel in the r band", ucd="stat.snr;em.opt.R"), "snrr"),
    ),
    "maps": (
        (Column("row", "int64", "", "row of the release store", ucd="meta.record"), "row"),
        (Column("id", "string", "", "survey galaxy identifier (SAMI catid, MaNGA plateifu)", ucd="meta.id;meta.main"), "id"),
        (Column("ra", "float64", "deg", "right ascension (ICRS)", ucd="pos.eq.ra;meta.main"), "ra"),
        (Column("dec", "float64", "deg", "declination (ICRS)", ucd="pos.eq.dec;meta.main"), "dec"),
        (Column("z", "float64", "", "catalogue redshift", ucd="src.redshift"), "z"),
        (Column("log_mstar", "float64", "dex(solMass)", "stellar mass from the survey catalogue", ucd="phys.mass"),
         "log_mstar"),
        (Column("abs_mag_r", "float64", "mag", "r-band absolute magnitude from the survey catalogue",
                ucd="phys.magAbs;em.opt.R"), "abs_mag_r"),
        (Column("r_e_arcsec", "float64", "arcsec", "effective radius from the survey catalogue", ucd="phys.angSize;src"),
         "r_e_arcsec"),
    ),
    "echelle": (
        (Column("row", "int64", "", "row of the release store", ucd="meta.record"), "row"),
        (Column("exposure", "string", "", "instrument and DATE-OBS of the exposure", ucd="meta.id;meta.main"),
         "exposure"),
        (Column("object", "string", "", "target name from the header", ucd="meta.id"), "object"),
        (Column("ra", "float64", "deg", "right ascension of the telescope pointing (ICRS)", ucd="pos.eq.ra;meta.main"),
         "ra"),
        (Column("dec", "float64", "deg", "declination of the telescope pointing (ICRS)", ucd="pos.eq.dec;meta.main"),
         "dec"),
        (Column("bjd", "float64", "d", "barycentric Julian date of the exposure (from the pipeline)",
                ucd="time.epoch;obs"), "bjd"),
        (Column("berv", "float64", "km / s", "barycentric correction applied to the wavelengths",
                ucd="spect.dopplerVeloc;pos.barycenter"), "berv"),
        (Column("sn50", "float32", "", "S/N per pixel near 550 nm (pipeline header)", ucd="stat.snr"), "sn50"),
        (Column("format", "string", "", "file format read (harps-e2ds, harps-s1d, espresso-s2d, eso-1d)",
                ucd="meta.code"), "format"),
    ),
}
TAIL_COLUMNS = (Column("status", "string", "", "ok / masked_values (predicted), or why a row was not", ucd="meta.code.qual"),
                Column("message", "string", "", "what went wrong, naming the file, when status says so", ucd="meta.note"))
#: Status and message of a usable row outside the release ``[cuts]``, in the order they are tested.
_CUT_MESSAGES = {"cut_z": "catalogue z outside [{z_min}, {z_max}]", "cut_snr": "S/N_r below {snr_r_min}"}
#: ... and when the value the cut reads is missing, say that rather than what the cut saw.
_MISSING_MESSAGES = {"cut_z": "no catalogue redshift (the file's Z is missing or not measured)",
                     "cut_snr": "no catalogue S/N_r (the file's SNRR is missing or not measured)"}


def catalog_columns(kind: str, tasks: Sequence[Task]) -> list[Column]:
    """Every column of a catalog of ``kind`` made by ``tasks``, in order.

    Examples
    --------
    >>> from survey_ml.tasks import get_task
    >>> [c.name for c in catalog_columns("spectra", [get_task("sfclass")()])]
    ['row', 'obsid', 'ra', 'dec', 'z', 'snr_r', 'p_starforming', 'sf_flag', 'status', 'message']
    """
    if kind not in HEAD_COLUMNS:
        raise ValueError(f"no catalog layout for input kind {kind!r} (known: {', '.join(HEAD_COLUMNS)})")
    columns = [c for c, _ in HEAD_COLUMNS[kind]]
    for task in tasks:
        if task.input_kind != kind:
            raise ValueError(f"task {task.name!r} reads {task.input_kind}, this release holds {kind}")
        columns += task.columns
    columns += TAIL_COLUMNS
    names = [c.name for c in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"the tasks {[t.name for t in tasks]} write the same columns twice: {repeated}")
    return columns


def _head_values(kind: str, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for column, source in HEAD_COLUMNS[kind]:
        if source not in rows:
            out[column.name] = column.empty(len(rows))
        elif column.dtype == "string":
            out[column.name] = rows[source].astype(str).to_numpy()
        elif column.dtype == "int64":
            out[column.name] = rows[source].to_numpy(np.int64, na_value=column.missing())
        else:
            out[column.name] = rows[source].to_numpy(float, na_value=np.nan).astype(column.dtype)
    return out


def _apply_cuts(block: Block, cuts: dict[str, float]) -> None:
    """Usable rows outside the release ``[cuts]`` get ``cut_z`` / ``cut_snr`` (spectra)."""
    from ..core.spectra import select_rows

    n = len(block)
    if not cuts or not {"z", "snrr"} <= set(block.rows.columns):
        return
    z = block.rows["z"].to_numpy(dtype=float)
    snr = block.rows["snrr"].to_numpy(dtype=float)
    inside = {"cut_z": select_rows(z, np.zeros(n), {k: v for k, v in cuts.items() if k.startswith("z_")}),
              "cut_snr": select_rows(np.zeros(n), snr, {k: v for k, v in cuts.items() if k.startswith("snr")})}
    values = {"z_min": None, "z_max": None, "snr_r_min": None, **cuts}
    missing = {"cut_z": np.isnan(z), "cut_snr": np.isnan(snr)}
    for reason, text in _CUT_MESSAGES.items():
        outside = ~inside[reason]
        block.reject(np.flatnonzero(outside & missing[reason]), reason, _MISSING_MESSAGES[reason])
        block.reject(np.flatnonzero(outside & ~missing[reason]), reason, text.format(**values))


def catalog_block(arrays: dict[str, np.ndarray], rows: pd.DataFrame, info: dict[str, Any], kind: str,
                  tasks: Sequence[Task], cuts: dict[str, float] | None = None, chunk: int = 0,
                  device: str | None = None, threads: int | None = None) -> pd.DataFrame:
    """Catalog rows of one block: head columns, every task's columns, status and message.

    Parameters
    ----------
    arrays : dict
        The block's store arrays (:meth:`Release.read_block`).
    rows : pandas.DataFrame
        The block's rows of the store's row table (same order).
    info : dict
        The store's ``release.json``.
    kind : str
        The store's input kind (``"spectra"``, ``"maps"``).
    tasks : sequence of Task
        What to run, in column order.
    cuts : dict, optional
        The release spec's ``[cuts]``.
    chunk : int
        The block's chunk index.
    device, threads
        Default: this worker's device and thread count.

    Returns
    -------
    pandas.DataFrame
        One row per input row, :func:`catalog_columns` with their dtypes.
    """
    import torch

    columns = catalog_columns(kind, tasks)
    device = device or str(default_device())
    threads = threads or worker_threads()
    torch.set_num_threads(threads)
    n = len(rows)
    rows = rows.reset_index(drop=True)
    status = rows["status"].astype(str).to_numpy(dtype=object).copy()
    message = rows["message"].astype("string").fillna("").to_numpy(dtype=object).copy()
    block = Block(chunk=chunk, arrays=arrays, rows=rows, info=info, status=status, message=message,
                  selected=np.empty(0, dtype=np.int64), device=device, threads=threads)
    _apply_cuts(block, cuts or {})
    block.selected = np.flatnonzero(np.isin(block.status.astype(str), list(USABLE_STATUSES)))
    values = _head_values(kind, rows)
    for task in tasks:
        values.update(task.run(block))
    values["status"], values["message"] = block.status.astype(str), block.message.astype(str)
    frame = pd.DataFrame({c.name: values[c.name] for c in columns}, index=pd.RangeIndex(n))
    return frame.astype({c.name: c.dtype for c in columns})


def write_catalog_part(store: str, start: int, stop: int, rows: pd.DataFrame, chunk: int, tasks: Sequence[Task],
                       cuts: dict[str, float], catalog_dir: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """One Dask task: read chunk ``chunk`` of the store, make its catalog rows, write them as its part."""
    from ..catalog.parts import write_part
    from ..store import open_release

    t0 = time.perf_counter()
    release = open_release(store)
    frame = catalog_block(release.read_block(start, stop, rows=rows), rows, release.info, release.kind, tasks, cuts,
                          chunk)
    write_part(frame, catalog_dir, chunk, provenance, catalog_columns(release.kind, tasks))
    return {"chunk": chunk, "rows": len(frame), "seconds": time.perf_counter() - t0,
            "status": frame["status"].value_counts().to_dict()}
