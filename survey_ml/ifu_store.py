"""The on-disk layout of an ingested IFU release (SAMI, MaNGA), and ``ingest_ifu()`` that builds it.

An IFU release store is one directory::

    <store>/
        release.json           kind="ifu", release name, survey, map_size, chunk_rows, version
        <release>.zarr/        Zarr v3 group
            maps/flux          (n_rows, map_size, map_size) float32   H-alpha flux, NaN padded
            maps/flux_err      ... float32   1-sigma errors (inf where the survey gives ivar = 0)
            maps/velocity      ... float32   gas line-of-sight velocity, km/s
            maps/velocity_err
            maps/dispersion    ... float32   gas dispersion, km/s (SAMI: LSF removed; MaNGA: not,
            maps/dispersion_err              see the ``instsigma`` column)
            maps/good          (n_rows, map_size, map_size) bool
        galaxies.parquet       one row per input galaxy file, joined to the arrays by ``row``

Each galaxy's maps sit centred in the ``map_size`` square: its own (ny, nx) spaxels start at
``((map_size - ny) // 2, (map_size - nx) // 2)`` and everything around them is NaN / False.
Arrays are chunked by whole galaxies (``chunk_rows`` per chunk); one ingest task reads one
block of files and writes exactly one Zarr chunk of rows, so no two tasks ever write the same
chunk. ``galaxies.parquet`` is the commit record, replaced atomically after the arrays are
written: a row exists only once it is listed there, so ingest is idempotent and an
interrupted one is simply run again (files already listed are skipped, rows written but never
committed are overwritten).

Inputs: SAMI DR3 ``{catid}_{cube}_Halpha_{binning}_{components}.fits`` (the gas-velocity and
gas-vdisp maps are read beside it), MaNGA DAP ``manga-*-MAPS-*.fits(.gz)``, and MaNGA DRP
``manga-*-LOGCUBE.fits(.gz)``, turned into H-alpha moment maps (:func:`moment_maps_from_cube`)
in the task that reads them. The survey catalogue (SAMI input catalogue CSV, MaNGA DRPall)
is joined by catid / plateifu; a galaxy missing from it gets NaN, not an error.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
import zarr.codecs

from . import __version__
from .cluster import current_client, run_blocks
from .errors import SurveyFileError
from .io._fits import header_value, open_fits
from .io.ifu import C_KMS, IFUCube, IFUMaps, pixel_scale_arcsec
from .io.manga import DRP_DONOTUSE, log_mstar_h70, read_drpall, read_manga_maps
from .io.sami import read_sami_catalogue, read_sami_maps
from .store import _INT_MISSING, IngestReport, _atomic_write_bytes, _blocks, _typed_frame, discover_files

__all__ = ["ingest_ifu", "open_ifu_release", "IFURelease", "moment_maps_from_cube", "discover_ifu_files",
           "MAP_ARRAYS", "MAP_VALUES", "PREPARE_INPUTS", "GALAXY_COLUMNS", "MAP_SIZES", "HALPHA_VACUUM"]

#: Default side of the stored maps (spaxels): SAMI maps are 50 x 50, MaNGA's largest bundle 74 x 74.
MAP_SIZES = {"sami": 50, "manga": 74}
#: Stored map arrays and their dtypes; the float maps are NaN outside a galaxy's own spaxels.
MAP_ARRAYS = {"flux": "float32", "flux_err": "float32", "velocity": "float32", "velocity_err": "float32",
              "dispersion": "float32", "dispersion_err": "float32", "good": "bool"}
MAP_VALUES = tuple(name for name in MAP_ARRAYS if name != "good")
#: The arrays :func:`survey_ml.preprocess.maps.prepare_galaxies` takes (with ``pixel_scale``):
#: ``prepare_galaxies(release.read_block(a, b, PREPARE_INPUTS))``.
PREPARE_INPUTS = ("flux", "flux_err", "velocity", "velocity_err", "good")
#: Flux unit of the stored ``flux`` maps, as each survey publishes it (not rescaled).
FLUX_UNITS = {"sami": "1e-16 erg/s/cm2/spaxel", "manga": "1e-17 erg/s/cm2/spaxel"}
#: H-alpha and the [NII] doublet, vacuum Angstrom (SDSS line list).
HALPHA_VACUUM = 6564.61
NII_VACUUM = (6549.86, 6585.27)

#: Columns of galaxies.parquet, with dtypes. Catalogue quantities are in h = 0.7 units.
GALAXY_COLUMNS: dict[str, str] = {
    "row": "int64", "id": "string", "catid": "int64", "plateifu": "string", "mangaid": "string",
    "ra": "float64", "dec": "float64", "z": "float64", "log_mstar": "float64", "r_e_arcsec": "float64",
    "ellip": "float64", "pa_phot": "float64", "abs_mag_r": "float64", "ny": "int32", "nx": "int32",
    "pixel_scale": "float64", "n_good": "int32", "instsigma": "float64", "format": "string",
    "file": "string", "file_bytes": "int64", "status": "string", "message": "string",
}
#: Catalogue columns joined onto the rows (the catalogue wins over a file's own value).
CATALOGUE_FIELDS = ("ra", "dec", "z", "log_mstar", "r_e_arcsec", "ellip", "pa_phot", "abs_mag_r")
_SAMI_NAME = re.compile(r"^(?P<catid>\d+)_(?P<cube>[A-Z])_(?P<quantity>[A-Za-z0-9-]+)_"
                        r"(?P<binning>default|adaptive|sectors)_(?P<components>1-comp|recom-comp)\.fits(\.gz)?$")
_MANGA_NAME = re.compile(r"^manga-(?P<plate>\d+)-(?P<ifu>\d+)-(?P<kind>MAPS|LOGCUBE)(-[A-Za-z0-9-]+)?\.fits(\.gz)?$")
#: SAMI DR3 map products in order of preference when a folder holds several of one cube.
_SAMI_PREFERENCE = [(b, c) for c in ("1-comp", "recom-comp") for b in ("default", "adaptive", "sectors")]
_FITS_SUFFIXES = (".fits", ".fits.gz")


# --------------------------------------------------------------------------- moment maps
def _pixel_widths(wave: np.ndarray) -> np.ndarray:
    """Width (A) of each pixel of a monotonic grid; edges at the geometric midpoints (exact on a log grid).

    Examples
    --------
    >>> _pixel_widths(np.array([1.0, 2.0, 4.0])).round(6).tolist()
    [0.707107, 1.414214, 2.828427]
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.size < 2:
        return np.ones_like(wave)
    mid = np.sqrt(wave[1:] * wave[:-1])
    edges = np.concatenate([[wave[0] ** 2 / mid[0]], mid, [wave[-1] ** 2 / mid[-1]]])
    return np.diff(edges)


def _window_pixels(wave: np.ndarray, z: float, window_kms: float, continuum_kms: tuple[float, float],
                   exclude_kms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Velocity of every pixel relative to H-alpha at ``z``, and the line and continuum pixel masks."""
    lam_obs = HALPHA_VACUUM * (1.0 + z)
    v = C_KMS * (np.asarray(wave, dtype=np.float64) / lam_obs - 1.0)
    line = np.abs(v) <= window_kms
    cont = (np.abs(v) >= continuum_kms[0]) & (np.abs(v) <= continuum_kms[1])
    for nii in NII_VACUUM:  # keep [NII] (and its rotation) out of the continuum
        cont &= np.abs(v - C_KMS * (nii / HALPHA_VACUUM - 1.0)) > exclude_kms
    return v, line, cont


def moment_maps_from_cube(cube: IFUCube, z: float, window_kms: float = 600.0,
                          continuum_kms: tuple[float, float] = (1000.0, 2500.0), *, min_snr: float = 3.0,
                          min_coverage: float = 0.9, exclude_kms: float = 500.0) -> IFUMaps:
    """H-alpha moment maps (flux, velocity, dispersion, errors) of a data cube, all spaxels at once.

    Velocities are ``v = c (lambda / lambda_Ha,obs - 1)`` with ``lambda_Ha,obs = 6564.61 A (1 + z)``
    (vacuum). Per spaxel, a straight line ``a + b v`` is fitted by weighted least squares
    (weights ivar) to the continuum side bands ``continuum_kms[0] <= |v| <= continuum_kms[1]``
    (less pixels within ``exclude_kms`` of [NII] 6550, 6585) and subtracted; then over the line
    window ``|v| <= window_kms``, with ``F_i = (f_i - a - b v_i) dlambda_i``::

        flux       = sum F_i                                   (moment 0)
        velocity   = sum v_i F_i / sum F_i                     (moment 1, km/s relative to z)
        dispersion = sqrt(sum (v_i - velocity)^2 F_i / sum F_i)

    less ``cube.meta["instsigma"]`` (km/s) in quadrature when the meta has a finite one (0
    where the line is narrower). Errors are propagated linearly from IVAR, including the
    continuum fit's covariance. Pixels with ivar <= 0, non-finite values or DONOTUSE (MaNGA
    DRP bit 10) count in neither fit nor sums.

    Parameters
    ----------
    cube : IFUCube
        (nwave, ny, nx) flux density per A (MaNGA 1e-17 erg/s/cm2/A/spaxel), ivar, mask, wave.
        Only the planes in the window and side bands are used, so a cube cut to them gives the
        same maps.
    z : float
        Redshift the velocities are relative to.
    window_kms : float
        Half-width of the line window.
    continuum_kms : (float, float)
        Inner and outer |v| of the two continuum side bands.
    min_snr : float
        Spaxels with flux S/N below this are not ``good``.
    min_coverage : float
        Share of the window's pixels that must be usable for a spaxel to be ``good``.
    exclude_kms : float
        Continuum pixels this close to the [NII] lines are left out.

    Returns
    -------
    IFUMaps
        float32 maps; flux in the cube's flux unit times A (MaNGA 1e-17 erg/s/cm2/spaxel).
        NaN (errors inf) where nothing could be measured: no continuum fit (fewer than 2 usable
        pixels in either side band), no usable window pixel, and for velocity and dispersion
        also where the flux is not positive. ``good``: all values finite, errors finite and
        > 0, S/N >= ``min_snr`` and ``min_coverage`` of the window usable. ``meta`` is the
        cube's plus z, window_kms, continuum_kms, flux_unit.

    Raises
    ------
    SurveyFileError
        (code ``no_coverage``) when the cube's wavelengths do not reach across the window and
        both side bands.

    Notes
    -----
    The moments of a line are those of its observed profile: the dispersion includes the
    instrumental broadening (and the pixel width, as a post-pixelisation LSF does) unless
    ``instsigma`` is given. [NII] 6550 lies 674 km/s blue of H-alpha, so its wing enters a
    wide window when the gas is broad or the galaxy rotates fast.
    """
    wave = np.asarray(cube.wave, dtype=np.float64)
    name = cube.path or str(cube.meta.get("file") or "<cube>")
    if not np.isfinite(z):
        raise SurveyFileError(name, "no redshift to place the H-alpha window", code="no_redshift")
    lam_obs = HALPHA_VACUUM * (1.0 + z)
    lo, hi = lam_obs * (1 - continuum_kms[1] / C_KMS), lam_obs * (1 + continuum_kms[1] / C_KMS)
    if wave.size < 2 or wave[0] > lo or wave[-1] < hi:
        raise SurveyFileError(name, f"wavelengths {wave[0]:.1f}-{wave[-1]:.1f} A do not cover the H-alpha "
                              f"window and side bands at z = {z:.5f} ({lo:.1f}-{hi:.1f} A)", code="no_coverage")
    v_all, line_all, cont_all = _window_pixels(wave, z, window_kms, continuum_kms, exclude_kms)
    dlam_all = _pixel_widths(wave)
    used = np.flatnonzero(line_all | cont_all)
    line, cont, v, dlam = line_all[used], cont_all[used], v_all[used], dlam_all[used]
    ny, nx = np.shape(cube.flux)[1:]
    shape = (len(used), ny * nx)
    flux = np.asarray(cube.flux)[used].reshape(shape).astype(np.float64)
    ivar = np.asarray(cube.ivar)[used].reshape(shape).astype(np.float64)
    mask = np.asarray(cube.mask)[used].reshape(shape)
    usable = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & ((mask & DRP_DONOTUSE) == 0)
    flux = np.where(usable, flux, 0.0)
    ivar = np.where(usable, ivar, 0.0)

    # Continuum: weighted straight line in x = v / 1000 (for conditioning), per spaxel.
    x = (v / 1000.0)[:, None]
    w = np.where(cont[:, None], ivar, 0.0)
    s0, s1, s2 = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    t0, t1 = (w * flux).sum(0), (w * x * flux).sum(0)
    det = s0 * s2 - s1 * s1
    n_side = [(usable & (cont & (v < 0))[:, None]).sum(0), (usable & (cont & (v > 0))[:, None]).sum(0)]
    fitted = (n_side[0] >= 2) & (n_side[1] >= 2) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = np.where(fitted, det, 1.0)
        a, b = (s2 * t0 - s1 * t1) / det, (s0 * t1 - s1 * t0) / det
        c_aa, c_ab, c_bb = s2 / det, -s1 / det, s0 / det        # covariance of (a, b)

        in_line = usable & line[:, None]
        dl = np.where(in_line, dlam[:, None], 0.0)
        resid = (flux - a - b * x) * dl                          # F_i, 0 outside the usable window
        var = np.where(in_line, dl * dl / np.where(ivar > 0, ivar, 1.0), 0.0)

        def continuum_var(g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
            """Variance that the continuum fit adds to sum_i g_i (a + b x_i)."""
            return g0 * g0 * c_aa + 2 * g0 * g1 * c_ab + g1 * g1 * c_bb

        vv = v[:, None]
        m0 = resid.sum(0)
        m0_var = var.sum(0) + continuum_var(dl.sum(0), (dl * x).sum(0))
        m1 = (vv * resid).sum(0) / m0
        d1 = np.where(in_line, vv - m1, 0.0)                     # d m1 / d F_i = (v_i - m1) / m0
        m1_var = ((d1 * d1 * var).sum(0) + continuum_var((d1 * dl).sum(0), (d1 * dl * x).sum(0))) / m0**2
        m2 = (d1 * d1 * resid).sum(0) / m0
        d2 = np.where(in_line, d1 * d1 - m2, 0.0)                # d m2 / d F_i = ((v_i - m1)^2 - m2) / m0
        m2_var = ((d2 * d2 * var).sum(0) + continuum_var((d2 * dl).sum(0), (d2 * dl * x).sum(0))) / m0**2
        sigma = np.sqrt(m2)
        sigma_err = np.sqrt(m2_var) / (2.0 * sigma)
        flux_err = np.sqrt(m0_var)
        velocity_err = np.sqrt(m1_var)

        instsigma = float(cube.meta.get("instsigma", np.nan) or np.nan)
        if np.isfinite(instsigma) and instsigma > 0:
            corrected = np.sqrt(np.clip(m2 - instsigma**2, 0.0, None))
            sigma_err = np.where(corrected > 0.1 * instsigma,
                                 sigma * sigma_err / np.maximum(corrected, 0.1 * instsigma), sigma_err)
            sigma = corrected

    n_line = int(line.sum())
    coverage = in_line.sum(0) / max(n_line, 1)
    measured = fitted & (in_line.sum(0) > 0)
    kinematic = measured & (m0 > 0) & (m2 > 0)
    maps = {"flux": (m0, flux_err, measured), "velocity": (m1, velocity_err, kinematic),
            "dispersion": (sigma, sigma_err, kinematic)}
    out: dict[str, np.ndarray] = {}
    for key, (value, err, ok) in maps.items():
        ok = ok & np.isfinite(value) & np.isfinite(err)
        out[key] = np.where(ok, value, np.nan).astype(np.float32).reshape(ny, nx)
        out[f"{key}_err"] = np.where(ok, err, np.inf).astype(np.float32).reshape(ny, nx)
    good = (np.isfinite(out["flux"]) & np.isfinite(out["velocity"]) & np.isfinite(out["dispersion"])
            & np.isfinite(out["flux_err"]) & (out["flux_err"] > 0)
            & np.isfinite(out["velocity_err"]) & (out["velocity_err"] > 0)
            & np.isfinite(out["dispersion_err"]) & (out["dispersion_err"] > 0)
            & (out["flux"] >= min_snr * out["flux_err"]) & (coverage >= min_coverage).reshape(ny, nx))
    unit = str(cube.meta.get("flux_unit", "")).replace("/Ang", "").replace("/A/", "/") or FLUX_UNITS["manga"]
    meta = {**cube.meta, "z": float(z), "window_kms": float(window_kms),
            "continuum_kms": tuple(float(c) for c in continuum_kms), "flux_unit": unit}
    return IFUMaps(flux=out["flux"], flux_err=out["flux_err"], velocity=out["velocity"],
                   velocity_err=out["velocity_err"], dispersion=out["dispersion"],
                   dispersion_err=out["dispersion_err"], good=good, pixel_scale=float(cube.pixel_scale),
                   meta=meta, path=cube.path)


def _read_logcube_window(path: str, z_hint: float, continuum_kms: tuple[float, float] = (1000.0, 2500.0)
                         ) -> tuple[IFUCube, float, float]:
    """The planes of a MaNGA LOGCUBE around H-alpha, its redshift and instrumental sigma (km/s).

    Only the window's planes of FLUX, IVAR and MASK are sliced out of the file (``section``)
    and converted; ``z`` is ``z_hint`` when finite, else the primary header's Z or NSA_Z.
    """
    with open_fits(path) as hdul:
        primary = hdul[0].header
        plateifu = header_value(primary, "PLATEIFU", path, str)
        meta = {"survey": "manga", "id": plateifu, "plateifu": plateifu,
                "mangaid": header_value(primary, "MANGAID", path, str, required=False, default=""),
                "ra": header_value(primary, "OBJRA", path, float),
                "dec": header_value(primary, "OBJDEC", path, float), "file": path}
        z = float(z_hint) if z_hint is not None and np.isfinite(z_hint) else np.nan
        for key in ("Z", "NSA_Z"):
            if not np.isfinite(z):
                z = header_value(primary, key, path, float, required=False, default=np.nan)
        if not np.isfinite(z) or z <= -0.01:
            raise SurveyFileError(path, f"no redshift for {plateifu}: not in the DRPall catalogue given and "
                                  "no Z in the primary header", code="no_redshift")
        hdus = {}
        for extname in ("FLUX", "IVAR", "MASK", "WAVE"):
            if extname not in hdul or hdul[extname].header.get("NAXIS", 0) == 0:
                raise SurveyFileError(path, f"extension {extname} is missing or empty", code="wrong_format")
            hdus[extname] = hdul[extname]
        shape = hdus["FLUX"].shape
        if len(shape) != 3:
            raise SurveyFileError(path, f"FLUX must be (nwave, ny, nx), found shape {shape}", code="wrong_format")
        for extname in ("IVAR", "MASK"):
            if hdus[extname].shape != shape:
                raise SurveyFileError(path, f"{extname} has shape {hdus[extname].shape} but FLUX {shape}",
                                      code="wrong_format")
        if int(hdus["MASK"].header.get("BITPIX", 0)) < 0:
            raise SurveyFileError(path, "MASK must hold integer bitmasks", code="wrong_format")
        wave = np.asarray(hdus["WAVE"].data, dtype=np.float64).ravel()
        if wave.shape[0] != shape[0]:
            raise SurveyFileError(path, f"WAVE has {wave.shape[0]} values but FLUX {shape[0]} wavelengths",
                                  code="wrong_format")
        lam_obs = HALPHA_VACUUM * (1.0 + z)
        i0 = int(np.searchsorted(wave, lam_obs * (1 - continuum_kms[1] / C_KMS), side="left"))
        i1 = int(np.searchsorted(wave, lam_obs * (1 + continuum_kms[1] / C_KMS), side="right"))
        i0, i1 = max(i0 - 1, 0), min(i1 + 1, shape[0])          # one spare plane each side
        planes = slice(i0, i1)
        flux = np.asarray(hdus["FLUX"].section[planes], dtype=np.float32)
        ivar = np.asarray(hdus["IVAR"].section[planes], dtype=np.float32)
        mask = np.asarray(hdus["MASK"].section[planes]).astype(np.int32)
        instsigma = np.nan
        if "SPECRES" in hdul and hdul["SPECRES"].data is not None:
            specres = np.asarray(hdul["SPECRES"].data, dtype=np.float64).ravel()
            if specres.shape == wave.shape:
                resolution = float(np.interp(lam_obs, wave, specres))
                if np.isfinite(resolution) and resolution > 0:
                    instsigma = C_KMS / (2.0 * np.sqrt(2.0 * np.log(2.0)) * resolution)
        pixel_scale = pixel_scale_arcsec(hdus["FLUX"].header)
        meta["flux_unit"] = str(hdus["FLUX"].header.get("BUNIT", "1E-17 erg/s/cm^2/Ang/spaxel")).strip()
    cube = IFUCube(flux=flux, ivar=ivar, mask=mask, wave=wave[planes], pixel_scale=pixel_scale, meta=meta, path=path)
    return cube, z, instsigma


# --------------------------------------------------------------------------- inputs
def _sami_key(name: str) -> tuple | None:
    match = _SAMI_NAME.match(name)
    return None if match is None else (match["catid"], match["cube"])


def discover_ifu_files(source: str | os.PathLike | Iterable[str | os.PathLike], survey: str) -> list[str]:
    """Resolve an ingest source to the sorted list of absolute per-galaxy files.

    Parameters
    ----------
    source : path or iterable of paths
        A folder, searched recursively: SAMI ``*_Halpha_*.fits(.gz)`` (one per galaxy cube;
        of several binnings/components of one cube, default 1-comp is preferred), MaNGA
        ``manga-*-MAPS-*.fits(.gz)`` and ``manga-*-LOGCUBE.fits(.gz)`` (a LOGCUBE is skipped
        when a MAPS file of the same plate-ifu is found). Or a file list (``.txt``/``.lst``)
        or an iterable of paths, taken as given - except SAMI companion maps (gas-velocity,
        gas-vdisp, other lines), dropped since they are read with their Halpha file.
    survey : {"sami", "manga"}

    Returns
    -------
    list of str
        Unique absolute paths, sorted; paths that do not exist are kept (ingest flags them).
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        found = [p for p in Path(source).rglob("*") if p.name.lower().endswith(_FITS_SUFFIXES) and p.is_file()]
        if survey == "sami":
            best: dict[tuple, tuple[int, Path]] = {}
            for p in found:
                match = _SAMI_NAME.match(p.name)
                if "_Halpha_" not in p.name:
                    continue
                key = (str(p.parent), p.name) if match is None else (str(p.parent), match["catid"], match["cube"])
                rank = 0 if match is None else _SAMI_PREFERENCE.index((match["binning"], match["components"]))
                if key not in best or rank < best[key][0]:
                    best[key] = (rank, p)
            files = [p for _, p in best.values()]
        else:
            named = [(p, _MANGA_NAME.match(p.name)) for p in found]
            with_maps = {(m["plate"], m["ifu"]) for _, m in named if m and m["kind"] == "MAPS"}
            files = [p for p, m in named if m and (m["kind"] == "MAPS" or (m["plate"], m["ifu"]) not in with_maps)]
        return sorted({os.path.abspath(p) for p in files})
    files = discover_files(source)
    if survey == "sami":
        files = [f for f in files
                 if not ((m := _SAMI_NAME.match(Path(f).name)) and m["quantity"] != "Halpha")]
    return files


def _id_from_name(path: str, survey: str) -> str | None:
    """The galaxy id a file name gives (for rows of files that cannot be read).

    Examples
    --------
    >>> _id_from_name("/d/209807_A_Halpha_default_1-comp.fits", "sami")
    '209807'
    >>> _id_from_name("manga-8485-1901-LOGCUBE.fits.gz", "manga"), _id_from_name("x.fits", "manga")
    ('8485-1901', None)
    """
    name = Path(path).name
    if survey == "sami":
        match = _SAMI_NAME.match(name)
        return match["catid"] if match else None
    match = _MANGA_NAME.match(name)
    return f"{match['plate']}-{match['ifu']}" if match else None


def _catalogue_table(catalogue, survey: str) -> pd.DataFrame:
    """The survey catalogue as one row per id (string index) with :data:`CATALOGUE_FIELDS` (+ mangaid)."""
    if isinstance(catalogue, pd.DataFrame):
        cat = catalogue.rename(columns=lambda c: str(c).lower())
    elif survey == "sami":
        cat = read_sami_catalogue(catalogue)
    else:
        cat = read_drpall(catalogue)
    if survey == "sami":
        out = pd.DataFrame({"id": cat["catid"].astype("int64").astype(str), "ra": cat["ra_obj"],
                            "dec": cat["dec_obj"], "z": cat["z_spec"], "log_mstar": cat["mstar"],
                            "r_e_arcsec": cat["r_e"], "ellip": cat["ellip"], "pa_phot": cat["pa"],
                            "abs_mag_r": cat["m_r"]})
    else:
        def positive(col: str) -> np.ndarray:
            values = pd.to_numeric(cat[col], errors="coerce").to_numpy(np.float64) if col in cat else np.nan
            return np.where(np.asarray(values) > 0, values, np.nan) * np.ones(len(cat))

        z = positive("z")
        z = np.where(np.isfinite(z), z, positive("nsa_z"))
        if "nsa_elpetro_absmag_r" in cat:
            absmag = pd.to_numeric(cat["nsa_elpetro_absmag_r"], errors="coerce").to_numpy(np.float64)
        else:
            absmag = np.full(len(cat), np.nan)
        # NSA magnitudes are M - 5 log10 h (h = 1); to h = 0.7 like the masses. -9999 = no fit.
        absmag = np.where((absmag > -50) & (absmag < 0), absmag + 5 * np.log10(0.7), np.nan)
        ba = positive("nsa_elpetro_ba")
        phi = pd.to_numeric(cat["nsa_elpetro_phi"], errors="coerce").to_numpy(np.float64)
        out = pd.DataFrame({"id": cat["plateifu"].astype(str).str.strip(),
                            "mangaid": cat["mangaid"].astype(str).str.strip() if "mangaid" in cat else None,
                            "ra": pd.to_numeric(cat["objra"], errors="coerce"),
                            "dec": pd.to_numeric(cat["objdec"], errors="coerce"), "z": z,
                            "log_mstar": log_mstar_h70(cat["nsa_elpetro_mass"].to_numpy(np.float64)),
                            "r_e_arcsec": positive("nsa_elpetro_th50_r"), "ellip": 1.0 - ba,
                            "pa_phot": np.where(phi >= -360, phi, np.nan), "abs_mag_r": absmag})
    return out.drop_duplicates("id", keep="first").set_index("id")


# --------------------------------------------------------------------------- one block
def _record(path: str, row: int, survey: str) -> dict[str, Any]:
    record: dict[str, Any] = {c: None for c in GALAXY_COLUMNS}
    record.update(row=row, file=path, id=_id_from_name(path, survey), ny=0, nx=0, n_good=0,
                  file_bytes=os.path.getsize(path) if os.path.exists(path) else _INT_MISSING)
    return record


def _read_galaxy(path: str, survey: str, z_by_id: Mapping[str, float]) -> tuple[IFUMaps, str]:
    """One galaxy's maps from its file, and the format it was read as."""
    if survey == "sami":
        return read_sami_maps(path), "sami_maps"
    match = _MANGA_NAME.match(Path(path).name)
    if match and match["kind"] == "LOGCUBE":
        cube, z, instsigma = _read_logcube_window(path, z_by_id.get(f"{match['plate']}-{match['ifu']}", np.nan))
        maps = moment_maps_from_cube(cube, z)       # cube.meta has no instsigma: dispersion as observed
        maps.meta["instsigma"] = instsigma
        return maps, "manga_logcube"
    return read_manga_maps(path), "manga_maps"


def _fields_from(maps: IFUMaps, fmt: str) -> dict[str, Any]:
    meta = maps.meta
    ny, nx = maps.shape
    fields = {"id": str(meta["id"]), "ra": meta.get("ra"), "dec": meta.get("dec"), "z": meta.get("z"),
              "ny": ny, "nx": nx, "pixel_scale": float(maps.pixel_scale), "format": fmt,
              "instsigma": meta.get("instsigma", np.nan)}
    if meta.get("survey") == "sami":
        fields["catid"] = int(meta["catid"])
    else:
        fields.update(plateifu=meta.get("plateifu"), mangaid=meta.get("mangaid") or None,
                      # the MAPS header's NSA photometry, until the catalogue overrides it
                      r_e_arcsec=meta.get("reff"), ellip=meta.get("ecooell"), pa_phot=meta.get("ecoopa"))
    return fields


def _ingest_ifu_block(paths: Sequence[str], first_row: int, zarr_path: str, survey: str, map_size: int,
                      z_by_id: Mapping[str, float]) -> pd.DataFrame:
    """Read ``paths`` into rows ``first_row ...`` of the store; return their table rows.

    Runs on a worker. Never raises for a bad file: the row records status and message, and
    the message always starts with the path of the row's own file.
    """
    n, size = len(paths), map_size
    block = {name: np.full((n, size, size), np.nan, dtype=np.float32) for name in MAP_VALUES}
    block["good"] = np.zeros((n, size, size), dtype=bool)
    records = []
    for i, path in enumerate(paths):
        record = _record(path, first_row + i, survey)
        try:
            maps, fmt = _read_galaxy(path, survey, z_by_id)
            record.update(_fields_from(maps, fmt))
            ny, nx = maps.shape
            if ny > size or nx > size:
                raise SurveyFileError(path, f"maps are {ny} x {nx} spaxels, larger than the store's "
                                      f"{size} x {size} (map_size)", code="too_large")
            y0, x0 = (size - ny) // 2, (size - nx) // 2
            for name in MAP_ARRAYS:
                block[name][i, y0:y0 + ny, x0:x0 + nx] = getattr(maps, name)
            n_good = int(np.count_nonzero(maps.good))
            record.update(n_good=n_good, status="ok" if n_good else "no_coverage",
                          message="" if n_good else f"{path}: no good spaxel")
        except SurveyFileError as exc:
            text = str(exc)
            record.update(status=exc.code, message=text if exc.path == path else f"{path}: {text}")
        except Exception as exc:  # a reader bug must not stop the run either; say so plainly
            record.update(status="error", message=f"{path}: unexpected {type(exc).__name__}: {exc}")
        records.append(record)
    rows = slice(first_row, first_row + n)
    for name in MAP_ARRAYS:
        zarr.open_array(f"{zarr_path}/maps/{name}", mode="r+")[rows] = block[name]
    return _typed_frame(pd.DataFrame.from_records(records, columns=list(GALAXY_COLUMNS)), GALAXY_COLUMNS)


def _join_catalogue(rows: pd.DataFrame, cat: pd.DataFrame | None) -> pd.DataFrame:
    """Catalogue values over the files' own (kept where the catalogue has none)."""
    if cat is None or not len(rows):
        return rows
    joined = cat.reindex(rows["id"].astype(object).where(rows["id"].notna(), "").to_numpy())
    for col in CATALOGUE_FIELDS:
        new = pd.to_numeric(joined[col], errors="coerce").to_numpy(np.float64)
        rows[col] = np.where(np.isfinite(new), new, rows[col].to_numpy(np.float64))
    if "mangaid" in joined:
        new = joined["mangaid"].to_numpy(object)
        rows["mangaid"] = pd.array([m if isinstance(m, str) and m else old for m, old in
                                    zip(new, rows["mangaid"].astype(object))], dtype="string")
    return rows


def _mark_duplicates(galaxies: pd.DataFrame) -> pd.DataFrame:
    """Flag every 'ok' row whose id already appears in an earlier 'ok' row."""
    usable = galaxies["status"] == "ok"
    first = galaxies[usable].drop_duplicates("id", keep="first").set_index("id")["file"]
    dup = usable & galaxies["id"].where(usable).duplicated(keep="first") & galaxies["id"].notna()
    if dup.any():
        galaxies.loc[dup, "message"] = [f"{f}: duplicate id {i}, already ingested from {first[i]}"
                                        for f, i in zip(galaxies.loc[dup, "file"], galaxies.loc[dup, "id"])]
        galaxies.loc[dup, "status"] = "duplicate"
    return galaxies


# --------------------------------------------------------------------------- layout
@dataclass
class IFURelease:
    """An ingested IFU release opened for reading.

    Attributes
    ----------
    path : Path
        The store directory.
    name : str
        Release name (``sami-dr3``).
    survey : str
        "sami" or "manga".
    map_size : int
        Side of the stored maps (spaxels).
    chunk_rows : int
        Galaxies per Zarr chunk (= one unit of downstream work).
    galaxies : pandas.DataFrame
        The committed row table (``galaxies.parquet``), columns :data:`GALAXY_COLUMNS`.
    info : dict
        ``release.json``.
    """

    path: Path
    name: str
    survey: str
    map_size: int
    chunk_rows: int
    galaxies: pd.DataFrame
    info: dict = field(default_factory=dict)

    @property
    def zarr_path(self) -> Path:
        return self.path / f"{self.name}.zarr"

    @property
    def n_rows(self) -> int:
        return len(self.galaxies)

    def _array(self, name: str) -> zarr.Array:
        if name not in MAP_ARRAYS:
            raise KeyError(f"no map {name!r}; the store holds {', '.join(MAP_ARRAYS)}")
        return zarr.open_array(str(self.zarr_path / "maps" / name), mode="r")

    def maps(self, name: str):
        """A committed map array (n_rows, map_size, map_size) as a lazy ``dask.array``, chunks = Zarr chunks."""
        import dask.array as da

        return da.from_zarr(self._array(name))[: self.n_rows]

    def read_block(self, start: int, stop: int, names: Sequence[str] = tuple(MAP_ARRAYS)) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` (clipped to the committed rows) as numpy arrays: what a Dask task reads.

        Returns ``{name: (n, map_size, map_size)}`` for each of ``names`` and ``pixel_scale`` (n,),
        so that ``prepare_galaxies(release.read_block(a, b, PREPARE_INPUTS))`` works as is.
        """
        stop = min(int(stop), self.n_rows)
        start = min(max(int(start), 0), stop)
        out = {name: self._array(name)[start:stop] for name in names}
        out["pixel_scale"] = self.galaxies["pixel_scale"].to_numpy(np.float64)[start:stop]
        return out

    def galaxy(self, row: int) -> IFUMaps:
        """One galaxy's maps cut back to its own (ny, nx), with its table row as ``meta``."""
        record = self.galaxies.iloc[int(row)]
        ny, nx = int(record["ny"]), int(record["nx"])
        y0, x0 = (self.map_size - ny) // 2, (self.map_size - nx) // 2
        arrays = {name: self._array(name)[int(row), y0:y0 + ny, x0:x0 + nx] for name in MAP_ARRAYS}
        meta = {k: (None if pd.isna(v) else v) for k, v in record.items()}
        meta.update(survey=self.survey, flux_unit=self.info.get("flux_unit", FLUX_UNITS[self.survey]))
        return IFUMaps(**arrays, pixel_scale=float(record["pixel_scale"]), meta=meta, path=str(record["file"]))


def open_ifu_release(store: str | os.PathLike) -> IFURelease:
    """Open an ingested IFU release store read-only.

    Parameters
    ----------
    store : str or os.PathLike
        Directory written by :func:`ingest_ifu`.
    """
    path = Path(store)
    info_file = path / "release.json"
    if not info_file.exists():
        raise FileNotFoundError(f"{path} is not a survey_ml release store (no release.json)")
    info = json.loads(info_file.read_text())
    if info.get("kind") != "ifu":
        raise ValueError(f"{path} is not an IFU release store (kind={info.get('kind', 'spectra')!r}); "
                         "open spectra stores with survey_ml.store.open_release")
    galaxies_file = path / "galaxies.parquet"
    galaxies = pd.read_parquet(galaxies_file) if galaxies_file.exists() else _empty_galaxies()
    return IFURelease(path=path, name=info["release"], survey=info["survey"], map_size=int(info["map_size"]),
                      chunk_rows=int(info["chunk_rows"]), galaxies=galaxies, info=info)


def _empty_galaxies() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in GALAXY_COLUMNS.items()})


def _create_ifu_store(path: Path, release: str, survey: str, map_size: int, chunk_rows: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(path / f"{release}.zarr"), mode="a")
    # The spectra store's codec (zstd level 1 + bitshuffle, see store.py).
    compressor = zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")
    for name, dtype in MAP_ARRAYS.items():
        if f"maps/{name}" not in group:
            group.create_array(f"maps/{name}", shape=(0, map_size, map_size),
                               chunks=(chunk_rows, map_size, map_size), dtype=dtype, compressors=compressor,
                               fill_value=False if dtype == "bool" else np.nan)
    info = {"kind": "ifu", "release": release, "survey": survey, "map_size": map_size, "chunk_rows": chunk_rows,
            "flux_unit": FLUX_UNITS[survey], "dispersion_corrected": survey == "sami",
            "survey_ml_version": __version__}
    info_file = path / "release.json"
    if not info_file.exists() or json.loads(info_file.read_text()) != info:
        group.attrs.update(info)
        _atomic_write_bytes(info_file, json.dumps(info, indent=2).encode())


def _write_galaxies(path: Path, galaxies: pd.DataFrame, release: str, survey: str) -> None:
    table = pa.Table.from_pandas(galaxies, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"survey_ml"] = json.dumps({"release": release, "survey": survey, "version": __version__}).encode()
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buffer)
    _atomic_write_bytes(path / "galaxies.parquet", buffer.getvalue())


# --------------------------------------------------------------------------- ingest
def ingest_ifu(source, store: str | os.PathLike, release: str, survey: str, *, catalogue=None, client=None,
               chunk_rows: int = 64, map_size: int | None = None, progress: bool = False) -> IngestReport:
    """Ingest IFU galaxy files (SAMI maps, MaNGA MAPS or LOGCUBEs) into a release store, on Dask.

    Parameters
    ----------
    source : path or iterable of paths
        A folder, a file list or paths; see :func:`discover_ifu_files`.
    store : str or os.PathLike
        Store directory (created if needed; appended to if it exists).
    release : str
        Release name; names the Zarr group ``<release>.zarr`` (an existing store keeps its own).
    survey : {"sami", "manga"}
        Must match an existing store's.
    catalogue : path or pandas.DataFrame, optional
        SAMI input catalogue CSV (joined by catid) or MaNGA DRPall FITS (by plateifu), giving
        ra, dec, z, log_mstar (h = 0.7: SAMI ``mstar``; MaNGA ``nsa_elpetro_mass`` through
        :func:`~survey_ml.io.manga.log_mstar_h70`), r_e_arcsec, ellip, pa_phot and abs_mag_r
        (MaNGA: NSA r band, converted to h = 0.7) of the new rows; galaxies it lacks get the
        file's own values or NaN. LOGCUBEs take their redshift from it (else the cube header).
    client : distributed.Client or False, optional
        Cluster to run on; default the current client if any, else (and with False) this process.
    chunk_rows : int
        Galaxies per Zarr chunk = per ingest task (ignored when appending).
    map_size : int, optional
        Side of the stored maps; default :data:`MAP_SIZES` (ignored when appending). Smaller
        maps are centred and padded; larger ones get status ``too_large``.
    progress : bool
        Show a progress bar over blocks.

    Returns
    -------
    survey_ml.store.IngestReport

    Notes
    -----
    A bad file never stops the run: its row's ``status`` is the reader's SurveyFileError code
    (``missing``, ``unreadable``, ``truncated``, ``wrong_format``, ``bad_header``,
    ``no_redshift``, ``no_coverage``, ``too_large``) and its ``message`` starts with the file's
    path. A second 'ok' row of an id already ingested gets ``duplicate``, naming the first file.
    """
    start = time.perf_counter()
    if survey not in MAP_SIZES:
        raise ValueError(f"survey must be one of {sorted(MAP_SIZES)}, not {survey!r}")
    path = Path(store)
    if (path / "release.json").exists():
        existing = open_ifu_release(path)
        if existing.survey != survey:
            raise ValueError(f"{path} holds a {existing.survey} release; cannot add {survey} files")
        release, map_size, chunk_rows = existing.name, existing.map_size, existing.chunk_rows
        galaxies = existing.galaxies
    else:
        galaxies = _empty_galaxies()
        map_size = int(map_size or MAP_SIZES[survey])
    files = discover_ifu_files(source, survey)
    known = set(galaxies["file"].astype(str))
    new_files = [f for f in files if f not in known]
    n0, n_new = len(galaxies), len(new_files)
    _create_ifu_store(path, release, survey, map_size, chunk_rows)
    if n_new == 0:
        return IngestReport(path, len(files), 0, n0, {}, time.perf_counter() - start)

    cat = _catalogue_table(catalogue, survey) if catalogue is not None else None
    z_by_name: dict[str, float] = {}
    if cat is not None and survey == "manga":  # LOGCUBEs need z inside the task
        for f in new_files:
            match = _MANGA_NAME.match(Path(f).name)
            key = f"{match['plate']}-{match['ifu']}" if match else None
            if match and match["kind"] == "LOGCUBE" and key in cat.index:
                z_by_name[key] = float(cat.at[key, "z"])
    zarr_path = str(path / f"{release}.zarr")
    for name in MAP_ARRAYS:  # grow (or shrink away uncommitted rows) before any task writes
        zarr.open_array(f"{zarr_path}/maps/{name}", mode="r+").resize((n0 + n_new, map_size, map_size))
    blocks = []
    for a, b in _blocks(n0, n_new, chunk_rows):
        block_files = new_files[a - n0: b - n0]
        ids = {_id_from_name(f, survey) for f in block_files}
        blocks.append((block_files, a, zarr_path, survey, map_size,
                       {k: v for k, v in z_by_name.items() if k in ids}))
    parts = run_blocks(_ingest_ifu_block, blocks, current_client(client), desc="ingest", progress=progress)
    new_rows = _join_catalogue(pd.concat(parts).sort_values("row").reset_index(drop=True), cat)
    combined = pd.concat([galaxies, new_rows], ignore_index=True) if len(galaxies) else new_rows
    combined = _mark_duplicates(_typed_frame(combined.reset_index(drop=True), GALAXY_COLUMNS))
    _write_galaxies(path, combined, release, survey)
    counts = combined.iloc[n0:]["status"].value_counts().to_dict()
    return IngestReport(path, len(files), n_new, len(combined), {str(k): int(v) for k, v in counts.items()},
                        time.perf_counter() - start)
