"""Catalogs as HATS collections, for LSDB: HEALPix-partitioned Parquet made by hats-import.

`HATS <https://hats.readthedocs.io>`_ (Hierarchical Adaptive Tiling Scheme) is the layout in
which survey catalogs (Gaia, ZTF, Rubin) are served for LSDB, the Dask library for
survey-scale cone searches and crossmatches. :func:`export_hats` turns a survey_ml catalog
into a HATS *collection* with the maintained ``hats-import`` pipeline, on the caller's Dask
cluster:

- the catalog, partitioned adaptively by sky position (at most ``pixel_threshold`` rows per
  HEALPix pixel), sorted by ``row`` within each pixel, each field keeping its unit,
  description and UCD;
- a margin cache (``margin_arcsec`` around each pixel), so that crossmatches near pixel edges
  find their partners.

No ``obsid`` index catalog is built: hats-import 0.11 refuses to build one on Python 3.11 with
a Dask newer than 2025.3; ``catalog.query("obsid == ...")`` finds a row instead.

Rows without a position (a damaged file whose header had none) cannot be placed on the sky:
they stay in the Parquet parts and the FITS table, and :class:`HatsExport` counts them.

The collection is written beside its final place and renamed into it, so a reader never
sees half of one, and a re-export replaces the old collection whole.
"""
from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["export_hats", "open_lsdb", "HatsExport"]

#: Largest rows per HEALPix pixel of an exported catalog: LSDB reads one pixel per Dask task.
PIXEL_THRESHOLD = 250_000


@dataclass(frozen=True)
class HatsExport:
    """What :func:`export_hats` wrote: the collection, its catalog's rows and pixels, rows left out."""

    path: Path
    n_rows: int
    n_pixels: int
    n_unplaced: int
    margin_arcsec: float

    def summary(self) -> str:
        """One line for a run's summary."""
        left = f"; {self.n_unplaced} rows without ra/dec left out" if self.n_unplaced else ""
        return (f"HATS collection {self.path}: {self.n_rows} rows in {self.n_pixels} HEALPix pixels, "
                f"{self.margin_arcsec:g}\" margin{left}")


def export_hats(catalog_dir: str | os.PathLike, path: str | os.PathLike, client, *, name: str | None = None,
                frame: pd.DataFrame | None = None, columns: Sequence[Any] | None = None,
                margin_arcsec: float = 10.0, pixel_threshold: int = PIXEL_THRESHOLD) -> HatsExport:
    """Write a survey_ml catalog as a HATS collection (catalog + margin cache) with hats-import.

    Parameters
    ----------
    catalog_dir : path
        The catalog's folder of Parquet parts.
    path : path
        The collection folder to (re)write; ``lsdb.open_catalog(path)`` opens it.
    client : distributed.Client or None
        The Dask cluster hats-import runs on; without one (None, False), a cluster of threads in
        this process for the time of the export.
    name : str, optional
        Catalog name inside the collection (default: the folder name of ``path``).
    frame : pandas.DataFrame, optional
        The catalog to write when it differs from the parts (a task's sample-level flags);
        default the parts themselves, read by the workers.
    columns : sequence of Column, optional
        Column declarations, for the units, descriptions and UCDs of ``frame``'s fields (the
        parts carry their own).
    margin_arcsec : float
        Width of the margin cache around each pixel, arcsec.
    pixel_threshold : int
        Most rows in one HEALPix pixel (file) of the catalog.
    """
    from hats_import import pipeline_with_client
    from hats_import.collection.arguments import CollectionArguments

    from ._hats_reader import PositionedRows
    from .parts import column_metadata

    target = Path(path)
    name = name or target.name
    parts = sorted(Path(catalog_dir).glob("part-*.parquet"))
    if not parts and frame is None:
        raise FileNotFoundError(f"no catalog parts in {catalog_dir}")
    work = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True)
    try:
        if frame is not None:  # one input file on shared disk, read by the workers like the parts
            table = column_metadata(pa.Table.from_pandas(frame, preserve_index=False), columns)
            inputs = [work / "input" / "catalog.parquet"]
            inputs[0].parent.mkdir()
            pq.write_table(table, inputs[0])
            n_total = len(frame)
            placed = int((frame["ra"].notna() & frame["dec"].notna()).sum())
        else:
            inputs = parts
            n_total, placed = _count_placed(parts)
        if not placed:
            raise ValueError(f"{catalog_dir}: no row has a position (ra, dec); nothing to put on the sky")
        args = CollectionArguments(output_artifact_name=target.name, output_path=work / "out", progress_bar=False,
                                   tmp_dir=work / "tmp", resume=False)
        args = args.catalog(output_artifact_name=name, input_file_list=[str(p) for p in inputs],
                            file_reader=PositionedRows(), ra_column="ra", dec_column="dec", sort_columns="row",
                            use_schema_file=str(inputs[0]), pixel_threshold=int(pixel_threshold),
                            highest_healpix_order=10)
        args = args.add_margin(margin_threshold=float(margin_arcsec), is_default=True)
        with warnings.catch_warnings():  # hats-import's margin stage looks for a file it writes later
            warnings.filterwarnings("ignore", "Computing partitions from catalog parquet files")
            if hasattr(client, "submit"):
                pipeline_with_client(args, client)
            else:  # a run without a cluster (client=False): hats-import on threads of this process
                from distributed import Client

                with Client(processes=False, n_workers=1, threads_per_worker=os.cpu_count() or 1,
                            dashboard_address=None) as local:
                    pipeline_with_client(args, local)
        built = work / "out" / target.name
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        if target.exists():
            os.replace(target, old)
        os.replace(built, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n_pixels = len(pd.read_csv(target / name / "partition_info.csv"))
    return HatsExport(path=target, n_rows=placed, n_pixels=n_pixels, n_unplaced=n_total - placed,
                      margin_arcsec=float(margin_arcsec))


def _count_placed(parts: Sequence[Path]) -> tuple[int, int]:
    """Rows, and rows with a finite position, over the parts (reads only ``ra`` and ``dec``)."""
    total = placed = 0
    for part in parts:
        table = pq.read_table(part, columns=["ra", "dec"])
        total += table.num_rows
        ok = pc.and_(pc.is_finite(table["ra"]), pc.is_finite(table["dec"]))
        placed += int(pc.sum(pc.fill_null(ok, False)).as_py() or 0)
    return total, placed


def open_lsdb(path: str | os.PathLike, **kwargs: Any):
    """A HATS collection written by :func:`export_hats` (or a run folder holding one) as an ``lsdb.Catalog``.

    ``kwargs`` go to :func:`lsdb.open_catalog` (e.g. ``columns=[...]``, ``search_filter=``).
    """
    import lsdb

    path = Path(path)
    if not (path / "collection.properties").is_file() and not (path / "hats.properties").is_file():
        found = sorted(p.parent for p in path.glob("*/collection.properties"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path} is not a HATS collection or catalog"
                                    + (f" (it holds {len(found)}: {', '.join(map(str, found))})" if found else ""))
        path = found[0]
    return lsdb.open_catalog(path, **kwargs)
