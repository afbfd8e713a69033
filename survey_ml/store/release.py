"""``open_release``: one ingested store of any kind, opened read-only, with one reading protocol.

Every release, whatever its kind, gives::

    release.kind          "spectra" | "maps" (a maps store holding LOGCUBEs: has_cubes)
    release.name, .path, .zarr_path, .info (release.json), .chunk_rows, .n_rows
    release.rows          the committed row table (also .objects / .galaxies)
    release.block_bounds()          [start, stop) of each Zarr row chunk of the committed rows
    release.read_block(start, stop) {name: numpy array} of those rows: what one Dask task reads

A kind's module (:mod:`survey_ml.store.kinds`) subclasses :class:`Release` with its arrays,
its row table and its own accessors; defining the subclass registers it for its ``kind``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import zarr

from .layout import block_bounds, empty_rows, mark_duplicates, read_info, release_kind, write_rows

__all__ = ["Release", "open_release"]


class Release:
    """An ingested release opened for reading; subclassed once per input kind.

    ``Release(path, info, rows=None)``: the store folder, its release.json and its committed
    row table (default: read from :attr:`ROWS_FILE`, empty if nothing is committed yet).
    """

    #: Input kind ("spectra", "maps", "echelle"); a subclass that sets it is what :func:`open_release` returns for it.
    kind: ClassVar[str] = ""
    #: The row table's file and columns (with dtypes).
    ROWS_FILE: ClassVar[str]
    ROW_COLUMNS: ClassVar[Mapping[str, str]]
    #: Zarr subgroup of the row arrays, their dtypes, and those :meth:`read_block` returns by default.
    GROUP: ClassVar[str]
    ARRAYS: ClassVar[Mapping[str, str]]
    BLOCK_ARRAYS: ClassVar[tuple[str, ...]]
    #: A usable row (status in USABLE) repeating an earlier one's DUPLICATE_KEY is a "duplicate".
    DUPLICATE_KEY: ClassVar[str]
    USABLE: ClassVar[frozenset[str]] = frozenset({"ok"})
    #: release.json fields kept in the row table's Parquet metadata.
    ROWS_META: ClassVar[tuple[str, ...]] = ("release",)

    _types: ClassVar[dict[str, type[Release]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            Release._types[cls.kind] = cls

    def __init__(self, path: str | os.PathLike, info: Mapping[str, Any], rows: pd.DataFrame | None = None) -> None:
        self.path = Path(path)
        self.info = dict(info)
        self._rows = rows

    @property
    def rows(self) -> pd.DataFrame:
        """The committed row table, read on first use (a block task that is handed its rows never reads it)."""
        if self._rows is None:
            rows_file = self.path / self.ROWS_FILE
            self._rows = pd.read_parquet(rows_file) if rows_file.exists() else empty_rows(self.ROW_COLUMNS)
        return self._rows

    @rows.setter
    def rows(self, rows: pd.DataFrame) -> None:
        self._rows = rows

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {str(self.path)!r}, {self.n_rows} rows)"

    @property
    def name(self) -> str:
        """Release name (``dr10``); names the Zarr group ``<name>.zarr``."""
        return str(self.info["release"])

    @property
    def chunk_rows(self) -> int:
        """Rows per Zarr chunk (= one unit of downstream work)."""
        return int(self.info["chunk_rows"])

    @property
    def zarr_path(self) -> Path:
        return self.path / f"{self.name}.zarr"

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    def block_bounds(self) -> list[tuple[int, int]]:
        """``[start, stop)`` of each Zarr row chunk of the committed rows."""
        return block_bounds(0, self.n_rows, self.chunk_rows)

    def _array(self, name: str) -> zarr.Array:
        if name not in self.ARRAYS:
            raise KeyError(f"no {self.GROUP} array {name!r}; the store holds {', '.join(self.ARRAYS)}")
        return zarr.open_array(str(self.zarr_path / self.GROUP / name), mode="r")

    def array(self, name: str):
        """A committed row array as a lazy ``dask.array`` whose chunks are the Zarr chunks."""
        import dask.array as da

        return da.from_zarr(self._array(name))[: self.n_rows]

    def read_block(self, start: int, stop: int, names: Sequence[str] | None = None,
                   rows: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` (clipped to the committed rows) as numpy arrays: what a Dask task reads.

        Returns ``{name: array}`` for each of ``names`` (default :attr:`BLOCK_ARRAYS`), plus
        what the kind adds (maps: ``pixel_scale``). A task that already holds the block's rows
        of the row table passes them as ``rows``, so the whole table is not read per task.
        """
        if rows is None:
            stop = min(int(stop), self.n_rows)
            start = min(max(int(start), 0), stop)
            rows = self.rows.iloc[start:stop]
        elif len(rows) != int(stop) - int(start):
            raise ValueError(f"{self.path}: {len(rows)} rows handed for block [{start}, {stop})")
        out = {name: self._array(name)[start:stop] for name in (self.BLOCK_ARRAYS if names is None else names)}
        out.update(self._block_extras(rows))
        return out

    def _block_extras(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-row values of the block that the kind adds to its arrays (``rows``: the block's rows)."""
        return {}

    @classmethod
    def commit(cls, path: Path, info: Mapping[str, Any], rows: pd.DataFrame) -> pd.DataFrame:
        """Mark duplicates in ``rows`` and make it the store's row table (atomically); returns it."""
        rows = mark_duplicates(rows, cls.DUPLICATE_KEY, cls.USABLE)
        write_rows(path / cls.ROWS_FILE, rows, {key: info[key] for key in cls.ROWS_META})
        return rows


def open_release(store: str | os.PathLike, kind: str | None = None) -> Release:
    """Open an ingested release store of any kind read-only.

    Parameters
    ----------
    store : str or os.PathLike
        Directory written by :func:`survey_ml.store.ingest`.
    kind : str, optional
        The kind it must be; ValueError, naming the folder, when it is another.

    Returns
    -------
    Release
        The kind's subclass (:class:`~survey_ml.store.kinds.spectra.SpectraRelease`,
        :class:`~survey_ml.store.kinds.maps.MapsRelease`).
    """
    path, info = read_info(store)
    found = release_kind(info)
    if kind is not None and found != kind:
        raise ValueError(f"{path} is a {found} release store, not {kind}")
    return Release._types[found](path, info)
