"""Accuracy figures used across survey_ml: redshift NMAD and outliers, error calibration.

The redshift conventions follow SCIENCE.md section 2 (and the photo-z literature):
``dz = z_true - z_pred``; NMAD = 1.48 median(|dz| / (1 + z_true)); a catastrophic outlier
has |dz| / (1 + z_true) > 0.05, and eta is their fraction.
"""
from __future__ import annotations

import numpy as np

__all__ = ["normalised_dz", "nmad", "outlier_fraction", "coverage_within"]

#: |dz| / (1 + z) above which a redshift is a catastrophic outlier.
OUTLIER_THRESHOLD = 0.05


def normalised_dz(z_true: np.ndarray, z_pred: np.ndarray) -> np.ndarray:
    """(z_true - z_pred) / (1 + z_true).

    Examples
    --------
    >>> normalised_dz(np.array([0.0, 1.0]), np.array([0.01, 0.9])).round(4).tolist()
    [-0.01, 0.05]
    """
    z_true = np.asarray(z_true, dtype=float)
    return (z_true - np.asarray(z_pred, dtype=float)) / (1.0 + z_true)


def nmad(z_true: np.ndarray, z_pred: np.ndarray) -> float:
    """1.48 median(|dz| / (1 + z_true)) over the finite pairs (the published definition).

    Note the published form takes the median of |dz| itself, not of |dz - median(dz)|.

    Examples
    --------
    >>> round(nmad([0.0, 0.0, 1.0], [0.01, -0.02, 1.04]), 4)
    0.0296
    """
    d = normalised_dz(z_true, z_pred)
    d = d[np.isfinite(d)]
    return float(1.48 * np.median(np.abs(d))) if d.size else float("nan")


def outlier_fraction(z_true: np.ndarray, z_pred: np.ndarray, threshold: float = OUTLIER_THRESHOLD) -> float:
    """eta: share of finite pairs with |dz| / (1 + z_true) > ``threshold``.

    Examples
    --------
    >>> outlier_fraction([0.1, 0.2, 0.3, 1.0], [0.1, 0.2, 0.5, 1.2])
    0.5
    """
    d = normalised_dz(z_true, z_pred)
    d = d[np.isfinite(d)]
    return float(np.mean(np.abs(d) > threshold)) if d.size else float("nan")


def coverage_within(residual: np.ndarray, sigma: np.ndarray, k: float = 1.0) -> float:
    """Share of |residual| <= k sigma (ideal for Gaussian errors: 68.3% at k = 1, 95.4% at k = 2).

    Examples
    --------
    >>> coverage_within(np.array([0.5, -1.5, 2.5, 0.1]), np.ones(4), k=2)
    0.75
    """
    r, s = np.asarray(residual, dtype=float), np.asarray(sigma, dtype=float)
    ok = np.isfinite(r) & np.isfinite(s) & (s > 0)
    return float(np.mean(np.abs(r[ok]) <= k * s[ok])) if ok.any() else float("nan")
