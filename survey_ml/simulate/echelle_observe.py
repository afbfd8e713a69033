"""How a high-resolution spectrograph (HARPS-N class) sees a synthetic stellar spectrum: training inputs.

:func:`observe` takes rest-frame synthetic spectra (continuum-normalised, air wavelengths,
finely sampled) and returns what the stellar task's ``prepare`` makes of a real exposure: the
model input ``(n, 2, n_orders, n_pix)`` - continuum-normalised flux and a good-pixel mask on
the model's order grid (:func:`survey_ml.core.echelle.order_grid`). On the way it applies,
per spectrum and drawn from :class:`EchelleObservation`:

* rotation (Gray's profile, linear limb darkening) and the instrumental profile (Gaussian of
  FWHM lambda / R), convolved on a log-lambda grid;
* the residual radial velocity the task's cross-correlation leaves (a Gaussian of
  ``rv_error_kms``);
* a linear slant and a scale across each order (flux calibration / deblazing residuals, as
  the published training did), then photon noise to a drawn S/N per pixel;
* cosmic rays (single hot pixels), bad columns (dead pixels, masked) and, with some
  probability, the gap between HARPS's two CCDs (5304-5337 A, masked);
* the same continuum normalisation as the task (:func:`survey_ml.core.echelle.continuum_normalise`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.echelle import continuum_normalise, order_grid
from ..io.echelle import SPEED_OF_LIGHT_KMS

__all__ = ["EchelleObservation", "observe", "render", "degrade", "broaden_batch", "HARPS_CCD_GAP"]

#: Air wavelengths (A) HARPS's two-CCD mosaic does not record (as in the Gl273 fixture).
HARPS_CCD_GAP = (5304.6, 5337.5)


@dataclass(frozen=True)
class EchelleObservation:
    """The observing conditions :func:`observe` draws from.

    Attributes
    ----------
    resolution : float
        Resolving power lambda / FWHM (HARPS-N: 115,000).
    window : (float, float)
        Model grid range, air A.
    n_orders, n_pix : int
        Model grid layout.
    snr : (float, float)
        S/N per pixel drawn log-uniformly in this range (at continuum level).
    slant : float
        Largest fractional flux change across an order (uniform in +-slant).
    rv_error_kms : float
        Standard deviation of the radial-velocity residual after the task's correction.
    cosmic_rays : float
        Mean number of cosmic-ray hits per order (unmasked: the network must ignore them).
    bad_columns : float
        Mean number of masked bad columns per order.
    gap_probability : float
        Share of spectra with the HARPS CCD gap masked.
    limb_darkening : float
        Linear limb-darkening coefficient of the rotation profile.
    """

    resolution: float = 115_000.0
    window: tuple[float, float] = (5050.0, 5350.0)
    n_orders: int = 8
    n_pix: int = 4096
    snr: tuple[float, float] = (10.0, 150.0)
    slant: float = 0.1
    rv_error_kms: float = 0.3
    cosmic_rays: float = 1.0
    bad_columns: float = 0.5
    gap_probability: float = 0.3
    limb_darkening: float = 0.6

    def grid(self) -> np.ndarray:
        """The model grid (air A), ``(n_orders, n_pix)``."""
        return order_grid(*self.window, self.n_orders, self.n_pix)


def _rotation_kernel(velocity: np.ndarray, vsini: float, epsilon: float) -> np.ndarray:
    """Gray's rotational broadening profile on ``velocity`` (km/s); a delta for vsini ~ 0."""
    if vsini < 1e-3:
        kernel = np.zeros_like(velocity)
        kernel[np.argmin(np.abs(velocity))] = 1.0
        return kernel
    x = velocity / vsini
    inside = np.abs(x) < 1
    root = np.sqrt(np.clip(1 - x ** 2, 0, None))
    kernel = np.where(inside, 2 * (1 - epsilon) * root + 0.5 * np.pi * epsilon * (1 - x ** 2), 0.0)
    if kernel.sum() <= 0:
        kernel[np.argmin(np.abs(velocity))] = 1.0
    return kernel / kernel.sum()


def broaden_batch(log_wave: np.ndarray, flux: np.ndarray, vsini: np.ndarray, resolution: float,
                  epsilon: float = 0.6) -> np.ndarray:
    """Rotation + Gaussian instrumental profile of spectra on one log-lambda grid, by FFT.

    Parameters
    ----------
    log_wave : numpy.ndarray
        ``ln(lambda)``, evenly spaced (``(n_pix,)``).
    flux : numpy.ndarray
        ``(n, n_pix)`` normalised flux (continuum 1).
    vsini : numpy.ndarray
        ``(n,)`` projected rotation, km/s.

    Examples
    --------
    >>> lw = np.log(np.linspace(5000, 5010, 20001))
    >>> lw = np.linspace(lw[0], lw[-1], lw.size)
    >>> flux = 1 - 0.5 * np.exp(-0.5 * ((np.exp(lw) - 5005) / 0.01) ** 2)
    >>> out = broaden_batch(lw, np.stack([flux, flux]), np.array([0.0, 20.0]), 115000.0)
    >>> [round(float(np.sum(1 - row) / np.sum(1 - flux)), 3) for row in out]  # equivalent width kept
    [1.0, 1.0]
    >>> bool(out[1].min() > out[0].min())    # the rotating star's line is shallower
    True
    """
    flux = np.atleast_2d(np.asarray(flux, np.float64))
    step_kms = (log_wave[1] - log_wave[0]) * SPEED_OF_LIGHT_KMS
    sigma_inst = SPEED_OF_LIGHT_KMS / resolution / 2.3548
    half = int(np.ceil((float(np.max(vsini, initial=0.0)) + 5 * sigma_inst) / step_kms)) + 1
    velocity = np.arange(-half, half + 1) * step_kms
    gauss = np.exp(-0.5 * (velocity / sigma_inst) ** 2)
    gauss /= gauss.sum()
    n_fft = int(2 ** np.ceil(np.log2(flux.shape[1] + 2 * half + 1)))
    depth = 1.0 - flux  # convolve the line depth: the continuum stays 1 at the edges
    spectrum = np.fft.rfft(depth, n_fft, axis=1)
    kernels = np.stack([np.convolve(_rotation_kernel(velocity, float(v), epsilon), gauss, mode="same")
                        for v in np.asarray(vsini, np.float64)])
    kernel_ft = np.fft.rfft(np.roll(np.pad(kernels, ((0, 0), (0, n_fft - kernels.shape[1]))), -half, axis=1),
                            axis=1)
    out = np.fft.irfft(spectrum * kernel_ft, n_fft, axis=1)[:, :flux.shape[1]]
    return 1.0 - out


def render(wave: np.ndarray, flux: np.ndarray, vsini: np.ndarray, rng: np.random.Generator,
           conditions: EchelleObservation = EchelleObservation()) -> np.ndarray:
    """Noise-free spectra on the model grid ``(n, n_orders, n_pix)``: broadened, with the RV residual.

    ``wave`` ``(n_hr,)`` air A (increasing, covering the window with margin), ``flux``
    ``(n, n_hr)`` continuum-normalised rest-frame spectra, ``vsini`` ``(n,)`` km/s.
    """
    c = conditions
    log_wave = np.linspace(np.log(wave[0]), np.log(wave[-1]), wave.size)
    even = np.stack([np.interp(np.exp(log_wave), wave, f) for f in np.atleast_2d(flux)])
    broadened = broaden_batch(log_wave, even, np.asarray(vsini, np.float64), c.resolution, c.limb_darkening)
    grid = np.log(c.grid())
    out = np.empty((len(broadened), c.n_orders, c.n_pix), np.float32)
    for k, spectrum in enumerate(broadened):
        shift = np.log1p(rng.normal(0.0, c.rv_error_kms) / SPEED_OF_LIGHT_KMS)
        out[k] = np.interp(grid + shift, log_wave, spectrum)
    return out


def degrade(clean: np.ndarray, rng: np.random.Generator, conditions: EchelleObservation = EchelleObservation(),
            snr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs ``(n, 2, n_orders, n_pix)`` from :func:`render`'s spectra, and the S/N drawn.

    Slant and scale per order, photon noise to the S/N, cosmic rays, bad columns, the CCD gap,
    then the task's continuum normalisation; fresh draws on every call (the published S/N
    augmentation per batch).
    """
    c = conditions
    n = clean.shape[0]
    if snr is None:
        snr = np.exp(rng.uniform(np.log(c.snr[0]), np.log(c.snr[1]), n))
    gap = (c.grid() > HARPS_CCD_GAP[0]) & (c.grid() < HARPS_CCD_GAP[1])
    position = np.linspace(-1.0, 1.0, c.n_pix)
    slope = rng.uniform(-c.slant, c.slant, (n, c.n_orders, 1))
    scale = rng.uniform(0.5, 2.0, (n, c.n_orders, 1))
    observed = clean.astype(np.float64) * scale * (1 + slope * position)
    sigma = np.sqrt(np.clip(observed, 1e-3, None) * scale) / np.asarray(snr, np.float64)[:, None, None]
    observed += rng.normal(size=observed.shape) * sigma
    ivar = 1.0 / sigma ** 2
    n_rays = rng.poisson(c.cosmic_rays, (n, c.n_orders))
    spectrum, order = np.repeat(np.arange(n), n_rays.sum(1)), np.concatenate(
        [np.repeat(np.arange(c.n_orders), k) for k in n_rays]) if n_rays.sum() else (np.zeros(0, int), np.zeros(0, int))
    pixel = rng.integers(c.n_pix, size=spectrum.size)
    observed[spectrum, order, pixel] += rng.uniform(0.5, 5.0, spectrum.size) * scale[spectrum, order, 0]
    n_bad = rng.poisson(c.bad_columns, (n, c.n_orders))
    spectrum, order = np.repeat(np.arange(n), n_bad.sum(1)), np.concatenate(
        [np.repeat(np.arange(c.n_orders), k) for k in n_bad]) if n_bad.sum() else (np.zeros(0, int), np.zeros(0, int))
    ivar[spectrum, order, rng.integers(c.n_pix, size=spectrum.size)] = 0.0
    ivar[(rng.random(n) < c.gap_probability)[:, None, None] & gap[None]] = 0.0
    normalised, norm_ivar = continuum_normalise(np.where(ivar > 0, observed, 0.0).reshape(-1, c.n_pix),
                                                ivar.reshape(-1, c.n_pix))
    x = np.zeros((n, 2, c.n_orders, c.n_pix), np.float32)
    good = norm_ivar.reshape(n, c.n_orders, c.n_pix) > 0
    x[:, 0] = np.where(good, normalised.reshape(n, c.n_orders, c.n_pix), 0.0)
    x[:, 1] = good
    return x, snr


def observe(wave: np.ndarray, flux: np.ndarray, vsini: np.ndarray, rng: np.random.Generator,
            conditions: EchelleObservation = EchelleObservation(),
            snr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs ``(n, 2, n_orders, n_pix)`` and the S/N drawn, from rest-frame synthetic spectra:
    :func:`degrade` of :func:`render`.

    Examples
    --------
    >>> wave = np.linspace(5040, 5360, 32001)
    >>> flux = np.ones((2, wave.size)); flux[:, 16000] = 0.2
    >>> x, snr = observe(wave, flux, np.array([2.0, 10.0]), np.random.default_rng(0),
    ...                  EchelleObservation(n_pix=512), snr=np.array([50.0, 50.0]))
    >>> x.shape, x.dtype.name, float(x[:, 1].mean()) > 0.9
    ((2, 2, 8, 512), 'float32', True)
    """
    return degrade(render(wave, flux, vsini, rng, conditions), rng, conditions, snr)
