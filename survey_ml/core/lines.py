"""Emission-line features: what the networks read beside the spectrum, scale-free and noise-aware.

On min-max normalised flux a CNN sees the strong BPT lines well and the ionisation-sensitive
ones badly: on the broad-prior library a regressor on the *noise-free* line ratios recovers
12 + log(O/H) to 0.012 dex with [OII] and [SII], and only to 0.15 dex from Hbeta, [OIII],
Halpha and [NII] alone - log U and metallicity are degenerate in the BPT lines and
[OIII]/[OII] and [SII]/Halpha break that (SCIENCE.md; issue 15). The metallicity network
and the star-forming classifier therefore also read the fitted lines.

:func:`line_features` fits :data:`~survey_ml.core.line_fit.EXTENDED_GROUPS` (Gaussian lines on
a local continuum, at the catalogue redshift) and turns the fluxes into
:data:`N_LINE_FEATURES` numbers per spectrum, independent of the flux scale:

* per line of :data:`FEATURE_LINES` its signed significance ``asinh(F / (3 sigma_F))``;
* per line but Halpha ``log10(max(F, 2 sigma_F) / max(F_Ha, 2 sigma_Ha))`` - a ratio that
  turns into an upper limit, never a log of noise, when a line is not detected;
* per line a 0/1 flag: not measured (outside the spectrum, masked, no redshift).

Unmeasured values are 0 (their flag says why). The same function feeds training
(:mod:`survey_ml.train.spectral`, on the simulated native-grid spectra) and inference (run-catalog's
blocks), so the two cannot drift apart.
"""
from __future__ import annotations

import numpy as np

__all__ = ["line_features", "FEATURE_LINES", "N_LINE_FEATURES", "LINE_FEATURE_NAMES"]

#: Lines the features describe (``sii`` is 6717 + 6731).
FEATURE_LINES = ("oii3727", "hb", "oiii5007", "ha", "nii6584", "sii")
#: Names of the columns :func:`line_features` returns, in order.
LINE_FEATURE_NAMES = (tuple(f"snr_{k}" for k in FEATURE_LINES)
                      + tuple(f"log_{k}_ha" for k in FEATURE_LINES if k != "ha")
                      + tuple(f"missing_{k}" for k in FEATURE_LINES))
N_LINE_FEATURES = len(LINE_FEATURE_NAMES)


def _fluxes(fit: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "sii":
        return fit["sii6717"] + fit["sii6731"], np.hypot(fit["sii6717_err"], fit["sii6731_err"])
    return fit[name], fit[f"{name}_err"]


def line_features(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray | None, wavelength: np.ndarray,
                  z: np.ndarray, r_instrument: float = 1800.0) -> np.ndarray:
    """(n, :data:`N_LINE_FEATURES`) float32 line features of a block of native-grid spectra.

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        (n, n_pix) flux density and inverse variance (``ivar == 0``: bad pixel).
    mask : numpy.ndarray or None
        (n, n_pix) pixel mask, non-zero bad.
    wavelength : numpy.ndarray
        (n_pix,) observed-frame vacuum wavelengths (A).
    z : numpy.ndarray
        (n,) redshifts the lines are fitted at (the catalogue's; NaN: all lines missing).
    r_instrument : float
        Resolving power of the line-spread function the fit assumes.

    Examples
    --------
    >>> from survey_ml.core.wavelength import LAMOST_LRS_GRID
    >>> wave = LAMOST_LRS_GRID.wavelength()
    >>> flux = np.ones((2, wave.size), np.float32)
    >>> lines = ((3727.09, 12.0 * 0.75 / 1.75), (3729.88, 12.0 / 1.75), (4862.68, 10.0), (4960.30, 20.0 / 2.98),
    ...          (5008.24, 20.0), (6549.86, 6.0 / 3.05), (6564.61, 30.0), (6585.27, 6.0))
    >>> for rest, f in lines:
    ...     mu = rest * 1.1; sig = mu / 1800 / 2.3548
    ...     flux = flux + f * np.exp(-0.5 * ((wave - mu) / sig) ** 2) / (np.sqrt(2 * np.pi) * sig)
    >>> feats = line_features(flux, np.full(flux.shape, 400.0), None, wave, np.array([0.1, np.nan]))
    >>> feats.shape == (2, N_LINE_FEATURES)
    True
    >>> named = dict(zip(LINE_FEATURE_NAMES, feats[0]))
    >>> [round(float(named[k]), 2) for k in ("log_nii6584_ha", "log_oiii5007_ha", "log_oii3727_ha")]
    [-0.7, -0.18, -0.4]
    >>> float(named["missing_ha"]), float(feats[1][LINE_FEATURE_NAMES.index("missing_ha")])
    (0.0, 1.0)
    """
    from .line_fit import EXTENDED_GROUPS, fit_strong_lines_block

    n = len(flux)
    out = np.zeros((n, N_LINE_FEATURES), np.float32)
    if n == 0:
        return out
    z = np.asarray(z, np.float64)
    fit = fit_strong_lines_block(wavelength, flux, ivar, np.where(np.isfinite(z), z, 0.1), mask,
                                 r_instrument=r_instrument, groups=EXTENDED_GROUPS)
    values = {}
    for name in FEATURE_LINES:
        f, e = _fluxes(fit, name)
        missing = ~(np.isfinite(f) & np.isfinite(e) & (e > 0)) | ~np.isfinite(z)
        values[name] = (np.where(missing, 0.0, f), np.where(missing, 1.0, e), missing)
    k = 0
    for name in FEATURE_LINES:
        f, e, missing = values[name]
        out[:, k] = np.where(missing, 0.0, np.arcsinh(f / (3.0 * e)))
        k += 1
    f_ha, e_ha, miss_ha = values["ha"]
    ha = np.maximum(f_ha, 2.0 * e_ha)
    for name in FEATURE_LINES:
        if name == "ha":
            continue
        f, e, missing = values[name]
        out[:, k] = np.where(missing | miss_ha, 0.0, np.log10(np.maximum(f, 2.0 * e) / ha))
        k += 1
    for name in FEATURE_LINES:
        out[:, k] = values[name][2]
        k += 1
    return out
