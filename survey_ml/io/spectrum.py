"""The in-memory form of one 1D survey spectrum, shared by every spectrum reader."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Spectrum"]


@dataclass
class Spectrum:
    """One observed spectrum on its native pixel grid.

    Attributes
    ----------
    flux : numpy.ndarray
        float32 flux density per pixel, in the survey's units (LAMOST: relative flux;
        SDSS: 1e-17 erg s-1 cm-2 A-1).
    ivar : numpy.ndarray
        float32 inverse variance of ``flux``; 0 marks a pixel without information.
    wavelength : numpy.ndarray
        Vacuum wavelength of each pixel centre in Angstrom, as stored in the file.
    andmask, ormask : numpy.ndarray
        uint32 pixel bitmasks (bits set in all / any exposures). A pixel is bad when
        ``ivar == 0`` or ``andmask != 0``.
    meta : dict
        Header fields under lower-case names (``obsid``, ``ra``, ``dec``, ``z``,
        ``snrr``, ``coeff0``, ...), survey-specific; see the reader's docstring.
    path : str
        The file it was read from ("" for a spectrum made in memory).
    format : str
        Data model it follows: ``"lamost-old"``, ``"lamost-new"``, ``"sdss-spec"``.
    normalization : numpy.ndarray or None
        LAMOST DR8+ NORMALIZATION column (``None`` when the header says NORM = 0).
    extra : dict
        Further per-pixel arrays a format carries (SDSS: ``wdisp``, ``sky``, ``model``).
    """

    flux: np.ndarray
    ivar: np.ndarray
    wavelength: np.ndarray
    andmask: np.ndarray
    ormask: np.ndarray
    meta: dict[str, Any]
    path: str = ""
    format: str = ""
    normalization: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_pix(self) -> int:
        """Number of pixels."""
        return int(self.flux.shape[0])

    @property
    def good(self) -> np.ndarray:
        """Boolean mask of usable pixels: finite flux, ivar > 0 and finite, andmask == 0."""
        return (np.isfinite(self.flux) & np.isfinite(self.ivar) & (self.ivar > 0)
                & (self.andmask == 0))
