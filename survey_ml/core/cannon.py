"""The Cannon (Ness et al. 2015): a quadratic-in-labels model of every pixel, the classical anchor.

Training fits, at each pixel ``j``, flux ``f_nj = theta_j . l(labels_n) + noise`` with
``l`` the quadratic label vector ``(1, x_k, x_k x_m)`` of pivoted, scaled labels, by weighted
least squares with weights ``1 / (sigma_nj^2 + s_j^2)``; the intrinsic scatter ``s_j`` is
re-estimated from the residuals (method of moments) a few times. The test step finds the
labels of a new spectrum by non-linear least squares (scipy's ``least_squares`` with the
analytic Jacobian) and their covariance from that Jacobian.

Written here rather than imported: the two PyPI packages no longer import on this stack
(``thecannon`` 0.2.6 reads ``numpy.RankWarning`` and ``collections.Iterable`` and cannot
assign its per-pixel fits under NumPy 2; ``TheCannon`` 0.7.3 turns on LaTeX text rendering
for every matplotlib figure of the process when imported).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

__all__ = ["CannonModel", "label_vector"]


def label_vector(x: np.ndarray) -> np.ndarray:
    """Quadratic label vectors ``(n, 1 + K + K (K + 1) / 2)`` of scaled labels ``x`` ``(n, K)``.

    >>> label_vector(np.array([[2.0, 3.0]])).tolist()
    [[1.0, 2.0, 3.0, 4.0, 6.0, 9.0]]
    """
    x = np.atleast_2d(x)
    k = x.shape[1]
    pairs = [x[:, i] * x[:, j] for i in range(k) for j in range(i, k)]
    return np.column_stack([np.ones(len(x)), x, *pairs])


def _jacobian(x: np.ndarray) -> np.ndarray:
    """d label_vector / d x for one label set ``x`` ``(K,)``: ``(n_terms, K)``."""
    k = x.size
    rows = [np.zeros(k)] + [np.eye(k)[i] for i in range(k)]
    for i in range(k):
        for j in range(i, k):
            d = np.zeros(k)
            d[i] += x[j]
            d[j] += x[i]
            rows.append(d)
    return np.array(rows)


@dataclass
class CannonModel:
    """A trained Cannon: ``theta`` ``(n_pix, n_terms)``, ``scatter`` ``(n_pix,)``, label pivots and scales.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.uniform([4000, 1, -2], [7000, 5, 0.5], (400, 3))
    >>> pixels = np.linspace(0, 1, 60)
    >>> def spectra(l):   # lines deepen as Teff falls, gravity and metallicity each with their own pattern
    ...     return (1 - 0.3 * np.outer((7000 - l[:, 0]) / 3000, pixels) - 0.05 * np.outer(l[:, 1], 1 - pixels)
    ...             - 0.08 * np.outer(l[:, 2] + 2, np.sin(9 * pixels) ** 2))
    >>> flux = spectra(labels) + rng.normal(0, 0.005, (400, 60))
    >>> model = CannonModel.train(labels, flux, np.full_like(flux, 0.005 ** -2))
    >>> test = np.array([[5800.0, 4.4, 0.0]])
    >>> fit, cov = model.test(spectra(test), np.full((1, 60), 0.005 ** -2))
    >>> bool((np.abs(fit[0] - test[0]) < [10.0, 0.02, 0.01]).all()), bool((np.sqrt(np.diag(cov[0])) > 0).all())
    (True, True)
    """

    theta: np.ndarray
    scatter: np.ndarray
    pivot: np.ndarray
    scale: np.ndarray

    @classmethod
    def train(cls, labels: np.ndarray, flux: np.ndarray, ivar: np.ndarray, n_iter: int = 3) -> CannonModel:
        """Fit every pixel of ``flux`` ``(n, n_pix)`` (ivar 0 = unused) against ``labels`` ``(n, K)``."""
        labels = np.asarray(labels, np.float64)
        pivot, scale = labels.mean(0), labels.std(0) + 1e-12
        design = label_vector((labels - pivot) / scale)
        flux = np.asarray(flux, np.float64)
        ivar = np.asarray(ivar, np.float64)
        variance = np.where(ivar > 0, 1.0 / np.where(ivar > 0, ivar, 1.0), np.inf)
        scatter2 = np.zeros(flux.shape[1])
        theta = np.zeros((flux.shape[1], design.shape[1]))
        for _ in range(n_iter):
            weight = 1.0 / (variance + scatter2)  # (n, n_pix); 0 where ivar == 0
            # normal equations of every pixel at once, (P, T, T) and (P, T), as BLAS products
            lhs = np.stack([(design[:, t:t + 1] * design).T @ weight for t in range(design.shape[1])]).transpose(2, 0, 1)
            rhs = (design.T @ (weight * flux)).T
            lhs += 1e-9 * np.eye(design.shape[1])
            theta = np.linalg.solve(lhs, rhs[..., None])[..., 0]
            resid = flux - design @ theta.T
            finite = np.isfinite(variance)
            excess = np.where(finite, resid ** 2 - np.where(finite, variance, 0.0), 0.0)
            scatter2 = np.clip(excess.sum(0) / np.maximum(finite.sum(0), 1), 0.0, None)
        return cls(theta, np.sqrt(scatter2), pivot, scale)

    def model_flux(self, labels: np.ndarray) -> np.ndarray:
        """Model spectra at ``labels`` ``(n, K)``."""
        return label_vector((np.atleast_2d(labels) - self.pivot) / self.scale) @ self.theta.T

    def test(self, flux: np.ndarray, ivar: np.ndarray, start: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(n, K)`` and covariances ``(n, K, K)`` of spectra ``flux`` by least squares."""
        flux = np.atleast_2d(np.asarray(flux, np.float64))
        ivar = np.atleast_2d(np.asarray(ivar, np.float64))
        k = self.pivot.size
        labels = np.full((len(flux), k), np.nan)
        covs = np.full((len(flux), k, k), np.nan)
        for n in range(len(flux)):
            good = ivar[n] > 0
            if good.sum() <= k:
                continue
            weight = np.sqrt(1.0 / (1.0 / ivar[n, good] + self.scatter[good] ** 2))
            theta = self.theta[good]

            def residual(x, theta=theta, weight=weight, f=flux[n, good]):
                return (label_vector(x[None])[0] @ theta.T - f) * weight

            def jacobian(x, theta=theta, weight=weight):
                return (theta @ _jacobian(x)) * weight[:, None]

            x0 = np.zeros(k) if start is None else (start[n] - self.pivot) / self.scale
            fit = least_squares(residual, x0, jac=jacobian, method="lm")
            labels[n] = fit.x * self.scale + self.pivot
            jac = jacobian(fit.x)
            try:
                cov = np.linalg.inv(jac.T @ jac)
            except np.linalg.LinAlgError:
                continue
            covs[n] = cov * np.outer(self.scale, self.scale)
        return labels, covs
