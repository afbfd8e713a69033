"""Wavelength grids of survey spectrographs."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

__all__ = ["LogLinearGrid", "LAMOST_LRS_GRID", "SDSS_GRID"]


@lru_cache(maxsize=16)
def _wavelength(coeff0: float, coeff1: float, n_pix: int) -> np.ndarray:
    wave = 10.0 ** (coeff0 + coeff1 * np.arange(n_pix))
    wave.flags.writeable = False  # shared by every caller
    return wave


@dataclass(frozen=True)
class LogLinearGrid:
    """A log-linear wavelength grid, ``lambda_i = 10**(coeff0 + coeff1 * i)`` (Angstrom).

    Parameters
    ----------
    coeff0 : float
        log10 wavelength of pixel 0 (LAMOST COEFF0, SDSS COEFF0 / loglam[0]).
    coeff1 : float
        log10 step per pixel (LAMOST COEFF1).
    n_pix : int
        Number of pixels.

    Examples
    --------
    >>> grid = LogLinearGrid(3.5682, 1e-4, 3950)
    >>> round(float(grid.wavelength()[0]), 2)
    3699.99
    >>> grid.offset_of(3.5683, 1e-4)
    1
    """

    coeff0: float
    coeff1: float
    n_pix: int

    def wavelength(self) -> np.ndarray:
        """Pixel-centre wavelengths in Angstrom (float64, read-only, computed once per grid)."""
        return _wavelength(self.coeff0, self.coeff1, self.n_pix)

    def offset_of(self, coeff0: float, coeff1: float, n_pix: int = 1, tol_pix: float = 0.01) -> int | None:
        """Integer pixel offset of a spectrum of ``n_pix`` pixels from ``coeff0`` in steps ``coeff1``.

        Returns ``None`` when the spectrum does not sit on this grid: its first pixel
        falls between grid pixels, or its step drifts from the grid's, by more than
        ``tol_pix`` of a pixel (steps derived from float32 log-wavelengths are only good
        to ~1e-7 relative, so the drift, not the step, is what is compared).
        """
        drift = abs(coeff1 - self.coeff1) / self.coeff1 * max(n_pix - 1, 0)
        shift = (coeff0 - self.coeff0) / self.coeff1
        offset = int(round(shift))
        return offset if drift <= tol_pix and abs(shift - offset) <= tol_pix else None

    def to_dict(self) -> dict:
        """Plain-JSON form, as kept in the store's attributes."""
        return asdict(self)


#: The LAMOST LRS grid: COEFF0 = 3.5682, COEFF1 = 1e-4, 3700-9190 A; 3950 pixels leaves
#: room for every released spectrum (3900-3909 pixels) and small start offsets.
LAMOST_LRS_GRID = LogLinearGrid(coeff0=3.5682, coeff1=1e-4, n_pix=3950)

#: The SDSS/BOSS co-add grid: log10 wavelengths on integer multiples of 1e-4 (3162-11220 A)
#: so that every spec-lite file (3.5523 <= loglam[0] for BOSS, 3.5798 for SDSS-I/II) sits on it.
SDSS_GRID = LogLinearGrid(coeff0=3.5000, coeff1=1e-4, n_pix=5500)
