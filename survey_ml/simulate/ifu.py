"""Mock IFU releases (SAMI DR3, MaNGA DR17) of rotating H-alpha discs, with known truth.

Each galaxy is drawn from the real SAMI catalogue's distributions (:data:`POPULATION`, a
Gaussian copula fitted by :func:`fit_population`), given a rotation velocity from an injected
reverse Tully-Fisher relation (:data:`TFR_INJECTED`) and rendered like an IFU sees it: a thin
exponential H-alpha disc, rotating, inclined and turned to its position angle, becomes a data
cube (ny, nx, n_velocity) of Gaussian line profiles (gas dispersion + instrumental LSF),
convolved with the seeing (beam smearing) and given noise; the maps are then *measured*
from the cube as a survey pipeline does - one Gaussian per spaxel, S/N >= 3 and the
bundle's footprint - and written in the survey's own files, with a truth table.

A share of the galaxies departs from the model the kinematics network decodes (arctan curve,
smooth exponential disc, circular orbits): other rotation-curve shapes, clumpy discs and
disturbed kinematics (:data:`RC_TYPE_FRACTIONS`, :data:`CLUMPY_FRACTION`,
:data:`DISTURBED_FRACTION`), flagged in the truth table.

Sky convention: maps are (ny, nx) with x (column) to the West and y (row) to the North, as
the surveys' WCS (CDELT1 < 0); the kinematic PA is measured from North through East to the
receding half of the major axis, which points along (x, y) = (-sin PA, cos PA).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from scipy.stats import norm

from ..cluster.client import run_blocks
from ..io.ifu import IFUMaps
from ..io.manga import write_drpall, write_manga_maps
from ..io.sami import write_sami_catalogue, write_sami_maps

__all__ = ["TFR_INJECTED", "POPULATION", "INSTRUMENTS", "DEFAULT_GALAXY", "IFUInstrument", "MockIFURelease",
           "fit_population", "draw_population", "inclination_from_ellipticity", "rotation_curve", "footprint",
           "render_galaxy", "simulate_ifu_release"]

#: The reverse Tully-Fisher relation injected into every mock galaxy (SCIENCE.md section 4,
#: the study's SAMI+MaNGA fit): log10 Vmax = intercept + slope (log M* - pivot) + N(0, scatter).
TFR_INJECTED = {"intercept": 2.265, "slope": 0.258, "pivot": 10.09, "scatter_dex": 0.06}
#: Intrinsic axis ratio of the discs (inclination from ellipticity, Hubble 1926 with a thickness).
Q0 = 0.2
#: Re / disc scale length of an exponential disc.
RE_PER_RSCALE = 1.678
#: Shares of the rotation-curve shapes ('arctan' is the shape the kinematics model decodes).
RC_TYPE_FRACTIONS = {"arctan": 0.70, "tanh": 0.10, "rising": 0.10, "declining": 0.10}
#: Share of discs whose H-alpha carries star-forming clumps on top of the exponential.
CLUMPY_FRACTION = 0.25
#: Share of disturbed discs; half kinematic twists (warps), half bisymmetric non-circular flows.
DISTURBED_FRACTION = 0.10
#: Spaxels whose fitted H-alpha flux has S/N below this are masked (as the survey pipelines).
SNR_MASK = 3.0

#: Catalogue columns of the population, in the copula's order (r_e enters as log10 arcsec).
POPULATION_COLUMNS = ("mstar", "log_r_e", "z_spec", "ellip", "m_r", "g_i")

#: The SAMI DR3 input catalogue's population: ``fit_population(sami_InputCatGAMADR3.csv)``
#: on the study's cut (log M* >= 7.5, finite mstar, r_e > 0, ellip, z_spec, pa, m_r, g_i:
#: 5,391 of 5,536 galaxies). Marginals are the empirical quantiles at ``levels`` (inverse
#: CDFs interpolated linearly, so draws stay within the 0.5-99.5% range); the dependence
#: is a Gaussian copula whose correlation matrix is that of the normal scores (rank ->
#: Phi^-1). PA is uniform on [0, 180) (the catalogue's is, and independent of the rest).
#: M_r (the catalogue's m_r, an absolute magnitude) is drawn with the mass from the copula
#: (rank correlation -0.96), so no separate mass-to-light relation is needed. No catalogue
#: row is stored here.
POPULATION: dict[str, Any] = {
    "columns": POPULATION_COLUMNS,
    "levels": (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
               0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 0.995),
    "quantiles": {
        "mstar": (7.9485, 8.2, 8.33, 8.53, 8.76, 9.0, 9.28, 9.49, 9.63, 9.81, 10.0, 10.19, 10.33,
                  10.38, 10.44, 10.5, 10.58, 10.65, 10.74, 10.86, 10.97, 11.11, 11.23, 11.39, 11.5005),
        "log_r_e": (-0.208, -0.1198, -0.0132, 0.0792, 0.1931, 0.2695, 0.3181, 0.3655, 0.4099,
                    0.4472, 0.4829, 0.5119, 0.5478, 0.5786, 0.616, 0.6464, 0.683, 0.7193, 0.7582,
                    0.8126, 0.8831, 1.0041, 1.1577, 1.4232, 1.5727),
        "z_spec": (0.0053, 0.0062, 0.0136, 0.0194, 0.0245, 0.0273, 0.0305, 0.0363, 0.0408, 0.0452,
                   0.0504, 0.0528, 0.0541, 0.0554, 0.0577, 0.0707, 0.0759, 0.078, 0.0808, 0.0841,
                   0.0883, 0.1026, 0.1073, 0.1109, 0.1125),
        "ellip": (0.0125, 0.0237, 0.0455, 0.0766, 0.122, 0.1628, 0.1985, 0.2332, 0.2679, 0.3,
                  0.3325, 0.3697, 0.4039, 0.4362, 0.4734, 0.5113, 0.5498, 0.593, 0.6367, 0.6848,
                  0.7333, 0.784, 0.8204, 0.8509, 0.8698),
        "m_r": (-23.1005, -22.88, -22.62, -22.37, -22.04, -21.84, -21.6, -21.41, -21.22, -21.07,
                -20.91, -20.76, -20.59, -20.37, -20.05, -19.72, -19.45, -19.05, -18.62, -18.14,
                -17.62, -17.03, -16.54, -16.0, -15.6395),
        "g_i": (0.259, 0.309, 0.4, 0.46, 0.55, 0.61, 0.68, 0.75, 0.83, 0.91, 0.97, 1.04, 1.09,
                1.13, 1.16, 1.19, 1.22, 1.25, 1.28, 1.31, 1.35, 1.41, 1.54, 1.851, 2.1005),
    },
    "correlation": ((1.0, 0.121, 0.745, -0.165, -0.959, 0.744),
                    (0.121, 1.0, -0.207, 0.189, -0.173, -0.138),
                    (0.745, -0.207, 1.0, -0.11, -0.737, 0.612),
                    (-0.165, 0.189, -0.11, 1.0, 0.195, -0.049),
                    (-0.959, -0.173, -0.737, 0.195, 1.0, -0.566),
                    (0.744, -0.138, 0.612, -0.049, -0.566, 1.0)),
    "n_galaxies": 5391,
}


@dataclass(frozen=True)
class IFUInstrument:
    """What the IFU does to a galaxy: spaxel grid, bundle, seeing, spectral resolution.

    ``channel_kms`` is the spectral pixel in velocity (SAMI red arm 0.57 A, MaNGA
    d log10(lambda) = 1e-4), ``lsf_sigma_kms`` the instrumental line width (sigma) at
    H-alpha, ``beam_fwhm`` the median seeing FWHM and its per-galaxy scatter and range.
    """

    name: str
    pixel_scale: float
    lsf_sigma_kms: float
    channel_kms: float
    beam_fwhm: float
    beam_fwhm_scatter: float
    beam_fwhm_range: tuple[float, float]
    flux_unit: str
    flux_scale: float  # survey flux unit in 1e-17 erg/s/cm2


#: MaNGA's EMLINE_INSTSIGMA at H-alpha as ``io.manga`` writes it (R = 1931); the true LSF is
#: 1.045 times wider (SCIENCE.md section 4: the study widens the DAP's LSF by 1.045).
MANGA_INSTSIGMA_KMS = 65.93
MANGA_LSF_WIDENING = 1.045

INSTRUMENTS = {
    "sami": IFUInstrument("sami", 0.5, 28.0, 26.0, 2.0, 0.3, (1.4, 3.2), "1e-16 erg/s/cm2/spaxel", 10.0),
    "manga": IFUInstrument("manga", 0.5, round(MANGA_INSTSIGMA_KMS * MANGA_LSF_WIDENING, 2), 69.0, 2.5, 0.15,
                           (2.1, 3.2), "1E-17 erg/s/cm^2/spaxel", 1.0),
}
#: SAMI hexabundle (61 fibres): ~15" across, on 50 x 50 spaxel maps.
SAMI_BUNDLE_ARCSEC = 15.0
#: MaNGA bundles: fibres -> diameter (arcsec); maps 50 x 50 up to 61 fibres, else 74 x 74.
MANGA_BUNDLES = {19: 12.5, 37: 17.5, 61: 22.5, 91: 27.5, 127: 32.5}
#: MaNGA targets 1.5 Re (Primary, 2/3 of the sample) or 2.5 Re (Secondary) with its bundle.
MANGA_PRIMARY_FRACTION = 2 / 3


@dataclass
class MockIFURelease:
    """Files of a mock IFU release: root, map files, catalogue and truth table."""

    root: Path
    files: list[str]
    catalogue: Path
    truth: Path


# --------------------------------------------------------------------------------- population
def fit_population(catalogue_csv: str | os.PathLike) -> dict[str, Any]:
    """Fit the population model of :data:`POPULATION` to a SAMI input catalogue (CSV).

    Parameters
    ----------
    catalogue_csv : path
        ``sami_InputCatGAMADR3.csv`` or a catalogue with the same columns.

    Returns
    -------
    dict
        The same keys as :data:`POPULATION` (quantiles rounded to 1e-4, correlations to 1e-3).
    """
    table = pd.read_csv(catalogue_csv)
    cols = ["mstar", "r_e", "z_spec", "ellip", "m_r", "g_i", "pa"]
    data = table[cols].apply(pd.to_numeric, errors="coerce")
    data = data[np.isfinite(data).all(axis=1) & (data["mstar"] >= 7.5) & (data["r_e"] > 0)]
    x = np.array(data[["mstar", "r_e", "z_spec", "ellip", "m_r", "g_i"]], dtype=float)
    x[:, 1] = np.log10(x[:, 1])
    levels = POPULATION["levels"]
    quantiles = np.quantile(x, levels, axis=0)
    ranks = pd.DataFrame(x).rank(method="average").to_numpy()
    scores = norm.ppf((ranks - 0.5) / len(x))
    corr = np.corrcoef(scores.T)
    return {
        "columns": POPULATION_COLUMNS,
        "levels": tuple(levels),
        "quantiles": {c: tuple(np.round(quantiles[:, k], 4).tolist()) for k, c in enumerate(POPULATION_COLUMNS)},
        "correlation": tuple(tuple(row) for row in np.round(corr, 3).tolist()),
        "n_galaxies": int(len(x)),
    }


def _draw_copula(n: int, rng: np.random.Generator, population: dict[str, Any]) -> pd.DataFrame:
    corr = np.asarray(population["correlation"], dtype=float)
    scores = rng.standard_normal((n, len(corr))) @ np.linalg.cholesky(corr).T
    u = norm.cdf(scores)
    levels = np.asarray(population["levels"])
    return pd.DataFrame({c: np.interp(u[:, k], levels, population["quantiles"][c])
                         for k, c in enumerate(population["columns"])})


def inclination_from_ellipticity(ellip, q0: float = Q0) -> np.ndarray:
    """Inclination (deg) of a disc of intrinsic axis ratio ``q0`` seen with ellipticity ``ellip``.

    cos^2 i = ((1 - e)^2 - q0^2) / (1 - q0^2), clipped to [0, 1].

    Examples
    --------
    >>> inclination_from_ellipticity([0.0, 0.8, 0.95]).round(1).tolist()
    [0.0, 90.0, 90.0]
    """
    q = 1.0 - np.asarray(ellip, dtype=float)
    cos2 = np.clip((q**2 - q0**2) / (1.0 - q0**2), 0.0, 1.0)
    return np.degrees(np.arccos(np.sqrt(cos2)))


def _apparent_axis_ratio(inc_deg, q0: float = Q0):
    inc = np.radians(inc_deg)
    return np.sqrt(np.cos(inc) ** 2 + (q0 * np.sin(inc)) ** 2)


def _manga_bundle(r_e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smallest MaNGA bundle covering 1.5 Re (Primary) or 2.5 Re (Secondary); 127 if none."""
    reach = np.where(rng.uniform(size=len(r_e)) < MANGA_PRIMARY_FRACTION, 1.5, 2.5) * r_e
    fibres = np.array(sorted(MANGA_BUNDLES))
    diameters = np.array([MANGA_BUNDLES[f] for f in fibres])
    k = np.searchsorted(diameters / 2.0, reach)
    return fibres[np.minimum(k, len(fibres) - 1)]


def draw_population(n: int, rng: np.random.Generator, survey: str = "sami",
                    population: dict[str, Any] | None = None) -> pd.DataFrame:
    """Draw ``n`` mock galaxies: everything needed to render them, and their truth.

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator
    survey : {"sami", "manga"}
        Sets the seeing, the bundle (MaNGA: by Re) and the map size.
    population : dict, optional
        A :func:`fit_population` result; :data:`POPULATION` by default.

    Returns
    -------
    pandas.DataFrame
        One row per galaxy; the columns are the keys :func:`render_galaxy` reads (see
        :data:`DEFAULT_GALAXY`) plus the catalogue quantities (``ellip``, ``pa_phot_deg``,
        ``r_e_arcsec``, ``abs_mag_r``, ``g_i``, ``ra``, ``dec``, ``log_vmax_offset``).
    """
    instrument = INSTRUMENTS[survey]
    pop = _draw_copula(n, rng, population or POPULATION)
    tfr = TFR_INJECTED
    r_e = 10 ** pop["log_r_e"].to_numpy()
    r_scale = r_e / RE_PER_RSCALE
    log_vmax_offset = rng.normal(0.0, tfr["scatter_dex"], n)
    log_mstar = pop["mstar"].to_numpy()
    vmax = 10 ** (tfr["intercept"] + tfr["slope"] * (log_mstar - tfr["pivot"]) + log_vmax_offset)
    pa_phot = rng.uniform(0.0, 180.0, n)
    # Kinematic PA: the photometric major axis, either sense, misaligned by a few degrees.
    pa_kin = np.mod(pa_phot + 180.0 * rng.integers(0, 2, n) + rng.normal(0.0, 3.0, n), 360.0)
    types = np.array(list(RC_TYPE_FRACTIONS))
    rc_type = types[rng.choice(len(types), n, p=list(RC_TYPE_FRACTIONS.values()))]
    r_turn = np.where(rc_type == "declining", rng.uniform(0.1, 0.3, n), rng.uniform(0.2, 1.5, n)) * r_scale
    rc_param = np.select([rc_type == "rising", rc_type == "declining"],
                         [rng.uniform(0.02, 0.06, n), rng.uniform(0.3, 0.5, n)], 0.0)
    disturbed = rng.uniform(size=n) < DISTURBED_FRACTION
    kind = np.where(rng.uniform(size=n) < 0.5, "twist", "noncircular")
    disturbance = np.where(disturbed, kind, "none")
    amp = np.select([disturbance == "twist", disturbance == "noncircular"],
                    [rng.uniform(20.0, 50.0, n) * rng.choice([-1.0, 1.0], n), rng.uniform(0.15, 0.35, n)], 0.0)
    lo, hi = instrument.beam_fwhm_range
    table = pd.DataFrame({
        "log_mstar": log_mstar,
        "z": pop["z_spec"].to_numpy(),
        "ellip": pop["ellip"].to_numpy(),
        "inc_deg": inclination_from_ellipticity(pop["ellip"].to_numpy()),
        "pa_phot_deg": pa_phot,
        "pa_deg": pa_kin,
        "r_e_arcsec": r_e,
        "r_scale_arcsec": r_scale,
        "vmax_kms": vmax,
        "log_vmax_offset": log_vmax_offset,
        "r_turn_arcsec": r_turn,
        "rc_type": rc_type,
        "rc_param": rc_param,
        "sigma_gas_kms": rng.uniform(15.0, 50.0, n),
        "sigma_gas_excess_kms": rng.uniform(0.0, 15.0, n),
        "beam_fwhm_arcsec": np.clip(rng.normal(instrument.beam_fwhm, instrument.beam_fwhm_scatter, n), lo, hi),
        "abs_mag_r": pop["m_r"].to_numpy(),
        "g_i": pop["g_i"].to_numpy(),
        "clumpy": rng.uniform(size=n) < CLUMPY_FRACTION,
        "disturbed": disturbed,
        "disturbance": disturbance,
        "disturbance_amp": amp,
        "disturbance_angle_deg": rng.uniform(0.0, 180.0, n),
        "disturbance_radius_arcsec": rng.uniform(1.0, 2.0, n) * r_scale,
        "flux_total": 10 ** rng.normal(2.8, 0.4, n),
        # S/N of the (unconvolved) exponential reaches 3 at this many scale lengths.
        "detection_scalelengths": rng.uniform(2.5, 5.0, n),
        "x0_arcsec": rng.normal(0.0, 0.15, n),
        "y0_arcsec": rng.normal(0.0, 0.15, n),
        "vsys_offset_kms": rng.normal(0.0, 5.0, n),
        "ra": rng.uniform(129.0, 223.0, n) if survey == "sami" else rng.uniform(0.0, 360.0, n),
        "dec": rng.uniform(-2.0, 3.0, n) if survey == "sami" else np.degrees(np.arcsin(rng.uniform(-0.17, 0.94, n))),
    })
    if survey == "manga":
        fibres = _manga_bundle(r_e, rng)
        table["bundle_fibres"] = fibres
        table["bundle_arcsec"] = [MANGA_BUNDLES[f] for f in fibres]
        table["grid"] = np.where(fibres <= 61, 50, 74)
    else:
        table["bundle_fibres"] = 61
        table["bundle_arcsec"] = SAMI_BUNDLE_ARCSEC
        table["grid"] = 50
    return table


#: A face-value galaxy: what :func:`render_galaxy` uses for any key ``params`` leaves out.
DEFAULT_GALAXY: dict[str, Any] = {
    "inc_deg": 60.0, "pa_deg": 0.0, "r_scale_arcsec": 2.0, "vmax_kms": 180.0, "r_turn_arcsec": 1.0,
    "rc_type": "arctan", "rc_param": 0.0, "sigma_gas_kms": 25.0, "sigma_gas_excess_kms": 0.0,
    "beam_fwhm_arcsec": 2.0, "clumpy": False, "disturbance": "none", "disturbance_amp": 0.0,
    "disturbance_angle_deg": 0.0, "disturbance_radius_arcsec": 3.0, "flux_total": 600.0,
    "detection_scalelengths": 4.0, "x0_arcsec": 0.0, "y0_arcsec": 0.0, "vsys_offset_kms": 0.0,
    "bundle_arcsec": None, "grid": 50, "r_e_arcsec": None, "z": 0.05,
}


# ------------------------------------------------------------------------------ the galaxy
def rotation_curve(r, vmax: float, r_turn: float, rc_type: str = "arctan", rc_param: float = 0.0,
                   r_scale: float = 1.0) -> np.ndarray:
    """Circular velocity (km/s) at disc radius ``r`` (same unit as ``r_turn``, ``r_scale``).

    ``arctan``: (2/pi) Vmax arctan(r/r_t) (the shape the kinematics model decodes);
    ``tanh``: Vmax tanh(r/r_t); ``rising``: the arctan plus ``rc_param`` Vmax per scale length,
    still rising at the edge; ``declining``: the arctan times 1 + ``rc_param`` exp(-r / 3 r_scale),
    a peak above Vmax falling back to it (bulge-dominated). ``vmax`` is the TFR velocity in all.

    Examples
    --------
    >>> float(rotation_curve(1.0, 200.0, 1.0))
    100.0
    """
    r = np.abs(np.asarray(r, dtype=float))
    x = r / r_turn
    if rc_type == "arctan":
        shape = (2.0 / np.pi) * np.arctan(x)
    elif rc_type == "tanh":
        shape = np.tanh(x)
    elif rc_type == "rising":
        shape = (2.0 / np.pi) * np.arctan(x) + rc_param * r / r_scale
    elif rc_type == "declining":
        shape = (2.0 / np.pi) * np.arctan(x) * (1.0 + rc_param * np.exp(-r / (3.0 * r_scale)))
    else:
        raise ValueError(f"unknown rotation-curve type {rc_type!r}")
    return vmax * shape


def footprint(grid: int, pixel_scale: float, survey: str, bundle_arcsec: float) -> np.ndarray:
    """Spaxels (grid, grid) inside the fibre bundle: SAMI a circle, MaNGA a hexagon (corner on x)."""
    c = (np.arange(grid) - (grid - 1) / 2.0) * pixel_scale
    x, y = np.meshgrid(c, c)
    radius = bundle_arcsec / 2.0
    if survey == "sami":
        return np.hypot(x, y) <= radius
    ax, ay = np.abs(x), np.abs(y)
    return (ay <= np.sqrt(3.0) / 2.0 * radius) & (np.sqrt(3.0) * ax + ay <= np.sqrt(3.0) * radius)


def _sky_to_disc(x: np.ndarray, y: np.ndarray, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Disc-plane radius (arcsec) and azimuth (rad, 0 on the receding major axis) of sky points."""
    pa = np.radians(p["pa_deg"])
    dx, dy = x - p["x0_arcsec"], y - p["y0_arcsec"]
    major = -dx * np.sin(pa) + dy * np.cos(pa)
    minor = dx * np.cos(pa) + dy * np.sin(pa)
    minor = minor / _apparent_axis_ratio(p["inc_deg"])
    return np.hypot(major, minor), np.arctan2(minor, major)


def _clump_factor(radius, theta, p, rng) -> tuple[np.ndarray, int]:
    """1 + a sum of Gaussian clumps in the disc plane, spread like the exponential disc."""
    n = int(rng.integers(3, 11))
    r_k = p["r_scale_arcsec"] * rng.gamma(2.0, 1.0, n)
    t_k = rng.uniform(0.0, 2 * np.pi, n)
    width = rng.uniform(0.3, 0.8, n)
    amp = rng.uniform(1.0, 4.0, n)
    xd, yd = radius * np.cos(theta), radius * np.sin(theta)
    d2 = (xd[..., None] - r_k * np.cos(t_k)) ** 2 + (yd[..., None] - r_k * np.sin(t_k)) ** 2
    return 1.0 + (amp * np.exp(-0.5 * d2 / width**2)).sum(-1), n


def _line_of_sight(radius, theta, p) -> np.ndarray:
    """Line-of-sight velocity (km/s) of the gas at disc radius/azimuth, systemic offset included."""
    vc = rotation_curve(radius, p["vmax_kms"], p["r_turn_arcsec"], p["rc_type"], p["rc_param"],
                        p["r_scale_arcsec"])
    sin_i = np.sin(np.radians(p["inc_deg"]))
    kind = p["disturbance"]
    if kind == "twist":  # the rotation axis turns with radius: a kinematic PA twist of up to amp deg
        rw = p["disturbance_radius_arcsec"]
        phase = np.radians(p["disturbance_amp"]) * radius**2 / (radius**2 + rw**2)
        v = vc * np.cos(theta - phase)
    elif kind == "noncircular":  # bisymmetric (bar-like) flow, Spekkens & Sellwood (2007)
        rb = p["disturbance_radius_arcsec"]
        v2 = p["disturbance_amp"] * vc * (radius / rb) * np.exp(1.0 - radius / rb)
        tb = 2.0 * (theta - np.radians(p["disturbance_angle_deg"]))
        v = vc * np.cos(theta) - v2 * np.cos(tb) * np.cos(theta) - v2 * np.sin(tb) * np.sin(theta)
    else:
        v = vc * np.cos(theta)
    return v * sin_i + p["vsys_offset_kms"]


def _sigma_gas(radius, p) -> np.ndarray:
    """Intrinsic gas dispersion (km/s): a floor plus a central excess falling over one scale length."""
    return p["sigma_gas_kms"] + p["sigma_gas_excess_kms"] * np.exp(-radius / p["r_scale_arcsec"])


# --------------------------------------------------------------------------------- rendering
_OVERSAMPLE = 3


def _render_cube(p: dict[str, Any], instrument: IFUInstrument, fp: np.ndarray, rng: np.random.Generator,
                 psf: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Noise-free cube (ny, nx, nv) in flux per km/s, its velocity channels, the number of clumps."""
    grid, ps = fp.shape[0], instrument.pixel_scale
    sigma_psf = p["beam_fwhm_arcsec"] / (2.0 * np.sqrt(2.0 * np.log(2.0))) / ps if psf else 0.0
    # Spaxels that can send light into the bundle: the footprint grown by 3 sigma of the seeing.
    margin = int(np.ceil(3.0 * sigma_psf)) + 1
    yy, xx = np.nonzero(fp)
    active = np.zeros_like(fp)
    active[max(yy.min() - margin, 0): yy.max() + margin + 1, max(xx.min() - margin, 0): xx.max() + margin + 1] = True
    iy, ix = np.nonzero(active)
    sub = ((np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5) * ps
    sx, sy = np.meshgrid(sub, sub)
    centre = (grid - 1) / 2.0
    x = ((ix - centre) * ps)[:, None] + sx.ravel()
    y = ((iy - centre) * ps)[:, None] + sy.ravel()
    radius, theta = _sky_to_disc(x, y, p)
    q = _apparent_axis_ratio(p["inc_deg"])
    r_s = p["r_scale_arcsec"]
    surface = p["flux_total"] / instrument.flux_scale / (2 * np.pi * r_s**2 * q) * np.exp(-radius / r_s)
    n_clumps = 0
    if p["clumpy"]:
        factor, n_clumps = _clump_factor(radius, theta, p, rng)
        surface = surface * factor
    sub_flux = surface * (ps / _OVERSAMPLE) ** 2
    v_los = _line_of_sight(radius, theta, p)
    s_tot = np.sqrt(_sigma_gas(radius, p) ** 2 + instrument.lsf_sigma_kms**2)
    dv = instrument.channel_kms
    half = int(np.ceil((np.abs(v_los).max() + 5.0 * s_tot.max()) / dv))
    velocity = dv * np.arange(-half, half + 1)
    profile = np.exp(-0.5 * ((velocity - v_los[..., None]) / s_tot[..., None]) ** 2)
    profile *= (sub_flux / (np.sqrt(2 * np.pi) * s_tot))[..., None]
    cube = np.zeros((grid, grid, len(velocity)))
    cube[iy, ix] = profile.sum(axis=1)
    if psf:
        cube = gaussian_filter(cube, sigma=(sigma_psf, sigma_psf, 0.0), mode="constant", truncate=4.0)
    return cube, velocity, n_clumps


def _fit_gaussians(spec: np.ndarray, velocity: np.ndarray, noise: float, s_range: tuple[float, float],
                   n_iter: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares Gaussian (A, mu, s) per spectrum (rows of ``spec``), Levenberg-Marquardt, batched.

    Starts from the moments within 3 ``s_range[0]`` of the peak channel; ``s`` is kept within
    ``s_range``. Returns the parameters (n, 3) and their covariance (n, 3, 3) for white noise
    ``noise`` per channel.
    """
    n = len(spec)
    s_lo, s_hi = s_range
    peak = np.argmax(spec, axis=1)
    near = np.abs(velocity - velocity[peak][:, None]) <= 3.0 * s_lo
    w = np.where(near, np.clip(spec, 0.0, None), 0.0)
    wsum = np.maximum(w.sum(1), 1e-30)
    mu = (w * velocity).sum(1) / wsum
    s = np.clip(np.sqrt((w * (velocity - mu[:, None]) ** 2).sum(1) / wsum), s_lo, s_hi)
    amp = np.maximum(spec[np.arange(n), peak], noise)
    p = np.stack([amp, mu, s], axis=1)
    v_lo, v_hi = velocity[0], velocity[-1]

    def model(p):
        g = np.exp(-0.5 * ((velocity - p[:, 1:2]) / p[:, 2:3]) ** 2)
        return p[:, 0:1] * g, g

    def jacobian(p, g):
        d = velocity - p[:, 1:2]
        a, s = p[:, 0:1], p[:, 2:3]
        return np.stack([g, a * g * d / s**2, a * g * d**2 / s**3], axis=2)

    m, g = model(p)
    chi2 = ((spec - m) ** 2).sum(1)
    lam = np.full(n, 1e-2)
    eye = np.eye(3)
    for _ in range(n_iter):
        jac = jacobian(p, g)
        jac_t = jac.transpose(0, 2, 1)
        jtj = jac_t @ jac
        jtr = (jac_t @ (spec - m)[..., None])[..., 0]
        damped = jtj + lam[:, None, None] * (jtj * eye + 1e-12 * eye)
        step = np.linalg.solve(damped, jtr[..., None])[..., 0]
        trial = p + step
        trial[:, 1] = np.clip(trial[:, 1], v_lo, v_hi)
        trial[:, 2] = np.clip(trial[:, 2], s_lo, s_hi)
        m_t, g_t = model(trial)
        chi2_t = ((spec - m_t) ** 2).sum(1)
        better = chi2_t < chi2
        p = np.where(better[:, None], trial, p)
        m = np.where(better[:, None], m_t, m)
        g = np.where(better[:, None], g_t, g)
        chi2 = np.where(better, chi2_t, chi2)
        lam = np.where(better, lam * 0.3, lam * 10.0)
    jac = jacobian(p, g)
    jtj = jac.transpose(0, 2, 1) @ jac + 1e-30 * eye
    with np.errstate(all="ignore"):
        cov = noise**2 * np.linalg.pinv(jtj)
    return p, cov


def _measure_maps(cube: np.ndarray, velocity: np.ndarray, noise: float, fp: np.ndarray,
                  instrument: IFUInstrument) -> dict[str, np.ndarray]:
    """The survey pipeline: one Gaussian per footprint spaxel -> flux, velocity, dispersion and errors."""
    lsf = instrument.lsf_sigma_kms
    dv = velocity[1] - velocity[0]
    p, cov = _fit_gaussians(cube[fp], velocity, noise, (0.5 * lsf, 0.5 * (velocity[-1] - velocity[0])))
    amp, mu, s = p.T
    root2pi = np.sqrt(2 * np.pi)
    flux = root2pi * amp * s
    grad = np.stack([root2pi * s, np.zeros_like(s), root2pi * amp], axis=1)
    with np.errstate(all="ignore"):
        flux_err = np.sqrt(((cov @ grad[..., None])[..., 0] * grad).sum(1))
        v_err = np.sqrt(cov[:, 1, 1])
        s_err = np.sqrt(cov[:, 2, 2])
    if instrument.name == "sami":  # SAMI publishes the dispersion corrected for the LSF
        disp = np.sqrt(np.clip(s**2 - lsf**2, 0.0, None))
        disp_err = np.where(disp > 0.1 * lsf, s * s_err / np.maximum(disp, 0.1 * lsf), s_err)
    else:  # MaNGA's EMLINE_GSIGMA is not (EMLINE_INSTSIGMA is given beside it)
        disp, disp_err = s, s_err
    good = (np.isfinite(flux_err) & (flux_err > 0) & (flux > SNR_MASK * flux_err)
            & np.isfinite(v_err) & np.isfinite(s_err) & (s > 0.5 * lsf * 1.0001)
            & (mu > velocity[0] + dv) & (mu < velocity[-1] - dv))
    maps = {}
    for name, values in (("flux", flux), ("flux_err", flux_err), ("velocity", mu), ("velocity_err", v_err),
                         ("dispersion", disp), ("dispersion_err", disp_err)):
        full = np.full(fp.shape, np.nan)
        full[fp] = np.where(good, values, np.nan)
        maps[name] = full
    maps["good"] = np.zeros(fp.shape, dtype=bool)
    maps["good"][fp] = good
    return maps


def render_galaxy(params: dict[str, Any], survey: str, rng: np.random.Generator, *, psf: bool = True,
                  noise: bool = True) -> tuple[IFUMaps, dict[str, Any]]:
    """Observe one mock galaxy with an IFU: H-alpha maps as the survey pipeline measures them, and its truth.

    Parameters
    ----------
    params : dict
        Galaxy parameters (a :func:`draw_population` row); keys left out take the values of
        :data:`DEFAULT_GALAXY`. Angles in deg, lengths in arcsec, velocities in km/s.
    survey : {"sami", "manga"}
        The instrument: spaxels, bundle footprint, LSF, channel width, flux unit.
    rng : numpy.random.Generator
        Noise and clump positions.
    psf : bool
        Convolve with the seeing (``beam_fwhm_arcsec``); False for an ideal instrument.
    noise : bool
        Add noise to the cube; without it the maps are the noise-free measurement, and the
        errors and S/N mask still those of the noise level the galaxy would have.

    Returns
    -------
    maps : IFUMaps
        NaN and ``good = False`` outside the bundle and below S/N 3. MaNGA's dispersion is
        the fitted line width (its instrumental sigma is ``meta["instsigma"]``), SAMI's has the
        LSF removed in quadrature, as each survey publishes.
    truth : dict
        ``params`` completed, plus ``v22_kms`` (V at 2.2 r_scale from the curve used),
        ``r_max_arcsec`` (largest disc radius whose expected H-alpha S/N >= 3 in the bundle),
        ``sigma_outer_kms`` (mean intrinsic dispersion of those spaxels between 2 Re and
        r_max - r_max/2 to r_max when r_max < 2 Re), ``v_rmax_kms``, ``n_clumps``,
        ``noise_per_channel``, ``lsf_sigma_kms``, ``n_good``.
    """
    instrument = INSTRUMENTS[survey]
    p = {**DEFAULT_GALAXY, **params}
    if p["r_e_arcsec"] is None:
        p["r_e_arcsec"] = p["r_scale_arcsec"] * RE_PER_RSCALE
    if p["bundle_arcsec"] is None:
        p["bundle_arcsec"] = SAMI_BUNDLE_ARCSEC if survey == "sami" else MANGA_BUNDLES[61]
    grid = int(p["grid"])
    fp = footprint(grid, instrument.pixel_scale, survey, p["bundle_arcsec"])
    cube, velocity, n_clumps = _render_cube(p, instrument, fp, rng, psf)
    dv = instrument.channel_kms
    # Noise per channel: the unconvolved smooth disc's flux S/N falls to 3 at
    # ``detection_scalelengths`` scale lengths (flux error of a Gaussian line of width s_ref).
    q = _apparent_axis_ratio(p["inc_deg"])
    centre_flux = (p["flux_total"] / instrument.flux_scale / (2 * np.pi * p["r_scale_arcsec"] ** 2 * q)
                   * instrument.pixel_scale**2)
    flux_err = centre_flux * np.exp(-p["detection_scalelengths"]) / SNR_MASK
    s_ref = np.hypot(p["sigma_gas_kms"], instrument.lsf_sigma_kms)
    sigma_n = flux_err / np.sqrt(2.0 * np.sqrt(np.pi) * s_ref * dv)
    observed = cube
    if noise:
        observed = cube.copy()
        observed[fp] += rng.normal(0.0, sigma_n, (int(fp.sum()), len(velocity)))
    maps = _measure_maps(observed, velocity, sigma_n, fp, instrument)

    # Truth on the spaxel grid: disc radius of each spaxel centre, expected S/N of its flux.
    c = (np.arange(grid) - (grid - 1) / 2.0) * instrument.pixel_scale
    radius, _ = _sky_to_disc(*np.meshgrid(c, c), p)
    r_s, r_e = p["r_scale_arcsec"], p["r_e_arcsec"]
    s_spaxel = np.hypot(_sigma_gas(radius, p), instrument.lsf_sigma_kms)
    expected_snr = cube.sum(axis=2) * dv / (sigma_n * np.sqrt(2.0 * np.sqrt(np.pi) * s_spaxel * dv))
    detected = fp & (expected_snr >= SNR_MASK)
    r_max = float(radius[detected].max()) if detected.any() else 0.0
    inner = 2.0 * r_e if r_max >= 2.0 * r_e else 0.5 * r_max
    ring = detected & (radius >= inner) & (radius <= r_max)
    sigma_outer = float(_sigma_gas(radius[ring], p).mean()) if ring.any() else float("nan")
    curve = (p["vmax_kms"], p["r_turn_arcsec"], p["rc_type"], p["rc_param"], r_s)
    truth = {**p, "survey": survey, "v22_kms": float(rotation_curve(2.2 * r_s, *curve)),
             "v_rmax_kms": float(rotation_curve(r_max, *curve)), "r_max_arcsec": r_max,
             "sigma_outer_kms": sigma_outer, "n_clumps": n_clumps, "noise_per_channel": float(sigma_n),
             "lsf_sigma_kms": instrument.lsf_sigma_kms, "n_good": int(maps["good"].sum())}
    ifu = IFUMaps(maps["flux"], maps["flux_err"], maps["velocity"], maps["velocity_err"], maps["dispersion"],
                  maps["dispersion_err"], maps["good"], instrument.pixel_scale, _meta(p, survey))
    return ifu, truth


def _meta(p: dict[str, Any], survey: str) -> dict[str, Any]:
    """``IFUMaps.meta`` as the survey's reader gives it (what the writers need for the header)."""
    instrument = INSTRUMENTS[survey]
    meta = {"survey": survey, "ra": float(p.get("ra", np.nan)), "dec": float(p.get("dec", np.nan)),
            "z": float(p["z"]), "flux_unit": instrument.flux_unit, "file": ""}
    if survey == "sami":
        return {**meta, "id": int(p.get("catid", 0)), "catid": int(p.get("catid", 0))}
    return {**meta, "id": str(p.get("plateifu", "")), "plateifu": str(p.get("plateifu", "")),
            "mangaid": str(p.get("mangaid", "")), "objra": meta["ra"], "objdec": meta["dec"],
            "ecoopa": float(p.get("pa_phot_deg", np.nan)), "ecooell": float(p.get("ellip", np.nan)),
            "reff": float(p["r_e_arcsec"]), "dapqual": 0, "drp3qual": 0, "daptype": MANGA_DAPTYPE,
            "instsigma": MANGA_INSTSIGMA_KMS}


# ----------------------------------------------------------------------------------- release
MANGA_DAPTYPE = "HYB10-MILESHC-MASTARSSP"
#: Mock identifiers start beyond the real ones (GAMA CATIDs < 4e6, MaNGA plates < 16000).
FIRST_CATID = 9_000_001
FIRST_PLATE = 20001


def _assign_ids(table: pd.DataFrame, survey: str) -> pd.DataFrame:
    k = np.arange(len(table))
    if survey == "sami":
        return table.assign(catid=FIRST_CATID + k, galaxy_id=(FIRST_CATID + k).astype(str))
    plate = FIRST_PLATE + k // 10
    ifu = [f"{f}{j % 10 + 1:02d}" for f, j in zip(table["bundle_fibres"], k)]
    plateifu = [f"{a}-{b}" for a, b in zip(plate, ifu)]
    return table.assign(plate=plate, ifudesign=ifu, plateifu=plateifu, mangaid=[f"1-{100000 + j}" for j in k],
                        galaxy_id=plateifu)


def _write_galaxy(maps: IFUMaps, p: dict[str, Any], survey: str, root: Path) -> dict[str, str]:
    """Write one galaxy's map files; their paths relative to the release root."""
    if survey == "sami":
        written = write_sami_maps(root / "ifs" / str(p["catid"]), int(p["catid"]), maps, cube="A", overwrite=True)
        rel = [str(w.relative_to(root)) for w in written]
        return {"file": rel[0], "file_velocity": rel[1], "file_dispersion": rel[2]}
    name = f"manga-{p['plate']}-{p['ifudesign']}-MAPS-{MANGA_DAPTYPE}.fits.gz"
    path = root / MANGA_DAPTYPE / str(p["plate"]) / str(p["ifudesign"]) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_manga_maps(path, maps, overwrite=True)
    return {"file": str(path.relative_to(root))}


def _render_block(rows: pd.DataFrame, survey: str, root: str) -> list[dict[str, Any]]:
    """Render and write one block of galaxies (runs on a worker); their truth records."""
    records = []
    for params in rows.to_dict("records"):
        maps, truth = render_galaxy(params, survey, np.random.default_rng(int(params["seed"])))
        files = _write_galaxy(maps, params, survey, Path(root))
        records.append({**truth, **files})
    return records


def _catalogue(truth: pd.DataFrame, survey: str, rng: np.random.Generator) -> pd.DataFrame:
    """What the survey publishes about the galaxies (never the kinematic truth)."""
    if survey == "sami":
        return pd.DataFrame({"catid": truth["catid"], "ra_obj": truth["ra"], "dec_obj": truth["dec"],
                             "z_spec": truth["z"], "m_r": truth["abs_mag_r"], "r_e": truth["r_e_arcsec"],
                             "ellip": truth["ellip"], "pa": truth["pa_phot_deg"], "mstar": truth["log_mstar"],
                             "g_i": truth["g_i"]})
    # NSA: h = 1 magnitudes (M - 5 log10 h) and masses in Msun h^-2; FNugriz colours from g-i
    # by rough linear relations (only the r band is used downstream).
    m_r = truth["abs_mag_r"].to_numpy() - 5 * np.log10(0.7)
    gi = truth["g_i"].to_numpy()
    absmag = np.stack([m_r + 1.9 + 3.0 * gi, m_r + 1.5 + 3.0 * gi, m_r + 1.0 + 1.4 * gi, m_r + 0.7 * gi, m_r,
                       m_r - 0.3 * gi, m_r - 0.5 * gi], axis=1).astype(np.float32)
    mass = 10 ** truth["log_mstar"].to_numpy() * 0.7**2
    return pd.DataFrame({
        "plateifu": truth["plateifu"], "mangaid": truth["mangaid"], "plate": truth["plate"],
        "ifudsgn": truth["ifudesign"], "objra": truth["ra"], "objdec": truth["dec"], "z": truth["z"],
        "nsa_z": truth["z"], "nsa_elpetro_mass": mass,
        "nsa_sersic_mass": mass * 10 ** rng.normal(0.0, 0.05, len(truth)),
        "nsa_elpetro_ba": 1.0 - truth["ellip"], "nsa_elpetro_phi": truth["pa_phot_deg"],
        "nsa_elpetro_th50_r": truth["r_e_arcsec"], "nsa_elpetro_absmag": list(absmag),
        "drp3qual": np.zeros(len(truth), dtype=np.int64)})


def simulate_ifu_release(out_dir: str | os.PathLike, n: int, survey: str = "sami", seed: int = 0, client=None,
                         block_size: int = 50, progress: bool = False) -> MockIFURelease:
    """Write a mock SAMI DR3 or MaNGA DR17 release of ``n`` galaxies, in the survey's own files, with truth.

    Parameters
    ----------
    out_dir : path
        Release root. SAMI: ``ifs/{catid}/{catid}_A_{Halpha,gas-velocity,gas-vdisp}_default_1-comp.fits``
        and ``InputCatGAMADR3.csv``; MaNGA: ``HYB10-MILESHC-MASTARSSP/{plate}/{ifu}/manga-{plate}-{ifu}-
        MAPS-HYB10-MILESHC-MASTARSSP.fits.gz`` and ``drpall-v3_1_1.fits``; both ``truth.parquet``.
    n : int
        Number of galaxies.
    survey : {"sami", "manga"}
    seed : int
        The same seed and ``n`` give identical files and truth, on any number of workers.
    client : distributed.Client, optional
        Render blocks in parallel there (else in this process).
    block_size : int
        Galaxies per task.
    progress : bool
        Progress bar.

    Returns
    -------
    MockIFURelease
        ``files`` has one path per galaxy, the one its survey's reader takes (SAMI: the Halpha
        map, MaNGA: the MAPS file). The truth table has one row per galaxy: identifiers, every
        :func:`draw_population` column, what :func:`render_galaxy` adds (``v22_kms``,
        ``r_max_arcsec``, ``sigma_outer_kms``, ...) and ``file`` (+ SAMI ``file_velocity``,
        ``file_dispersion``) relative to the root.
    """
    if survey not in INSTRUMENTS:
        raise ValueError(f"survey must be one of {sorted(INSTRUMENTS)}, not {survey!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    table = _assign_ids(draw_population(n, rng, survey), survey)
    table["seed"] = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    blocks = [(table.iloc[a: a + block_size], survey, str(root)) for a in range(0, n, block_size)]
    parts = run_blocks(_render_block, blocks, client, desc=f"simulate {survey}", progress=progress)
    truth = pd.DataFrame([r for part in parts for r in part])
    if survey == "sami":
        catalogue = write_sami_catalogue(root / "InputCatGAMADR3.csv", _catalogue(truth, survey, rng), overwrite=True)
    else:
        catalogue = write_drpall(root / "drpall-v3_1_1.fits", _catalogue(truth, survey, rng), overwrite=True)
    truth.to_parquet(root / "truth.parquet", index=False)
    return MockIFURelease(root=root, files=[str(root / f) for f in truth["file"]], catalogue=Path(catalogue),
                          truth=root / "truth.parquet")
