"""The echelle kind: high-resolution stellar spectra (HARPS / HARPS-N, ESPRESSO, ESO 1-D) as order segments.

Layout::

    <release>.zarr/echelle/flux        (n_rows, n_segments, segment_pixels) float32  deblazed flux
    <release>.zarr/echelle/ivar        (n_rows, n_segments, segment_pixels) float32  0 = no information
    <release>.zarr/echelle/wavelength  (n_rows, n_segments, segment_pixels) float64  air, barycentric, A
    exposures.parquet                  one row per input file (:data:`EXPOSURE_COLUMNS`)

Every file, whatever its instrument, becomes segments of at most ``segment_pixels`` pixels
(an e2ds order is one segment, a longer order or a merged s1d spectrum is cut) inside the
store's wavelength ``window``, in order of wavelength, padded with zeros (ivar 0,
wavelength 0). The flux is deblazed (divided by the blaze frame the header names, when it
is found) and the wavelengths are brought to air in the barycentric frame, so every row
means the same whatever file it came from; what the file had is in the row table
(``medium``, ``frame``, ``berv``, ``deblazed``). The star's own radial velocity is not
removed: that is the task's job. A usable row repeating an earlier row's ``exposure``
(instrument + DATE-OBS: the e2ds and s1d of one exposure) is a duplicate.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import zarr

from ..._version import __version__
from ...core.echelle import segments
from ...io.echelle import ECHELLE_FORMATS, EchelleSpectrum, read_echelle
from ...io.errors import SurveyFileError
from ..layout import FITS_SUFFIXES, IngestPlan, RowArrays, list_files, read_rows
from ..release import Release

__all__ = ["EchelleRelease", "discover", "plan", "ingest_block", "EXPOSURE_COLUMNS", "ARRAYS", "READERS",
           "DEFAULT_SEGMENT_PIXELS", "DEFAULT_CHUNK_ROWS"]

ARRAYS = {"flux": "float32", "ivar": "float32", "wavelength": "float64"}
#: Reader names a release spec may give: "auto" (identified per file) or an ECHELLE_FORMATS key.
READERS = ("auto", *(f.key for f in ECHELLE_FORMATS))
DEFAULT_SEGMENT_PIXELS = 4096
DEFAULT_CHUNK_ROWS = 8
#: Files sampled to size a new store's segment axis.
SEGMENT_SAMPLE = 16
#: Calibration frames a folder of HARPS products holds beside the spectra (read with them, not as rows).
CALIBRATION_MARKERS = ("_blaze_", "_wave_", "_flat_", "_order_profile", "_loco_")

#: Columns of exposures.parquet, with dtypes.
EXPOSURE_COLUMNS: dict[str, str] = {
    "row": "int64", "exposure": "string", "object": "string", "instrument": "string", "ra": "float64",
    "dec": "float64", "mjd": "float64", "bjd": "float64", "berv": "float64", "sn50": "float32",
    "exptime": "float32", "date_obs": "string", "format": "string", "medium": "string", "frame": "string",
    "deblazed": "bool", "ivar_estimated": "bool", "n_orders": "int32", "n_segments": "int32",
    "wave_min": "float64", "wave_max": "float64", "n_good": "int64", "file": "string", "file_bytes": "int64",
    "status": "string", "message": "string",
}
_META = ("object", "instrument", "ra", "dec", "mjd", "bjd", "berv", "sn50", "exptime", "date_obs")


class EchelleRelease(Release):
    """An ingested echelle release: ``read_block(a, b)`` gives ``flux``, ``ivar``, ``wavelength``
    ``(n, n_segments, segment_pixels)``; ``exposures`` is the row table."""

    kind = "echelle"
    ROWS_FILE = "exposures.parquet"
    ROW_COLUMNS = EXPOSURE_COLUMNS
    GROUP = "echelle"
    ARRAYS = ARRAYS
    BLOCK_ARRAYS = ("flux", "ivar", "wavelength")
    DUPLICATE_KEY = "exposure"

    @property
    def exposures(self) -> pd.DataFrame:
        """The row table (``exposures.parquet``), :data:`EXPOSURE_COLUMNS`."""
        return self.rows

    @property
    def window(self) -> tuple[float, float] | None:
        """Wavelength range kept at ingest (air, Angstrom), None for everything."""
        window = self.info.get("window")
        return None if window is None else (float(window[0]), float(window[1]))


RELEASE = EchelleRelease
OPTIONS = ("window", "segment_pixels")
#: Cap on one file's decompressed size, MB (an e2ds is ~1.4 MB, an ESPRESSO S2D ~60 MB).
MAX_DECOMPRESSED_MB = 512


def _is_calibration(path: str) -> bool:
    name = os.path.basename(path).lower()
    return any(marker in name for marker in CALIBRATION_MARKERS)


def discover(source, **_: Any) -> list[str]:
    """The spectrum files of ``source`` (folder, list file or paths); calibration frames
    (``*_blaze_*``, ``*_wave_*``, ...) in a folder are left to the spectra that name them."""
    files = list_files(source, FITS_SUFFIXES)
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        files = [f for f in files if not _is_calibration(f)]
    return files


def _segments_needed(path: str, window: Sequence[float] | None, width: int) -> int:
    spectrum = read_echelle(path)
    return len(segments(spectrum.wavelength, spectrum.flux, spectrum.ivar, width, window))


def plan(existing: EchelleRelease | None, release: str, files: Sequence[str], *, reader: str = "auto",
         chunk_rows: int | None = None, window: Sequence[float] | None = None,
         segment_pixels: int | None = None, **_: Any) -> IngestPlan:
    """How :func:`survey_ml.store.ingest` writes echelle spectra.

    A new store takes ``window`` (air Angstrom; default everything), ``segment_pixels``
    (default :data:`DEFAULT_SEGMENT_PIXELS`) and sizes its segment axis on a sample of the
    files; an existing store keeps its own.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {', '.join(READERS)} for echelle spectra, not {reader!r}")
    if existing is not None:
        info = dict(existing.info)
        return IngestPlan(info=info, arrays=[_arrays(info)], block=ingest_block)
    if window is not None:
        window = [float(window[0]), float(window[1])]
        if not 0 < window[0] < window[1]:
            raise ValueError(f"window must be (start, stop) in Angstrom with 0 < start < stop, not {window}")
    width = int(segment_pixels or DEFAULT_SEGMENT_PIXELS)
    needed = [0]
    picks = np.unique(np.linspace(0, len(files) - 1, min(len(files), SEGMENT_SAMPLE)).astype(int)) if files else []
    for i in picks:
        try:
            needed.append(_segments_needed(files[i], window, width))
        except SurveyFileError:
            continue
    info = {"kind": "echelle", "release": release, "chunk_rows": int(chunk_rows or DEFAULT_CHUNK_ROWS),
            "reader": reader, "window": window, "segment_pixels": width, "n_segments": max(1, max(needed)),
            "wavelength_medium": "air", "wavelength_frame": "barycentric", "survey_ml_version": __version__}
    return IngestPlan(info=info, arrays=[_arrays(info)], block=ingest_block)


def _arrays(info: Mapping[str, Any]) -> RowArrays:
    shape = (int(info["n_segments"]), int(info["segment_pixels"]))
    return RowArrays("echelle", ARRAYS, shape, shape, dict.fromkeys(ARRAYS, 0))


def exposure_id(spectrum: EchelleSpectrum) -> str | None:
    """``"<instrument> <DATE-OBS>"``, the key that tells one exposure's products are the same (None if unknown)."""
    instrument, date = spectrum.meta.get("instrument", ""), spectrum.meta.get("date_obs", "")
    return f"{instrument} {date}" if instrument and date else None


def ingest_block(paths: Sequence[str], first_row: int, zarr_path: str, info: Mapping[str, Any]) -> pd.DataFrame:
    """Read ``paths`` into rows ``first_row ...`` of ``echelle/*``; return their table rows (never raises)."""
    n_segments, width = int(info["n_segments"]), int(info["segment_pixels"])
    window = info.get("window")
    block = {name: np.zeros((len(paths), n_segments, width), dtype=dtype) for name, dtype in ARRAYS.items()}

    def read_one(i: int, path: str, record: dict[str, Any]) -> None:
        spectrum = read_echelle(path, info.get("reader", "auto"))
        record.update({key: spectrum.meta.get(key) for key in _META}, exposure=exposure_id(spectrum),
                      format=spectrum.format, medium=spectrum.medium, frame=spectrum.frame,
                      deblazed=spectrum.blaze is not None or spectrum.format != "harps-e2ds",
                      ivar_estimated=spectrum.ivar_estimated, n_orders=spectrum.n_orders)
        flux, ivar = spectrum.deblazed()
        pieces = segments(spectrum.rest_air(), flux, ivar, width, window)
        notes = list(spectrum.notes)
        if not pieces:
            raise SurveyFileError(path, f"no pixels inside the store's window {window} A "
                                  f"(the file covers {np.nanmin(spectrum.wavelength):.1f}-"
                                  f"{np.nanmax(spectrum.wavelength):.1f} A)", code="no_coverage")
        if len(pieces) > n_segments:
            centre = np.mean(window) if window else np.median([p[0].mean() for p in pieces])
            nearest = sorted(np.argsort([abs(p[0].mean() - centre) for p in pieces])[:n_segments])
            notes.append(f"kept the {n_segments} of {len(pieces)} segments nearest {centre:.0f} A "
                         "(the store's segment axis, sized at its first ingest)")
            pieces = [pieces[k] for k in nearest]
        for k, (w, f, v) in enumerate(pieces):
            block["wavelength"][i, k, :w.size] = w
            block["flux"][i, k, :w.size] = f
            block["ivar"][i, k, :w.size] = v
        n_good = int(np.count_nonzero(block["ivar"][i] > 0))
        record.update(n_segments=len(pieces), wave_min=float(pieces[0][0][0]), wave_max=float(pieces[-1][0][-1]),
                      n_good=n_good, status="ok" if n_good else "no_coverage",
                      message="; ".join(f"{path}: {n}" for n in notes) if notes else
                      ("" if n_good else f"{path}: no usable pixel in the window"))

    rows = read_rows(paths, first_row, EXPOSURE_COLUMNS, read_one, n_orders=0, n_segments=0, n_good=0)
    for name in ARRAYS:
        zarr.open_array(f"{zarr_path}/echelle/{name}", mode="r+")[first_row:first_row + len(paths)] = block[name]
    return rows

