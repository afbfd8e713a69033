"""Per-spectrum quality assessment: which pixels are usable and what status a row gets."""
from __future__ import annotations

import numpy as np

from ..io.spectrum import Spectrum

__all__ = ["MASK_NONFINITE", "MASK_NODATA", "USABLE_STATUSES", "assess_spectrum"]

#: Bits survey_ml adds to the stored andmask (survey pipelines use the low bits).
MASK_NONFINITE = np.uint32(1 << 30)  # flux or ivar was NaN/inf/negative in the file
MASK_NODATA = np.uint32(1 << 31)     # pixel outside the file's wavelength coverage

#: Row statuses whose spectrum may be used downstream; every other status is a flag.
USABLE_STATUSES = frozenset({"ok", "masked_values"})

#: Fraction of wavelength coverage below which a spectrum is not worth keeping.
MIN_GOOD_FRACTION = 0.05


def assess_spectrum(spec: Spectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    """Clean one spectrum for storage and decide its row status.

    Non-finite flux or ivar, and negative ivar, are set to flux 0 / ivar 0 and flagged
    with :data:`MASK_NONFINITE`; a good spectrum is returned bit-identical.

    Parameters
    ----------
    spec : Spectrum

    Returns
    -------
    flux, ivar, andmask : numpy.ndarray
        Arrays to store (copies only where something was cleaned).
    status : str
        ``"ok"``; ``"masked_values"`` (usable, some pixels cleaned); ``"no_coverage"``
        (fewer than 5% of pixels usable: all ivar = 0, all NaN, ...).
    message : str
        Empty for ``"ok"``, else what was found, in words.
    """
    flux, ivar, andmask = spec.flux, spec.ivar, spec.andmask
    bad_value = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
    n_bad_value = int(bad_value.sum())
    if n_bad_value:
        flux = np.where(bad_value, np.float32(0), flux).astype(np.float32)
        ivar = np.where(bad_value, np.float32(0), ivar).astype(np.float32)
        andmask = andmask | np.where(bad_value, MASK_NONFINITE, np.uint32(0))
    n_good = int(((ivar > 0) & (andmask == 0)).sum())
    n = spec.n_pix
    if n == 0 or n_good < MIN_GOOD_FRACTION * n:
        reasons = []
        if n_bad_value:
            reasons.append(f"{n_bad_value} NaN/inf/negative-ivar pixels")
        if n and int((spec.ivar == 0).sum()) == n:
            reasons.append("ivar = 0 everywhere")
        detail = "; ".join(reasons) or "pixels masked by andmask or ivar = 0"
        return flux, ivar, andmask, "no_coverage", f"only {n_good} of {n} pixels usable ({detail})"
    if n_bad_value:
        return flux, ivar, andmask, "masked_values", (
            f"{n_bad_value} of {n} pixels had NaN/inf flux or ivar (or ivar < 0); set to ivar = 0 and masked")
    return flux, ivar, andmask, "ok", ""
