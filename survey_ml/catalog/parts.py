"""Catalogs on disk: one Parquet part per chunk of the release, written atomically.

A catalog is a folder of ``part-{chunk:06d}.parquet`` files, one per Zarr chunk of rows of
the release store: the chunk index names the part, so a re-run skips the parts already
there (resume) and can never write a row twice. Each part is written to a temporary name
and renamed into place, so a part either exists whole or not at all; a part that is
unreadable, or whose row count disagrees with what its metadata promised, is treated as
missing and redone. Provenance (package version, weights hash, release spec, input store,
chunk) rides in each part's Parquet schema metadata under the key ``survey_ml``. Data pages
carry CRC checksums, and a part counts as finished only if it reads back whole with them
verified, so a part damaged on disk after it was written is redone by the next run, not kept.
A writer killed mid-write leaves only a hidden ``.part-*.tmp-*`` file, which no reader sees.

The folder opens as one table with pandas (``pd.read_parquet``), pyarrow
(``pyarrow.dataset``), dask (``dd.read_parquet``) and, after :func:`export_fits`, with
astropy or TOPCAT.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

__all__ = ["part_path", "write_part", "tidy_catalog_dir", "read_provenance", "finished_parts", "read_catalog", "export_fits",
           "export_votable", "column_metadata"]

PROVENANCE_KEY = b"survey_ml"


def part_path(catalog_dir: str | os.PathLike, chunk: int) -> Path:
    """Where the part of chunk ``chunk`` lives.

    Examples
    --------
    >>> part_path("cat", 7).name
    'part-000007.parquet'
    """
    return Path(catalog_dir) / f"part-{int(chunk):06d}.parquet"


def column_metadata(table: pa.Table, columns: Sequence[Any] | None) -> pa.Table:
    """``table`` with each declared column's unit, description and UCD as Parquet field metadata,
    and the same as astropy's ``table_meta_yaml``, so that ``astropy.table.Table.read`` of a part
    gives columns with units and descriptions.

    ``columns``: objects with ``name``, ``unit``, ``description``, ``ucd`` (:class:`survey_ml.tasks.Column`).
    """
    if not columns:
        return table
    from astropy.table import Table
    from astropy.table.meta import get_yaml_from_table

    declared = {c.name: c for c in columns}
    fields = []
    for field in table.schema:
        c = declared.get(field.name)
        meta = {k: v for k, v in (("unit", getattr(c, "unit", "")), ("description", getattr(c, "description", "")),
                                  ("ucd", getattr(c, "ucd", ""))) if v} if c is not None else {}
        fields.append(field.with_metadata({**(field.metadata or {}), **{k.encode(): v.encode() for k, v in meta.items()}}))
    empty = Table()
    for field in table.schema:
        dtype = "U1" if pa.types.is_string(field.type) or pa.types.is_large_string(field.type) \
            else field.type.to_pandas_dtype()
        empty[field.name] = np.zeros(0, dtype=dtype)
        c = declared.get(field.name)
        if c is not None:
            empty[field.name].unit = _astropy_unit(c.unit)
            empty[field.name].description = c.description or None
    extra = {b"table_meta_yaml": "\n".join(get_yaml_from_table(empty)).encode()}
    for field in table.schema:  # astropy's own key: the longest string, else it warns and guesses
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            lengths = pa.compute.utf8_length(table[field.name]).to_numpy(zero_copy_only=False)
            extra[f"table::len::{field.name}".encode()] = str(int(np.nanmax(lengths, initial=1))).encode()
    schema = pa.schema(fields, metadata={**(table.schema.metadata or {}), **extra})
    return table.cast(schema)


def _astropy_unit(unit: str):
    """The astropy unit of a declared unit string (None when dimensionless)."""
    if not unit:
        return None
    from astropy import units as u

    return u.Unit(unit)


def write_part(frame: pd.DataFrame, catalog_dir: str | os.PathLike, chunk: int,
               provenance: dict[str, Any], columns: Sequence[Any] | None = None) -> Path:
    """Write one chunk's rows atomically, with provenance in the schema metadata.

    Parameters
    ----------
    frame : pandas.DataFrame
        The chunk's catalog rows.
    catalog_dir : path
        The catalog folder (created if needed).
    chunk : int
        Chunk index of the release store (names the part).
    provenance : dict
        JSON-serialisable facts of the run (version, weights hash, spec, store, ...);
        ``chunk`` and ``n_rows`` are added.
    columns : sequence of Column, optional
        The catalog's column declarations: units, descriptions and UCDs go into the part
        (:func:`column_metadata`).
    """
    target = part_path(catalog_dir, chunk)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = column_metadata(pa.Table.from_pandas(frame, preserve_index=False), columns)
    record = {**provenance, "chunk": int(chunk), "n_rows": len(frame)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           PROVENANCE_KEY: json.dumps(record, default=str).encode()})
    # unique per writer: two attempts at one chunk (a task rescheduled off a worker that was
    # thought lost, a killed client's task still running) never write into the same file
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, write_page_checksum=True)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of one part (or of any survey_ml Parquet file)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[PROVENANCE_KEY]) if PROVENANCE_KEY in meta else {}


def finished_parts(catalog_dir: str | os.PathLike, n_chunks: int, require: dict[str, Any] | None = None) -> set[int]:
    """Chunks whose part exists, is readable and whole, and (optionally) matches ``require``.

    ``require`` (e.g. ``{"weights_sha256": ...}``) makes parts written by other weights or
    specs count as unfinished, so they are redone rather than mixed into the catalog.
    Each part is read whole with its page checksums verified (about 1.3 ms for a part of
    2048 rows): a truncated, overwritten or bit-flipped part is unfinished.
    """
    done = set()
    for chunk in range(n_chunks):
        path = part_path(catalog_dir, chunk)
        if not path.is_file():
            continue
        try:
            record = read_provenance(path)
            rows = pq.read_table(path, page_checksum_verification=True).num_rows
        except (OSError, ValueError, pa.ArrowException, json.JSONDecodeError):
            continue  # torn or foreign file: redo it
        if record.get("n_rows") != rows or record.get("chunk") != chunk:
            continue
        if require and any(record.get(k) != v for k, v in require.items()):
            continue
        done.add(chunk)
    return done


def tidy_catalog_dir(catalog_dir: str | os.PathLike, n_chunks: int, tmp_older_than_s: float = 3600.0) -> list[Path]:
    """Remove what a run must not keep before it starts: parts of chunks the store does not have
    (``part-NNNNNN`` with NNNNNN >= ``n_chunks``, or a name that is not a part's), and temporary
    files of writers killed mid-write more than ``tmp_older_than_s`` ago (a younger one may still
    belong to a task running elsewhere). Returns the removed paths.
    """
    import re
    import time

    removed = []
    folder = Path(catalog_dir)
    if not folder.is_dir():
        return removed
    now = time.time()
    for path in folder.glob("part-*.parquet"):
        match = re.fullmatch(r"part-(\d+)\.parquet", path.name)
        if match is None or int(match.group(1)) >= n_chunks:
            path.unlink(missing_ok=True)
            removed.append(path)
    for path in folder.glob(".part-*.parquet.tmp-*"):
        try:
            if now - path.stat().st_mtime > tmp_older_than_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def read_catalog(catalog_dir: str | os.PathLike) -> pd.DataFrame:
    """All parts of a catalog as one pandas DataFrame, in chunk order."""
    parts = sorted(Path(catalog_dir).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"no catalog parts in {catalog_dir}")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def export_fits(catalog_dir: str | os.PathLike, path: str | os.PathLike, overwrite: bool = True,
                frame: pd.DataFrame | None = None, columns: list | None = None) -> Path:
    """Write the catalog as one FITS binary table (for TOPCAT and IDL users).

    ``frame`` is the catalog to write (default: the parts as they are on disk, e.g. after a
    task's sample-level step); ``columns`` (objects with ``name``, ``unit``, ``description``,
    such as :class:`survey_ml.tasks.Column`) give each column its ``TUNIT`` and ``TCOMM``.
    """
    table = _described_table(catalog_dir, frame, columns, "fits")
    parts = sorted(Path(catalog_dir).glob("part-*.parquet"))
    provenance = read_provenance(parts[0])
    for key in ("version", "weights_sha256", "release", "store"):  # whole values: long ones in CONTINUE cards
        if key in provenance:
            value = provenance[key]
            table.meta[f"SML_{key[:4].upper()}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    table.write(path, format="fits", overwrite=overwrite)
    if columns:  # TCOMMn: the one-line description of each column (the FITS convention TOPCAT shows)
        from astropy.io import fits

        described = {c.name: c.description for c in columns}
        ucds = {c.name: getattr(c, "ucd", "") for c in columns}
        with fits.open(path, mode="update") as hdul:
            header = hdul[1].header
            for i, name in enumerate(table.colnames, start=1):
                comment = table[name].description or described.get(name)
                if comment:
                    header[f"TCOMM{i}"] = comment[:68]
                if ucds.get(name):
                    header[f"TUCD{i}"] = ucds[name]
    return Path(path)


def export_votable(catalog_dir: str | os.PathLike, path: str | os.PathLike, frame: pd.DataFrame | None = None,
                   columns: list | None = None) -> Path:
    """Write the catalog as a VOTable: each field with its unit, UCD and description (what TOPCAT shows).

    Examples
    --------
    >>> import tempfile
    >>> from survey_ml.tasks import Column
    >>> folder = Path(tempfile.mkdtemp())
    >>> frame = pd.DataFrame({"ra": [10.5], "oh12": [8.61]})
    >>> cols = [Column("ra", "float64", "deg", "right ascension", ucd="pos.eq.ra;meta.main"),
    ...         Column("oh12", "float64", "dex", "12 + log(O/H)", ucd="phys.abund.Z")]
    >>> out = export_votable(folder, folder / "cat.vot", frame=frame, columns=cols)
    >>> from astropy.io.votable import parse_single_table
    >>> [(f.name, str(f.unit), f.ucd, f.description) for f in parse_single_table(out).fields]
    [('ra', 'deg', 'pos.eq.ra;meta.main', 'right ascension'), ('oh12', 'None', 'phys.abund.Z', '[dex] 12 + log(O/H)')]
    """
    from astropy.io.votable import from_table

    table = _described_table(catalog_dir, frame, columns, "vounit")
    declared = {c.name: c for c in columns or []}
    votable = from_table(table)
    for field in votable.get_first_table().fields:
        c = declared.get(field.name)
        if c is not None and getattr(c, "ucd", ""):
            field.ucd = c.ucd
    votable.to_xml(str(path))
    return Path(path)


def _described_table(catalog_dir, frame: pd.DataFrame | None, columns: list | None, fmt: str):
    """The catalog as an astropy Table for a file format ``fmt`` ("fits", "vounit"): strings without
    missing values (neither format has them), each declared column with its unit where ``fmt`` can
    write it - else the unit leads the description (dex and other function units) - and its description."""
    from astropy import units as u
    from astropy.table import Table

    frame = read_catalog(catalog_dir) if frame is None else frame.copy()
    for col in frame.columns:
        if pd.api.types.is_string_dtype(frame[col]) or frame[col].dtype == object:
            frame[col] = frame[col].fillna("").astype(str)
    table = Table.from_pandas(frame)
    for column in columns or []:
        if column.name in table.colnames:
            writable = _unit_in(column.unit, fmt) is not None
            table[column.name].unit = u.Unit(column.unit) if writable else None
            table[column.name].description = (f"[{column.unit}] " if column.unit and not writable else "") \
                + column.description or None
    return table


def _unit_in(unit: str, fmt: str) -> str | None:
    """``unit`` written in the unit format ``fmt`` ("fits", "vounit"), or None if it cannot be (or is empty).

    Examples
    --------
    >>> _unit_in("km / s", "fits"), _unit_in("dex", "fits"), _unit_in("", "fits")
    ('km s-1', None, None)
    >>> _unit_in("km / s", "vounit"), _unit_in("1e-17 erg / (s cm2)", "vounit")
    ('km.s**-1', None)
    """
    if not unit:
        return None
    import warnings

    from astropy import units as u

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return u.Unit(unit).to_string(fmt)
    except (ValueError, Warning):
        return None
