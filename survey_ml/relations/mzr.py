"""Scaling relations fitted on a catalog: the mass-metallicity relation (MZR).

``fit_mzr`` fits the quadratic of the LAMOST DR10 study, 12 + log(O/H) = a + b x + c x^2 with
x = log(M*/Msun) over 8.5 < x < 11.5, by least squares, with bootstrap errors (resampling
galaxies), the rms scatter about the fit, and the running median with its 16th-84th
percentile band; ``plot_mzr`` draws it against Tremonti et al. (2004) on the same axes.
"""
from __future__ import annotations

import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["TREMONTI04", "LAMOST_DR10_STUDY", "MZRFit", "fit_mzr", "running_median", "quadratic", "plot_mzr"]

#: Tremonti et al. (2004): 12 + log(O/H) = -1.492 + 1.847 x - 0.08026 x^2 (scatter ~0.1 dex).
TREMONTI04 = (-1.492, 1.847, -0.08026)
#: The LAMOST DR10 study's own fit: -1.412 + 1.986 x - 0.094 x^2.
LAMOST_DR10_STUDY = (-1.412, 1.986, -0.094)


def quadratic(coeffs: tuple[float, float, float] | np.ndarray, x: np.ndarray | float) -> np.ndarray:
    """a + b x + c x^2.

    Examples
    --------
    >>> round(float(quadratic(TREMONTI04, 10.0)), 4)
    8.952
    """
    a, b, c = coeffs
    return a + b * np.asarray(x) + c * np.asarray(x) ** 2


def running_median(x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 10):
    """Median and 16th/84th percentiles of ``y`` in bins of ``x``.

    Returns
    -------
    centres, median, p16, p84, count : numpy.ndarray
        Bins with fewer than ``min_count`` points are NaN.
    """
    x, y = np.asarray(x), np.asarray(y)
    centres = 0.5 * (edges[1:] + edges[:-1])
    stats = np.full((3, centres.size), np.nan)
    count = np.zeros(centres.size, dtype=int)
    which = np.digitize(x, edges) - 1
    for k in range(centres.size):
        sel = y[which == k]
        count[k] = sel.size
        if sel.size >= min_count:
            stats[:, k] = np.percentile(sel, [50, 16, 84])
    return centres, stats[0], stats[1], stats[2], count


@dataclass
class MZRFit:
    """A quadratic MZR fit.

    Attributes
    ----------
    coeffs : numpy.ndarray
        (a, b, c) of a + b x + c x^2.
    coeffs_err : numpy.ndarray
        Bootstrap standard deviations of (a, b, c).
    curve_err : callable-free numpy.ndarray
        Bootstrap 1-sigma of the fitted relation on ``x_grid``.
    x_grid : numpy.ndarray
        Masses where ``curve_err`` is given.
    scatter : float
        rms of the residuals about the fit (dex).
    n : int
        Galaxies used (inside ``x_range`` and finite).
    x_range : tuple
        The mass range fitted.
    bins : dict
        Running median: ``centres``, ``median``, ``p16``, ``p84``, ``count``.
    """

    coeffs: np.ndarray
    coeffs_err: np.ndarray
    curve_err: np.ndarray
    x_grid: np.ndarray
    scatter: float
    n: int
    x_range: tuple[float, float]
    bins: dict = field(default_factory=dict)

    def __call__(self, x):
        return quadratic(self.coeffs, x)

    def summary(self) -> str:
        (a, b, c), (ea, eb, ec) = self.coeffs, self.coeffs_err
        return (f"12+log(O/H) = ({a:.3f} +- {ea:.3f}) + ({b:.3f} +- {eb:.3f}) x + ({c:.4f} +- {ec:.4f}) x^2, "
                f"x = log M*, {self.x_range[0]} < x < {self.x_range[1]}, N = {self.n}, rms {self.scatter:.3f} dex")


def _polyfit2(x: np.ndarray, y: np.ndarray, pivot: float = 10.0) -> np.ndarray:
    """(a, b, c) of a + b x + c x^2, fitted about ``pivot`` for conditioning, then expanded."""
    a, b, c = np.polynomial.polynomial.polyfit(x - pivot, y, 2)
    return np.array([a - b * pivot + c * pivot**2, b - 2 * c * pivot, c])


def fit_mzr(log_mstar: np.ndarray, oh12: np.ndarray, x_range: tuple[float, float] = (8.5, 11.5),
            n_boot: int = 500, seed: int = 0, bin_width: float = 0.2) -> MZRFit:
    """Least-squares quadratic MZR with bootstrap errors and a running median.

    Parameters
    ----------
    log_mstar, oh12 : array_like
        Stellar masses (log Msun) and metallicities; non-finite pairs are dropped.
    x_range : tuple
        Masses fitted (the study's 8.5-11.5).
    n_boot : int
        Bootstrap resamples of the galaxies.
    seed : int
        Bootstrap seed (fits are reproducible).
    bin_width : float
        Running-median bin width in dex of mass.
    """
    x, y = np.asarray(log_mstar, dtype=float), np.asarray(oh12, dtype=float)
    use = np.isfinite(x) & np.isfinite(y) & (x > x_range[0]) & (x < x_range[1])
    x, y = x[use], y[use]
    if x.size < 4:
        raise ValueError(f"need at least 4 galaxies with finite mass and metallicity in {x_range}, got {x.size}")
    coeffs = _polyfit2(x, y)
    rng = np.random.default_rng(seed)
    x_grid = np.linspace(*x_range, 61)
    boot = np.empty((n_boot, 3))
    with warnings.catch_warnings():  # a tiny resample may be degenerate; its fit still counts
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        for k in range(n_boot):
            pick = rng.integers(0, x.size, x.size)
            boot[k] = _polyfit2(x[pick], y[pick])
    curves = boot[:, :1] + boot[:, 1:2] * x_grid + boot[:, 2:3] * x_grid**2
    edges = np.arange(x_range[0], x_range[1] + bin_width / 2, bin_width)
    centres, median, p16, p84, count = running_median(x, y, edges)
    return MZRFit(coeffs=coeffs, coeffs_err=boot.std(axis=0), curve_err=curves.std(axis=0), x_grid=x_grid,
                  scatter=float(np.sqrt(np.mean((y - quadratic(coeffs, x)) ** 2))), n=int(x.size),
                  x_range=x_range, bins={"centres": centres, "median": median, "p16": p16, "p84": p84,
                                         "count": count})


def plot_mzr(fit: MZRFit, log_mstar: np.ndarray, oh12: np.ndarray, path: str | Path, title: str = "",
             truth: tuple[float, float, float] | None = None) -> Path:
    """PNG of the galaxies, the running median and +-1 sigma band, the fit, and the references.

    ``truth``: coefficients of an injected relation to draw too (for mock releases).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(log_mstar, oh12, s=2, color="0.6", alpha=0.4, rasterized=True, label="galaxies")
    b = fit.bins
    ax.fill_between(b["centres"], b["p16"], b["p84"], color="tab:blue", alpha=0.25, label="16-84th percentile")
    ax.plot(b["centres"], b["median"], "o", color="tab:blue", ms=4, label="running median")
    xg = fit.x_grid
    ax.plot(xg, fit(xg), color="tab:red", lw=2, label="this fit")
    ax.fill_between(xg, fit(xg) - fit.curve_err, fit(xg) + fit.curve_err, color="tab:red", alpha=0.3)
    ax.plot(xg, quadratic(TREMONTI04, xg), "k--", label="Tremonti et al. 2004")
    ax.plot(xg, quadratic(LAMOST_DR10_STUDY, xg), "k:", label="LAMOST DR10 study")
    if truth is not None:
        ax.plot(xg, quadratic(truth, xg), color="tab:green", lw=1.5, label="injected")
    ax.set_xlim(*fit.x_range)
    ax.set_xlabel("log(M*/Msun)")
    ax.set_ylabel("12 + log(O/H)")
    ax.set_title(textwrap.fill(title or fit.summary(), 95), fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
