"""Tully-Fisher relations (SCIENCE.md section 4).

Rotation velocities from the kinematic model are corrected for asymmetric drift (pressure support
of the gas disc) with ``asymmetric_drift`` and ``mean_dispersion``; ``fit_tfr`` fits the three
published relations with LtsFit (robust least trimmed squares with intrinsic scatter and errors
on both axes, Cappellari et al. 2013), ``plot_tfr`` draws a fit against the published ones.
"""
from __future__ import annotations

import contextlib
import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["asymmetric_drift", "mean_dispersion", "TFRRelation", "TFR_PUBLISHED", "TFR_LITERATURE", "TFRFit",
           "fit_tfr", "plot_tfr"]



def asymmetric_drift(vmax: np.ndarray | float, vdisp: np.ndarray | float, r_max: np.ndarray | float,
                     r_scale: np.ndarray | float) -> np.ndarray:
    """Vmax corrected for asymmetric drift: sqrt(Vmax^2 + Vdisp^2 (2 r_max / r_scale - 1)).

    Parameters
    ----------
    vmax : array_like
        Rotation velocity (km/s).
    vdisp : array_like
        Mean gas velocity dispersion between 2 Re and r_max (:func:`mean_dispersion`), km/s;
        MaNGA dispersions are widened by the LSF factor 1.045 before this (SCIENCE.md).
    r_max, r_scale : array_like
        Largest radius with H-alpha and the disc scale length, in one unit.

    Returns
    -------
    numpy.ndarray
        Corrected Vmax (km/s), broadcast over the inputs; NaN where the square is negative
        (r_max well inside r_scale / 2 with a large dispersion) or an input is NaN.

    Examples
    --------
    >>> round(float(asymmetric_drift(200.0, 30.0, 3.0, 2.0)), 2)     # sqrt(200^2 + 30^2 x 2)
    204.45
    >>> asymmetric_drift([150.0, 100.0], [20.0, 0.0], [4.0, 4.0], [4.0, 4.0]).round(2).tolist()
    [151.33, 100.0]
    """
    vmax, vdisp = np.asarray(vmax, dtype=float), np.asarray(vdisp, dtype=float)
    square = vmax**2 + vdisp**2 * (2.0 * np.asarray(r_max, dtype=float) / np.asarray(r_scale, dtype=float) - 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(square >= 0, np.sqrt(np.where(square >= 0, square, 0.0)), np.nan)


def mean_dispersion(radius_arcsec: np.ndarray, dispersion: np.ndarray, good: np.ndarray, r_e: float,
                    r_max: float | None = None) -> float:
    """Mean gas dispersion from 2 Re out to r_max, the largest radius with H-alpha (SCIENCE.md section 4).

    Parameters
    ----------
    radius_arcsec : numpy.ndarray
        Galactocentric radius of each spaxel (arcsec; deprojected or not, as Re was measured).
    dispersion : numpy.ndarray
        H-alpha velocity dispersion of each spaxel (km/s).
    good : numpy.ndarray
        Spaxels with H-alpha (e.g. the S/N >= 10 mask).
    r_e : float
        Effective radius (arcsec).
    r_max : float, optional
        Largest radius with H-alpha; default the largest radius among the good spaxels.

    Returns
    -------
    float
        Mean dispersion of the good spaxels with 2 Re <= r <= r_max, or with r_max / 2 <= r <= r_max
        when r_max < 2 Re; NaN when no good spaxel with a finite dispersion lies there.

    Examples
    --------
    >>> r = np.array([0.5, 1.5, 2.5, 3.5, 4.5])
    >>> sigma = np.array([60.0, 40.0, 30.0, 20.0, 10.0])
    >>> mean_dispersion(r, sigma, np.ones(5, bool), r_e=1.5)          # 3 <= r <= 4.5
    15.0
    >>> mean_dispersion(r, sigma, np.ones(5, bool), r_e=3.0)          # r_max < 2 Re: 2.25 <= r <= 4.5
    20.0
    """
    radius = np.asarray(radius_arcsec, dtype=float)
    sigma = np.asarray(dispersion, dtype=float)
    good = np.asarray(good, dtype=bool) & np.isfinite(radius)
    if r_max is None:
        if not good.any():
            return float("nan")
        r_max = float(radius[good].max())
    r_in = 2.0 * r_e if r_max >= 2.0 * r_e else 0.5 * r_max
    ring = good & np.isfinite(sigma) & (radius >= r_in) & (radius <= r_max)
    return float(sigma[ring].mean()) if ring.any() else float("nan")


@dataclass(frozen=True)
class TFRRelation:
    """A straight line y = intercept + slope (x - pivot), with the axes it lives on."""

    slope: float
    intercept: float
    pivot: float
    x_label: str
    y_label: str
    slope_err: float = float("nan")
    intercept_err: float = float("nan")
    rms: float = float("nan")

    def __call__(self, x):
        return self.intercept + self.slope * (np.asarray(x) - self.pivot)


#: The study's fits (SCIENCE.md section 4; 1834 SAMI + MaNGA galaxies), by kind of relation.
TFR_PUBLISHED = {
    "reverse": TFRRelation(0.258, 2.265, 10.09, "log(M*/Msun)", "log(Vmax / km s^-1)", 0.003, 0.002, 0.089),
    "forward": TFRRelation(3.013, 10.054, 2.256, "log(Vmax / km s^-1)", "log(M*/Msun)", 0.037, 0.008, 0.31),
    # As SCIENCE.md gives it: a positive intercept with a negative slope - absolute magnitudes of
    # these galaxies are ~ -20, so the source's sign convention for M_r is to be checked.
    "r_band": TFRRelation(-5.290, 19.708, 2.256, "log(Vmax / km s^-1)", "M_r (mag)", 0.100, 0.022, 0.92),
}
#: Literature reverse relations at the same pivot (log M* = 10.09): (slope, intercept).
TFR_LITERATURE = {
    "Bloom et al. 2017 (SAMI)": (0.310, 2.198),
    "Bekeraite et al. 2016 (CALIFA)": (0.260, 2.123),
    "Reyes et al. 2011 (SDSS)": (0.278, 2.164),
}


@dataclass
class TFRFit:
    """An LtsFit of y = intercept + slope (x - pivot).

    Attributes
    ----------
    kind : str
        ``reverse`` (log Vmax vs log M*), ``forward`` (log M* vs log Vmax), ``r_band`` (M_r vs log Vmax).
    intercept, intercept_err, slope, slope_err : float
        Best fit and 1-sigma formal errors.
    pivot : float
        x at which the intercept is given.
    sig_int, sig_int_err : float
        Intrinsic scatter in y and its 1-sigma error.
    rms : float
        rms of the fitted (unclipped) points about the line, in y.
    n : int
        Points fitted (finite, not clipped).
    n_clipped : int
        Points clipped as outliers.
    used, clipped : numpy.ndarray
        Bool over the input points; points with a non-finite value are in neither.
    """

    kind: str
    intercept: float
    intercept_err: float
    slope: float
    slope_err: float
    pivot: float
    sig_int: float
    sig_int_err: float
    rms: float
    n: int
    n_clipped: int
    used: np.ndarray
    clipped: np.ndarray

    def __call__(self, x):
        return self.intercept + self.slope * (np.asarray(x) - self.pivot)

    @property
    def relation(self) -> TFRRelation:
        axes = TFR_PUBLISHED[self.kind]
        return TFRRelation(self.slope, self.intercept, self.pivot, axes.x_label, axes.y_label, self.slope_err,
                           self.intercept_err, self.rms)

    def summary(self) -> str:
        r = self.relation
        return (f"{r.y_label} = ({self.slope:.3f} +- {self.slope_err:.3f}) ({r.x_label} - {self.pivot:g}) "
                f"+ ({self.intercept:.3f} +- {self.intercept_err:.3f}), intrinsic scatter {self.sig_int:.3f} "
                f"+- {self.sig_int_err:.3f}, rms {self.rms:.3f}, N = {self.n} ({self.n_clipped} clipped)")


def fit_tfr(x: np.ndarray, y: np.ndarray, x_err: np.ndarray | float, y_err: np.ndarray | float,
            pivot: float | None = None, *, kind: str = "reverse", clip: float = 2.6, frac: float | None = None,
            seed: int = 0) -> TFRFit:
    """Robust Tully-Fisher fit with ``ltsfit.lts_linefit``: y = a + b (x - pivot), errors on both axes.

    Parameters
    ----------
    x, y : array_like
        The relation's axes for ``kind``: reverse - x = log M*, y = log Vmax; forward -
        x = log Vmax, y = log M*; r_band - x = log Vmax, y = M_r. Non-finite points are left out.
    x_err, y_err : array_like or float
        1-sigma errors (broadcast to the points); for each point at least one must be positive.
    pivot : float, optional
        Default the published pivot of ``kind`` (10.09 reverse, 2.256 forward and r-band).
    kind : str
        ``reverse``, ``forward`` or ``r_band``: sets the pivot and the axes of plots.
    clip : float
        LtsFit's outlier clip in sigma (2.6, its default and the study's).
    frac : float, optional
        LtsFit's fraction of points in the LTS stage (default 0.5 breakdown); 1 turns clipping off.
    seed : int
        LtsFit draws random starting subsets from NumPy's global generator: it is seeded here and
        restored afterwards, so a fit is reproducible and leaves the caller's random state alone.
    """
    from ltsfit.lts_linefit import lts_linefit

    if kind not in TFR_PUBLISHED:
        raise ValueError(f"kind must be one of {sorted(TFR_PUBLISHED)}, got {kind!r}")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x_err, y_err = np.broadcast_arrays(np.asarray(x_err, dtype=float), np.asarray(y_err, dtype=float), x)[:2]
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(x_err) & np.isfinite(y_err)
    if np.any((x_err[finite] < 0) | (y_err[finite] < 0) | ((x_err[finite] == 0) & (y_err[finite] == 0))):
        raise ValueError("errors must be >= 0 and not both 0 for a point")
    if finite.sum() < 5:
        raise ValueError(f"need at least 5 points with finite values and errors, got {int(finite.sum())}")
    pivot = TFR_PUBLISHED[kind].pivot if pivot is None else float(pivot)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # LtsFit reports on stdout
            fit = lts_linefit(x[finite], y[finite], x_err[finite].copy(), y_err[finite].copy(), clip=clip,
                              frac=frac, pivot=pivot, plot=False)
    finally:
        np.random.set_state(state)
    used = np.zeros(x.shape, dtype=bool)
    used[finite] = fit.mask
    clipped = finite & ~used
    (a, b), (a_err, b_err) = fit.ab, fit.ab_err
    return TFRFit(kind=kind, intercept=float(a), intercept_err=float(a_err), slope=float(b), slope_err=float(b_err),
                  pivot=pivot, sig_int=float(fit.sig_int), sig_int_err=float(fit.sig_int_err), rms=float(fit.rms),
                  n=int(used.sum()), n_clipped=int(clipped.sum()), used=used, clipped=clipped)


def plot_tfr(fit: TFRFit, x: np.ndarray, y: np.ndarray, path: str | Path, kind: str | None = None,
             title: str = "", truth: tuple[float, float] | None = None) -> Path:
    """PNG of a Tully-Fisher fit: the galaxies, the clipped ones marked, the fit +- rms, the references.

    The study's relation of the same ``kind`` (default ``fit.kind``) is drawn, and for the
    reverse and forward relations also the literature ones (:data:`TFR_LITERATURE`, the
    forward panel showing them inverted). ``truth``: (slope, intercept) of an injected
    relation at the fit's pivot, for mock samples. Magnitudes are drawn bright side up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = fit.kind if kind is None else kind
    published = TFR_PUBLISHED[kind]
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(x[fit.used], y[fit.used], s=4, color="0.5", alpha=0.5, rasterized=True, label=f"fitted ({fit.n})")
    ax.scatter(x[fit.clipped], y[fit.clipped], s=14, marker="x", color="tab:orange",
               label=f"clipped ({fit.n_clipped})")
    finite = np.isfinite(x)
    lo, hi = (np.percentile(x[finite], [0.5, 99.5]) if finite.any() else (published.pivot - 1, published.pivot + 1))
    xg = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), 50)
    ax.plot(xg, fit(xg), color="tab:red", lw=2, label="this fit")
    ax.fill_between(xg, fit(xg) - fit.rms, fit(xg) + fit.rms, color="tab:red", alpha=0.15)
    ax.plot(xg, published(xg), "k--", lw=1.5, label="2021 thesis (SAMI + MaNGA)")
    if kind in ("reverse", "forward"):
        reverse_pivot = TFR_PUBLISHED["reverse"].pivot
        for (name, (b, a)), style in zip(TFR_LITERATURE.items(), (":", "-.", (0, (5, 1, 1, 1)))):
            line = a + b * (xg - reverse_pivot) if kind == "reverse" else reverse_pivot + (xg - a) / b
            ax.plot(xg, line, color="tab:blue", ls=style, lw=1.2, label=name)
    if truth is not None:
        ax.plot(xg, truth[1] + truth[0] * (xg - fit.pivot), color="tab:green", lw=1.5, label="injected")
    ax.set_xlim(xg[0], xg[-1])
    finite_y = y[np.isfinite(y)]
    if finite_y.size:
        y_lo, y_hi = np.percentile(finite_y, [0.5, 99.5])
        pad = 0.1 * (y_hi - y_lo) or 0.1
        ax.set_ylim(y_lo - pad, y_hi + pad)
    if kind == "r_band":
        ax.invert_yaxis()
    ax.set_xlabel(published.x_label)
    ax.set_ylabel(published.y_label)
    ax.set_title(textwrap.fill(title or fit.summary(), 95), fontsize=8)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
