"""What every release store shares, whatever its input kind: release.json, the row table, row arrays.

A release store is one directory::

    <store>/
        release.json           kind, release name, chunk_rows, version and the kind's own fields
        <release>.zarr/        Zarr v3 group: one subgroup of row arrays per kind
            spectra/flux ...   (n_rows, ...) arrays, chunked by whole rows (``chunk_rows``)
        objects.parquet        the row table (``galaxies.parquet`` for maps), joined by ``row``

Arrays are chunked by whole rows; one ingest task owns exactly one Zarr chunk of rows, so no
two tasks ever write the same chunk. The row table is the commit record: it is replaced
atomically after the arrays are written, and a row exists only once it is listed there.
Ingest is therefore idempotent and safe to re-run after a crash: files already listed are
skipped, and rows written but never committed are overwritten.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
import zarr.codecs

from .._version import __version__
from ..io.errors import SurveyFileError

__all__ = ["read_info", "write_info", "release_kind", "empty_rows", "typed_frame", "read_rows", "write_rows", "mark_duplicates",
           "block_bounds", "compressor", "RowArrays", "IngestPlan", "IngestReport", "list_files", "INT_MISSING",
           "FITS_SUFFIXES"]

#: Missing integers in a row table.
INT_MISSING = -1
#: File names ingest looks for in a folder.
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz")
#: release.json ``kind`` as written on disk -> the kind it is (maps stores have said "ifu" from the start).
_DISK_KINDS = {"spectra": "spectra", "ifu": "maps", "maps": "maps", "echelle": "echelle"}


# --------------------------------------------------------------------------- release.json
def read_info(store: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """A release store's folder and its ``release.json`` (every kind alike).

    Raises FileNotFoundError, naming the folder, when it is not a release store.
    """
    path = Path(store)
    info_file = path / "release.json"
    if not info_file.exists():
        raise FileNotFoundError(f"{path} is not a survey_ml release store (no release.json)")
    return path, json.loads(info_file.read_text())


def release_kind(info: Mapping[str, Any]) -> str:
    """The input kind of a store from its release.json, also for stores written before it said so.

    Examples
    --------
    >>> release_kind({"kind": "ifu"}), release_kind({"grid": {}}), release_kind({"survey": "sami", "map_size": 50})
    ('maps', 'spectra', 'maps')
    """
    if "kind" in info:
        if info["kind"] not in _DISK_KINDS:
            raise ValueError(f"unknown release kind {info['kind']!r}; known: {sorted(set(_DISK_KINDS.values()))}")
        return _DISK_KINDS[info["kind"]]
    if "grid" in info:
        return "spectra"
    if "survey" in info or "map_size" in info:
        return "maps"
    raise ValueError(f"release.json of {info.get('release', '?')!r} names no kind, grid or survey")


def write_info(path: Path, info: Mapping[str, Any]) -> None:
    """release.json (and the Zarr group's attributes) = ``info``, rewritten only when it changed."""
    info_file = path / "release.json"
    if not info_file.exists() or json.loads(info_file.read_text()) != info:
        zarr.open_group(str(path / f"{info['release']}.zarr"), mode="a").attrs.update(dict(info))
        _atomic_write_bytes(info_file, json.dumps(info, indent=2).encode())


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, target)


# --------------------------------------------------------------------------- the row table
def empty_rows(columns: Mapping[str, str]) -> pd.DataFrame:
    """A row table with no rows and ``columns`` typed.

    Examples
    --------
    >>> empty_rows({"row": "int64", "file": "string"}).dtypes.astype(str).tolist()
    ['int64', 'string']
    """
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def typed_frame(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """``df`` with each of ``columns`` cast to its dtype (missing integers become -1, others NaN / <NA>).

    Examples
    --------
    >>> typed_frame(pd.DataFrame({"n": [1, None], "s": ["a", None]}), {"n": "int32", "s": "string"})["n"].tolist()
    [1, -1]
    """
    for col, dtype in columns.items():
        if "int" in dtype:
            df[col] = pd.to_numeric(df[col], errors="coerce").fillna(INT_MISSING).astype(dtype)
        elif "float" in dtype:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(dtype)
        elif dtype == "bool":
            df[col] = df[col].astype("boolean").fillna(False).astype(bool)
        else:
            df[col] = df[col].astype("string")
    return df


def read_rows(paths: Sequence[str], first_row: int, columns: Mapping[str, str],
              read_one: Callable[[int, str, dict[str, Any]], None], **defaults: Any) -> pd.DataFrame:
    """The typed table rows of ``paths`` (rows ``first_row ...``): ``read_one(i, path, record)`` fills each.

    Never raises for a bad file: a SurveyFileError becomes the row's ``status`` (its code) and
    ``message``, any other exception status "error"; the message always starts with the path.
    A record starts as ``row``, ``file``, ``file_bytes`` and ``defaults``, other columns None.
    """
    records = []
    for i, path in enumerate(paths):
        record: dict[str, Any] = dict.fromkeys(columns)
        record.update(row=first_row + i, file=path, **defaults,
                      file_bytes=os.path.getsize(path) if os.path.exists(path) else INT_MISSING)
        try:
            read_one(i, path, record)
        except SurveyFileError as exc:
            text = str(exc)
            record.update(status=exc.code, message=text if exc.path == path else f"{path}: {text}")
        except Exception as exc:  # a reader bug must not stop the run either; say so plainly
            record.update(status="error", message=f"{path}: unexpected {type(exc).__name__}: {exc}")
        records.append(record)
    return typed_frame(pd.DataFrame.from_records(records, columns=list(columns)), columns)


def write_rows(target: Path, rows: pd.DataFrame, meta: Mapping[str, Any]) -> None:
    """Replace the row table ``target`` atomically, with ``meta`` (+ version) under the schema key ``survey_ml``."""
    table = pa.Table.from_pandas(rows, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"survey_ml"] = json.dumps({**meta, "version": __version__}).encode()
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(schema_meta), buffer)
    _atomic_write_bytes(target, buffer.getvalue())


def mark_duplicates(rows: pd.DataFrame, key: str, usable: Iterable[str]) -> pd.DataFrame:
    """Flag every usable row whose ``key`` already appears in an earlier usable row ("duplicate").

    Its message names the earlier row's file; rows whose ``key`` is missing are never duplicates.

    Examples
    --------
    >>> rows = pd.DataFrame({"id": ["a", "b", "a"], "file": ["x", "y", "z"], "status": ["ok"] * 3, "message": ""})
    >>> mark_duplicates(rows, "id", {"ok"})["message"].tolist()
    ['', '', 'z: duplicate id a, already ingested from x']
    """
    ok = rows["status"].isin(list(usable)).to_numpy(bool)
    keys = rows[key]
    dup = ok & keys.notna().to_numpy(bool) & keys[ok].duplicated(keep="first").reindex(rows.index, fill_value=False)
    if dup.any():
        first = rows[ok].drop_duplicates(key, keep="first").set_index(key)["file"]
        rows.loc[dup, "message"] = [f"{f}: duplicate {key} {k}, already ingested from {first[k]}"
                                    for f, k in zip(rows.loc[dup, "file"], rows.loc[dup, key])]
        rows.loc[dup, "status"] = "duplicate"
    return rows


# --------------------------------------------------------------------------- row arrays
def block_bounds(first_row: int, n_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Split rows ``[first_row, first_row + n_rows)`` at Zarr chunk boundaries: (start, stop) pairs.

    Examples
    --------
    >>> block_bounds(50, 30, 16)
    [(50, 64), (64, 80)]
    >>> block_bounds(0, 0, 16)
    []
    """
    edges = [first_row, *range((first_row // chunk_rows + 1) * chunk_rows, first_row + n_rows, chunk_rows),
             first_row + n_rows]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def compressor() -> zarr.codecs.BloscCodec:
    """The codec of every store array.

    zstd level 1 + bitshuffle: 3.3x smaller on LAMOST-like rows at ~3x the speed of level 3
    (3.5x); measured on 1,000 mock rows, see bench/results/ingest.json.
    """
    return zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")


@dataclass(frozen=True)
class RowArrays:
    """The arrays of one Zarr subgroup indexed by row: ``group/name`` is ``(n_rows, *row_shape)`` of
    ``dtypes[name]``, chunked ``(chunk_rows, *row_chunks)``, ``fill[name]`` where nothing was written.

    ``clear_uncommitted``: ingest resets rows an interrupted run wrote but never committed
    (needed when a block may leave its rows unwritten).
    """

    group: str
    dtypes: Mapping[str, str]
    row_shape: tuple[int, ...]
    row_chunks: tuple[int, ...]
    fill: Mapping[str, Any]
    clear_uncommitted: bool = False

    def create(self, zarr_path: str, n_rows: int, chunk_rows: int) -> None:
        """Create the arrays that do not exist yet, ``n_rows`` long (all fill, no chunk stored)."""
        group = zarr.open_group(zarr_path, mode="a")
        for name, dtype in self.dtypes.items():
            if f"{self.group}/{name}" not in group:
                group.create_array(f"{self.group}/{name}", shape=(n_rows, *self.row_shape),
                                   chunks=(chunk_rows, *self.row_chunks), dtype=dtype, compressors=compressor(),
                                   fill_value=self.fill[name])

    def resize(self, zarr_path: str, n_committed: int, n_rows: int) -> None:
        """Grow (or shrink away uncommitted rows) to ``n_rows`` before any ingest task writes."""
        for name in self.dtypes:
            array = zarr.open_array(f"{zarr_path}/{self.group}/{name}", mode="r+")
            written = array.shape[0]
            array.resize((n_rows, *array.shape[1:]))
            if self.clear_uncommitted and written > n_committed:
                array[n_committed:min(written, n_rows)] = self.fill[name]


# --------------------------------------------------------------------------- ingest
@dataclass
class IngestPlan:
    """What a kind module tells :func:`survey_ml.store.ingest` to do with one batch of new files.

    ``info`` is the release.json to write and ``arrays`` the row arrays to create and grow.
    ``block(paths, first_row, zarr_path, info, *block_args(paths))`` runs on a worker: it
    reads ``paths`` into rows ``first_row ...`` and returns their table rows, never raising
    for a bad file. Optional: ``new_rows(rows)`` here on the new rows before they join the
    table; ``finish(rows, zarr_path, client, progress)``, a Dask step on the whole table once
    all blocks are written, before it is committed; ``create(zarr_path, n_committed)`` for
    arrays besides the row arrays.
    """

    info: dict[str, Any]
    arrays: Sequence[RowArrays]
    block: Callable[..., pd.DataFrame]
    block_args: Callable[[list[str]], tuple] = lambda paths: ()
    new_rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    finish: Callable[[pd.DataFrame, str, Any, bool], pd.DataFrame] | None = None
    create: Callable[[str, int], None] | None = None


@dataclass
class IngestReport:
    """What one ingest call did."""

    store: Path
    n_inputs: int
    n_new: int
    n_rows: int
    status_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def files_per_second(self) -> float:
        return self.n_new / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.status_counts.items())) or "none"
        return (f"ingest -> {self.store}: {self.n_inputs} input files, {self.n_new} new rows "
                f"({self.files_per_second:.0f} files/s), {self.n_rows} rows in store; "
                f"statuses of new rows: {counts}")


def _walk(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` whose names end in ``suffixes``, following symbolic links once."""
    files, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            warnings.warn(f"{root}: skipped, a symbolic link to {real}, which is read already (a link loop or a "
                          "second link to the same folder)", stacklevel=3)
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        files += [Path(root) / n for n in names if n.lower().endswith(suffixes)]
    return files


def list_files(source: str | os.PathLike | Iterable[str | os.PathLike], suffixes: Sequence[str] = FITS_SUFFIXES,
               expand: Callable[[Path], list[Path] | None] | None = None) -> list[str]:
    """Resolve an ingest source to a sorted list of unique absolute file paths.

    Parameters
    ----------
    source : path or iterable of paths
        A folder (searched recursively for names ending in ``suffixes``), a text file listing
        one path per line (``.txt``/``.lst``), any other file, or an iterable of paths.
    suffixes : sequence of str
        File name endings (lower case) a folder search keeps.
    expand : callable, optional
        ``expand(path)`` for a single file source: the files it lists (a kind's catalogue),
        or None to take the file itself.

    Returns
    -------
    list of str
        Paths that do not exist are kept, so that ingest flags them as ``missing``. In a
        folder, symbolic links are followed (a broken one is kept, to be flagged); a folder
        reached twice - a link loop, or a second link to it - is read once, with a warning.
    """
    if isinstance(source, (str, os.PathLike)):
        src = Path(source)
        if src.is_dir():
            files = _walk(src, tuple(suffixes))
        elif src.name.lower().endswith((".txt", ".lst")):
            files = [Path(line.strip()) for line in src.read_text().splitlines() if line.strip()]
        else:
            listed = expand(src) if expand else None
            files = [src] if listed is None else listed
    else:
        files = [Path(p) for p in source]
    return sorted({os.path.abspath(p) for p in files})
