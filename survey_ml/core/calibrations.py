"""Strong-line calibrations: 12 + log(O/H) from the N2 and O3N2 indices of fitted line fluxes.

The Pettini & Pagel (2004, PP04) N2 and O3N2 calibrations (:data:`PP04`, :func:`pp04_n2`,
:func:`pp04_o3n2`), or linear ones fitted on a photoionisation-model library
(:func:`calibrate_strong_lines`). Each value comes with a code saying why it is NaN, if it
is: ``missing`` (a line not measured), ``low_snr``, ``non_positive`` or
``out_of_calibration`` (the index outside the calibration's validity range).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["StrongLineCalibration", "PP04", "calibrate_strong_lines", "pp04_n2", "pp04_o3n2",
           "PP04_N2_SIGMA", "PP04_O3N2_SIGMA"]

#: Intrinsic scatter of the PP04 calibrations (dex).
PP04_N2_SIGMA = 0.18
PP04_O3N2_SIGMA = 0.14

#: Validity ranges of the PP04 linear calibrations.
PP04_N2_RANGE = (-2.5, -0.3)
PP04_O3N2_MAX = 1.9


@dataclass(frozen=True)
class StrongLineCalibration:
    """Linear strong-line calibrations, ``12 + log(O/H) = zero + slope * index``.

    For ``N2 = log([NII]6584/Ha)`` and ``O3N2 = log(([OIII]5007/Hb)/([NII]6584/Ha))``, each
    with the index range over which it holds and its scatter (dex). :data:`PP04` is
    Pettini & Pagel (2004), an empirical (T_e) calibration; :func:`calibrate_strong_lines`
    derives one from a photoionisation-model library instead, the way Kewley & Dopita
    (2002) did - the two scales differ by a few tenths of a dex at high metallicity
    (Kewley & Ellison 2008), so a baseline is only fair on its labels' own scale.
    """

    name: str
    n2_zero: float
    n2_slope: float
    n2_range: tuple[float, float]
    n2_sigma: float
    o3n2_zero: float
    o3n2_slope: float
    o3n2_range: tuple[float, float]
    o3n2_sigma: float


#: Pettini & Pagel (2004): 8.90 + 0.57 N2 (-2.5 < N2 < -0.3); 8.73 - 0.32 O3N2 (O3N2 < 1.9).
PP04 = StrongLineCalibration("PP04", 8.90, 0.57, PP04_N2_RANGE, PP04_N2_SIGMA,
                             8.73, -0.32, (-np.inf, PP04_O3N2_MAX), PP04_O3N2_SIGMA)


def calibrate_strong_lines(nii6584, ha, oiii5007, hb, oh12, name: str = "library") -> StrongLineCalibration:
    """Fit N2 and O3N2 calibrations to line fluxes of known metallicity (e.g. a model library).

    Ordinary least squares of ``oh12`` on each index over the rows where it is finite;
    the validity range is the index range spanned by those rows, the scatter the rms
    residual.

    Parameters
    ----------
    nii6584, ha, oiii5007, hb : array_like
        Noise-free line fluxes of star-forming (HII-region-like) spectra.
    oh12 : array_like
        Their 12 + log(O/H).
    name : str
        Label kept in the calibration.

    Examples
    --------
    >>> n2 = np.linspace(-1.2, -0.4, 9); o3n2 = np.linspace(1.5, 0.0, 9)
    >>> cal = calibrate_strong_lines(10**n2, np.ones(9), 10**(o3n2 + n2), np.ones(9), 8.90 + 0.57 * n2)
    >>> round(cal.n2_zero, 3), round(cal.n2_slope, 3), round(cal.n2_sigma, 6)
    (8.9, 0.57, 0.0)
    """
    nii, ha, oiii, hb, oh12 = (np.asarray(v, dtype=np.float64) for v in (nii6584, ha, oiii5007, hb, oh12))
    with np.errstate(divide="ignore", invalid="ignore"):
        n2 = np.log10(nii / ha)
        o3n2 = np.log10((oiii / hb) / (nii / ha))
    fits = []
    for index in (n2, o3n2):
        use = np.isfinite(index) & np.isfinite(oh12)
        if use.sum() < 3:
            raise ValueError("need at least 3 rows with finite lines and oh12 to calibrate")
        slope, zero = np.polyfit(index[use], oh12[use], 1)
        rms = float(np.sqrt(np.mean((oh12[use] - zero - slope * index[use]) ** 2)))
        fits.append((float(zero), float(slope), (float(index[use].min()), float(index[use].max())), rms))
    (n2_zero, n2_slope, n2_range, n2_sigma), (o3_zero, o3_slope, o3_range, o3_sigma) = fits
    return StrongLineCalibration(name, n2_zero, n2_slope, n2_range, n2_sigma, o3_zero, o3_slope, o3_range, o3_sigma)


def _pp04_n2_codes(nii6584, ha, nii6584_err=None, ha_err=None, min_snr: float = 3.0,
                   calibration: StrongLineCalibration = PP04):
    """N2 metallicity (PP04 unless told otherwise) and, per value, "ok" or why it is NaN."""
    nii, ha = np.asarray(nii6584, dtype=np.float64), np.asarray(ha, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        n2 = np.log10(nii / ha)
    code = np.full(np.broadcast(nii, ha).shape, "ok", dtype=object)
    code[~((n2 > calibration.n2_range[0]) & (n2 < calibration.n2_range[1]))] = "out_of_calibration"
    code[(nii <= 0) | (ha <= 0)] = "non_positive"
    code[_low_snr((nii, nii6584_err), (ha, ha_err), min_snr=min_snr)] = "low_snr"
    code[~(np.isfinite(nii) & np.isfinite(ha))] = "missing"
    return np.where(code == "ok", calibration.n2_zero + calibration.n2_slope * n2, np.nan), code


def _pp04_o3n2_codes(oiii5007, hb, nii6584, ha, oiii5007_err=None, hb_err=None, nii6584_err=None,
                     ha_err=None, min_snr: float = 3.0, calibration: StrongLineCalibration = PP04):
    """O3N2 metallicity (PP04 unless told otherwise) and, per value, "ok" or why it is NaN."""
    lines = [np.asarray(v, dtype=np.float64) for v in (oiii5007, hb, nii6584, ha)]
    oiii, hb, nii, ha = lines
    with np.errstate(divide="ignore", invalid="ignore"):
        o3n2 = np.log10((oiii / hb) / (nii / ha))
    code = np.full(np.broadcast(*lines).shape, "ok", dtype=object)
    code[~((o3n2 > calibration.o3n2_range[0]) & (o3n2 < calibration.o3n2_range[1]))] = "out_of_calibration"
    code[(oiii <= 0) | (hb <= 0) | (nii <= 0) | (ha <= 0)] = "non_positive"
    code[_low_snr(*zip(lines, (oiii5007_err, hb_err, nii6584_err, ha_err)), min_snr=min_snr)] = "low_snr"
    code[~np.all([np.isfinite(v) for v in np.broadcast_arrays(*lines)], axis=0)] = "missing"
    return np.where(code == "ok", calibration.o3n2_zero + calibration.o3n2_slope * o3n2, np.nan), code


def _low_snr(*pairs, min_snr: float) -> np.ndarray:
    """True where any (flux, err) pair with an error given has flux / err < min_snr."""
    low = np.zeros(np.broadcast(*[p[0] for p in pairs]).shape, dtype=bool)
    for value, err in pairs:
        if err is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                low |= ~(value / np.asarray(err, dtype=np.float64) >= min_snr) & np.isfinite(value)
    return low


def _as_output(value: np.ndarray, *inputs):
    """A float for scalar inputs, else the array."""
    return float(value) if all(np.ndim(v) == 0 for v in inputs) else value


def pp04_n2(nii6584, ha, nii6584_err=None, ha_err=None, *, min_snr: float = 3.0):
    """12 + log(O/H) from the PP04 N2 calibration: ``8.90 + 0.57 N2``, ``N2 = log([NII]6584/Ha)``.

    NaN outside the calibration's validity ``-2.5 < N2 < -0.3`` (i.e. above
    12 + log(O/H) = 8.729, where N2 saturates), for non-positive or non-finite fluxes, and,
    where errors are given, when either line has S/N < ``min_snr``. Intrinsic scatter
    :data:`PP04_N2_SIGMA` = 0.18 dex.

    Parameters
    ----------
    nii6584, ha : float or array_like
        Line fluxes (any common units).
    nii6584_err, ha_err : float or array_like, optional
        Their 1 sigma errors; without them no S/N cut is made.
    min_snr : float
        Lowest line S/N used.

    Returns
    -------
    float or numpy.ndarray

    Examples
    --------
    >>> round(pp04_n2(10 ** -0.5, 1.0), 3)
    8.615
    >>> pp04_n2(0.6, 1.0)  # N2 = -0.22 > -0.3: outside the calibration
    nan
    >>> pp04_n2(2.0, 10.0, nii6584_err=1.0, ha_err=0.5)  # [NII] at S/N 2
    nan
    """
    return _as_output(_pp04_n2_codes(nii6584, ha, nii6584_err, ha_err, min_snr)[0], nii6584, ha)


def pp04_o3n2(oiii5007, hb, nii6584, ha, oiii5007_err=None, hb_err=None, nii6584_err=None, ha_err=None,
              *, min_snr: float = 3.0):
    """12 + log(O/H) from the PP04 O3N2 calibration: ``8.73 - 0.32 O3N2``.

    ``O3N2 = log(([OIII]5007/Hbeta) / ([NII]6584/Halpha))``. NaN where ``O3N2 >= 1.9``
    (12 + log(O/H) <= 8.122; PP04's validity limit), for non-positive or non-finite fluxes,
    and, where errors are given, when any of the four lines has S/N < ``min_snr``.
    Intrinsic scatter :data:`PP04_O3N2_SIGMA` = 0.14 dex.

    Parameters
    ----------
    oiii5007, hb, nii6584, ha : float or array_like
        Line fluxes (any common units).
    oiii5007_err, hb_err, nii6584_err, ha_err : float or array_like, optional
        Their 1 sigma errors; only the lines with an error given are S/N-cut.
    min_snr : float
        Lowest line S/N used.

    Returns
    -------
    float or numpy.ndarray

    Examples
    --------
    >>> round(pp04_o3n2(1.0, 1.0, 0.1, 1.0), 3)  # O3N2 = 1
    8.41
    >>> pp04_o3n2(10.0, 1.0, 0.1, 1.0)  # O3N2 = 2 >= 1.9
    nan
    """
    value = _pp04_o3n2_codes(oiii5007, hb, nii6584, ha, oiii5007_err, hb_err, nii6584_err, ha_err, min_snr)[0]
    return _as_output(value, oiii5007, hb, nii6584, ha)
