"""The in-memory form of IFU data (emission-line maps and data cubes), shared by the
MaNGA and SAMI readers, and the few helpers both file formats need.

Pure functions, no Dask. Maps are 2-D (ny, nx) with NaN where nothing was measured and
a boolean ``good`` mask; cubes are (nwave, ny, nx).
"""
from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

__all__ = ["IFUMaps", "IFUCube", "err_from_ivar", "ivar_from_err", "pixel_scale_arcsec",
           "good_spaxels", "write_fits", "DEFAULT_PIXEL_SCALE", "C_KMS"]

#: arcsec per spaxel of MaNGA and SAMI maps and cubes.
DEFAULT_PIXEL_SCALE = 0.5
#: Speed of light in km/s.
C_KMS = 299792.458


@dataclass
class IFUMaps:
    """Emission-line maps of one galaxy; 2-D float arrays (ny, nx), NaN where nothing was measured.

    Attributes
    ----------
    flux : numpy.ndarray
        H-alpha flux per spaxel, in the survey's units, given by ``meta["flux_unit"]``:
        MaNGA 1e-17 erg/s/cm2/spaxel; SAMI 1e-16 erg/s/cm2/spaxel (as stored, not rescaled).
    flux_err : numpy.ndarray
        1-sigma error of ``flux``; inf (or NaN) where unknown.
    velocity : numpy.ndarray
        Gas line-of-sight velocity in km/s, relative to the systemic velocity.
    velocity_err : numpy.ndarray
    dispersion : numpy.ndarray
        Gas velocity dispersion in km/s (as published: MaNGA not corrected for the
        instrumental dispersion, SAMI corrected).
    dispersion_err : numpy.ndarray
    good : numpy.ndarray
        bool (ny, nx): spaxel usable - not flagged DONOTUSE, all values finite, all errors
        finite and > 0.
    pixel_scale : float
        arcsec per spaxel (0.5 for both surveys).
    meta : dict
        ``survey`` ("manga"/"sami"), ``id`` (plateifu or catid), ``ra``, ``dec`` (deg),
        ``z`` (NaN when the file does not give it), ``file``, ``flux_unit`` and header
        fields under lower-case names; see the readers.
    path : str
        The file it was read from ("" for maps made in memory).
    """

    flux: np.ndarray
    flux_err: np.ndarray
    velocity: np.ndarray
    velocity_err: np.ndarray
    dispersion: np.ndarray
    dispersion_err: np.ndarray
    good: np.ndarray
    pixel_scale: float
    meta: dict[str, Any]
    path: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the maps."""
        return tuple(self.flux.shape)  # type: ignore[return-value]


@dataclass
class IFUCube:
    """A spectral data cube of one galaxy.

    Attributes
    ----------
    flux : numpy.ndarray
        (nwave, ny, nx) float32, 1e-17 erg/s/cm2/A/spaxel.
    ivar : numpy.ndarray
        float32 inverse variance of ``flux``; 0 where unknown.
    mask : numpy.ndarray
        int32 bitmask (MaNGA MANGA_DRP3PIXMASK: bit 10 DONOTUSE).
    wave : numpy.ndarray
        (nwave,) float64 vacuum wavelengths in Angstrom.
    pixel_scale : float
        arcsec per spaxel.
    meta : dict
        ``survey``, ``id``, ``ra``, ``dec``, ``file`` and header fields (lower-case).
    path : str
        The file it was read from.
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    wave: np.ndarray
    pixel_scale: float
    meta: dict[str, Any]
    path: str = ""


def err_from_ivar(ivar: np.ndarray) -> np.ndarray:
    """1-sigma errors from inverse variances: ``1/sqrt(ivar)``, inf where ivar <= 0 or not finite.

    Computed in float64 and returned as float32, so that :func:`ivar_from_err` of the result
    gives back the float32 ivar (and vice versa) - file round trips are exact.

    Examples
    --------
    >>> err_from_ivar(np.array([4.0, 0.0, -1.0, np.nan], np.float32)).tolist()
    [0.5, inf, inf, inf]
    """
    ivar = np.asarray(ivar, dtype=np.float64)
    ok = np.isfinite(ivar) & (ivar > 0)
    err = np.full(ivar.shape, np.inf)
    err[ok] = 1.0 / np.sqrt(ivar[ok])
    return err.astype(np.float32)


def ivar_from_err(err: np.ndarray) -> np.ndarray:
    """Inverse variances from 1-sigma errors: ``1/err**2``, 0 where err is not finite or <= 0.

    Examples
    --------
    >>> ivar_from_err(np.array([0.5, np.inf, np.nan, 0.0], np.float32)).tolist()
    [4.0, 0.0, 0.0, 0.0]
    """
    err = np.asarray(err, dtype=np.float64)
    ok = np.isfinite(err) & (err > 0)
    ivar = np.zeros(err.shape)
    ivar[ok] = 1.0 / err[ok] ** 2
    return ivar.astype(np.float32)


def pixel_scale_arcsec(header: fits.Header | dict, default: float = DEFAULT_PIXEL_SCALE) -> float:
    """Spaxel size in arcsec from a celestial WCS (CD matrix, or CDELT with an optional PC matrix).

    The mean of the two axes, rounded to 1e-6 arcsec (headers give 0.5" as
    0.000138888888889 deg); ``default`` when the header has no spatial WCS.

    Examples
    --------
    >>> pixel_scale_arcsec({"CDELT1": -0.000138888888889, "CDELT2": 0.000138888888889})
    0.5
    >>> pixel_scale_arcsec({"CD1_1": -0.000138889, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.000138889})
    0.5
    >>> pixel_scale_arcsec({})
    0.5
    """
    get = header.get
    if "CD1_1" in header or "CD2_2" in header:
        scale_x = np.hypot(float(get("CD1_1", 0.0)), float(get("CD2_1", 0.0)))
        scale_y = np.hypot(float(get("CD1_2", 0.0)), float(get("CD2_2", 0.0)))
    elif "CDELT1" in header and "CDELT2" in header:
        scale_x = abs(float(header["CDELT1"])) * np.hypot(float(get("PC1_1", 1.0)), float(get("PC2_1", 0.0)))
        scale_y = abs(float(header["CDELT2"])) * np.hypot(float(get("PC1_2", 0.0)), float(get("PC2_2", 1.0)))
    else:
        return float(default)
    unit = str(get("CUNIT1", "deg")).strip().lower()
    to_arcsec = {"deg": 3600.0, "arcmin": 60.0, "arcsec": 1.0}.get(unit, 3600.0)
    scale = 0.5 * (scale_x + scale_y) * to_arcsec
    if not np.isfinite(scale) or scale <= 0:
        return float(default)
    return round(float(scale), 6)


def good_spaxels(values: tuple[np.ndarray, ...], errors: tuple[np.ndarray, ...]) -> np.ndarray:
    """Spaxels where every value is finite and every error finite and > 0.

    Examples
    --------
    >>> good_spaxels((np.array([1.0, np.nan, 1.0]),), (np.array([1.0, 1.0, np.inf]),)).tolist()
    [True, False, False]
    """
    good = np.ones(np.shape(values[0]), dtype=bool)
    for arr in values:
        good &= np.isfinite(arr)
    for err in errors:
        good &= np.isfinite(err) & (err > 0)
    return good


def write_fits(path: str | os.PathLike, hdul: fits.HDUList, overwrite: bool = False) -> Path:
    """Write ``hdul`` atomically (temporary file, then rename); gzip when ``path`` ends in ``.gz``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    buffer = io.BytesIO()
    hdul.writeto(buffer, output_verify="exception")
    blob = buffer.getvalue()
    if path.name.endswith(".gz"):
        blob = gzip.compress(blob, compresslevel=6, mtime=0)
    tmp = path.with_name(f"{path.name}.part-{os.getpid()}")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return path
