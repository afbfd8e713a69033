"""The strong-line ("traditional method") gas-phase metallicity baseline of a block of spectra.

Emission-line fluxes are measured by fitting Gaussian lines on a local linear continuum in
three independent groups (under Hbeta and Halpha with a stellar Balmer absorption trough of
fixed shape; :mod:`survey_ml.core.line_fit`), and turned into 12 + log(O/H) with the
Pettini & Pagel (2004, PP04) N2 and O3N2 calibrations (:mod:`survey_ml.core.calibrations`).
This is the anchor of SCIENCE.md section 1 that a full-spectrum model must clearly beat.

:func:`strong_line_metallicity` runs the block path and the PP04 calibrations and returns
a DataFrame; it is the function a Dask ``map_blocks`` / ``map_partitions`` call lifts.

Each row gets a status (:data:`BASELINE_STATUSES`): ``ok`` with both metallicities,
``partial`` with one, else the most severe reason neither could be given, and a message
naming every NaN value and why.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .calibrations import PP04, StrongLineCalibration, _pp04_n2_codes, _pp04_o3n2_codes
from .line_fit import LINE_NAMES, _check_block, fit_strong_lines_block
from .line_fit_exact import _fit_rows

__all__ = ["strong_line_metallicity", "BASELINE_COLUMNS", "BASELINE_STATUSES", "MEASURED_SPEED"]

#: Row statuses of :func:`strong_line_metallicity`, most severe first. ``ok``: both
#: metallicities; ``partial``: one of them (typically N2 above its validity range, at
#: 12 + log(O/H) > 8.73); the rest say why neither could be given.
BASELINE_STATUSES = ("bad_redshift", "no_coverage", "fit_failed", "low_snr", "out_of_calibration",
                     "partial", "ok")

#: Columns (and dtypes) of :func:`strong_line_metallicity`'s frame.
BASELINE_COLUMNS = {"hb": "float64", "hb_err": "float64", "oiii5007": "float64", "oiii5007_err": "float64",
                    "ha": "float64", "ha_err": "float64", "nii6584": "float64", "nii6584_err": "float64",
                    "oh12_n2": "float64", "oh12_o3n2": "float64", "baseline_status": "object",
                    "baseline_message": "object"}

#: Throughput on mock LAMOST LRS spectra (3950-pixel grid, the mock release's mix: snr_r
#: 3-60, 70% star-forming), one core (``taskset -c 0``, 1 BLAS thread) of a shared 2-core
#: development VM, numpy 2.4 / scipy 1.17, with the Balmer absorption troughs: 2,000 spectra
#: in blocks of 1,000-2,000 rows (250 rows: ~355/s), and 300 spectra one by one; medians of
#: 7 runs, each the best of 2-3, as the shared VM's load varied by ~15%. The code without
#: the troughs ran at ~430/s and ~36/s alongside (it had measured 480/s and 41/s on a
#: quieter day): the troughs cost ~10%. At ~400/s one core does the 242,500 LAMOST DR10
#: galaxy spectra of SCIENCE.md section 1 in about 10 minutes.
MEASURED_SPEED = {"fit_strong_lines (least_squares, spectra/s)": 33.0,
                  "fit_strong_lines_block (vectorised, spectra/s)": 400.0}


_SEVERITY = {code: rank for rank, code in enumerate(BASELINE_STATUSES)}
_ROW_CODE = {"bad_redshift": "bad_redshift", "out_of_range": "no_coverage", "masked": "no_coverage",
             "fit_failed": "fit_failed", "missing": "no_coverage", "low_snr": "low_snr",
             "non_positive": "low_snr", "out_of_calibration": "out_of_calibration"}


def _row_status(fit: dict, code_n2: np.ndarray, code_o3n2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """baseline_status (see BASELINE_STATUSES) and baseline_message per row."""
    n = len(code_n2)
    status = np.empty(n, dtype=object)
    message = np.empty(n, dtype=object)
    n2_lines, o3n2_lines = ("nii6584", "ha"), LINE_NAMES
    for i in range(n):
        words = [fit["message"][i]] if fit["message"][i] else []
        reasons = []
        for label, code, lines in (("oh12_n2", code_n2[i], n2_lines), ("oh12_o3n2", code_o3n2[i], o3n2_lines)):
            if code == "missing":
                line_codes = [fit["line_code"][name][i] for name in lines if fit["line_code"][name][i] != "ok"]
                code = min(line_codes, key=lambda c: _SEVERITY[_ROW_CODE[c]])
            if code != "ok":
                reasons.append(_ROW_CODE[code])
                words.append(f"{label}: {code}")
        if not reasons:
            status[i] = "ok"
        elif len(reasons) == 1:
            status[i] = "partial"
        else:
            status[i] = min(reasons, key=_SEVERITY.__getitem__)
        message[i] = "; ".join(words)
    return status, message


def strong_line_metallicity(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                            mask: np.ndarray | None, z: np.ndarray, *, r_instrument: float = 1800.0,
                            method: str = "fast", min_snr: float = 3.0, index=None,
                            calibration: StrongLineCalibration = PP04) -> pd.DataFrame:
    """Strong-line fluxes and N2 / O3N2 metallicities for a block of spectra on one grid.

    The function a Dask ``map_blocks`` / ``map_partitions`` call lifts: pure, no Dask
    inside, correct on 0 rows. An oh12 value is NaN when a line it needs is not measured,
    has S/N < ``min_snr``, is not positive, or the index is outside the calibration's
    validity (:func:`pp04_n2`, :func:`pp04_o3n2`).

    Parameters
    ----------
    wavelength : numpy.ndarray
        (n_pix,) common observed-frame vacuum wavelength grid (A).
    flux, ivar : numpy.ndarray
        (n, n_pix); ``ivar == 0`` marks a bad pixel.
    mask : numpy.ndarray or None
        (n, n_pix) pixel mask, non-zero = bad (the release store's ``mask``).
    z : numpy.ndarray
        (n,) catalogue redshifts.
    r_instrument : float
        Resolving power lambda / FWHM.
    method : {"fast", "exact"}
        ``fast``: :func:`fit_strong_lines_block` (vectorised); ``exact``:
        :func:`fit_strong_lines` row by row (scipy least_squares, ~12x slower).
    min_snr : float
        Lowest line S/N used by the calibrations.
    index : array_like, optional
        Index of the returned frame (e.g. the rows' ``row`` or ``obsid``); default 0..n-1.
    calibration : StrongLineCalibration
        :data:`PP04` (default), or one from :func:`calibrate_strong_lines`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`BASELINE_COLUMNS`: the four fluxes and errors, ``oh12_n2``,
        ``oh12_o3n2``, ``baseline_status`` (one of :data:`BASELINE_STATUSES`) and
        ``baseline_message`` (why anything is NaN, "" when nothing is).

    Raises
    ------
    ValueError
        For mismatched shapes, a non-increasing ``wavelength`` or an unknown ``method``.
    """
    wave, flux, ivar, _, z = _check_block(wavelength, flux, ivar, mask, z)
    if method == "fast":
        fit = fit_strong_lines_block(wave, flux, ivar, z, mask, r_instrument)
    elif method == "exact":
        fit = _fit_rows(wave, flux, ivar, mask, z, r_instrument)
    else:
        raise ValueError(f"method must be 'fast' or 'exact', not {method!r}")
    oh12_n2, code_n2 = _pp04_n2_codes(fit["nii6584"], fit["ha"], fit["nii6584_err"], fit["ha_err"], min_snr,
                                      calibration)
    oh12_o3n2, code_o3n2 = _pp04_o3n2_codes(fit["oiii5007"], fit["hb"], fit["nii6584"], fit["ha"],
                                            fit["oiii5007_err"], fit["hb_err"], fit["nii6584_err"], fit["ha_err"],
                                            min_snr, calibration)
    status, message = _row_status(fit, code_n2, code_o3n2)
    columns = {name: fit[name] for name in BASELINE_COLUMNS if name in fit}
    columns.update(oh12_n2=oh12_n2, oh12_o3n2=oh12_o3n2, baseline_status=status, baseline_message=message)
    frame = pd.DataFrame(columns, index=index)
    return frame.astype(BASELINE_COLUMNS)[list(BASELINE_COLUMNS)]
