"""A DEIMOS-like observation model: the setup of the published redshift CNN (SCIENCE.md section 2).

The thesis made ~200,000 synthetic spectra at 0.1 < z < 5.8, "clipped to the instrument range
and 8912 pixels", flux from the luminosity distance, Gaussian noise of sigma = 0.2 x std(flux).
Here a library spectrum (rest frame, R = 3600 sampling) is

1. redshifted and dimmed: ``f(lambda (1+z)) = L(lambda) / (4 pi d_L^2 (1+z))`` (Planck18),
   in 1e-17 erg s-1 cm-2 A-1;
2. integrated (flux-conserving) onto 8912 linear pixels covering 4100-11000 A
   (0.774 A per pixel, DEIMOS 600ZD-like); no extra line-spread function is applied, the
   library's own R = 3600 sampling stands for the instrument's;
3. given Gaussian noise of sigma = ``noise_fraction`` x std(noise-free flux) (0.2, as
   published), constant over the spectrum, with ``ivar = 1 / sigma^2``.

Choices the thesis leaves open, made here: the library's rest-frame grid must reach
4100 / 6.8 = 603 A (``LibraryConfig(wave_min=600)``); no intergalactic (Lyman-alpha forest)
absorption is applied, as the published set did not state one, so the far-UV continuum
is seen unabsorbed at high redshift; all spectra share the one grid, so the published
wavelength channel is a constant ramp (kept, so the published network sees what it saw).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .observe import _luminosity_distance_cm, _rebin

__all__ = ["DeimosInstrument", "observe_deimos"]


@dataclass(frozen=True)
class DeimosInstrument:
    """A DEIMOS-like linear-grid spectrograph.

    Attributes
    ----------
    wave_min, wave_max : float
        Centres of the first and last pixel (A, vacuum).
    n_pix : int
        Pixels per spectrum (8912, as published).
    noise_fraction : float
        Noise sigma as a fraction of the noise-free flux's standard deviation.
    """

    wave_min: float = 4100.0
    wave_max: float = 11000.0
    n_pix: int = 8912
    noise_fraction: float = 0.2

    @property
    def wavelength(self) -> np.ndarray:
        """Pixel centres (A)."""
        return np.linspace(self.wave_min, self.wave_max, self.n_pix)

    @property
    def pixel_edges(self) -> np.ndarray:
        step = (self.wave_max - self.wave_min) / (self.n_pix - 1)
        return self.wave_min + step * (np.arange(self.n_pix + 1) - 0.5)


def observe_deimos(rest_wave: np.ndarray, rest_luminosity: np.ndarray, z: float, rng: np.random.Generator,
                   instrument: DeimosInstrument = DeimosInstrument()) -> tuple[np.ndarray, np.ndarray]:
    """Observe one rest-frame spectrum with the DEIMOS-like setup.

    Parameters
    ----------
    rest_wave : numpy.ndarray
        Rest-frame vacuum wavelengths (A); must cover the instrument range / (1 + z).
    rest_luminosity : numpy.ndarray
        L_lambda (erg s-1 A-1).
    z : float
        Redshift (> 0).
    rng : numpy.random.Generator
    instrument : DeimosInstrument

    Returns
    -------
    flux, ivar : numpy.ndarray
        (n_pix,) float32 noisy flux (1e-17 erg s-1 cm-2 A-1) and its inverse variance.

    Examples
    --------
    >>> wave = np.linspace(500.0, 11000.0, 20000)
    >>> flux, ivar = observe_deimos(wave, 1e40 * np.ones_like(wave) + 1e41 * (abs(wave - 3000) < 5), 1.0,
    ...                             np.random.default_rng(0))
    >>> flux.shape, float(ivar[0]) == float(ivar[-1])
    ((8912,), True)
    """
    edges = instrument.pixel_edges
    lo, hi = edges[0] / (1.0 + z), edges[-1] / (1.0 + z)
    if rest_wave[0] > lo or rest_wave[-1] < hi:
        raise ValueError(f"rest-frame spectrum {rest_wave[0]:.0f}-{rest_wave[-1]:.0f} A does not cover "
                         f"{lo:.0f}-{hi:.0f} A needed at z = {z}")
    d_l = _luminosity_distance_cm(z)
    flux = _rebin(rest_wave * (1.0 + z), rest_luminosity / (4.0 * np.pi * d_l**2 * (1.0 + z)) * 1e17, edges)
    sigma = instrument.noise_fraction * float(np.std(flux))
    noisy = (flux + rng.normal(0.0, sigma, flux.size)).astype(np.float32)
    return noisy, np.full(flux.size, 1.0 / sigma**2, dtype=np.float32)
