"""Errors that hold under shift: an out-of-distribution score per row and calibrated error bars.

A heteroscedastic network gives each row a standard deviation, but it learned it on its own
training simulator: on spectra unlike those it is too small (on an independent mock the
shipped metallicity errors covered 29% of the residuals instead of 68%). Two pieces fix
that, both fitted once after training and stored in the weights file:

:class:`FeatureDensity`
    How far a row's network features (the flattened conv trunk) sit from the training
    rows': a Gaussian in the leading ``k`` principal components plus the residual off that
    subspace, ``score = (sum_i z_i^2 / lambda_i + |r|^2 / mean residual variance) / (k + 1)``
    - about 1 for spectra like the training ones, large for spectra the network never saw
    (a Mahalanobis distance in latent space, Lee et al. 2018). ``threshold`` is the
    99th percentile of held-out training rows: above it a row is flagged.
:class:`ErrorCalibration`
    Conformal rescaling of the network's sigma on a held-out *shifted* set (other priors
    and observation effects than the training set, never the validation mock): rows are
    binned by their OOD score and each bin gets the factor that brings the share of
    ``|residual| < k sigma`` closest to 68.3% (k = 1) and 95.4% (k = 2). Factors never
    fall with the score, and beyond the last bin they keep growing as ``sqrt(score)``, so
    a row far outside what the calibration saw gets a wider error, not the same one.

:class:`ErrorFloor`
    For measurements whose formal error is a curvature (a chi^2 minimum's width): it
    misses what the model cannot know - template mismatch, line-spread and wavelength
    systematics - which dominates at high S/N. ``sigma = sqrt((scale sigma_formal)^2 +
    (floor unit)^2)``, with ``scale`` and ``floor`` chosen on a shifted held-out set so
    that 68.3% and 95.4% of its residuals fall within 1 and 2 sigma.

All are plain arrays and floats (``to_dict`` / ``from_dict``), so they travel inside a
``weights_only`` torch file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureDensity", "ErrorCalibration", "ErrorFloor", "coverage", "calibrated_sigma", "GAUSS_COVERAGE"]

#: Share of a Gaussian within 1 and 2 sigma.
GAUSS_COVERAGE = {1: 0.6827, 2: 0.9545}


def coverage(residual: np.ndarray, sigma: np.ndarray, k: float = 1.0) -> float:
    """Share of rows with ``|residual| < k sigma`` (0.683 for k = 1 if the errors are right).

    Examples
    --------
    >>> coverage(np.array([0.5, -1.5, 0.1, 3.0]), np.ones(4))
    0.5
    >>> coverage(np.array([0.5, -1.5, 0.1, 3.0]), np.ones(4), k=2)
    0.75
    """
    residual, sigma = np.asarray(residual, float), np.asarray(sigma, float)
    ok = np.isfinite(residual) & np.isfinite(sigma)
    return float(np.mean(np.abs(residual[ok]) < k * sigma[ok])) if ok.any() else float("nan")


@dataclass(frozen=True)
class FeatureDensity:
    """A Gaussian density of network features: PCA basis, variances and the flag threshold.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(2000, 20)) * np.linspace(3, 0.1, 20)
    >>> density = FeatureDensity.fit(train, n_components=5)
    >>> bool(abs(np.median(density.score(train)) - 0.9) < 0.2)
    True
    >>> bool(density.score(train[:5] + 20.0).min() > 10 * density.threshold)
    True
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float
    threshold: float

    @classmethod
    def fit(cls, features: np.ndarray, n_components: int = 32, quantile: float = 0.99,
            held_out: np.ndarray | None = None) -> "FeatureDensity":
        """Fit on training-set features (n, d); the threshold is ``quantile`` of ``held_out`` (default: the same rows)."""
        x = np.asarray(features, dtype=np.float64)
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        k = int(min(n_components, vt.shape[0], x.shape[1] - 1))
        variances = s[:k] ** 2 / (len(x) - 1)
        rest = s[k:] ** 2 / (len(x) - 1)
        residual_variance = float(rest.sum() / max(len(rest), 1)) or 1e-12
        density = cls(mean=mean, components=vt[:k], variances=np.maximum(variances, 1e-12),
                      residual_variance=residual_variance, threshold=np.inf)
        reference = density.score(x if held_out is None else held_out)
        return cls(mean=mean, components=vt[:k], variances=density.variances, residual_variance=residual_variance,
                   threshold=float(np.quantile(reference, quantile)))

    def score(self, features: np.ndarray) -> np.ndarray:
        """OOD score of each row (n,): about 1 in distribution, large far from it."""
        x = np.asarray(features, dtype=np.float64) - self.mean
        z = x @ self.components.T
        resid = x - z @ self.components
        k = len(self.variances)
        n_rest = max(x.shape[1] - k, 1)
        d2 = (z**2 / self.variances).sum(axis=1) + (resid**2).sum(axis=1) / self.residual_variance / n_rest
        return (d2 / (k + 1)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.astype(np.float32).tolist(), "components": self.components.astype(np.float32).tolist(),
                "variances": self.variances.tolist(), "residual_variance": self.residual_variance,
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureDensity":
        return cls(mean=np.asarray(data["mean"], np.float64), components=np.asarray(data["components"], np.float64),
                   variances=np.asarray(data["variances"], np.float64),
                   residual_variance=float(data["residual_variance"]), threshold=float(data["threshold"]))


def _best_scale(pull: np.ndarray) -> float:
    """The factor s minimising the squared misses of 1- and 2-sigma coverage of ``pull / s``."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(50.0), 801))
    a = np.abs(pull)[None, :]
    cov1 = (a < grid[:, None]).mean(axis=1)
    cov2 = (a < 2.0 * grid[:, None]).mean(axis=1)
    loss = (cov1 - GAUSS_COVERAGE[1]) ** 2 + (cov2 - GAUSS_COVERAGE[2]) ** 2
    return float(grid[int(np.argmin(loss))])


@dataclass(frozen=True)
class ErrorCalibration:
    """Scale factors of sigma in bins of OOD score (``edges`` has one more entry than ``scales``).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> score = rng.uniform(0.5, 5.0, 20000)
    >>> sigma = np.full(score.size, 0.05)
    >>> resid = rng.normal(0.0, 0.05 * score)          # the true error grows with the score
    >>> cal = ErrorCalibration.fit(resid, sigma, score, n_bins=4)
    >>> calibrated = cal.apply(sigma, score)
    >>> abs(coverage(resid, calibrated) - 0.683) < 0.02, abs(coverage(resid, calibrated, 2) - 0.954) < 0.02
    (True, True)
    >>> bool(cal.apply(np.array([0.05]), np.array([50.0]))[0] > cal.apply(np.array([0.05]), np.array([5.0]))[0])
    True
    """

    edges: np.ndarray
    scales: np.ndarray

    @classmethod
    def fit(cls, residual: np.ndarray, sigma: np.ndarray, score: np.ndarray, n_bins: int = 5,
            min_rows: int = 50) -> "ErrorCalibration":
        """Fit on a held-out shifted set: residuals (prediction - truth), network sigma, OOD score."""
        residual, sigma, score = (np.asarray(a, np.float64) for a in (residual, sigma, score))
        ok = np.isfinite(residual) & np.isfinite(sigma) & (sigma > 0) & np.isfinite(score)
        residual, sigma, score = residual[ok], sigma[ok], score[ok]
        n_bins = int(max(1, min(n_bins, len(score) // min_rows)))
        edges = np.quantile(score, np.linspace(0.0, 1.0, n_bins + 1))
        edges[0], edges[-1] = min(edges[0], 0.0), edges[-1]
        which = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, n_bins - 1)
        scales = np.array([_best_scale(residual[which == b] / sigma[which == b]) for b in range(n_bins)])
        return cls(edges=edges, scales=np.maximum.accumulate(scales))

    def factor(self, score: np.ndarray) -> np.ndarray:
        """The scale factor at each OOD score (monotone; grows as sqrt(score) past the last bin)."""
        score = np.asarray(score, np.float64)
        which = np.clip(np.searchsorted(self.edges, score, side="right") - 1, 0, len(self.scales) - 1)
        out = self.scales[which]
        top = self.edges[-1]
        beyond = np.isfinite(score) & (score > top) & (top > 0)
        out = np.where(beyond, self.scales[-1] * np.sqrt(np.where(beyond, score, top) / top), out)
        return np.where(np.isfinite(score), out, self.scales[-1])

    def apply(self, sigma: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Calibrated sigma: the network's times :meth:`factor` of the row's score."""
        return (np.asarray(sigma, np.float64) * self.factor(score)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "scales": self.scales.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "ErrorCalibration":
        return cls(edges=np.asarray(data["edges"], np.float64), scales=np.asarray(data["scales"], np.float64))


@dataclass(frozen=True)
class ErrorFloor:
    """A formal error rescaled and added in quadrature to a floor: ``sqrt((scale s)^2 + (floor u)^2)``.

    ``u`` is the floor's unit per row (``1 + z`` for a redshift, so ``floor`` is in
    ``dz / (1 + z)``; 1 for a plain quantity).

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> formal = rng.uniform(1e-5, 1e-4, 20000)            # curvature errors, too small alone
    >>> resid = rng.normal(0.0, np.sqrt((1.5 * formal) ** 2 + 8e-5 ** 2))
    >>> model = ErrorFloor.fit(resid, formal)
    >>> abs(model.scale - 1.5) < 0.2, abs(model.floor - 8e-5) < 1e-5
    (True, True)
    >>> sigma = model.apply(formal)
    >>> abs(coverage(resid, sigma) - 0.683) < 0.01, abs(coverage(resid, sigma, 2) - 0.954) < 0.01
    (True, True)
    """

    scale: float
    floor: float

    @classmethod
    def fit(cls, residual: np.ndarray, sigma: np.ndarray, unit: np.ndarray | float = 1.0,
            n_floors: int = 241) -> "ErrorFloor":
        """Fit on a held-out set: residuals (prediction - truth), formal errors, floor units.

        For each trial floor (0 and a log grid from 1e-3 to 10 times the median
        ``|residual| / unit``) the scale that gives 68.3% within 1 sigma is found by
        bisection; the pair whose 2-sigma share is closest to 95.4% wins. Catastrophic
        failures should be removed by the caller (they belong to a flag, not an error bar).
        """
        residual, sigma = np.asarray(residual, np.float64), np.asarray(sigma, np.float64)
        unit = np.broadcast_to(np.asarray(unit, np.float64), residual.shape)
        ok = np.isfinite(residual) & np.isfinite(sigma) & (sigma > 0) & np.isfinite(unit) & (unit > 0)
        r, s, u = np.abs(residual[ok]), sigma[ok], unit[ok]
        if r.size < 10:
            raise ValueError(f"ErrorFloor.fit needs at least 10 finite rows, got {r.size}")
        typical = float(np.median(r / u)) or float(np.mean(r / u)) or 1.0
        floors = np.concatenate([[0.0], typical * np.geomspace(1e-3, 10.0, n_floors - 1)])
        best = (np.inf, 1.0, 0.0)
        for floor in floors:
            lo, hi = 0.0, 1.0
            while np.mean(r < np.hypot(hi * s, floor * u)) < GAUSS_COVERAGE[1] and hi < 1e9:
                hi *= 2.0
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if np.mean(r < np.hypot(mid * s, floor * u)) < GAUSS_COVERAGE[1] else (lo, mid)
            total = np.hypot(hi * s, floor * u)
            miss = (abs(np.mean(r < total) - GAUSS_COVERAGE[1]) + abs(np.mean(r < 2 * total) - GAUSS_COVERAGE[2]))
            if miss < best[0] - 1e-12:
                best = (miss, hi, floor)
        return cls(scale=float(best[1]), floor=float(best[2]))

    def apply(self, sigma: np.ndarray, unit: np.ndarray | float = 1.0) -> np.ndarray:
        """The calibrated error of each row."""
        return np.hypot(self.scale * np.asarray(sigma, np.float64), self.floor * np.asarray(unit, np.float64))

    def to_dict(self) -> dict:
        return {"scale": self.scale, "floor": self.floor}

    @classmethod
    def from_dict(cls, data: dict) -> "ErrorFloor":
        return cls(scale=float(data["scale"]), floor=float(data["floor"]))


def calibrated_sigma(cov: np.ndarray, calibration: list[ErrorCalibration], snr: np.ndarray) -> np.ndarray:
    """``(n, k)`` calibrated 1-sigma errors from a network's covariances ``(n, k, k)``: label ``j``'s
    sigma through ``calibration[j]`` at the score ``1 / snr`` (the stellar task's S/N-binned errors).

    >>> cal = ErrorCalibration(edges=np.array([0.0, 0.05, 1.0]), scales=np.array([1.0, 2.0]))
    >>> calibrated_sigma(np.array([[[4.0]], [[4.0]]]), [cal], np.array([100.0, 10.0]))[:, 0].tolist()
    [2.0, 4.0]
    """
    sigma = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 1e-30, None))
    score = 1.0 / np.asarray(snr, np.float64)
    return np.stack([c.apply(sigma[:, j], score) for j, c in enumerate(calibration)], axis=1).astype(np.float64)
