"""High-resolution stellar spectra: HARPS / HARPS-N e2ds and s1d, ESPRESSO S2D, ESO Phase-3 1-D.

Every reader returns an :class:`EchelleSpectrum`: echelle orders as rows of 2-D arrays
(``(n_orders, n_pix)``), each pixel with its own wavelength. A merged 1-D spectrum is one
order. What the file says about its wavelengths is kept, not silently converted:
:attr:`EchelleSpectrum.medium` (``"air"`` / ``"vacuum"``) and :attr:`EchelleSpectrum.frame`
(``"earth"`` / ``"barycentric"``), with the barycentric correction in ``meta["berv"]``
(km/s); :meth:`EchelleSpectrum.rest_air` brings any of them to air wavelengths in the
barycentric frame (optionally also the star's rest frame).

Formats (see ``read_echelle`` for the one that picks by header):

``harps-e2ds``
    HARPS / HARPS-N DRS extracted orders (72 / 69 x 4096, counts). The wavelength of order
    ``o`` at pixel ``x`` is ``sum_i COEFF_LL{o (d+1) + i} x^i`` from the ``ESO DRS CAL TH``
    (HARPS-N: ``TNG DRS CAL TH``) keywords, or the wave frame the header names; the blaze is
    the ``*_blaze_A.fits`` frame named in ``DRS BLAZE FILE`` beside it. The variance is the
    DRS extraction's: ``flux + window (RON / CONAD)^2`` (it gives back the header's per-order
    ``SPE EXT SN`` within 6% on the Gl273 fixture).
``harps-s1d``
    The DRS merged spectrum: linear in air wavelength (CRVAL1, CDELT1), barycentric, relative
    flux, no errors - the noise is estimated from the flux with DER_SNR (Stoehr et al. 2008)
    in windows of :data:`NOISE_WINDOW` pixels, its level scaled to the header's S/N at 550 nm
    (``ivar_estimated``): DER_SNR alone counts resolved lines as noise (Gl581, an M dwarf:
    S/N 21 at 5490-5510 A against the DRS's 40.9).
``espresso-s2d``
    ESPRESSO (and NIRPS / HARPS DRS 3.x) S2D: image extensions ``SCIDATA``, ``ERRDATA``,
    ``QUALDATA`` and a wavelength image (``WAVEDATA_AIR_BARY`` preferred, else
    ``WAVEDATA_VAC_BARY``); short names ``SCI``/``ERR``/``QUAL``/``WAVE`` also read.
``eso-1d``
    ESO Phase-3 1-D spectra (``ADP.*.fits``): a one-row binary table of ``WAVE``, ``FLUX``,
    ``ERR`` arrays (and ``QUAL`` when present), units from TUNIT, frame from ``SPECSYS``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits

from ._fits import header_value, open_fits
from .errors import SurveyFileError

__all__ = ["EchelleSpectrum", "ECHELLE_FORMATS", "identify_echelle", "read_echelle", "read_harps_e2ds",
           "read_harps_s1d", "read_espresso_s2d", "read_eso_1d", "der_snr_noise", "NOISE_WINDOW",
           "SPEED_OF_LIGHT_KMS"]

SPEED_OF_LIGHT_KMS = 299_792.458
#: Pixels per window in which DER_SNR estimates the noise of a spectrum without errors.
NOISE_WINDOW = 1000
#: HARPS-family instruments by their INSTRUME value, and the HIERARCH prefix of their DRS keywords.
_HARPS_PREFIX = {"HARPS": "ESO", "HARPN": "TNG", "HARPS-N": "TNG", "HARPS_N": "TNG"}


@dataclass
class EchelleSpectrum:
    """A high-resolution spectrum as echelle orders (a merged 1-D spectrum is one order).

    Attributes
    ----------
    flux : numpy.ndarray
        ``(n_orders, n_pix)`` float32: extracted counts (e2ds, S2D) or relative flux.
    ivar : numpy.ndarray
        ``(n_orders, n_pix)`` float32 inverse variance of ``flux``; 0 marks a pixel without
        information (gaps, saturated or flagged pixels).
    wavelength : numpy.ndarray
        ``(n_orders, n_pix)`` float64 wavelength of each pixel in Angstrom, in :attr:`medium`
        and :attr:`frame` as the file has them.
    blaze : numpy.ndarray or None
        ``(n_orders, n_pix)`` float32 blaze function (``flux / blaze`` is the deblazed
        spectrum); None when the flux is already deblazed or the blaze frame was not found.
    meta : dict
        ``object``, ``instrument``, ``ra``, ``dec`` (deg), ``mjd``, ``bjd``, ``berv`` (km/s),
        ``sn50`` (S/N per pixel near 550 nm), ``exptime`` (s), ``date_obs``, ``blaze_file``.
    medium : str
        ``"air"`` or ``"vacuum"``.
    frame : str
        ``"earth"`` (needs ``meta["berv"]``) or ``"barycentric"``.
    path, format : str
        The file and the format key it was read as.
    ivar_estimated : bool
        True when the file has no errors and ``ivar`` comes from DER_SNR.
    notes : list of str
        What the reader could not do (a blaze frame not found), for the row's message.
    """

    flux: np.ndarray
    ivar: np.ndarray
    wavelength: np.ndarray
    blaze: np.ndarray | None
    meta: dict[str, Any]
    medium: str = "air"
    frame: str = "barycentric"
    path: str = ""
    format: str = ""
    ivar_estimated: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def n_orders(self) -> int:
        """Number of orders (1 for a merged spectrum)."""
        return int(self.flux.shape[0])

    @property
    def n_pix(self) -> int:
        """Pixels per order."""
        return int(self.flux.shape[1])

    @property
    def good(self) -> np.ndarray:
        """Usable pixels: finite flux and wavelength, finite positive ivar."""
        return (np.isfinite(self.flux) & np.isfinite(self.ivar) & (self.ivar > 0)
                & np.isfinite(self.wavelength))

    def deblazed(self) -> tuple[np.ndarray, np.ndarray]:
        """``(flux, ivar)`` divided by the blaze (unchanged without one); zero blaze -> ivar 0."""
        if self.blaze is None:
            return self.flux, self.ivar
        blaze = self.blaze.astype(np.float64)
        ok = np.isfinite(blaze) & (blaze > 1e-3 * np.nanmax(blaze))
        safe = np.where(ok, blaze, 1.0)
        flux = np.where(ok, self.flux / safe, 0.0).astype(np.float32)
        ivar = np.where(ok, self.ivar * safe ** 2, 0.0).astype(np.float32)
        return flux, ivar

    def rest_air(self, rv_kms: float = 0.0) -> np.ndarray:
        """Air wavelengths in the barycentric frame, shifted to a star of radial velocity ``rv_kms``.

        Examples
        --------
        >>> s = EchelleSpectrum(np.ones((1, 3), np.float32), np.ones((1, 3), np.float32),
        ...                     np.array([[5000.0, 5000.01, 5000.02]]), None, {"berv": 30.0},
        ...                     frame="earth")
        >>> round(float(s.rest_air()[0, 0]), 4)   # Earth frame + 30 km/s barycentric correction
        5000.5003
        """
        wave = self.wavelength
        if self.medium == "vacuum":
            wave = vacuum_to_air(wave)
        if self.frame == "earth":
            berv = self.meta.get("berv")
            if berv is None or not np.isfinite(berv):
                raise SurveyFileError(self.path, "Earth-frame wavelengths without a barycentric correction "
                                      "(BERV) in the header", code="bad_header")
            wave = wave * (1.0 + berv / SPEED_OF_LIGHT_KMS)
        return wave / (1.0 + rv_kms / SPEED_OF_LIGHT_KMS)


def vacuum_to_air(wavelength: np.ndarray) -> np.ndarray:
    """Vacuum to air wavelengths in Angstrom (Morton 2000, via specutils).

    >>> round(float(vacuum_to_air(np.array([6564.61]))[0]), 2)
    6562.8
    """
    import astropy.units as u
    from specutils.utils.wcs_utils import vac_to_air

    return np.asarray(vac_to_air(np.asarray(wavelength, np.float64) * u.AA).to_value(u.AA))


def der_snr_noise(flux: np.ndarray, window: int = NOISE_WINDOW) -> np.ndarray:
    """Per-pixel noise of a spectrum without errors, by DER_SNR (Stoehr et al. 2008) in windows.

    ``sigma = 1.482602 / sqrt(6) * median(|2 f_i - f_{i-2} - f_{i+2}|)`` over the non-zero
    pixels of each window of ``window`` pixels; NaN where a window has fewer than 20 of them.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> flux = 100 + rng.normal(0, 2.0, 20000)
    >>> round(float(np.nanmedian(der_snr_noise(flux))), 1)
    2.0
    """
    flux = np.asarray(flux, np.float64)
    second = np.full(flux.shape, np.nan)
    second[2:-2] = np.abs(2 * flux[2:-2] - flux[:-4] - flux[4:])
    usable = (flux != 0) & np.isfinite(flux)
    usable[2:-2] &= usable[:-4] & usable[4:]
    second[~usable] = np.nan
    noise = np.full(flux.shape, np.nan)
    for start in range(0, flux.size, window):
        piece = second[start:start + window]
        if np.count_nonzero(np.isfinite(piece)) >= 20:
            noise[start:start + window] = 1.482602 / np.sqrt(6.0) * np.nanmedian(piece)
    return noise


def _float(header: fits.Header, key: str) -> float:
    value = header.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _common_meta(header: fits.Header, prefix: str) -> dict[str, Any]:
    """The fields every reader fills (NaN / "" when the header lacks them)."""
    return {
        "object": str(header.get(f"HIERARCH {prefix} OBS TARG NAME", header.get("OBJECT", ""))).strip(),
        "instrument": str(header.get("INSTRUME", "")).strip(),
        "ra": _float(header, "RA"), "dec": _float(header, "DEC"), "mjd": _float(header, "MJD-OBS"),
        "bjd": _float(header, f"HIERARCH {prefix} DRS BJD"),
        "berv": _float(header, f"HIERARCH {prefix} DRS BERV"),
        "sn50": _float(header, f"HIERARCH {prefix} DRS SPE EXT SN50"),
        "exptime": _float(header, "EXPTIME"),
        "date_obs": str(header.get("DATE-OBS", "")).strip(),
    }


def _harps_prefix(header: fits.Header, path: str) -> str:
    instrument = str(header.get("INSTRUME", "")).strip().upper()
    if instrument not in _HARPS_PREFIX:
        raise SurveyFileError(path, f"INSTRUME={instrument!r} is not HARPS or HARPS-N", code="wrong_format")
    return _HARPS_PREFIX[instrument]


def _harps_primary(path: str, ndim: int, what: str) -> tuple[fits.Header, str, np.ndarray]:
    """The primary header, DRS keyword prefix and ``ndim``-dimensional data of a HARPS-family file."""
    with open_fits(path) as hdul:
        header = hdul[0].header
        prefix = _harps_prefix(header, path)
        data = hdul[0].data
        if data is None or data.ndim != ndim:
            raise SurveyFileError(path, f"no {what} in the primary HDU", code="wrong_format")
        return header, prefix, np.asarray(data, np.float64)


def _polynomial_wavelength(header: fits.Header, prefix: str, n_orders: int, n_pix: int) -> np.ndarray | None:
    """The DRS wavelength solution from ``{prefix} DRS CAL TH COEFF LL{k}`` (None when absent)."""
    key = f"HIERARCH {prefix} DRS CAL TH DEG LL"
    if key not in header or f"HIERARCH {prefix} DRS CAL TH COEFF LL0" not in header:
        return None
    degree = int(header[key])
    coeff = np.array([[header.get(f"HIERARCH {prefix} DRS CAL TH COEFF LL{o * (degree + 1) + i}", np.nan)
                       for i in range(degree + 1)] for o in range(n_orders)], np.float64)
    if not np.all(np.isfinite(coeff)):
        return None
    x = np.arange(n_pix, dtype=np.float64)
    return np.polynomial.polynomial.polyval(x, coeff.T).astype(np.float64)  # (n_orders, n_pix)


def _companion(path: str, header: fits.Header, key: str, given: str | os.PathLike | None) -> str | None:
    """A calibration frame the header names, looked for beside the spectrum (or the one given)."""
    if given is not None:
        return os.fspath(given)
    name = str(header.get(key, "")).strip()
    if not name:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    for candidate in (name, name + ".gz"):
        if os.path.isfile(os.path.join(folder, candidate)):
            return os.path.join(folder, candidate)
    return None


def _frame_image(path: str, shape: tuple[int, int], what: str) -> np.ndarray:
    with open_fits(path) as hdul:
        data = hdul[0].data
        if data is None or data.shape != shape:
            raise SurveyFileError(path, f"{what} frame of shape {None if data is None else data.shape}, "
                                  f"the spectrum has {shape[0]} x {shape[1]} orders x pixels", code="wrong_format")
        return np.asarray(data, np.float64)


def read_harps_e2ds(path: str | os.PathLike, blaze: str | os.PathLike | None = None,
                    wave: str | os.PathLike | None = None) -> EchelleSpectrum:
    """Read a HARPS / HARPS-N DRS ``e2ds`` file (orders x 4096 extracted counts).

    Parameters
    ----------
    path : str or os.PathLike
        The ``*_e2ds_A.fits`` file.
    blaze, wave : str or os.PathLike, optional
        The blaze and wavelength frames; by default those the header names
        (``DRS BLAZE FILE``, ``DRS CAL TH FILE``), looked for in the same folder. A missing
        blaze leaves ``blaze`` None (noted); the wave frame is needed only when the header
        has no wavelength polynomial.

    Raises
    ------
    SurveyFileError
        ``wrong_format`` for a calibration frame (blaze, wave, flat) or a file that is not
        a HARPS image; ``bad_header`` without any wavelength solution.
    """
    path = os.fspath(path)
    header, prefix, flux = _harps_primary(path, 2, "orders x pixels image")
    category = str(header.get(f"HIERARCH {prefix} DPR CATG", "SCIENCE")).strip().upper()
    if category != "SCIENCE":
        raise SurveyFileError(path, f"a {category} frame (DPR TYPE {header.get(f'HIERARCH {prefix} DPR TYPE')!s}), "
                              "not a science spectrum: blaze and wave frames are read beside the e2ds that "
                              "names them", code="wrong_format")
    n_orders, n_pix = flux.shape
    notes: list[str] = []
    wavelength = _polynomial_wavelength(header, prefix, n_orders, n_pix)
    if wavelength is None:
        wave_path = _companion(path, header, f"HIERARCH {prefix} DRS CAL TH FILE", wave)
        if wave_path is None:
            raise SurveyFileError(path, "no wavelength solution: neither DRS CAL TH COEFF LL keywords nor the "
                                  f"wave frame {header.get(f'HIERARCH {prefix} DRS CAL TH FILE')!s} beside it",
                                  code="bad_header")
        wavelength = _frame_image(wave_path, (n_orders, n_pix), "wave")
    blaze_path = _companion(path, header, f"HIERARCH {prefix} DRS BLAZE FILE", blaze)
    blaze_image = None
    if blaze_path is None:
        notes.append(f"blaze frame {header.get(f'HIERARCH {prefix} DRS BLAZE FILE')!s} not found beside the file: "
                     "flux not deblazed")
    else:
        blaze_image = _frame_image(blaze_path, (n_orders, n_pix), "blaze").astype(np.float32)
    window = _float(header, f"HIERARCH {prefix} DRS SPE EXT WINDOW")
    conad = _float(header, f"HIERARCH {prefix} DRS CCD CONAD")
    rons = [float(v) for k, v in header.items() if k.startswith(f"{prefix} DET OUT") and k.endswith(" RON")]
    read_var = (window * (np.mean(rons) / conad) ** 2
                if rons and np.isfinite(window) and np.isfinite(conad) and conad > 0 else 0.0)
    finite = np.isfinite(flux)
    variance = np.maximum(np.where(finite, flux, 0.0), 0.0) + read_var
    ivar = np.where(finite & (variance > 0), 1.0 / np.where(variance > 0, variance, 1.0), 0.0)
    meta = _common_meta(header, prefix)
    meta["blaze_file"] = os.path.basename(blaze_path) if blaze_path else ""
    meta["order_sn"] = [_float(header, f"HIERARCH {prefix} DRS SPE EXT SN{o}") for o in range(n_orders)]
    return EchelleSpectrum(np.where(finite, flux, 0.0).astype(np.float32), ivar.astype(np.float32), wavelength,
                           blaze_image, meta, medium="air", frame="earth", path=path, format="harps-e2ds",
                           notes=notes)


def read_harps_s1d(path: str | os.PathLike) -> EchelleSpectrum:
    """Read a HARPS / HARPS-N DRS ``s1d`` merged spectrum (air, barycentric, 0.01 A pixels).

    Pixels of zero flux (the DRS's gaps) get ``ivar = 0``; the others the DER_SNR noise of
    their window.
    """
    path = os.fspath(path)
    header, prefix, flux = _harps_primary(path, 1, "1-D spectrum")
    crval = header_value(header, "CRVAL1", path, float)
    cdelt = header_value(header, "CDELT1", path, float)
    crpix = header_value(header, "CRPIX1", path, float, required=False, default=1.0)
    if not cdelt > 0:
        raise SurveyFileError(path, f"CDELT1={cdelt} is not a positive wavelength step", code="bad_header")
    wavelength = crval + cdelt * (np.arange(flux.size) + 1.0 - crpix)
    spectrum = _one_order(path, header, prefix, flux, None, wavelength, "harps-s1d", medium="air",
                          frame="barycentric")
    near_550 = spectrum.good[0] & (wavelength > 5490.0) & (wavelength < 5510.0)
    sn50 = spectrum.meta["sn50"]
    if np.isfinite(sn50) and sn50 > 0 and np.count_nonzero(near_550) > 100:
        estimated = np.median(spectrum.flux[0, near_550] * np.sqrt(spectrum.ivar[0, near_550]))
        if estimated > 0:
            spectrum.ivar *= np.float32((sn50 / estimated) ** 2)
    return spectrum


def _one_order(path: str, header: fits.Header, prefix: str, flux: np.ndarray, error: np.ndarray | None,
               wavelength: np.ndarray, fmt: str, medium: str, frame: str,
               bad: np.ndarray | None = None) -> EchelleSpectrum:
    finite = np.isfinite(flux) & np.isfinite(wavelength)
    estimated = error is None
    if estimated:
        error = der_snr_noise(np.where(finite, flux, 0.0))
    usable = finite & np.isfinite(error) & (error > 0) & (flux != 0)
    if bad is not None:
        usable &= ~bad
    ivar = np.where(usable, 1.0 / np.where(usable, error, 1.0) ** 2, 0.0)
    meta = _common_meta(header, prefix)
    meta["blaze_file"] = ""
    return EchelleSpectrum(np.where(finite, flux, 0.0)[None].astype(np.float32), ivar[None].astype(np.float32),
                           np.asarray(wavelength, np.float64)[None], None, meta, medium=medium, frame=frame,
                           path=path, format=fmt, ivar_estimated=estimated)


def _hdu(hdul: fits.HDUList, names: tuple[str, ...]) -> fits.ImageHDU | None:
    for name in names:
        if name in hdul:
            return hdul[name]
    return None


def read_espresso_s2d(path: str | os.PathLike) -> EchelleSpectrum:
    """Read an ESPRESSO-style S2D file (SCIDATA / ERRDATA / QUALDATA / WAVEDATA_* image extensions).

    Pixels with ``QUALDATA != 0`` get ``ivar = 0``. The flux is deblazed by the pipeline
    (``blaze`` is None). Wavelengths are barycentric; air ones are preferred.
    """
    path = os.fspath(path)
    with open_fits(path) as hdul:
        header = hdul[0].header
        sci = _hdu(hdul, ("SCIDATA", "SCI"))
        err = _hdu(hdul, ("ERRDATA", "ERR"))
        qual = _hdu(hdul, ("QUALDATA", "QUAL"))
        wave_hdu, medium = _hdu(hdul, ("WAVEDATA_AIR_BARY",)), "air"
        if wave_hdu is None:
            wave_hdu, medium = _hdu(hdul, ("WAVEDATA_VAC_BARY", "WAVE")), "vacuum"
        if sci is None or wave_hdu is None or sci.data is None or wave_hdu.data is None:
            raise SurveyFileError(path, "an S2D file needs SCIDATA and WAVEDATA_AIR_BARY / WAVEDATA_VAC_BARY "
                                  "image extensions; found " + ", ".join(h.name for h in hdul), code="wrong_format")
        if medium == "vacuum" and wave_hdu.name == "WAVE":
            medium = "air" if "AIR" in str(wave_hdu.header.get("BUNIT", "") + wave_hdu.header.get("CTYPE1", "")).upper() \
                else "vacuum"
        flux = np.asarray(sci.data, np.float64)
        wavelength = np.asarray(wave_hdu.data, np.float64)
        error = np.asarray(err.data, np.float64) if err is not None and err.data is not None else None
        quality = np.asarray(qual.data) if qual is not None and qual.data is not None else None
    if flux.ndim != 2 or wavelength.shape != flux.shape:
        raise SurveyFileError(path, f"SCIDATA {flux.shape} and wavelength {wavelength.shape} images differ",
                              code="wrong_format")
    for name, array in (("ERRDATA", error), ("QUALDATA", quality)):
        if array is not None and array.shape != flux.shape:
            raise SurveyFileError(path, f"{name} {array.shape} differs from SCIDATA {flux.shape}", code="wrong_format")
    estimated = error is None
    if estimated:
        error = np.stack([der_snr_noise(order) for order in flux])
    usable = np.isfinite(flux) & np.isfinite(wavelength) & np.isfinite(error) & (error > 0)
    if quality is not None:
        usable &= quality == 0
    ivar = np.where(usable, 1.0 / np.where(usable, error, 1.0) ** 2, 0.0)
    prefix = "ESO"
    meta = _common_meta(header, prefix)
    meta["berv"] = _float(header, "HIERARCH ESO QC BERV")
    meta["blaze_file"] = ""
    return EchelleSpectrum(np.where(np.isfinite(flux), flux, 0.0).astype(np.float32), ivar.astype(np.float32),
                           wavelength, None, meta, medium=medium, frame="barycentric", path=path,
                           format="espresso-s2d", ivar_estimated=estimated)


_WAVE_UNITS = {"ANGSTROM": 1.0, "ANGSTROMS": 1.0, "A": 1.0, "NM": 10.0, "UM": 1e4, "MICRON": 1e4, "": 1.0}


def read_eso_1d(path: str | os.PathLike) -> EchelleSpectrum:
    """Read an ESO Phase-3 1-D spectrum (``ADP.*.fits``: one table row of WAVE, FLUX, ERR arrays).

    The wavelength unit is taken from the column's TUNIT (Angstrom or nm), the medium from
    the column's UCD / TUTYP or the header's ``WAVELMIN``-side keywords (air unless it says
    vacuum), the frame from ``SPECSYS`` (``BARYCENT`` / ``HELIOCEN`` -> barycentric, else Earth).
    """
    path = os.fspath(path)
    with open_fits(path) as hdul:
        header = hdul[0].header
        if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
            raise SurveyFileError(path, "no binary table extension (ESO Phase-3 1-D spectra keep WAVE, FLUX, ERR "
                                  "in one table row)", code="wrong_format")
        table = hdul[1]
        names = {n.upper(): n for n in table.columns.names}
        if "WAVE" not in names or "FLUX" not in names or len(table.data) < 1:
            raise SurveyFileError(path, f"table columns {sorted(names)} lack WAVE and FLUX", code="wrong_format")
        row = table.data[0]
        wavelength = np.asarray(row[names["WAVE"]], np.float64).ravel()
        flux = np.asarray(row[names["FLUX"]], np.float64).ravel()
        error = np.asarray(row[names["ERR"]], np.float64).ravel() if "ERR" in names else None
        quality = np.asarray(row[names["QUAL"]]).ravel() if "QUAL" in names else None
        column = table.columns[names["WAVE"]]
        unit = str(column.unit or "").strip().upper()
        text = " ".join(str(table.header.get(k, "")) for k in table.header if k.startswith(("TUCD", "TUTYP")))
        ext_header = table.header
    if unit not in _WAVE_UNITS:
        raise SurveyFileError(path, f"WAVE unit {unit!r} is not a wavelength unit survey_ml knows", code="bad_header")
    if flux.shape != wavelength.shape or (error is not None and error.shape != flux.shape):
        raise SurveyFileError(path, f"WAVE {wavelength.shape}, FLUX {flux.shape} and ERR arrays differ in length",
                              code="wrong_format")
    wavelength = wavelength * _WAVE_UNITS[unit]
    medium = "vacuum" if "vac" in text.lower() else "air"
    specsys = str(header.get("SPECSYS", ext_header.get("SPECSYS", ""))).strip().upper()
    frame = "barycentric" if specsys.startswith(("BARY", "HELIO")) else "earth"
    spectrum = _one_order(path, header, "ESO", flux, error, wavelength, "eso-1d", medium=medium, frame=frame,
                          bad=None if quality is None else quality != 0)
    if spectrum.meta["object"] == "":
        spectrum.meta["object"] = str(header.get("OBJECT", "")).strip()
    if not np.isfinite(spectrum.meta["sn50"]):
        spectrum.meta["sn50"] = _float(header, "SNR")
    return spectrum


@dataclass(frozen=True)
class EchelleFormat:
    """A high-resolution format: its key, a description, its identifier and reader."""

    key: str
    description: str
    identify: Callable[[fits.Header, list[str], fits.Header | None], bool]  # (primary, extnames, first ext)
    reader: Callable[[str], EchelleSpectrum]


def _is_harps(header: fits.Header) -> bool:
    return str(header.get("INSTRUME", "")).strip().upper() in _HARPS_PREFIX


#: The high-resolution formats survey_ml reads, in the order they are tried.
ECHELLE_FORMATS: tuple[EchelleFormat, ...] = (
    EchelleFormat("harps-e2ds", "HARPS / HARPS-N e2ds (orders x pixels primary image)",
                  lambda h, names, ext: _is_harps(h) and h.get("NAXIS") == 2 and len(names) == 1, read_harps_e2ds),
    EchelleFormat("harps-s1d", "HARPS / HARPS-N s1d (1-D primary image, linear wavelength)",
                  lambda h, names, ext: _is_harps(h) and h.get("NAXIS") == 1 and "CDELT1" in h, read_harps_s1d),
    EchelleFormat("espresso-s2d", "ESPRESSO-style S2D (SCIDATA + WAVEDATA image extensions)",
                  lambda h, names, ext: ("SCIDATA" in names or "SCI" in names)
                  and any(n.startswith("WAVEDATA") or n == "WAVE" for n in names), read_espresso_s2d),
    EchelleFormat("eso-1d", "ESO Phase-3 1-D spectrum (one-row WAVE / FLUX table)",
                  lambda h, names, ext: ext is not None and ext.get("XTENSION", "").strip() == "BINTABLE"
                  and {"WAVE", "FLUX"} <= {str(v).strip().upper() for k, v in ext.items() if k.startswith("TTYPE")},
                  read_eso_1d),
)


def identify_echelle(path: str | os.PathLike) -> str:
    """The :data:`ECHELLE_FORMATS` key of a high-resolution spectrum file, from its headers.

    Raises
    ------
    SurveyFileError
        ``wrong_format`` naming what the file holds and the formats tried.

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/HARPS.2010-09-18T23:42:36.178_s1d_A.fits"
    >>> header = fits.Header({"INSTRUME": "HARPS", "CRVAL1": 5000.0, "CDELT1": 0.01, "CRPIX1": 1.0})
    >>> fits.PrimaryHDU(np.ones(2000, np.float32), header).writeto(path)
    >>> identify_echelle(path)
    'harps-s1d'
    """
    path = os.fspath(path)
    with open_fits(path) as hdul:
        primary = hdul[0].header
        names = [h.name.upper() for h in hdul]
        first = hdul[1].header if len(hdul) > 1 else None
    for fmt in ECHELLE_FORMATS:
        if fmt.identify(primary, names, first):
            return fmt.key
    seen = (f"INSTRUME={str(primary.get('INSTRUME', '')).strip()!r}, primary NAXIS={primary.get('NAXIS')}, "
            f"HDUs {', '.join(names)}")
    tried = "; ".join(f.description for f in ECHELLE_FORMATS)
    raise SurveyFileError(path, f"not a high-resolution spectrum format survey_ml reads ({seen}); tried: {tried}",
                          code="wrong_format")


_BY_KEY = {f.key: f.reader for f in ECHELLE_FORMATS}


def read_echelle(path: str | os.PathLike, format: str = "auto") -> EchelleSpectrum:
    """Read any :data:`ECHELLE_FORMATS` file (``format="auto"``: identified from its headers)."""
    path = os.fspath(path)
    key = identify_echelle(path) if format == "auto" else format
    if key not in _BY_KEY:
        raise ValueError(f"unknown echelle format {format!r}; known: auto, {', '.join(_BY_KEY)}")
    return _BY_KEY[key](path)
