"""Chi-square fitting of a model-spectrum grid: the classical anchor beside the networks.

A spectrum's labels are the point where a model ``labels -> spectrum`` (a synthetic grid
interpolated, broadened and normalised like the data) best matches it in chi-square. The fit
here is batched over spectra: a template bank gives each spectrum a start (one matrix product
for all of them), pixels more than ``clip`` sigma off the best template are masked (cosmic rays
and bad columns), then Levenberg-Marquardt with a forward-difference Jacobian refines every
spectrum at once. The covariance is ``(J^T W J)^-1`` at the solution, scaled by the reduced
chi-square when that exceeds 1. A model may return NaN off its domain (a grid's holes): such
a trial step is refused and such a Jacobian column counts as flat.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["GridFit", "bank_start", "fit_spectra"]


@dataclass
class GridFit:
    """Best-fitting labels ``(n, k)``, their covariance ``(n, k, k)``, reduced chi-square and iterations."""

    labels: np.ndarray
    covariance: np.ndarray
    chi2_reduced: np.ndarray
    iterations: int


def bank_start(flux: np.ndarray, ivar: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the best template of ``bank`` ``(m, n_pix)`` for each spectrum ``(n, n_pix)``, and its chi-square.

    >>> bank = np.array([[1.0, 0.5, 1.0], [1.0, 1.0, 0.5]])
    >>> best, chi2 = bank_start(np.array([[1.0, 0.98, 0.55]]), np.ones((1, 3)) * 100, bank)
    >>> best.tolist(), round(float(chi2[0]), 2)
    ([1], 0.29)
    """
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    bank = np.asarray(bank, np.float64)
    chi2 = (np.sum(ivar * flux ** 2, axis=1)[:, None] - 2.0 * (ivar * flux) @ bank.T + ivar @ (bank ** 2).T)
    best = np.argmin(chi2, axis=1)
    return best, chi2[np.arange(len(flux)), best]


def _jacobian(model: Callable[[np.ndarray], np.ndarray], labels: np.ndarray, current: np.ndarray,
              upper: np.ndarray, step: np.ndarray, out: np.ndarray) -> None:
    """Forward differences of ``model`` at ``labels`` into ``out`` ``(n, n_pix, k)``, stepping back from ``upper``."""
    for j in range(labels.shape[1]):
        moved = labels.copy()
        sign = np.where(labels[:, j] + step[j] > upper[j], -1.0, 1.0)   # towards the inside of the box
        moved[:, j] += sign * step[j]
        out[:, :, j] = (model(moved) - current) / (sign * step[j])[:, None]
    out[~np.isfinite(out)] = 0.0   # a step off the model's domain (NaN) carries no slope


def fit_spectra(model: Callable[[np.ndarray], np.ndarray], flux: np.ndarray, ivar: np.ndarray, start: np.ndarray,
                lower: np.ndarray, upper: np.ndarray, step: np.ndarray, n_iter: int = 15, clip: float = 5.0,
                damping: float = 1e-2) -> GridFit:
    """Levenberg-Marquardt fits of ``model`` to many spectra at once.

    Parameters
    ----------
    model : callable
        ``(n, k)`` labels -> ``(n, n_pix)`` model spectra (the same normalisation as ``flux``).
    flux, ivar : numpy.ndarray
        ``(n, n_pix)`` observed spectra and inverse variances (0: masked).
    start : numpy.ndarray
        ``(n, k)`` starting labels (e.g. the best template of :func:`bank_start`).
    lower, upper : numpy.ndarray
        ``(k,)`` bounds: the labels are kept inside.
    step : numpy.ndarray
        ``(k,)`` finite-difference steps of the Jacobian.
    n_iter : int
        Iterations.
    clip : float
        Pixels with ``|residual| > clip`` sigma at the start are masked.
    damping : float
        Initial Levenberg-Marquardt damping.

    Examples
    --------
    A Gaussian line of unknown depth and centre:

    >>> x = np.linspace(-5, 5, 201)
    >>> line = lambda p: 1 - p[:, :1] * np.exp(-0.5 * (x[None] - p[:, 1:2]) ** 2)
    >>> rng = np.random.default_rng(0)
    >>> truth = np.array([[0.6, 0.3], [0.3, -1.2]])
    >>> ivar = np.full((2, x.size), 1e4)
    >>> data = line(truth) + rng.normal(0, 0.01, (2, x.size))
    >>> fit = fit_spectra(line, data, ivar, np.array([[0.5, 0.0], [0.5, 0.0]]), np.array([0.0, -5.0]),
    ...                   np.array([1.0, 5.0]), np.array([1e-3, 1e-3]))
    >>> sigma = np.sqrt(np.diagonal(fit.covariance, axis1=1, axis2=2))
    >>> bool(np.all(np.abs(fit.labels - truth) < 3 * sigma)), bool(np.all(np.abs(fit.chi2_reduced - 1) < 0.3))
    (True, True)
    """
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64).copy()
    lower, upper, step = (np.asarray(v, np.float64) for v in (lower, upper, step))
    labels = np.clip(np.asarray(start, np.float64).copy(), lower, upper)
    n, k = labels.shape
    current = model(labels)
    if clip:
        ivar[np.abs(flux - current) * np.sqrt(ivar) > clip] = 0.0
    chi2 = np.sum(ivar * (flux - current) ** 2, axis=1)
    lam = np.full(n, damping)
    jacobian = np.empty((n, flux.shape[1], k))
    for iteration in range(n_iter):
        _jacobian(model, labels, current, upper, step, jacobian)
        weighted = jacobian * ivar[:, :, None]
        normal = np.einsum("npi,npj->nij", weighted, jacobian)
        gradient = np.einsum("npi,np->ni", weighted, flux - current)
        diag = np.einsum("nii->ni", normal)
        damped = normal + lam[:, None, None] * np.eye(k)[None] * np.maximum(diag, 1e-12)[:, :, None]
        delta = np.nan_to_num(np.linalg.solve(damped, gradient[:, :, None])[:, :, 0])
        trial = np.clip(labels + delta, lower, upper)
        trial_model = model(trial)
        trial_chi2 = np.sum(ivar * (flux - trial_model) ** 2, axis=1)
        better = np.isfinite(trial_chi2) & (trial_chi2 < chi2)
        labels[better], current[better], chi2[better] = trial[better], trial_model[better], trial_chi2[better]
        lam = np.where(better, lam / 3.0, lam * 4.0)
        if np.all(np.abs(delta) < 0.01 * step):
            break
    _jacobian(model, labels, current, upper, step, jacobian)   # at the solution, for the covariance
    normal = np.einsum("npi,npj->nij", jacobian * ivar[:, :, None], jacobian)
    dof = np.maximum(np.count_nonzero(ivar > 0, axis=1) - k, 1)
    reduced = chi2 / dof
    covariance = np.linalg.pinv(normal) * np.maximum(reduced, 1.0)[:, None, None]
    return GridFit(labels, covariance, reduced, iteration + 1)
