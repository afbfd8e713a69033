"""MaNGA DR17 (DRP v3_1_1, DAP 3.1.0): DAP MAPS, DRP LOGCUBE and the DRPall summary table.

Data models (see ``DATAMODELS.md``):

* MAPS ``manga-{plate}-{ifu}-MAPS-{DAPTYPE}.fits.gz``: float32 images and IVARs, int32
  masks, found by EXTNAME. Multi-channel extensions (EMLINE_GFLUX, EMLINE_GVEL, ...) name
  their channels in header keywords ``C01`` ... ``C35`` (padding varies between files, so
  they are parsed with a regex); H-alpha is the channel named ``Ha-6564``, found by name,
  never by index. Mask bit 30 is DONOTUSE.
* LOGCUBE ``manga-{plate}-{ifu}-LOGCUBE.fits.gz``: FLUX/IVAR (nwave, ny, nx) float32, MASK
  int32 (bit 10 DONOTUSE), WAVE float64 vacuum Angstrom, SPECRES.
* DRPall ``drpall-v3_1_1.fits``: table HDU ``MANGA``, lower-case columns; NSA masses are
  LINEAR Msun h^-2 (see :func:`log_mstar_h70`).

Pure functions, no Dask; every unusable file raises :class:`~survey_ml.io.errors.SurveyFileError`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from .errors import SurveyFileError
from ._fits import header_value, open_fits
from .ifu import (C_KMS, IFUCube, IFUMaps, err_from_ivar, good_spaxels, ivar_from_err,
                  pixel_scale_arcsec, write_fits)

__all__ = [
    "read_manga_maps", "write_manga_maps", "read_manga_logcube", "write_manga_logcube",
    "read_drpall", "write_drpall", "log_mstar_h70", "channel_names",
    "HALPHA", "DEFAULT_CHANNELS", "DONOTUSE", "NOVALUE", "NOCOV", "DRP_DONOTUSE",
]

#: MANGA_DAPPIXMASK bits: no coverage, no value measured, do not use.
NOCOV = 1 << 0
NOVALUE = 1 << 4
DONOTUSE = 1 << 30
#: MANGA_DRP3PIXMASK DONOTUSE (LOGCUBE MASK).
DRP_DONOTUSE = 1 << 10
#: The H-alpha channel name in DAP 3.x MAPS.
HALPHA = "Ha-6564"
#: Channels the writer puts in EMLINE_* extensions by default; H-alpha deliberately not first
#: (in real DR17 files it is C24 of 35).
DEFAULT_CHANNELS = ("OII-3727", "Hb-4862", "OIII-5008", HALPHA, "NII-6585")
#: Flux of a line relative to H-alpha, used to fill the writer's other channels plausibly.
_LINE_RATIO = {"OII-3727": 1.0, "OII-3729": 0.8, "Hb-4862": 0.35, "OIII-4960": 0.1,
               "OIII-5008": 0.3, "OI-6302": 0.05, "NII-6549": 0.12, "NII-6585": 0.35,
               "SII-6718": 0.2, "SII-6732": 0.15}
_CHANNEL_KEY = re.compile(r"^C\s*0*(\d+)$")
_EMLINE = ("GFLUX", "GVEL", "GSIGMA")
#: Primary-header keywords of a MAPS file returned in ``meta`` (lower-cased), with types.
MAPS_FIELDS: dict[str, type] = {
    "PLATEIFU": str, "MANGAID": str, "OBJRA": float, "OBJDEC": float, "SCINPVEL": float,
    "ECOOPA": float, "ECOOELL": float, "REFF": float, "DAPQUAL": int, "DRP3QUAL": int,
    "DAPTYPE": str,
}
#: Primary-header keywords of a LOGCUBE returned in ``meta``.
CUBE_FIELDS: dict[str, type] = {
    "PLATEIFU": str, "MANGAID": str, "OBJRA": float, "OBJDEC": float, "IFURA": float,
    "IFUDEC": float, "DRP3QUAL": int, "EBVGAL": float,
}
_REQUIRED = ("PLATEIFU", "OBJRA", "OBJDEC")
_DEFAULTS = {str: "", int: -1, float: np.nan}
_FLUX_UNIT = "1E-17 erg/s/cm^2/spaxel"
_CUBE_UNIT = "1E-17 erg/s/cm^2/Ang/spaxel"


# ----------------------------------------------------------------------------- helpers
def channel_names(header: Mapping[str, Any]) -> list[str]:
    """Channel names of a DAP multi-channel extension, in channel order, from its C## keywords.

    Keywords ``C1``, ``C01``, ``C001`` (and ``C 1``) all name channel 1; a channel without a
    keyword gets "".

    Examples
    --------
    >>> channel_names({"C01": "OII-3727", "C2": "Ha-6564 ", "CTYPE1": "RA---TAN", "C04": "x"})
    ['OII-3727', 'Ha-6564', '', 'x']
    >>> channel_names({"BUNIT": "km/s"})
    []
    """
    found: dict[int, str] = {}
    for key in header.keys():
        match = _CHANNEL_KEY.match(str(key))
        if match and int(match.group(1)) >= 1:
            found[int(match.group(1)) - 1] = str(header[key]).strip()
    return [found.get(i, "") for i in range(max(found) + 1)] if found else []


def _header_meta(header: fits.Header, fields: Mapping[str, type], path: str) -> dict[str, Any]:
    return {key.lower(): header_value(header, key, path, kind, required=key in _REQUIRED,
                                      default=_DEFAULTS[kind])
            for key, kind in fields.items()}


def _image(hdul: fits.HDUList, name: str, path: str) -> tuple[np.ndarray, fits.Header]:
    """Data (native byte order) and header of image extension ``name``."""
    if name not in hdul:
        raise SurveyFileError(path, f"extension {name} is missing", code="wrong_format")
    hdu = hdul[name]
    if not isinstance(hdu, (fits.ImageHDU, fits.PrimaryHDU)) or hdu.data is None:
        raise SurveyFileError(path, f"extension {name} is not an image with data", code="wrong_format")
    data = np.asarray(hdu.data)
    return data.astype(data.dtype.newbyteorder("=")), hdu.header


def _channel(header: fits.Header, name: str, path: str, extname: str, fallback: int | None) -> int:
    """Index of channel ``name`` from the header's C## keywords, or ``fallback`` if it has none."""
    names = channel_names(header)
    if not names:
        if fallback is None:
            raise SurveyFileError(path, f"{extname} has no channel-name keywords (C01, C02, ...)",
                                  code="wrong_format")
        return fallback
    if name not in names:
        listed = ", ".join(n for n in names if n) or "none"
        raise SurveyFileError(path, f"no '{name}' channel in {extname} (channels: {listed})",
                              code="wrong_format")
    return names.index(name)


def _plane(data: np.ndarray, index: int, path: str, extname: str) -> np.ndarray:
    if data.ndim == 2 and index == 0:
        return data
    if data.ndim != 3:
        raise SurveyFileError(path, f"{extname} must be (nchannel, ny, nx), found shape {data.shape}",
                              code="wrong_format")
    if index >= data.shape[0]:
        raise SurveyFileError(path, f"{extname} has {data.shape[0]} channels but its header names "
                              f"channel {index + 1}", code="wrong_format")
    return data[index]


def _line_wavelength(name: str) -> float:
    """Rest wavelength in the DAP channel name, ``'Ha-6564'`` -> 6564.0 (NaN if none).

    Examples
    --------
    >>> _line_wavelength("OIII-5008"), _line_wavelength("junk")
    (5008.0, nan)
    """
    match = re.search(r"-(\d+(?:\.\d+)?)$", name)
    return float(match.group(1)) if match else float("nan")


def _resolution(wave: np.ndarray | float) -> np.ndarray:
    """Approximate MaNGA spectral resolution R = lambda / FWHM (about 1400 at 3600 A, 2600 at 10300 A)."""
    return 1400.0 + (np.asarray(wave, dtype=np.float64) - 3600.0) * (1200.0 / 6700.0)


def _kpc_per_arcsec_h(z: float, omega_m: float = 0.3) -> float:
    """h^-1 kpc per arcsec at redshift z in flat LCDM (H0 = 100 h), by direct integration.

    Examples
    --------
    >>> round(_kpc_per_arcsec_h(0.05), 3)
    0.684
    """
    if not np.isfinite(z) or z <= 0:
        return float("nan")
    grid = np.linspace(0.0, z, 257)
    inv_e = 1.0 / np.sqrt(omega_m * (1 + grid) ** 3 + (1 - omega_m))
    comoving = C_KMS / 100.0 * float(np.sum((inv_e[1:] + inv_e[:-1]) * np.diff(grid)) / 2)  # Mpc/h
    return comoving / (1 + z) * 1e3 * np.pi / (180 * 3600)


def _celestial_wcs(ny: int, nx: int, ra: float, dec: float, scale: float) -> list[tuple[str, Any]]:
    return [("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("CUNIT1", "deg"), ("CUNIT2", "deg"),
            ("CRPIX1", (nx + 1) / 2), ("CRPIX2", (ny + 1) / 2), ("CRVAL1", float(ra)),
            ("CRVAL2", float(dec)), ("CD1_1", -scale / 3600.0), ("CD1_2", 0.0),
            ("CD2_1", 0.0), ("CD2_2", scale / 3600.0)]


# ----------------------------------------------------------------------------- MAPS
def read_manga_maps(path: str | os.PathLike) -> IFUMaps:
    """Read the H-alpha flux and gas kinematics of a MaNGA DAP MAPS file.

    Parameters
    ----------
    path : str or os.PathLike
        ``manga-{plate}-{ifu}-MAPS-{DAPTYPE}.fits(.gz)``.

    Returns
    -------
    IFUMaps
        The ``Ha-6564`` channel (found by name in each extension's C## keywords; an extension
        without them uses EMLINE_GFLUX's index) of EMLINE_GFLUX, EMLINE_GVEL (km/s, relative
        to SCINPVEL) and EMLINE_GSIGMA (km/s, not corrected for EMLINE_INSTSIGMA), as float32.
        Errors are ``1/sqrt(ivar)`` of the ``*_IVAR`` extensions (inf where ivar <= 0).
        Values flagged NOCOV or NOVALUE in their ``*_MASK`` (the DAP writes 0 there) are NaN.
        ``good`` is False where any of the three masks has DONOTUSE (bit 30), a value is not
        finite or an ivar is <= 0. ``pixel_scale`` from the WCS (0.5"). ``meta``: the primary
        keywords plateifu, mangaid, objra, objdec, scinpvel, ecoopa, ecooell, reff,
        dapqual, drp3qual, daptype (absent optional ones: ""/-1/NaN) and survey="manga",
        id=plateifu, ra/dec=objra/objdec, z (primary Z if present, else SCINPVEL / c),
        file, flux_unit, channels (EMLINE_GFLUX's channel names), ha_channel (its index) and
        instsigma: the median H-alpha EMLINE_INSTSIGMA in km/s (NaN without that
        extension), to subtract in quadrature from ``dispersion``.

    Raises
    ------
    SurveyFileError
        Missing, non-FITS or truncated file; a missing extension; no 'Ha-6564' channel;
        arrays whose shapes disagree; PLATEIFU, OBJRA or OBJDEC missing.
    """
    path = os.fspath(path)
    with open_fits(path) as hdul:
        meta = _header_meta(hdul[0].header, MAPS_FIELDS, path)
        primary = hdul[0].header
        flux_data, flux_header = _image(hdul, "EMLINE_GFLUX", path)
        channels = channel_names(flux_header)
        ha = _channel(flux_header, HALPHA, path, "EMLINE_GFLUX", None)
        spatial = flux_data.shape[-2:]
        planes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for quantity in _EMLINE:
            arrays = []
            for suffix in ("", "_IVAR", "_MASK"):
                extname = f"EMLINE_{quantity}{suffix}"
                data, header = _image(hdul, extname, path)
                if data.shape != flux_data.shape:
                    raise SurveyFileError(path, f"{extname} has shape {data.shape} but EMLINE_GFLUX "
                                          f"{flux_data.shape}", code="wrong_format")
                if suffix == "_MASK" and data.dtype.kind not in "iu":
                    raise SurveyFileError(path, f"{extname} must hold integer bitmasks, not {data.dtype}",
                                          code="wrong_format")
                arrays.append(_plane(data, _channel(header, HALPHA, path, extname, ha), path, extname))
            planes[quantity] = tuple(arrays)  # type: ignore[assignment]
        bunit = str(flux_header.get("BUNIT", _FLUX_UNIT)).strip()
        instsigma = np.nan
        if "EMLINE_INSTSIGMA" in hdul:
            inst, inst_header = _image(hdul, "EMLINE_INSTSIGMA", path)
            inst = _plane(inst, _channel(inst_header, HALPHA, path, "EMLINE_INSTSIGMA", ha), path,
                          "EMLINE_INSTSIGMA")
            inst = inst[np.isfinite(inst) & (inst > 0)]
            instsigma = float(np.median(inst)) if inst.size else np.nan
        scale = pixel_scale_arcsec(flux_header if "CTYPE1" in flux_header else primary)
        z = header_value(primary, "Z", path, float, required=False, default=np.nan)
    if not np.isfinite(z):
        z = meta["scinpvel"] / C_KMS
    values, errors, donotuse = [], [], np.zeros(spatial, dtype=bool)
    for quantity in _EMLINE:
        value, ivar, mask = planes[quantity]
        mask = mask.astype(np.int64)
        value = value.astype(np.float32)
        value[(mask & (NOCOV | NOVALUE)) != 0] = np.nan
        values.append(value)
        errors.append(err_from_ivar(ivar))
        donotuse |= (mask & DONOTUSE) != 0
    good = good_spaxels(tuple(values), tuple(errors)) & ~donotuse
    meta.update(survey="manga", id=meta["plateifu"], ra=meta["objra"], dec=meta["objdec"], z=float(z),
                file=path, flux_unit=bunit, channels=channels, ha_channel=ha, instsigma=instsigma)
    return IFUMaps(flux=values[0], flux_err=errors[0], velocity=values[1], velocity_err=errors[1],
                   dispersion=values[2], dispersion_err=errors[2], good=good, pixel_scale=scale,
                   meta=meta, path=path)


def _primary_fields(meta: Mapping[str, Any], header: Mapping[str, Any] | None) -> dict[str, Any]:
    """MAPS primary keywords from ``meta`` (lower-case), with fallbacks, overridden by ``header``."""
    fields: dict[str, Any] = {
        "PLATEIFU": meta.get("plateifu", meta.get("id")), "MANGAID": meta.get("mangaid", ""),
        "OBJRA": meta.get("objra", meta.get("ra")), "OBJDEC": meta.get("objdec", meta.get("dec")),
        "SCINPVEL": meta.get("scinpvel", C_KMS * float(np.nan if meta.get("z") is None else meta["z"])),
        "ECOOPA": meta.get("ecoopa", np.nan), "ECOOELL": meta.get("ecooell", np.nan),
        "REFF": meta.get("reff", np.nan), "DAPQUAL": meta.get("dapqual", 0),
        "DRP3QUAL": meta.get("drp3qual", 0), "DAPTYPE": meta.get("daptype") or "HYB10-MILESHC-MASTARSSP",
    }
    fields.update({str(k).upper(): v for k, v in (header or {}).items()})
    for key in _REQUIRED:
        if fields.get(key) in (None, "") or (isinstance(fields[key], float) and not np.isfinite(fields[key])):
            raise ValueError(f"cannot write a MaNGA MAPS file without {key} (meta or header)")
    return fields


def _to_header(fields: Mapping[str, Any]) -> fits.Header:
    """A FITS header from ``fields``; kinds follow MAPS_FIELDS, non-finite floats are left out."""
    header = fits.Header()
    for key, value in fields.items():
        kind = MAPS_FIELDS.get(key) or CUBE_FIELDS.get(key)
        if value is None:
            continue
        if kind is not None:
            value = kind(value)
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            continue
        header[key] = value
    return header


def _ellcoo(ny: int, nx: int, scale: float, pa: float, ell: float, reff: float, z: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """SPX_SKYCOO (2, ny, nx) and SPX_ELLCOO (4, ny, nx): R arcsec, R/Re, R h^-1 kpc, azimuth deg."""
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    sky_x = -(x - (nx - 1) / 2) * scale  # RA offset, east positive (RA grows to the left)
    sky_y = (y - (ny - 1) / 2) * scale
    pa_rad = np.radians(pa if np.isfinite(pa) else 0.0)
    q = 1.0 - (ell if np.isfinite(ell) else 0.0)
    major = sky_x * np.sin(pa_rad) + sky_y * np.cos(pa_rad)
    minor = (-sky_x * np.cos(pa_rad) + sky_y * np.sin(pa_rad)) / q
    radius = np.hypot(major, minor)
    azimuth = np.degrees(np.arctan2(minor, major)) % 360.0
    ellcoo = np.stack([radius, radius / reff if reff > 0 else radius * np.nan,
                       radius * _kpc_per_arcsec_h(z), azimuth])
    return np.stack([sky_x, sky_y]).astype(np.float32), ellcoo.astype(np.float32)


def write_manga_maps(path: str | os.PathLike, maps: IFUMaps, header: Mapping[str, Any] | None = None,
                     channels: Sequence[str] = DEFAULT_CHANNELS, channel_key: str = "C{:02d}",
                     overwrite: bool = False) -> Path:
    """Write ``maps`` as a MaNGA DAP MAPS file in the real DR17 layout.

    Layout: primary header PLATEIFU, MANGAID, OBJRA, OBJDEC, SCINPVEL, ECOOPA, ECOOELL, REFF,
    DAPQUAL, DRP3QUAL, DAPTYPE (from ``maps.meta``, overridden by ``header``; SCINPVEL
    defaults to c*z; float keywords that are NaN are left out); then SPX_SKYCOO,
    SPX_ELLCOO (4 channels: R arcsec, R/Re, R h^-1 kpc, azimuth), SPX_SNR, BINID (5
    channels), EMLINE_GFLUX/_IVAR/_MASK, EMLINE_GVEL/_IVAR/_MASK, EMLINE_GSIGMA/_IVAR/_MASK
    and EMLINE_INSTSIGMA (constant per channel: ``meta["instsigma"]`` for H-alpha when
    given, else from an approximate MaNGA resolution curve, 65.93 km/s at H-alpha), each
    multi-channel extension naming its channels in C## keywords and carrying a celestial
    WCS. float32 values, int32 masks.

    H-alpha holds ``maps`` exactly. The other channels are plausible fill: fluxes and errors
    scaled from H-alpha by typical line ratios, velocities and dispersions equal to H-alpha's
    (the DAP ties them). As the DAP does, unmeasured (NaN) values are written as 0 with
    NOVALUE|DONOTUSE, spaxels not ``good`` get DONOTUSE, and errors that are not finite or
    <= 0 become ivar 0 - so reading the file back gives ``maps`` again when ``good`` agrees
    with the values and errors (as it does for maps read from a file).

    Parameters
    ----------
    path : str or os.PathLike
        Output file; gzip-compressed when it ends in ``.gz``.
    maps : IFUMaps
        ``meta`` needs plateifu (or id), objra/objdec (or ra/dec).
    header : mapping, optional
        Primary-header keywords overriding those taken from ``maps.meta``.
    channels : sequence of str
        Channel names of the EMLINE_* extensions, in order; must include 'Ha-6564'.
    channel_key : str
        Format of the channel keywords; the DAP pads to two digits (``C01``).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    channels = list(channels)
    if HALPHA not in channels:
        raise ValueError(f"channels must include {HALPHA!r}")
    fields = _primary_fields(maps.meta, header)
    ny, nx = maps.flux.shape
    scale = float(maps.pixel_scale)
    wcs = _celestial_wcs(ny, nx, fields["OBJRA"], fields["OBJDEC"], scale)
    names = [(channel_key.format(i + 1), name) for i, name in enumerate(channels)]
    good = np.asarray(maps.good, dtype=bool)

    def ext(data: np.ndarray, extname: str, bunit: str | None = None, named: bool = False,
            extra: Sequence[tuple[str, Any]] = ()) -> fits.ImageHDU:
        hdu = fits.ImageHDU(data, name=extname)
        if bunit is not None:
            hdu.header["BUNIT"] = bunit
        hdu.header.extend(wcs)
        if named:
            hdu.header.extend(names)
        hdu.header.extend(list(extra))
        return hdu

    ratio = np.array([1.0 if n == HALPHA else _LINE_RATIO.get(n, 0.1) for n in channels])
    hdus: list[fits.ImageHDU] = []
    quantities = {"GFLUX": (maps.flux, maps.flux_err, _FLUX_UNIT, ratio),
                  "GVEL": (maps.velocity, maps.velocity_err, "km/s", np.ones_like(ratio)),
                  "GSIGMA": (maps.dispersion, maps.dispersion_err, "km/s", np.ones_like(ratio))}
    ivar_units = {"GFLUX": "(1E-17 erg/s/cm^2/spaxel)^{-2}", "GVEL": "(km/s)^{-2}", "GSIGMA": "(km/s)^{-2}"}
    for quantity, (value, err, bunit, scales) in quantities.items():
        value = np.asarray(value, dtype=np.float32)
        err = np.asarray(err, dtype=np.float32)
        missing = np.isnan(value)
        mask = np.where(missing, NOVALUE | DONOTUSE, 0) | np.where(good, 0, DONOTUSE)
        stored = np.where(missing, np.float32(0), value)
        cube_v = np.empty((len(channels), ny, nx), np.float32)
        cube_i = np.empty((len(channels), ny, nx), np.float32)
        for i, (channel, factor) in enumerate(zip(channels, scales)):
            if channel == HALPHA or factor == 1.0:
                cube_v[i], cube_i[i] = stored, ivar_from_err(err)
            else:
                cube_v[i] = stored * np.float32(factor)
                cube_i[i] = ivar_from_err(err * np.float32(factor))
        cube_m = np.broadcast_to(mask.astype(np.int32), cube_v.shape).copy()
        extname = f"EMLINE_{quantity}"
        pointers = [("ERRDATA", f"{extname}_IVAR"), ("QUALDATA", f"{extname}_MASK")]
        hdus += [ext(cube_v, extname, bunit, True, pointers),
                 ext(cube_i, f"{extname}_IVAR", ivar_units[quantity], True),
                 ext(cube_m, f"{extname}_MASK", None, True)]
    waves = np.array([_line_wavelength(n) for n in channels])
    instsigma = (C_KMS / (2.3548 * _resolution(np.nan_to_num(waves, nan=6564.0)))).astype(np.float32)
    if np.isfinite(maps.meta.get("instsigma", np.nan)):
        instsigma[channels.index(HALPHA)] = maps.meta["instsigma"]
    hdus.append(ext(np.broadcast_to(instsigma[:, None, None], (len(channels), ny, nx)).copy(),
                    "EMLINE_INSTSIGMA", "km/s", True))

    z = float(fields["SCINPVEL"]) / C_KMS if fields.get("SCINPVEL") is not None else np.nan
    skycoo, ellcoo = _ellcoo(ny, nx, scale, float(fields.get("ECOOPA", np.nan)),
                             float(fields.get("ECOOELL", np.nan)), float(fields.get("REFF", np.nan)), z)
    flux_err = np.asarray(maps.flux_err, dtype=np.float32)
    snr = np.where(np.isfinite(maps.flux) & np.isfinite(flux_err) & (flux_err > 0),
                   maps.flux / np.where(flux_err > 0, flux_err, 1), 0).astype(np.float32)
    measured = np.isfinite(maps.flux) | np.isfinite(maps.velocity) | np.isfinite(maps.dispersion)
    binid = np.where(measured, np.arange(ny * nx).reshape(ny, nx), -1).astype(np.int32)
    front = [ext(skycoo, "SPX_SKYCOO", "arcsec", extra=[("C01", "On-sky X"), ("C02", "On-sky Y")]),
             ext(ellcoo, "SPX_ELLCOO", None, extra=[("C01", "Elliptical radius"), ("C02", "R/Re"),
                                                    ("C03", "R h/kpc"), ("C04", "Elliptical azimuth")]),
             ext(snr, "SPX_SNR"),
             ext(np.broadcast_to(binid, (5, ny, nx)).copy(), "BINID", None,
                 extra=[("C01", "Binned spectra"), ("C02", "Stellar continua"), ("C03", "Em. line moments"),
                        ("C04", "Em. line models"), ("C05", "Spectral indices")])]
    primary = fits.PrimaryHDU(header=_to_header({**fields, "VERSDRP3": fields.get("VERSDRP3", "v3_1_1"),
                                                 "VERSDAP": fields.get("VERSDAP", "3.1.0")}))
    return write_fits(path, fits.HDUList([primary, *front, *hdus]), overwrite=overwrite)


# ----------------------------------------------------------------------------- LOGCUBE
def read_manga_logcube(path: str | os.PathLike) -> IFUCube:
    """Read a MaNGA DRP LOGCUBE.

    Parameters
    ----------
    path : str or os.PathLike
        ``manga-{plate}-{ifu}-LOGCUBE.fits(.gz)``.

    Returns
    -------
    IFUCube
        FLUX and IVAR float32 (nwave, ny, nx), MASK int32 (bit 10 DONOTUSE), wavelengths
        (vacuum A, float64) from the WAVE extension, ``pixel_scale`` from the FLUX WCS, and
        ``meta`` with plateifu, mangaid, objra, objdec, ifura, ifudec, drp3qual, ebvgal
        (lower-case; absent optional ones ""/-1/NaN), survey="manga", id, ra, dec, file.

    Raises
    ------
    SurveyFileError
        Missing, non-FITS or truncated file; FLUX, IVAR, MASK or WAVE missing; shapes that
        disagree; PLATEIFU, OBJRA or OBJDEC missing.
    """
    path = os.fspath(path)
    with open_fits(path) as hdul:
        meta = _header_meta(hdul[0].header, CUBE_FIELDS, path)
        flux, flux_header = _image(hdul, "FLUX", path)
        ivar, _ = _image(hdul, "IVAR", path)
        mask, _ = _image(hdul, "MASK", path)
        wave, _ = _image(hdul, "WAVE", path)
    if flux.ndim != 3:
        raise SurveyFileError(path, f"FLUX must be (nwave, ny, nx), found shape {flux.shape}",
                              code="wrong_format")
    for name, arr in (("IVAR", ivar), ("MASK", mask)):
        if arr.shape != flux.shape:
            raise SurveyFileError(path, f"{name} has shape {arr.shape} but FLUX {flux.shape}",
                                  code="wrong_format")
    if mask.dtype.kind not in "iu":
        raise SurveyFileError(path, f"MASK must hold integer bitmasks, not {mask.dtype}", code="wrong_format")
    if wave.ndim != 1 or wave.shape[0] != flux.shape[0]:
        raise SurveyFileError(path, f"WAVE has shape {wave.shape} but FLUX has {flux.shape[0]} wavelengths",
                              code="wrong_format")
    meta.update(survey="manga", id=meta["plateifu"], ra=meta["objra"], dec=meta["objdec"], file=path,
                flux_unit=str(flux_header.get("BUNIT", _CUBE_UNIT)).strip())
    return IFUCube(flux=flux.astype(np.float32), ivar=ivar.astype(np.float32), mask=mask.astype(np.int32),
                   wave=wave.astype(np.float64), pixel_scale=pixel_scale_arcsec(flux_header), meta=meta,
                   path=path)


def write_manga_logcube(path: str | os.PathLike, cube: IFUCube, overwrite: bool = False) -> Path:
    """Write ``cube`` as a MaNGA LOGCUBE: primary header, FLUX, IVAR, MASK, WAVE, SPECRES.

    FLUX/IVAR/MASK carry a celestial WCS (centred on OBJRA/OBJDEC) and a WAVE-LOG spectral
    axis; SPECRES is ``cube.meta["specres"]`` when given, else an approximate MaNGA
    resolution curve. ``cube.meta`` needs plateifu (or id) and objra/objdec (or ra/dec).
    gzip-compressed when ``path`` ends in ``.gz``.
    """
    meta = cube.meta
    fields = {key: meta.get(key.lower()) for key in CUBE_FIELDS}
    fields["PLATEIFU"] = fields["PLATEIFU"] or meta.get("id")
    fields["OBJRA"] = fields["OBJRA"] if fields["OBJRA"] is not None else meta.get("ra")
    fields["OBJDEC"] = fields["OBJDEC"] if fields["OBJDEC"] is not None else meta.get("dec")
    for key in _REQUIRED:
        if fields[key] in (None, ""):
            raise ValueError(f"cannot write a MaNGA LOGCUBE without {key}")
    flux = np.asarray(cube.flux, dtype=np.float32)
    nwave, ny, nx = flux.shape
    wave = np.asarray(cube.wave, dtype=np.float64)
    if wave.shape != (nwave,) or np.shape(cube.ivar) != flux.shape or np.shape(cube.mask) != flux.shape:
        raise ValueError("cube.ivar/mask must match cube.flux and cube.wave its first axis")
    spectral = [("CTYPE3", "WAVE-LOG"), ("CUNIT3", "Angstrom"), ("CRPIX3", 1.0), ("CRVAL3", float(wave[0])),
                ("CD3_3", float(wave[0] * np.log(wave[1] / wave[0])) if nwave > 1 else 1.0)]
    wcs = _celestial_wcs(ny, nx, fields["OBJRA"], fields["OBJDEC"], float(cube.pixel_scale)) + spectral

    def ext(data: np.ndarray, name: str, bunit: str | None) -> fits.ImageHDU:
        hdu = fits.ImageHDU(data, name=name)
        if bunit:
            hdu.header["BUNIT"] = bunit
        hdu.header.extend(wcs)
        return hdu

    specres = np.asarray(meta["specres"], np.float64) if "specres" in meta else _resolution(wave)
    hdul = fits.HDUList([fits.PrimaryHDU(header=_to_header({**fields, "VERSDRP3": "v3_1_1"})),
                         ext(flux, "FLUX", _CUBE_UNIT),
                         ext(np.asarray(cube.ivar, np.float32), "IVAR", f"({_CUBE_UNIT})^{{-2}}"),
                         ext(np.asarray(cube.mask).astype(np.int32), "MASK", None),
                         fits.ImageHDU(wave, name="WAVE"), fits.ImageHDU(specres, name="SPECRES")])
    hdul["WAVE"].header["BUNIT"] = "Angstrom"
    return write_fits(path, hdul, overwrite=overwrite)


# ----------------------------------------------------------------------------- DRPall
#: Columns a DRPall table must have (lower-case).
DRPALL_COLUMNS = ("plateifu", "mangaid", "objra", "objdec", "z", "nsa_z", "nsa_elpetro_mass",
                  "nsa_sersic_mass", "nsa_elpetro_ba", "nsa_elpetro_phi", "nsa_elpetro_th50_r",
                  "nsa_elpetro_absmag", "drp3qual")
#: Order of the NSA 7-band vectors (GALEX FUV, NUV, SDSS ugriz).
NSA_BANDS = ("f", "n", "u", "g", "r", "i", "z")


def log_mstar_h70(mass_h2: float | np.ndarray) -> float | np.ndarray:
    """log10 stellar mass in Msun for h = 0.7 from an NSA mass in LINEAR Msun h^-2.

    ``M = M_h2 / 0.7**2``; NaN where the mass is not positive (the NSA writes 0 or -9999
    for failed fits).

    Examples
    --------
    >>> round(float(log_mstar_h70(4.9e9)), 6)
    10.0
    >>> log_mstar_h70(np.array([4.9e10, 0.0, -9999.0])).round(6).tolist()
    [11.0, nan, nan]
    """
    mass = np.asarray(mass_h2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(mass > 0, np.log10(np.where(mass > 0, mass, 1.0) / 0.7 ** 2), np.nan)
    return float(out) if out.ndim == 0 else out


def read_drpall(path: str | os.PathLike) -> pd.DataFrame:
    """Read the MaNGA DRPall table (HDU ``MANGA``) into pandas.

    Parameters
    ----------
    path : str or os.PathLike
        ``drpall-v3_1_1.fits`` (or ``.fits.gz``).

    Returns
    -------
    pandas.DataFrame
        One row per cube, lower-case column names in native byte order, strings stripped.
        Vector columns (e.g. ``nsa_elpetro_absmag``, 7 bands FNugriz) are object columns of
        arrays; every 7-element ``nsa_*`` vector is also split into scalar columns
        ``{name}_{band}`` (``nsa_elpetro_absmag_r``, ...). Masses stay LINEAR Msun h^-2:
        use :func:`log_mstar_h70`.

    Raises
    ------
    SurveyFileError
        Unreadable file, no ``MANGA`` table, or a column of :data:`DRPALL_COLUMNS` missing.
    """
    path = os.fspath(path)
    with open_fits(path) as hdul:
        if "MANGA" not in hdul or not isinstance(hdul["MANGA"], fits.BinTableHDU):
            raise SurveyFileError(path, "no binary table HDU named MANGA (not a DRPall file)",
                                  code="wrong_format")
        hdu = hdul["MANGA"]
        names = {name.lower(): name for name in hdu.columns.names}
        missing = [col for col in DRPALL_COLUMNS if col not in names]
        if missing:
            raise SurveyFileError(path, f"DRPall table MANGA lacks column(s) {', '.join(missing)}",
                                  code="wrong_format")
        columns: dict[str, Any] = {}
        for lower, name in names.items():
            arr = np.asarray(hdu.data[name])
            if arr.dtype.kind in "SU":
                arr = np.char.strip(arr.astype(str)).astype(object)
            else:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            if arr.ndim == 1:
                columns[lower] = arr
                continue
            columns[lower] = list(arr)
            if lower.startswith("nsa_") and arr.shape[1:] == (len(NSA_BANDS),):
                for i, band in enumerate(NSA_BANDS):
                    columns[f"{lower}_{band}"] = arr[:, i]
    return pd.DataFrame(columns)


def write_drpall(path: str | os.PathLike, table: pd.DataFrame, overwrite: bool = False) -> Path:
    """Write ``table`` as a DRPall file: empty primary HDU and binary table ``MANGA``.

    Columns are written under lower-case names with their dtypes (strings as fixed-width
    ASCII). Object columns of equal-length arrays become vector columns; the scalar band
    columns :func:`read_drpall` derives (``nsa_*_{band}``) are not written when their vector
    is present, and ``nsa_elpetro_absmag`` is assembled from ``nsa_elpetro_absmag_{f..z}``
    when only those are given.

    Raises
    ------
    ValueError
        When a column of :data:`DRPALL_COLUMNS` is missing.
    """
    df = table.rename(columns=str.lower)
    vector = "nsa_elpetro_absmag"
    band_cols = [f"{vector}_{b}" for b in NSA_BANDS]
    if vector not in df and all(c in df for c in band_cols):
        df = df.assign(**{vector: list(df[band_cols].to_numpy(np.float32))})
    missing = [col for col in DRPALL_COLUMNS if col not in df]
    if missing:
        raise ValueError(f"table lacks DRPall column(s) {', '.join(missing)}")
    vectors = {c for c in df.columns
               if df[c].dtype == object and len(df) and isinstance(df[c].iloc[0], np.ndarray)}
    derived = {f"{v}_{b}" for v in vectors for b in NSA_BANDS}
    out = Table()
    for col in df.columns:
        if col in derived:
            continue
        if col in vectors:
            out[col] = np.stack(df[col].to_numpy())
        elif df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
            out[col] = np.array(df[col].astype(str).tolist(), dtype=str)
        else:
            out[col] = df[col].to_numpy()
    hdu = fits.table_to_hdu(out)
    hdu.name = "MANGA"
    return write_fits(path, fits.HDUList([fits.PrimaryHDU(), hdu]), overwrite=overwrite)
