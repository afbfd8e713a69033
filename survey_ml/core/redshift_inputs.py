"""Spectra -> redshift-network input, one block at a time, for each instrument setup.

A redshift is a shift in log-wavelength, so survey_ml's redshift network reads spectra on a
**log-linear** grid (``dlog10 lambda = 1e-4``, LAMOST's own pixels, 69 km/s): the same
galaxy at two redshifts is the same pattern moved sideways, which a convolutional trunk
sees directly. Two setups (:data:`SETUPS`):

``lamost``
    the LAMOST LRS native grid (3950 pixels from 3700 A, the dr10 store grid) for
    0 < z < 0.5, the LAMOST galaxy range;
``deimos``
    the DEIMOS-like set of the published redshift CNN (4100-11000 A, 0.1 < z < 5.8),
    resampled from its 8912 linear pixels onto 4287 log pixels.

Inputs (:func:`redshift_inputs`): channel 0 is ``asinh(flux / s)`` with ``s`` the median
absolute flux of the good pixels (continuum ~ 1; strong lines compressed, not clipped, and
the sign of noise kept - a min-max scaling would let one sky-residual spike set the scale),
0 on bad pixels; channel 1 the good-pixel coverage. The published network
(:func:`published_redshift_inputs`) reads its own two channels: the wavelength scaled to
[0, 1] over the instrument range, and the min-max normalised flux on the instrument grid.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .wavelength import LogLinearGrid
from .spectra import minmax_normalise, to_model_grid

__all__ = ["RedshiftSetup", "SETUPS", "redshift_inputs", "scaled_inputs", "published_redshift_inputs", "setup_of",
           "on_setup_grid"]


@dataclass(frozen=True)
class RedshiftSetup:
    """Model grid, redshift range and PDF bins of one instrument setup.

    Attributes
    ----------
    name : str
    grid : LogLinearGrid
        The log-linear model grid.
    z_min, z_max : float
        Redshift range the network is trained on.
    bin_width : float
        Width of the PDF bins in ln(1 + z).
    instrument_wave : tuple of float
        (first, last) instrument wavelength (A): the published wavelength channel's scale.
    """

    name: str
    grid: LogLinearGrid
    z_min: float
    z_max: float
    bin_width: float
    instrument_wave: tuple[float, float]

    @property
    def wavelength(self) -> np.ndarray:
        return self.grid.wavelength()

    @property
    def bin_edges(self) -> np.ndarray:
        """Edges of the PDF bins in ln(1 + z): the range, one bin of margin either side."""
        lo, hi = math.log1p(self.z_min) - self.bin_width, math.log1p(self.z_max) + self.bin_width
        n = int(math.ceil((hi - lo) / self.bin_width))
        return lo + self.bin_width * np.arange(n + 1)

    @property
    def bin_centres(self) -> np.ndarray:
        edges = self.bin_edges
        return 0.5 * (edges[1:] + edges[:-1])


SETUPS: dict[str, RedshiftSetup] = {
    "lamost": RedshiftSetup("lamost", LogLinearGrid(3.5682, 1e-4, 3950), 0.0, 0.5, 0.001, (3700.0, 9100.0)),
    "deimos": RedshiftSetup("deimos", LogLinearGrid(math.log10(4100.0), 1e-4, 4287), 0.1, 5.8, 0.002,
                            (4100.0, 11000.0)),
}


def setup_of(name: str | RedshiftSetup) -> RedshiftSetup:
    """The setup of a name (``lamost``, ``deimos``), or the setup itself.

    Examples
    --------
    >>> s = setup_of("lamost")
    >>> s.bin_edges.size - 1, round(float(s.wavelength[0]), 1)
    (408, 3700.0)
    """
    if isinstance(name, RedshiftSetup):
        return name
    try:
        return SETUPS[name]
    except KeyError:
        raise KeyError(f"unknown redshift setup {name!r}; known: {sorted(SETUPS)}") from None


def redshift_inputs(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, wavelength: np.ndarray,
                    setup: str | RedshiftSetup = "lamost") -> np.ndarray:
    """survey_ml's redshift-network input for a block of spectra: (n, 2, n_model) float32.

    Parameters
    ----------
    flux, ivar, mask : numpy.ndarray
        (n, n_pix) on the native grid ``wavelength``; good pixels have ivar > 0, mask == 0.
    wavelength : numpy.ndarray
        (n_pix,) native wavelengths (A).
    setup : str or RedshiftSetup

    Examples
    --------
    >>> s = setup_of("lamost")
    >>> f = np.ones((2, s.grid.n_pix)); f[1, 100] = 50.0
    >>> x = redshift_inputs(f, np.ones_like(f), np.zeros(f.shape, int), s.wavelength, s)
    >>> x.shape, round(float(x[0, 0, 5]), 3), round(float(x[1, 0, 100]), 2), float(x[0, 1].min())
    ((2, 2, 3950), 0.881, 4.61, 1.0)
    """
    return scaled_inputs(*on_setup_grid(flux, ivar, mask, wavelength, setup_of(setup)))


def scaled_inputs(model_flux: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """The network input from spectra already on the setup's grid (:func:`on_setup_grid`'s output)."""
    good = coverage > 0.5
    with warnings.catch_warnings():  # a row without good pixels has no median: it gets scale 1
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanmedian(np.where(good, np.abs(model_flux), np.nan), axis=1) if len(model_flux) else np.ones(0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    x0 = np.where(good, np.arcsinh(model_flux / scale[:, None]), 0.0)
    return np.ascontiguousarray(np.stack([x0, coverage], axis=1), dtype=np.float32)


def on_setup_grid(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, wavelength: np.ndarray,
                  setup: RedshiftSetup) -> tuple[np.ndarray, np.ndarray]:
    """Flux and good-pixel coverage on the setup's grid (:func:`to_model_grid`; on the setup's
    own grid - a LAMOST store - the values themselves, with no interpolation to do)."""
    grid = setup.wavelength
    wavelength = np.asarray(wavelength, dtype=float)
    if wavelength.size == grid.size and np.allclose(wavelength, grid, rtol=1e-9):
        flux = np.asarray(flux)
        good = (np.asarray(ivar) > 0) & (np.asarray(mask) == 0) & np.isfinite(flux)
        return np.where(good, flux, 0.0).astype(np.float32), good.astype(np.float32)
    return to_model_grid(flux, ivar, mask, wavelength, grid)


def published_redshift_inputs(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, wavelength: np.ndarray,
                              setup: str | RedshiftSetup = "lamost") -> np.ndarray:
    """The published network's input: (n, 2, n_pix) float32 of (scaled wavelength, min-max flux).

    Bad pixels are bridged linearly over the good ones (as for the metallicity CNN); the
    flux stays on the native grid, as published.
    """
    setup = setup_of(setup)
    model_flux, _ = to_model_grid(flux, ivar, mask, wavelength, np.asarray(wavelength, dtype=float))
    lo, hi = setup.instrument_wave
    ramp = ((np.asarray(wavelength, dtype=np.float32) - lo) / (hi - lo))[None, :]
    x = np.stack([np.broadcast_to(ramp, model_flux.shape), minmax_normalise(model_flux)], axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)
