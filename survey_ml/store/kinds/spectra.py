"""The spectra kind: 1-D survey spectra (LAMOST LRS, SDSS) on one log-linear grid.

Layout::

    <release>.zarr/spectra/flux    (n_rows, n_pix) float32   native pixel grid, zeros outside coverage
    <release>.zarr/spectra/ivar    (n_rows, n_pix) float32   0 = no information
    <release>.zarr/spectra/mask    (n_rows, n_pix) uint32    survey andmask | MASK_NONFINITE | MASK_NODATA
    <release>.zarr/spectra/ormask  (n_rows, n_pix) uint32
    objects.parquet                one row per input file (:data:`OBJECT_COLUMNS`)

All spectra share one log-linear grid (release.json ``grid``); a row's own pixels are
``[pix0, pix0 + n_pix)``. A usable row repeating an earlier row's ``obsid`` is a duplicate.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import zarr

from ..._version import __version__
from ...io.errors import SurveyFileError
from ...io.lamost import lamost_filename, read_lamost_catalogue, read_lamost_spectrum
from ...io.registry import identify_spectrum, read_spectrum
from ...io.sdss import read_sdss_spectrum
from ...io.spectrum import Spectrum
from ...core.quality import MASK_NODATA, USABLE_STATUSES, assess_spectrum
from ...core.wavelength import LAMOST_LRS_GRID, SDSS_GRID, LogLinearGrid
from ..layout import FITS_SUFFIXES, INT_MISSING, IngestPlan, RowArrays, list_files, read_rows
from ..release import Release

__all__ = ["SpectraRelease", "discover_files", "plan", "READERS", "GRIDS", "ARRAYS", "OBJECT_COLUMNS",
           "SPECTRUM_SUFFIXES", "DEFAULT_CHUNK_ROWS"]

#: Spectrum readers by name, as a release spec names them.
READERS: dict[str, Callable[[str], Spectrum]] = {"lamost": read_lamost_spectrum, "sdss": read_sdss_spectrum,
                                                 "auto": read_spectrum}
#: The release grid each reader's spectra are stored on, unless ingest is given another ("auto":
#: the grid of the formats a sample of the files holds; the SDSS grid holds LAMOST's pixels too).
GRIDS: dict[str, LogLinearGrid] = {"lamost": LAMOST_LRS_GRID, "sdss": SDSS_GRID}
#: Files whose format picks an "auto" store's grid (spread over the input).
GRID_SAMPLE = 64
ARRAYS = {"flux": "float32", "ivar": "float32", "mask": "uint32", "ormask": "uint32"}
SPECTRUM_SUFFIXES = FITS_SUFFIXES
DEFAULT_CHUNK_ROWS = 1024

#: Columns of objects.parquet, with dtypes; header fields a reader lacks stay missing.
OBJECT_COLUMNS: dict[str, str] = {
    "row": "int64", "obsid": "int64", "ra": "float64", "dec": "float64",
    "snru": "float32", "snrg": "float32", "snrr": "float32", "snri": "float32", "snrz": "float32",
    "z": "float64", "z_err": "float64", "class": "string", "subclass": "string",
    "lmjd": "int32", "planid": "string", "spid": "int16", "fiberid": "int16",
    "fibermask": "int32", "format": "string", "pix0": "int32", "n_pix": "int32",
    "n_good": "int32", "file": "string", "file_bytes": "int64", "status": "string",
    "message": "string",
}
_META_COLUMNS = ("obsid", "ra", "dec", "snru", "snrg", "snrr", "snri", "snrz", "z", "z_err",
                 "class", "subclass", "lmjd", "planid", "spid", "fiberid", "fibermask")


class SpectraRelease(Release):
    """An ingested spectra release: :class:`~survey_ml.store.release.Release` plus its grid.

    ``read_block(a, b)`` gives ``flux``, ``ivar`` and ``mask`` (n, n_pix); ``objects`` is the
    row table (``objects.parquet``).
    """

    kind = "spectra"
    ROWS_FILE = "objects.parquet"
    ROW_COLUMNS = OBJECT_COLUMNS
    GROUP = "spectra"
    ARRAYS = ARRAYS
    BLOCK_ARRAYS = ("flux", "ivar", "mask")
    DUPLICATE_KEY = "obsid"
    USABLE = USABLE_STATUSES

    @property
    def objects(self) -> pd.DataFrame:
        """The row table (``objects.parquet``), :data:`OBJECT_COLUMNS`."""
        return self.rows

    @property
    def grid(self) -> LogLinearGrid:
        """Common wavelength grid of the arrays."""
        return LogLinearGrid(**self.info["grid"])

    def wavelength(self) -> np.ndarray:
        """Wavelength of every array column (Angstrom, vacuum)."""
        return self.grid.wavelength()


#: This kind's Release type and the ingest options it takes besides ``reader``.
RELEASE = SpectraRelease
OPTIONS = ("grid", "data_root")
#: The default cap on one spectrum file's decompressed size, MB (a LAMOST spectrum is ~0.1 MB,
#: an SDSS one ~1 MB): a decompression bomb is flagged ``too_large`` after 64 MB of output.
MAX_DECOMPRESSED_MB = 64


# --------------------------------------------------------------------------- inputs
def discover_files(source: str | os.PathLike | Iterable[str | os.PathLike],
                   data_root: str | os.PathLike | None = None) -> list[str]:
    """Resolve an ingest source to a sorted list of absolute spectrum file paths.

    Parameters
    ----------
    source : path or iterable of paths
        A directory (searched recursively for ``*.fits`` / ``*.fits.gz``), a LAMOST LRS
        catalogue (``.csv``/``.csv.gz`` or a catalogue ``.fits`` table; each row names its
        file by a ``file`` or ``filename`` column relative to ``data_root`` if there is one, else as
        ``spec-{lmjd}-{planid}_sp{spid}-{fiberid}.fits.gz`` directly under ``data_root``), a
        text file listing one path per line (``.txt``/``.lst``), or an iterable of paths.
    data_root : path, optional
        Where a catalogue's files live (default: the catalogue's directory).

    Returns
    -------
    list of str
        Unique absolute paths, sorted. Paths that do not exist are kept, so that ingest
        flags them as ``missing`` rather than silently dropping them.
    """
    def catalogue_files(src: Path) -> list[Path] | None:
        if not (src.name.lower().endswith((".csv", ".csv.gz")) or _is_catalogue_fits(src)):
            return None
        root = Path(data_root) if data_root else src.parent
        cat = read_lamost_catalogue(src)
        for column in ("file", "filename"):  # an explicit (relative) path per row wins
            if column in cat.columns:
                return [root / str(f) for f in cat[column]]
        return [root / lamost_filename(r.lmjd, r.planid, r.spid, r.fiberid) for r in cat.itertuples(index=False)]

    return list_files(source, SPECTRUM_SUFFIXES, catalogue_files)


def _is_catalogue_fits(path: Path) -> bool:
    """A .fits file whose first extension is a table with an ``obsid`` column."""
    if not path.name.lower().endswith((".fits", ".fits.gz")) or not path.is_file():
        return False
    try:
        from astropy.io import fits

        with fits.open(path, memmap=False) as hdul:
            return len(hdul) > 1 and "obsid" in [c.lower() for c in getattr(hdul[1], "columns", []).names]
    except Exception:
        return False


def discover(source, *, data_root: str | os.PathLike | None = None, **_: Any) -> list[str]:
    """The kind's discovery for :func:`survey_ml.store.ingest`: :func:`discover_files`."""
    return discover_files(source, data_root=data_root)


# --------------------------------------------------------------------------- ingest
def plan(existing: SpectraRelease | None, release: str, files: Sequence[str], *, reader: str = "auto",
         chunk_rows: int | None = None, grid: LogLinearGrid | None = None, **_: Any) -> IngestPlan:
    """How :func:`survey_ml.store.ingest` writes spectra (``reader``: a key of :data:`READERS`).

    A new store takes ``grid`` (default: the reader's, :data:`GRIDS`) and ``chunk_rows``
    (default :data:`DEFAULT_CHUNK_ROWS`); an existing one keeps its own.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {sorted(READERS)}, not {reader!r}")
    if existing is not None:
        grid, chunk_rows = existing.grid, existing.chunk_rows
    grid = grid or (GRIDS[reader] if reader != "auto" else _grid_of(files))
    chunk_rows = int(chunk_rows or DEFAULT_CHUNK_ROWS)
    info = {"kind": "spectra", "release": release, "grid": grid.to_dict(), "chunk_rows": chunk_rows,
            "reader": reader, "survey_ml_version": __version__}
    arrays = RowArrays("spectra", ARRAYS, (grid.n_pix,), (grid.n_pix,), dict.fromkeys(ARRAYS, 0))
    return IngestPlan(info=info, arrays=[arrays], block=ingest_block)


def _grid_of(files: Sequence[str]) -> LogLinearGrid:
    """The grid for a store of ``files`` of any format: SDSS's if a sample of them holds SDSS spectra, else LAMOST's."""
    picks = np.unique(np.linspace(0, len(files) - 1, min(len(files), GRID_SAMPLE)).astype(int)) if files else []
    formats = set()
    for i in picks:
        try:
            formats.add(identify_spectrum(files[i]))
        except SurveyFileError:
            continue
    return SDSS_GRID if "sdss" in formats else LAMOST_LRS_GRID


def _place_on_grid(spec: Spectrum, grid: LogLinearGrid) -> int:
    """Pixel offset of ``spec`` on ``grid``; SurveyFileError(off_grid) when it does not fit."""
    coeff0, coeff1 = spec.meta.get("coeff0"), spec.meta.get("coeff1")
    if coeff0 is None or coeff1 is None or not np.isfinite([coeff0, coeff1]).all():
        wave = np.asarray(spec.wavelength, dtype=np.float64)
        coeff0, coeff1 = np.log10(wave[0]), np.log10(wave[-1] / wave[0]) / (spec.n_pix - 1)
    pix0 = grid.offset_of(coeff0, coeff1, spec.n_pix)
    if pix0 is None or pix0 < 0 or pix0 + spec.n_pix > grid.n_pix:
        raise SurveyFileError(spec.path, f"pixels (COEFF0={coeff0}, COEFF1={coeff1}, n_pix={spec.n_pix}) "
                              f"do not fit the release grid {grid}", code="off_grid")
    # The file's own WAVELENGTH must agree with its COEFF0/COEFF1 to 1% of a pixel.
    expected = grid.wavelength()[pix0: pix0 + spec.n_pix]
    dpix = np.abs(spec.wavelength / expected - 1.0) / (grid.coeff1 * np.log(10.0))
    bad = ~np.isfinite(dpix)
    if bad.any():
        raise SurveyFileError(spec.path, f"WAVELENGTH column has {int(bad.sum())} non-finite values "
                              f"(of {spec.n_pix})", code="off_grid")
    if dpix.max() > 0.01:
        raise SurveyFileError(spec.path, "WAVELENGTH column disagrees with COEFF0/COEFF1 by "
                              f"{dpix.max():.3g} pixels", code="off_grid")
    return pix0


def ingest_block(paths: Sequence[str], first_row: int, zarr_path: str, info: Mapping[str, Any]) -> pd.DataFrame:
    """Read ``paths`` into rows ``first_row ...`` of ``spectra/*``; return their table rows.

    Runs on a worker. Never raises for a bad file: the row records status and message.
    """
    grid = LogLinearGrid(**info["grid"])
    read = READERS[info["reader"]]
    block = {name: np.zeros((len(paths), grid.n_pix), dtype=dtype) for name, dtype in ARRAYS.items()}
    block["mask"][:] = MASK_NODATA

    def read_one(i: int, path: str, record: dict[str, Any]) -> None:
        spec = read(path)
        record.update({key: spec.meta.get(key) for key in _META_COLUMNS}, format=spec.format, n_pix=spec.n_pix)
        pix0 = _place_on_grid(spec, grid)
        flux, ivar, andmask, status, message = assess_spectrum(spec)
        sl = slice(pix0, pix0 + spec.n_pix)
        block["flux"][i, sl] = flux
        block["ivar"][i, sl] = ivar
        block["mask"][i, sl] = andmask
        block["ormask"][i, sl] = spec.ormask
        record.update(pix0=pix0, n_good=int(((ivar > 0) & (andmask == 0)).sum()),
                      status=status, message=f"{path}: {message}" if message else "")

    rows = read_rows(paths, first_row, OBJECT_COLUMNS, read_one, pix0=INT_MISSING, n_pix=0, n_good=0)
    for name in ARRAYS:
        zarr.open_array(f"{zarr_path}/spectra/{name}", mode="r+")[first_row:first_row + len(paths)] = block[name]
    return rows
