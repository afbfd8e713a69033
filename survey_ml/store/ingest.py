"""``ingest()``: survey files of any kind into a release store, in parallel on a Dask cluster.

One flow for every kind: discover the input files, skip those already listed, create the
store or grow it, read the new files in blocks (one Zarr chunk of rows per Dask task, via
:func:`survey_ml.cluster.client.run_blocks`), run the kind's step after the blocks if it has one,
mark duplicates and commit the row table. What differs by kind - arrays, reader glue, block
writer - is the kind module's :func:`plan` (:mod:`survey_ml.store.kinds`).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from ..cluster.client import current_client, run_blocks
from ..io._fits import decompression_limit
from ..io.errors import SurveyFileError
from .kinds import KINDS
from .layout import IngestReport, block_bounds, empty_rows, read_rows, typed_frame, write_info
from .lock import FolderLock
from .release import open_release

__all__ = ["ingest", "ingest_ifu"]


def ingest(source, store: str | os.PathLike, release: str = "release", *, kind: str | None = None,
           reader: str = "auto", survey: str | None = None, catalogue=None, client=None,
           chunk_rows: int | None = None, progress: bool = False, max_decompressed_mb: float | None = None,
           **kind_options: Any) -> IngestReport:
    """Ingest survey files into a release store (created if needed; appended to if it exists).

    Parameters
    ----------
    source : path or iterable of paths
        A folder, a file list (``.txt``/``.lst``), a catalogue (spectra: LAMOST) or paths;
        see :func:`~survey_ml.store.kinds.spectra.discover_files` and
        :func:`~survey_ml.store.kinds.maps.discover_ifu_files`.
    store : str or os.PathLike
        Store directory.
    release : str
        Release name; names the Zarr group ``<release>.zarr`` (an existing store keeps its own).
    kind : {"spectra", "maps", "echelle"}, optional
        Default: "maps" when ``survey`` is given, else an existing store's, else "spectra".
    reader : str
        Spectra: key of :data:`~survey_ml.store.kinds.spectra.READERS`; ``"auto"`` (default)
        tells each file's format from its headers (:mod:`survey_ml.io.registry`), so a
        folder mixing LAMOST layouts and SDSS spectra ingests as one store. Echelle:
        ``"auto"`` or a key of :data:`~survey_ml.io.echelle.ECHELLE_FORMATS`.
    survey : {"sami", "manga"}, optional
        Maps: the survey (default: an existing store's; it must match).
    catalogue : path or pandas.DataFrame, optional
        Maps: SAMI input catalogue CSV or MaNGA DRPall joined onto the new rows (see
        :func:`~survey_ml.store.kinds.maps.plan`); LOGCUBEs take their redshift from it.
    client : distributed.Client or False, optional
        Cluster to run on; default: the current client if one exists, else (and with
        ``False``) a plain loop over the blocks in this process.
    chunk_rows : int, optional
        Rows per Zarr chunk = per ingest task (ignored when appending). Default: spectra 1024;
        echelle 8;
        maps 64, or for a new store with LOGCUBEs as many as keep a task's cubes within 1 GiB
        (3 for full 74 x 74 cubes).
    progress : bool
        Show a progress bar over blocks.
    max_decompressed_mb : float, optional
        The most a file may hold once decompressed (a plain file: on disk), in MB; a file over
        it is read no further and flagged ``too_large`` (a decompression bomb costs a worker
        this much memory, not all of it). Default: the kind's ``MAX_DECOMPRESSED_MB``
        (spectra 64; echelle 512; maps 8192, for LOGCUBEs); the release spec's ``[ingest]
        max_decompressed_mb`` sets it for ``run-catalog``.
    **kind_options
        Spectra: ``grid`` (default the reader's), ``data_root`` (where a catalogue's files
        live). Maps: ``map_size``, ``cube_window``, ``wave_chunk`` (see
        :func:`~survey_ml.store.kinds.maps.plan`). Echelle: ``window`` (air Angstrom kept),
        ``segment_pixels`` (see :func:`~survey_ml.store.kinds.echelle.plan`).

    Returns
    -------
    IngestReport

    Notes
    -----
    A bad file never stops the run: its row's ``status`` is the reader's SurveyFileError code
    (``missing``, ``unreadable``, ``truncated``, ``wrong_format``, ``off_grid``, ...) and its
    ``message`` starts with the file's path. A usable row repeating an earlier one (spectra:
    obsid; maps: id) gets ``duplicate``, naming the first file. LOGCUBEs are measured after
    all blocks are written, by the moment step (release.json ``moments``, see
    :func:`~survey_ml.store.kinds.cubes.moment_maps_from_store`), before the rows are committed.
    """
    start = time.perf_counter()
    path = Path(store)
    with FolderLock(path, "ingest"):  # one writer per store; a killed ingest's lock is taken over
        return _ingest(source, path, release, kind, reader, survey, catalogue, client, chunk_rows, progress,
                       max_decompressed_mb, kind_options, start)


def _ingest(source, path: Path, release: str, kind: str | None, reader: str, survey: str | None, catalogue, client,
            chunk_rows: int | None, progress: bool, max_decompressed_mb: float | None,
            kind_options: dict[str, Any], start: float) -> IngestReport:
    """:func:`ingest` once the store is locked."""
    existing = open_release(path) if (path / "release.json").exists() else None
    kind = kind or ("maps" if survey is not None else existing.kind if existing is not None else "spectra")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
    if existing is not None and existing.kind != kind:
        raise ValueError(f"{path} holds a {existing.kind} release; cannot ingest {kind} files into it")
    module = KINDS[kind]
    unknown = set(kind_options) - set(module.OPTIONS)
    if unknown:
        raise TypeError(f"ingest of {kind} takes no option {', '.join(sorted(unknown))} "
                        f"(its options: {', '.join(module.OPTIONS)})")
    if survey is None and existing is not None:
        survey = existing.info.get("survey")
    files = module.discover(source, survey=survey, **kind_options)
    rows = existing.rows if existing is not None else empty_rows(module.RELEASE.ROW_COLUMNS)
    known = set(rows["file"].astype(str))
    new_files = [f for f in files if f not in known]
    n0, n_new = len(rows), len(new_files)
    plan = module.plan(existing, existing.name if existing is not None else release, new_files, reader=reader,
                       survey=survey, catalogue=catalogue, chunk_rows=chunk_rows, **kind_options)
    chunk_rows = int(plan.info["chunk_rows"])
    zarr_path = str(path / f"{plan.info['release']}.zarr")
    path.mkdir(parents=True, exist_ok=True)
    for arrays in plan.arrays:
        arrays.create(zarr_path, n0, chunk_rows)
    if plan.create is not None:
        plan.create(zarr_path, n0)
    write_info(path, plan.info)
    if n_new == 0:
        return IngestReport(path, len(files), 0, n0, {}, time.perf_counter() - start)

    for arrays in plan.arrays:
        arrays.resize(zarr_path, n0, n0 + n_new)
    blocks = [(new_files[a - n0: b - n0], a, zarr_path, plan.info, *plan.block_args(new_files[a - n0: b - n0]))
              for a, b in block_bounds(n0, n_new, chunk_rows)]
    client = current_client(client)
    cap = max_decompressed_mb or module.MAX_DECOMPRESSED_MB
    read = partial(_capped_block, plan.block, cap)
    parts = run_blocks(read, blocks, client, desc="ingest", progress=progress,
                       recover=partial(_isolate_culprits, read, blocks, plan.block_args, module.RELEASE.ROW_COLUMNS,
                                       client) if client else None)
    new_rows = pd.concat(parts).sort_values("row").reset_index(drop=True)
    if plan.new_rows is not None:
        new_rows = plan.new_rows(new_rows)
    combined = pd.concat([rows, new_rows], ignore_index=True) if n0 else new_rows
    combined = typed_frame(combined, module.RELEASE.ROW_COLUMNS)
    if plan.finish is not None:
        combined = plan.finish(combined, zarr_path, client, progress)
    combined = module.RELEASE.commit(path, plan.info, combined)
    counts = combined.iloc[n0:]["status"].value_counts().to_dict()
    return IngestReport(path, len(files), n_new, len(combined), {str(k): int(v) for k, v in counts.items()},
                        time.perf_counter() - start)


def ingest_ifu(source, store: str | os.PathLike, release: str, survey: str, *, catalogue=None, client=None,
               chunk_rows: int | None = None, progress: bool = False, **options: Any) -> IngestReport:
    """:func:`ingest` of IFU galaxy files (kind "maps"), as the IFU code has always called it.

    ``options``: ``map_size``, ``cube_window``, ``wave_chunk`` (see :func:`ingest`).
    """
    return ingest(source, store, release, kind="maps", survey=survey, catalogue=catalogue, client=client,
                  chunk_rows=chunk_rows, progress=progress, **options)


def _capped_block(block: Callable[..., pd.DataFrame], max_decompressed_mb: float, *args: Any) -> pd.DataFrame:
    """``block(*args)`` (a kind's ingest of one block, on a worker) with the decompression cap in force."""
    with decompression_limit(max_decompressed_mb):
        return block(*args)


def _worker_lost(err: BaseException) -> bool:
    """A block failure meaning a file took its worker down (its process died, or ran out of memory)
    rather than a fault of the store: worth reading the block again without the file."""
    from distributed import KilledWorker

    return isinstance(err, (KilledWorker, MemoryError))


def _isolate_culprits(read: Callable[..., pd.DataFrame], blocks: list[tuple], block_args: Callable[[list[str]], tuple],
                      columns: dict[str, str], client, k: int, err: Exception) -> pd.DataFrame:
    """Block ``k`` took its worker down: read it again in halves, one at a time, down to the file(s) that do.

    Every other file of the block is read as usual; each culprit gets a row with status
    ``worker_died`` and a message naming it. Any other failure of a block stands.
    """
    if not _worker_lost(err):
        raise err
    paths, first_row, zarr_path, info = blocks[k][:4]

    def attempt(part: list[str], start: int, cause: BaseException) -> list[pd.DataFrame]:
        if len(part) == 1:
            text = f"reading this file took its Dask worker down ({type(cause).__name__}: {cause})"
            return [read_rows(part, start, columns, partial(_fail, text))]
        half = len(part) // 2
        frames = []
        for piece, at in ((part[:half], start), (part[half:], start + half)):
            future = client.submit(read, piece, at, zarr_path, info, *block_args(piece), pure=False)
            try:
                frames.append(future.result())
            except Exception as again:
                if not _worker_lost(again):
                    raise
                frames += attempt(piece, at, again)
        return frames

    return pd.concat(attempt(list(paths), first_row, err)).sort_values("row")


def _fail(text: str, i: int, path: str, record: dict[str, Any]) -> None:
    raise SurveyFileError(path, text, code="worker_died")
