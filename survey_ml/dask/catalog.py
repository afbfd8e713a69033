"""The lazy Python API: a release store opened as an object whose catalogs are Dask DataFrames.

::

    >>> import survey_ml
    >>> release = survey_ml.open_release("survey_ml_dr10/store")          # doctest: +SKIP
    >>> catalog = release.catalog(tasks=["metallicity", "sfclass"])       # doctest: +SKIP
    >>> catalog.npartitions == release.npartitions                        # doctest: +SKIP
    True
    >>> sf = catalog[catalog.sf_flag].oh12.describe().compute()           # doctest: +SKIP

Nothing is read or computed until the user asks (``compute``, ``persist``, ``to_parquet``):
one partition is one Zarr chunk of rows, its task reads that chunk itself on the worker,
runs the tasks (the model cached per worker) and returns its catalog rows. The meta is the
tasks' declared columns (:func:`survey_ml.dask.blocks.catalog_columns`), so Dask never
calls a task on the client to guess it. ``run_catalog`` and the CLI are layers over
:meth:`LazyRelease.catalog_parts`, which writes the same partitions as Parquet parts.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import pandas as pd

from ..tasks.base import Column, Task, column_meta
from .blocks import catalog_block, catalog_columns

__all__ = ["open_release", "LazyRelease"]


def _read_and_run(bounds: tuple[int, int, int], store: str, rows: pd.DataFrame, tasks: Sequence[Task],
                  cuts: dict[str, float]) -> pd.DataFrame:
    """One partition: read chunk ``bounds`` of the store on this worker and run the tasks on it."""
    from ..store import open_release as open_store

    chunk, start, stop = bounds
    release = open_store(store)
    block_rows = rows.iloc[start:stop]
    frame = catalog_block(release.read_block(start, stop, rows=block_rows), block_rows, release.info, release.kind,
                          tasks, cuts, chunk)
    frame.index = pd.RangeIndex(start, stop)
    return frame


class LazyRelease:
    """An ingested release store, with lazy catalogs (see the module docstring).

    Parameters
    ----------
    store : path
        A release store (``survey-ml ingest`` / ``run-catalog`` wrote it).
    spec : str, path or dict, optional
        A release spec (name, TOML path, or parsed) whose ``[tasks.*]`` tables and ``[cuts]``
        the catalogs use; default the shipped spec of the store's release if there is one,
        else none (tasks with their defaults, no cuts).
    """

    def __init__(self, store: str | os.PathLike, spec: str | os.PathLike | dict[str, Any] | None = None) -> None:
        from ..config import load_release_spec
        from ..store import open_release as open_store

        self.store = open_store(store)
        if isinstance(spec, dict):
            self.spec = spec
        elif spec is not None:
            self.spec = load_release_spec(spec)
        else:
            try:
                self.spec = load_release_spec(self.store.name)
            except FileNotFoundError:
                self.spec = {"release": {"name": self.store.name}}

    # ------------------------------------------------------------------ description
    @property
    def kind(self) -> str:
        """The store's input kind (``"spectra"``, ``"maps"``)."""
        return self.store.kind

    @property
    def npartitions(self) -> int:
        """Blocks of the store: one Zarr chunk of rows each."""
        return len(self.store.block_bounds())

    @property
    def cuts(self) -> dict[str, float]:
        return dict(self.spec.get("cuts", {}))

    def tasks(self, tasks: Sequence[str | Task] | None = None, weights: dict[str, str] | None = None) -> list[Task]:
        """Task objects: names are built from the spec's tables (default: every task the spec names)."""
        from ..tasks.registry import tasks_from_spec

        if tasks is None:
            return tasks_from_spec(self.spec, weights)
        names = [t for t in tasks if isinstance(t, str)]
        built = iter(tasks_from_spec(self.spec, weights, names)) if names else iter(())
        return [next(built) if isinstance(t, str) else t for t in tasks]

    def columns(self, tasks: Sequence[str | Task] | None = None) -> list[Column]:
        """The catalog's columns for these tasks (dtype, unit, description)."""
        return catalog_columns(self.kind, self.tasks(tasks))

    def __repr__(self) -> str:
        return (f"LazyRelease({self.store.name!r}, kind={self.kind!r}, rows={self.store.n_rows}, "
                f"partitions={self.npartitions})")

    # ------------------------------------------------------------------ lazy catalogs
    def catalog(self, tasks: Sequence[str | Task] | None = None, weights: dict[str, str] | None = None):
        """The catalog of ``tasks`` as a lazy ``dask.dataframe.DataFrame`` (one partition per block).

        Its index is the store row; its meta the tasks' declared columns. Nothing runs until
        it is computed.
        """
        import dask.dataframe as dd

        built = self.tasks(tasks, weights)
        meta = column_meta(catalog_columns(self.kind, built))
        bounds = [(k, a, b) for k, (a, b) in enumerate(self.store.block_bounds())]
        divisions = [a for _, a, _ in bounds] + [bounds[-1][2] - 1] if bounds else None
        return dd.from_map(_read_and_run, bounds, store=str(self.store.path), rows=self.store.rows,
                           tasks=built, cuts=self.cuts, meta=meta, divisions=divisions, enforce_metadata=False,
                           label="survey-ml-catalog")

    def map_blocks(self, task: str | Task, weights: str | None = None):
        """One task over every block, lazily: the head columns, the task's columns, status and message."""
        return self.catalog([task], {task: weights} if isinstance(task, str) and weights else None)

    def catalog_parts(self, tasks: Sequence[Task], catalog_dir: str | os.PathLike, provenance: dict[str, Any],
                      chunks: Sequence[int] | None = None) -> list[tuple]:
        """The arguments of :func:`survey_ml.dask.blocks.write_catalog_part` for ``chunks`` (default all).

        :func:`survey_ml.cluster.client.run_blocks` runs them, one Dask task per block, each writing
        its Parquet part: the same partitions as :meth:`catalog`, kept on disk.
        """
        bounds = self.store.block_bounds()
        rows = self.store.rows
        return [(str(self.store.path), a, b, rows.iloc[a:b], k, list(tasks), self.cuts, str(catalog_dir), provenance)
                for k, (a, b) in enumerate(bounds) if chunks is None or k in set(chunks)]


def open_release(store: str | os.PathLike, spec: str | os.PathLike | dict[str, Any] | None = None) -> LazyRelease:
    """Open a release store for lazy catalogs (:class:`LazyRelease`).

    Examples
    --------
    >>> import tempfile, survey_ml
    >>> from survey_ml.simulate import write_mock_release
    >>> root = tempfile.mkdtemp()
    >>> mock = write_mock_release(f"{root}/mock", 40, seed=1)
    >>> _ = survey_ml.store.ingest(mock.spectra_dir, f"{root}/store", "dr10", chunk_rows=16)
    >>> release = survey_ml.open_release(f"{root}/store")
    >>> release
    LazyRelease('dr10', kind='spectra', rows=40, partitions=3)
    >>> catalog = release.catalog(tasks=["sfclass"])        # lazy: nothing has run yet
    >>> list(catalog.columns)
    ['row', 'obsid', 'ra', 'dec', 'z', 'snr_r', 'p_starforming', 'sf_flag', 'status', 'message']
    >>> frame = catalog.compute(scheduler="sync")
    >>> len(frame), frame.index.is_monotonic_increasing, bool(frame["p_starforming"].notna().any())
    (40, True, True)
    """
    return LazyRelease(store, spec)
