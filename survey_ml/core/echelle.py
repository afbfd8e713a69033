"""Per-spectrum numpy functions for high-resolution (echelle) spectra: segments and resampling.

No Dask, no files: :func:`segments` cuts a spectrum's orders (or a merged 1-D spectrum) into
pieces of at most ``width`` pixels inside a wavelength window - the layout of the echelle
store - and :func:`resample_segments` brings any such pieces onto a fixed model grid
(flux-conserving linear interpolation of the deblazed flux, inverse variance carried, gaps
and overlaps of orders handled by inverse-variance weighting).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["segments", "resample_segments", "order_grid", "continuum_normalise", "log_lambda_grid",
           "cross_correlation_rv", "input_snr"]


def segments(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, width: int,
             window: Sequence[float] | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pieces of at most ``width`` pixels of each order that hold pixels inside ``window``.

    Parameters
    ----------
    wavelength, flux, ivar : numpy.ndarray
        ``(n_orders, n_pix)`` (a 1-D spectrum is one order).
    width : int
        Pixels per piece; longer orders are cut, pieces outside the window dropped.
    window : (float, float), optional
        Wavelength range in Angstrom to keep (default: everything).

    Returns
    -------
    list of (wavelength, flux, ivar)
        In order of wavelength, each trimmed to the window.

    Examples
    --------
    >>> wave = np.linspace(5000.0, 5100.0, 10001)[None]
    >>> pieces = segments(wave, np.ones_like(wave), np.ones_like(wave), 4096, (5020.0, 5080.0))
    >>> [p[0].size for p in pieces], round(float(pieces[0][0][0]), 2)
    ([4096, 1905], 5020.0)
    """
    out = []
    lo, hi = (-np.inf, np.inf) if window is None else (float(window[0]), float(window[1]))
    for w, f, i in zip(np.atleast_2d(wavelength), np.atleast_2d(flux), np.atleast_2d(ivar)):
        inside = np.isfinite(w) & (w >= lo) & (w <= hi) & (w > 0)
        if not inside.any():
            continue
        idx = np.flatnonzero(inside)
        a, b = idx[0], idx[-1] + 1
        for start in range(a, b, width):
            stop = min(start + width, b)
            out.append((w[start:stop], f[start:stop], i[start:stop]))
    out.sort(key=lambda piece: float(piece[0][0]))
    return out


def order_grid(start: float, stop: float, n_orders: int, n_pix: int) -> np.ndarray:
    """A model input grid: ``n_orders`` log-linear pieces of ``n_pix`` pixels covering ``[start, stop]``.

    Adjacent pieces share no pixel; the step in ln(lambda) is the same everywhere.

    Examples
    --------
    >>> grid = order_grid(5050.0, 5350.0, 8, 4096)
    >>> grid.shape, round(float(grid[0, 0]), 3), round(float(grid[-1, -1]), 3)
    ((8, 4096), 5050.0, 5350.0)
    """
    return np.exp(np.linspace(np.log(start), np.log(stop), n_orders * n_pix)).reshape(n_orders, n_pix)


def resample_segments(pieces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flux and inverse variance of ``pieces`` on ``grid`` (any shape, increasing when raveled).

    Overlapping orders are combined. Each piece is interpolated linearly onto the grid pixels inside its own good range (a bad
    pixel - ivar 0 - poisons the grid pixels interpolated from it); where pieces overlap they
    are averaged with inverse-variance weights. Grid pixels that no piece covers get flux 0 and
    ivar 0. The variance of an interpolated pixel is the interpolated variance of its two
    neighbours (the usual approximation; neighbouring output pixels are then correlated).

    Examples
    --------
    >>> wave = np.linspace(5000, 5010, 101)
    >>> pieces = [(wave[:60], np.full(60, 2.0), np.full(60, 4.0)), (wave[40:], np.full(61, 2.0), np.full(61, 4.0))]
    >>> flux, ivar = resample_segments(pieces, np.array([5001.0, 5005.0, 5020.0]))
    >>> flux.tolist(), ivar.tolist()   # the overlap (5005 A) counts twice; 5020 A is not covered
    ([2.0, 2.0, 0.0], [4.0, 8.0, 0.0])
    """
    shape = np.shape(grid)
    target = np.asarray(grid, np.float64).ravel()
    weight_sum = np.zeros(target.size)
    weighted = np.zeros(target.size)
    for wave, flux, ivar in pieces:
        wave = np.asarray(wave, np.float64)
        ok = np.isfinite(wave) & (wave > 0)
        if np.count_nonzero(ok) < 2:
            continue
        wave, flux, ivar = wave[ok], np.asarray(flux, np.float64)[ok], np.asarray(ivar, np.float64)[ok]
        if np.any(np.diff(wave) <= 0):
            order = np.argsort(wave)
            wave, flux, ivar = wave[order], flux[order], ivar[order]
        lo = int(np.searchsorted(target, wave[0], side="left"))
        hi = int(np.searchsorted(target, wave[-1], side="right"))
        if hi <= lo:
            continue
        x = target[lo:hi]
        good = (ivar > 0) & np.isfinite(flux)
        variance = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
        j = np.clip(np.searchsorted(wave, x, side="right") - 1, 0, wave.size - 2)
        t = (x - wave[j]) / (wave[j + 1] - wave[j])
        usable = good[j] & good[j + 1]
        value = (1 - t) * flux[j] + t * flux[j + 1]
        var = (1 - t) * variance[j] + t * variance[j + 1]
        w = np.where(usable & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
        weighted[lo:hi] += w * np.where(usable, value, 0.0)
        weight_sum[lo:hi] += w
    flux_out = np.where(weight_sum > 0, weighted / np.where(weight_sum > 0, weight_sum, 1.0), 0.0)
    return flux_out.reshape(shape).astype(np.float32), weight_sum.reshape(shape).astype(np.float32)


def continuum_normalise(flux: np.ndarray, ivar: np.ndarray, degree: int = 2, n_iter: int = 5,
                        upper: float = 3.0, lower: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Divide each row (an order) by a low-order polynomial fitted to its upper envelope.

    Iterative asymmetric sigma clipping (absorption lines lie below the continuum: pixels
    more than ``lower`` sigma below or ``upper`` above the fit are dropped; sigma from the mean
    absolute residual of the kept pixels), all rows at once
    (batched normal equations); rows with fewer than ``4 (degree + 1)`` good pixels are
    returned with ivar 0.

    Examples
    --------
    >>> x = np.linspace(0, 1, 4096)
    >>> flux = (100 + 20 * x)[None] * np.where(np.abs(x - 0.5) < 0.01, 0.5, 1.0)
    >>> norm, _ = continuum_normalise(flux, np.ones_like(flux))
    >>> round(float(np.median(norm)), 3), round(float(norm[0, 2048]), 2)
    (1.0, 0.5)
    """
    flux = np.atleast_2d(np.asarray(flux, np.float64))
    ivar = np.atleast_2d(np.asarray(ivar, np.float64))
    n_rows, n_pix = flux.shape
    x = np.linspace(-1.0, 1.0, n_pix)
    basis = np.vander(x, degree + 1, increasing=True)                     # (P, D)
    usable = (ivar > 0) & np.isfinite(flux)
    values = np.where(usable, flux, 0.0)
    keep = usable.copy()
    enough = keep.sum(1) >= 4 * (degree + 1)

    def fit(mask: np.ndarray) -> np.ndarray:
        w = mask.astype(np.float64)
        lhs = np.stack([w @ (basis[:, d:d + 1] * basis) for d in range(degree + 1)], axis=1)
        lhs += 1e-12 * np.eye(degree + 1)
        rhs = (w * values) @ basis
        return np.linalg.solve(lhs, rhs[..., None])[..., 0] @ basis.T       # (R, P)

    for _ in range(n_iter):
        model = fit(keep)
        full = values - model
        # mean |residual| of the kept pixels (outliers are already clipped), as a Gaussian sigma
        scatter = 1.2533 * (np.abs(full) * keep).sum(1, keepdims=True) / np.maximum(keep.sum(1, keepdims=True), 1)
        new = usable & (full > -lower * scatter) & (full < upper * scatter)
        grow = new.sum(1) >= 4 * (degree + 1)
        new = np.where(grow[:, None], new, keep)
        if np.array_equal(new, keep):
            break
        keep = new
    model = fit(keep)
    positive = (model > 0) & enough[:, None]
    safe = np.where(positive, model, 1.0)
    out_flux = np.where(positive, values / safe, 0.0)
    out_ivar = np.where(positive & usable, ivar * safe ** 2, 0.0)
    return out_flux.astype(np.float32), out_ivar.astype(np.float32)

def log_lambda_grid(start: float, stop: float, velocity_step_kms: float) -> np.ndarray:
    """Wavelengths (A) evenly spaced in ln(lambda) by ``velocity_step_kms``.

    >>> grid = log_lambda_grid(5000.0, 5001.0, 1.0)
    >>> grid.size, round(float(np.log(grid[1] / grid[0]) * 299792.458), 6)
    (60, 1.0)
    """
    c_kms = 299_792.458
    n = int(np.floor(np.log(stop / start) / (velocity_step_kms / c_kms))) + 1
    return start * np.exp(np.arange(n) * velocity_step_kms / c_kms)


def cross_correlation_rv(pieces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], template_wave: np.ndarray,
                         template_flux: np.ndarray, v_max_kms: float = 500.0,
                         velocity_step_kms: float = 0.5) -> tuple[float, float]:
    """Radial velocity of a spectrum from its cross-correlation with a template, and the CCF peak height.

    The spectrum (segments of barycentric air wavelength, flux, ivar; each continuum-
    normalised here) and the template (rest-frame air wavelength, normalised flux) are
    brought to one ln(lambda) grid of ``velocity_step_kms``; the inverse-variance-weighted
    line depths ``1 - flux`` are cross-correlated by FFT over +-``v_max_kms`` and the peak is
    refined by a parabola through its three highest points. The peak height (a normalised
    correlation, 1 for a perfect match) says how well the template matched.

    Examples
    --------
    >>> wave = np.linspace(5100, 5200, 20001)
    >>> lines = 1 - sum(0.5 * np.exp(-0.5 * ((wave - c) / 0.05) ** 2) for c in np.linspace(5110, 5190, 40))
    >>> shifted = np.interp(wave, wave * (1 + 23.4 / 299792.458), lines)
    >>> rv, peak = cross_correlation_rv([(wave, shifted, np.ones_like(wave))], wave, lines)
    >>> round(rv, 1), peak > 0.9
    (23.4, True)
    """
    pieces = [p for p in pieces if np.count_nonzero(p[2] > 0) > 50]
    if not pieces:
        return float("nan"), float("nan")
    lo = max(min(float(p[0][0]) for p in pieces), float(template_wave[0]))
    hi = min(max(float(p[0][-1]) for p in pieces), float(template_wave[-1]))
    if hi <= lo:
        return float("nan"), float("nan")
    grid = log_lambda_grid(lo, hi, velocity_step_kms)
    normalised = []
    for wave, flux, ivar in pieces:
        f, v = continuum_normalise(flux, ivar)
        normalised.append((wave, f[0], v[0]))
    flux, ivar = resample_segments(normalised, grid)
    weight = (ivar > 0).astype(np.float64)
    depth = np.where(weight > 0, 1.0 - flux, 0.0)
    template = 1.0 - np.interp(grid, template_wave, template_flux)
    depth -= np.sum(depth * weight) / max(weight.sum(), 1.0) * weight
    template -= template.mean()
    n_fft = int(2 ** np.ceil(np.log2(2 * grid.size)))
    ccf = np.fft.irfft(np.fft.rfft(depth, n_fft) * np.conj(np.fft.rfft(template * weight, n_fft)), n_fft)
    norm = np.sqrt(np.sum(depth ** 2) * np.sum((template * weight) ** 2))
    lags = np.fft.fftfreq(n_fft, 1.0 / n_fft).astype(int)
    keep = np.abs(lags) * velocity_step_kms <= v_max_kms
    lags, values = lags[keep], ccf[keep] / (norm if norm > 0 else 1.0)
    order = np.argsort(lags)
    lags, values = lags[order], values[order]
    k = int(np.argmax(values))
    offset = 0.0
    if 0 < k < values.size - 1:
        a, b, c = values[k - 1], values[k], values[k + 1]
        denominator = a - 2 * b + c
        offset = 0.5 * (a - c) / denominator if denominator != 0 else 0.0
    return float((lags[k] + offset) * velocity_step_kms), float(values[k])


def input_snr(flux: np.ndarray, good: np.ndarray) -> np.ndarray:
    """S/N per pixel of continuum-normalised spectra, by DER_SNR (Stoehr et al. 2008) over all their pixels.

    ``flux`` and ``good`` are ``(n, ..., n_pix)`` (e.g. the stellar task's ``(n, n_orders,
    n_pix)`` model inputs and their good-pixel masks). The noise is ``1.482602 / sqrt(6)``
    times the median of ``|2 f_i - f_{i-2} - f_{i+2}|`` over pixels whose neighbours are good,
    the signal the median good flux; NaN for a spectrum with fewer than 100 such pixels. It is
    measured the same way on training inputs and on a survey's spectra, so error models may
    depend on it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> flux = 1 + rng.normal(0, 1 / np.array([10.0, 50.0])[:, None, None], (2, 4, 2000))
    >>> [round(float(v)) for v in input_snr(flux, np.ones_like(flux, bool))]
    [10, 50]
    """
    flux = np.asarray(flux, np.float64)
    good = np.asarray(good, bool)
    second = np.abs(2 * flux[..., 2:-2] - flux[..., :-4] - flux[..., 4:])
    usable = good[..., 2:-2] & good[..., :-4] & good[..., 4:]
    n = len(flux)
    second = np.where(usable, second, np.nan).reshape(n, -1)
    signal = np.where(good, flux, np.nan).reshape(n, -1)
    enough = np.count_nonzero(usable.reshape(n, -1), axis=1) >= 100
    out = np.full(n, np.nan)
    if enough.any():
        noise = 1.482602 / np.sqrt(6.0) * np.nanmedian(second[enough], axis=1)
        out[enough] = np.nanmedian(signal[enough], axis=1) / noise
    return out
