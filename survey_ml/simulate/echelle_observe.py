"""How a high-resolution spectrograph (HARPS-N class) sees a synthetic stellar spectrum: training inputs.

:func:`observe` takes rest-frame synthetic spectra (continuum-normalised, air wavelengths,
finely sampled) and returns what the stellar task's ``prepare`` makes of a real exposure: the
model input ``(n, 2, n_orders, n_pix)`` - continuum-normalised flux and a good-pixel mask on
the model's order grid (:func:`survey_ml.core.echelle.order_grid`). On the way it applies,
per spectrum and drawn from :class:`EchelleObservation`:

* rotation (Gray's profile, linear limb darkening), optionally macroturbulence (Gaussian, Valenti &
  Fischer 2005 with scatter) with a drawn limb darkening and resolving power, and the
  instrumental profile (Gaussian of FWHM lambda / R), convolved on a log-lambda grid;
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

__all__ = ["EchelleObservation", "observe", "render", "degrade", "broaden_batch", "nuisance", "valenti_fischer_vmacro",
           "HARPS_CCD_GAP"]

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
    vmacro_scatter : float or None
        None: no macroturbulence, nominal resolution and limb darkening for every spectrum.
        A number: per spectrum, Gaussian macroturbulence from :func:`valenti_fischer_vmacro`
        with this scatter (km/s), limb darkening uniform in ``limb_darkening_range`` and the
        resolution jittered by ``resolution_jitter`` (a fraction) - nuisances a real
        spectrograph's stars have (:func:`nuisance`).
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
    vmacro_scatter: float | None = None
    limb_darkening_range: tuple[float, float] = (0.3, 0.9)
    resolution_jitter: float = 0.08

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


def broaden_batch(log_wave: np.ndarray, flux: np.ndarray, vsini: np.ndarray, resolution: float | np.ndarray,
                  epsilon: float | np.ndarray = 0.6, vmacro: np.ndarray | None = None) -> np.ndarray:
    """Rotation, macroturbulence and a Gaussian instrumental profile of spectra on one log-lambda grid, by FFT.

    Parameters
    ----------
    log_wave : numpy.ndarray
        ``ln(lambda)``, evenly spaced (``(n_pix,)``).
    flux : numpy.ndarray
        ``(n, n_pix)`` normalised flux (continuum 1).
    vsini : numpy.ndarray
        ``(n,)`` projected rotation, km/s.
    resolution, epsilon : float or numpy.ndarray
        Resolving power and linear limb darkening, one for all or ``(n,)``.
    vmacro : numpy.ndarray, optional
        ``(n,)`` macroturbulence zeta, km/s, as an isotropic Gaussian ``exp(-(v / zeta)^2)``.

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
    >>> macro = broaden_batch(lw, flux[None], np.array([0.0]), 115000.0, vmacro=np.array([4.0]))
    >>> bool(out[0].min() < macro[0].min())
    True
    """
    flux = np.atleast_2d(np.asarray(flux, np.float64))
    n = len(flux)
    vsini = np.broadcast_to(np.asarray(vsini, np.float64), (n,))
    resolution = np.broadcast_to(np.asarray(resolution, np.float64), (n,))
    epsilon = np.broadcast_to(np.asarray(epsilon, np.float64), (n,))
    vmacro = np.zeros(n) if vmacro is None else np.broadcast_to(np.asarray(vmacro, np.float64), (n,))
    step_kms = (log_wave[1] - log_wave[0]) * SPEED_OF_LIGHT_KMS
    sigma_inst = SPEED_OF_LIGHT_KMS / resolution / 2.3548
    reach = float(np.max(vsini, initial=0.0)) + 5 * float(np.max(sigma_inst)) + 3 * float(np.max(vmacro, initial=0.0))
    half = int(np.ceil(reach / step_kms)) + 1
    velocity = np.arange(-half, half + 1) * step_kms
    n_fft = int(2 ** np.ceil(np.log2(flux.shape[1] + 2 * half + 1)))
    depth = 1.0 - flux  # convolve the line depth: the continuum stays 1 at the edges
    spectrum = np.fft.rfft(depth, n_fft, axis=1)
    kernels = np.empty((n, velocity.size))
    for k in range(n):
        kernel = np.exp(-0.5 * (velocity / sigma_inst[k]) ** 2)
        if vmacro[k] > 0.05 * step_kms:
            macro = np.exp(-(velocity / vmacro[k]) ** 2)
            kernel = np.convolve(kernel, macro / macro.sum(), mode="same")
        kernels[k] = np.convolve(_rotation_kernel(velocity, float(vsini[k]), float(epsilon[k])), kernel / kernel.sum(),
                                 mode="same")
    kernels /= kernels.sum(axis=1, keepdims=True)
    kernel_ft = np.fft.rfft(np.roll(np.pad(kernels, ((0, 0), (0, n_fft - kernels.shape[1]))), -half, axis=1),
                            axis=1)
    out = np.fft.irfft(spectrum * kernel_ft, n_fft, axis=1)[:, :flux.shape[1]]
    return 1.0 - out


def valenti_fischer_vmacro(teff: np.ndarray, logg: np.ndarray) -> np.ndarray:
    """Macroturbulence (km/s): Valenti & Fischer (2005) ``3.98 + (Teff - 5770) / 650`` for log g >= 3.5,
    5 km/s for giants; floored at 0.5.

    >>> valenti_fischer_vmacro(np.array([5770.0, 4500.0]), np.array([4.4, 2.5])).round(2).tolist()
    [3.98, 5.0]
    """
    teff, logg = np.asarray(teff, np.float64), np.asarray(logg, np.float64)
    return np.maximum(np.where(logg >= 3.5, 3.98 + (teff - 5770.0) / 650.0, 5.0), 0.5)


def nuisance(labels: np.ndarray, rng: np.random.Generator,
             conditions: EchelleObservation) -> dict[str, np.ndarray]:
    """Per-spectrum broadening the labels do not fix: macroturbulence, limb darkening, resolving power.

    ``labels`` ``(n, >=2)`` start with Teff and log g. With ``conditions.vmacro_scatter`` None
    (the default) every spectrum gets the nominal resolution and limb darkening and no
    macroturbulence; otherwise zeta is :func:`valenti_fischer_vmacro` plus a Gaussian of that
    scatter (floored at 0), epsilon is uniform in ``limb_darkening_range`` and R uniform in
    ``resolution * (1 +- resolution_jitter)``.
    """
    c = conditions
    n = len(labels)
    if c.vmacro_scatter is None:
        return {"vmacro": np.zeros(n), "epsilon": np.full(n, c.limb_darkening), "resolution": np.full(n, c.resolution)}
    vmacro = np.maximum(valenti_fischer_vmacro(labels[:, 0], labels[:, 1]) + rng.normal(0.0, c.vmacro_scatter, n), 0.0)
    return {"vmacro": vmacro, "epsilon": rng.uniform(*c.limb_darkening_range, n),
            "resolution": c.resolution * (1.0 + rng.uniform(-c.resolution_jitter, c.resolution_jitter, n))}


def render(wave: np.ndarray, flux: np.ndarray, vsini: np.ndarray, rng: np.random.Generator,
           conditions: EchelleObservation = EchelleObservation(),
           broadening: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Noise-free spectra on the model grid ``(n, n_orders, n_pix)``: broadened, with the RV residual.

    ``wave`` ``(n_hr,)`` air A (increasing, covering the window with margin), ``flux``
    ``(n, n_hr)`` continuum-normalised rest-frame spectra, ``vsini`` ``(n,)`` km/s;
    ``broadening`` per-spectrum ``vmacro``, ``epsilon``, ``resolution`` (:func:`nuisance`;
    default the nominal resolution and limb darkening, no macroturbulence).
    """
    c = conditions
    log_wave = np.linspace(np.log(wave[0]), np.log(wave[-1]), wave.size)
    even = np.stack([np.interp(np.exp(log_wave), wave, f) for f in np.atleast_2d(flux)])
    b = broadening or {}
    broadened = broaden_batch(log_wave, even, np.asarray(vsini, np.float64), b.get("resolution", c.resolution),
                              b.get("epsilon", c.limb_darkening), b.get("vmacro"))
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
