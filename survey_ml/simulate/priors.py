"""Astrophysical priors of the bagpipes galaxy library: who the mock galaxies are.

Five populations are drawn in fixed target fractions (:data:`DEFAULT_FRACTIONS`):

``star_forming`` (0.55)
    Delayed-tau star formation history (SFR(t) ~ t exp(-t/tau)) caught on the rise or
    gently declining (age/tau <= 6), gas-phase metallicity on the Tremonti et al. (2004)
    mass-metallicity relation.
``passive`` (0.15)
    Delayed-tau history long since quenched (age/tau >= 10: the present SFR is ~0.1% of
    its peak or less, and H-alpha EW < 1 A), stellar metallicity on the Gallazzi et al. (2005)
    stellar mass-metallicity relation, little dust.
``post_starburst`` (0.05)
    A quenched host plus a burst 0.3-1 Gyr old holding 5-30% of the mass formed
    (E+A / K+A galaxies, French 2021): strong Balmer absorption, no O-star ionisation.
``composite`` (0.15)
    A star-forming host plus an AGN narrow-line region (Seyfert or LINER, even odds)
    that contributes 20-60% of the total H-alpha (Kauffmann et al. 2003 "composites").
``agn`` (0.10)
    An AGN narrow-line region dominating the lines (60-95% of H-alpha). LINERs (60%) sit
    mostly (80%) on old hosts, Seyferts (40%) mostly (70%) on star-forming hosts (Ho 2008;
    Kewley et al. 2006).

One metallicity ``Z`` (in units of Zsun) is used for every stellar component and the
nebular (CLOUDY) component of a galaxy: for galaxies with young stars it is the gas-phase
metallicity of the young population, and the label is ``oh12 = 8.69 + log10(Z/Zsun)``
(Asplund et al. 2009 solar oxygen abundance). For passive hosts ``Z`` is the stellar
metallicity and ``oh12`` is reported on the same scale, but it is not a gas-phase label.
Z is clipped to 0.2-2.5 Zsun (oh12 7.99-9.09), because bagpipes' nebular lines stop
changing above 2.5 Zsun (:data:`Z_RANGE`); the Tremonti MZR exceeds 9.09 above
log M* ~ 10.8, so about half of the most massive star-forming galaxies sit at the clip.

The ionisation parameter keeps the Dopita et al. (2006) anti-correlation with Z, but its
zero point (logU = -2.25 at solar) is calibrated on the bagpipes CLOUDY grid so that
mock star-forming galaxies land below the Kauffmann et al. (2003) line, where the BPT
label ``starforming`` puts real ones; see :func:`logu_from_metallicity`.

A quenched host is never *strictly* passive in an AGN galaxy: the AGN's narrow-line
H-alpha is tied to the host's H-alpha through the drawn AGN fraction f
(``L_AGN = f / (1 - f) L_host``), so an "old" AGN host keeps a trickle of star formation
(age/tau 7-10, host H-alpha EW ~ 0.5-8 A). With f = 0.6-0.95 the total H-alpha EW of a
LINER on such a host is 1-150 A; those below 3 A are classified ``passive`` (a "retired"
galaxy in the sense of Cid Fernandes et al. 2011), as they would be in SDSS.

Every draw of a galaxy uses its own generator, ``numpy.random.default_rng([seed, row,
attempt])``, so a row's parameters depend only on the library seed and the row number
(never on how rows are split over workers), and a failed spectrum is redrawn
deterministically with ``attempt + 1``. Population labels are assigned to rows in exact
proportions (largest remainder), then shuffled with ``default_rng(seed)``.

:data:`PRIORS` lists every prior as a table (parameter, population, distribution,
range, reference, and the numeric ``low``/``high`` the draws never leave);
:func:`priors_table_markdown` prints it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["POPULATIONS", "DEFAULT_FRACTIONS", "PRIORS", "PRIORS_VERSION", "OH12_SUN",
           "Z_RANGE", "LOGU_RANGE", "PRIOR_SETS", "BROAD", "BROAD_COLUMNS", "SFH_FAMILIES",
           "draw_broad_parameters", "draw_galaxy", "parameter_columns", "DUST_ETA", "PARAMETER_COLUMNS", "tremonti_oh12",
           "gallazzi_log_zstar", "logu_from_metallicity", "garn_best_a_halpha", "population_counts",
           "assign_populations", "draw_parameters", "draw_library_parameters",
           "priors_table_markdown", "row_rng", "typed_parameters", "MASS_PRIORS", "SFH_PRIORS",
           "BURST_AGE", "BURST_FRAC", "AGN_FRAC", "AGN_RATIOS", "AGN_SIGMA", "P_SEYFERT", "P_OLD_HOST"]

#: Bumped whenever a prior changes: it is part of every library's cache digest.
PRIORS_VERSION = 1

POPULATIONS = ("star_forming", "passive", "post_starburst", "composite", "agn")

#: Target fraction of each population in a library.
DEFAULT_FRACTIONS: dict[str, float] = {"star_forming": 0.55, "passive": 0.15, "post_starburst": 0.05,
                                       "composite": 0.15, "agn": 0.10}

#: 12 + log(O/H) of the Sun (Asplund et al. 2009); oh12 = OH12_SUN + log10(Z / Zsun).
OH12_SUN = 8.69
#: Metallicity range (Z / Zsun) of every galaxy. The top is 2.5, not 3: bagpipes' CLOUDY
#: grid node at 5 Zsun holds almost no line emission, so above its 2.5 Zsun node the line
#: *ratios* stay frozen at their 2.5 Zsun values while the line fluxes fall (measured:
#: identical [NII]/Ha and [OIII]/Hb at Z = 2.5, 3 and 4 Zsun). oh12 <= 9.09.
Z_RANGE = (0.2, 2.5)
#: Ionisation parameter range; the CLOUDY grid of bagpipes covers -4 to 0.
LOGU_RANGE = (-4.0, -2.0)
#: Birth-cloud factor of the bagpipes Calzetti model: lines and stars < 10 Myr see eta * Av.
DUST_ETA = 2.0
#: Calzetti et al. (2000) k(H-alpha) and R_V, to turn a nebular A(H-alpha) into a stellar A_V.
_K_HALPHA, _R_V = 3.326, 4.05

#: log10 M* (living stellar mass, Msun): normal (mean, sigma) truncated to [low, high].
MASS_PRIORS: dict[str, tuple[float, float, float, float]] = {
    "star_forming": (9.9, 0.6, 8.5, 11.5),
    "passive": (10.8, 0.4, 9.5, 11.8),
    "post_starburst": (10.3, 0.5, 9.0, 11.5),
    "composite": (10.5, 0.4, 9.5, 11.5),
    "agn": (10.7, 0.4, 9.8, 11.8),
}

#: Delayed-tau histories by host kind: age (Gyr) uniform, age/tau uniform (tau = age / ratio).
SFH_PRIORS: dict[str, dict[str, tuple[float, float]]] = {
    "star_forming": {"age": (1.0, 12.5), "age_over_tau": (0.5, 6.0)},
    "passive": {"age": (6.0, 12.5), "age_over_tau": (10.0, 30.0)},
    "post_starburst": {"age": (3.0, 12.5), "age_over_tau": (10.0, 30.0)},
    "old_agn_host": {"age": (8.0, 12.5), "age_over_tau": (7.0, 10.0)},
}
#: Post-starburst burst: age (Gyr) and fraction of the total mass formed, both uniform.
BURST_AGE, BURST_FRAC = (0.3, 1.0), (0.05, 0.30)
#: AGN share of the total (attenuated) H-alpha, uniform.
AGN_FRAC = {"composite": (0.2, 0.6), "agn": (0.6, 0.95)}
#: P(Seyfert) among the AGN of each population; the rest are LINERs.
P_SEYFERT = {"composite": 0.5, "agn": 0.4}
#: P(old, nearly quenched host) for the AGN population, by AGN type.
P_OLD_HOST = {"seyfert": 0.3, "liner": 0.8}
#: Narrow-line ratios before dust, log10 normal (mean, sigma), clipped at +-3 sigma.
AGN_RATIOS: dict[str, dict[str, tuple[float, float]]] = {
    "seyfert": {"log_nii_ha": (0.0, 0.15), "log_oiii_hb": (0.8, 0.2), "log_oii_oiii": (-0.5, 0.2),
                "log_sii_ha": (-0.3, 0.15)},
    "liner": {"log_nii_ha": (0.1, 0.15), "log_oiii_hb": (0.1, 0.15), "log_oii_oiii": (0.3, 0.2),
              "log_sii_ha": (-0.1, 0.15)},
}
#: Gaussian sigma of the AGN narrow lines (km/s), uniform.
AGN_SIGMA = (150.0, 400.0)

_TREMONTI = (-1.492, 1.847, -0.08026)
_MZR_SCATTER = 0.10
# Gallazzi et al. (2005), Table 2: median log(Z*/Zsun) of SDSS galaxies against log M*
# (values read at round masses; the relation flattens above 10^11 Msun).
_GALLAZZI_X = np.array([9.0, 9.5, 10.0, 10.5, 11.0, 11.5, 12.0])
_GALLAZZI_Y = np.array([-0.60, -0.60, -0.32, -0.01, 0.08, 0.13, 0.15])
_GALLAZZI_SCATTER = 0.15
_LOGU = (-2.25, -0.3, 0.15)   # logU = a + b log10(Z/Zsun) + N(0, c); see logu_from_metallicity
_SIGMA_QUIESCENT = (2.07, 0.286, 10.26, 0.07, 50.0, 400.0)   # log sigma = a + b (x - x0) + N(0, s), clip
_SIGMA_STARFORMING = (1.87, 0.286, 10.26, 0.10, 30.0, 300.0)
_AV_SF_SCATTER, _AV_SF_MAX = 0.17, 2.0
_AV_HALF_NORMAL = {"old": (0.2, 0.6), "post_starburst": (0.4, 1.2)}  # |N(0, s)| clipped at max

#: Columns of the parameter table, in order (dtypes as written to the truth table).
PARAMETER_COLUMNS: dict[str, str] = {
    "row": "int64", "population": "string", "attempt": "int8", "host": "string",
    "log_mstar": "float64", "age_gyr": "float64", "tau_gyr": "float64", "burst_age_gyr": "float64",
    "burst_frac": "float64", "metallicity": "float64", "oh12": "float64", "logu": "float64",
    "av": "float64", "dust_eta": "float64", "veldisp_kms": "float64", "agn_type": "string",
    "agn_frac": "float64", "agn_sigma_kms": "float64", "agn_log_nii_ha": "float64",
    "agn_log_oiii_hb": "float64", "agn_log_oii_oiii": "float64", "agn_log_sii_ha": "float64",
}
#: Extra columns of the ``broad`` prior set (:func:`draw_broad_parameters`).
BROAD_COLUMNS: dict[str, str] = {
    "sfh": "string", "sfh_alpha": "float64", "sfh_beta": "float64", "stellar_metallicity": "float64",
    "dust_delta": "float64", "dust_bump": "float64",
}
#: The prior sets a library can be drawn from: ``survey`` (this module's scaling relations)
#: or ``broad`` (domain randomisation: see :func:`draw_broad_parameters`).
PRIOR_SETS = ("survey", "broad")


# --------------------------------------------------------------------------- scaling relations
def tremonti_oh12(log_mstar: float | np.ndarray) -> float | np.ndarray:
    """Gas-phase 12 + log(O/H) on the Tremonti et al. (2004) mass-metallicity relation.

    ``12 + log(O/H) = -1.492 + 1.847 x - 0.08026 x**2`` with ``x = log10(M*/Msun)``
    (valid for 8.5 < x < 11.5; intrinsic scatter ~0.1 dex).

    Examples
    --------
    >>> round(float(tremonti_oh12(10.0)), 3)
    8.952
    """
    a, b, c = _TREMONTI
    x = np.asarray(log_mstar, dtype=np.float64)
    return a + b * x + c * x**2


def gallazzi_log_zstar(log_mstar: float | np.ndarray) -> float | np.ndarray:
    """Median stellar log10(Z*/Zsun) against log10 M* (approximately Gallazzi et al. 2005).

    Examples
    --------
    >>> round(float(gallazzi_log_zstar(11.0)), 2)
    0.08
    """
    return np.interp(log_mstar, _GALLAZZI_X, _GALLAZZI_Y)


def logu_from_metallicity(metallicity: float | np.ndarray) -> float | np.ndarray:
    """Mean ionisation parameter at metallicity Z/Zsun: ``logU = -2.25 - 0.3 log10(Z/Zsun)``.

    Metal-rich HII regions have softer ionising spectra and are less ionised, so logU
    falls with Z (Dopita et al. 2006, who find logU ~ -0.8 log Z). The zero point and the
    slope are calibrated on the bagpipes CLOUDY grid itself (BC03 ionising spectra,
    t_bc = 10 Myr), because ``starforming`` is defined by the BPT position of the model
    lines: measured on that grid, a solar-metallicity galaxy sits at log [NII]/Ha = -0.37,
    log [OIII]/Hb = +0.16 at logU = -3, i.e. 0.3 dex *above* the Kauffmann et al. (2003)
    line, and the model star-forming sequence only falls 0.1-0.2 dex below that line for
    logU >~ -2.4 at Z = 0.7-2 Zsun (it hugs the line from below: the model sequence is
    the upper envelope of the observed one). A Dopita-like logU ~ -3 would label almost
    every mock star-forming galaxy 'composite'. With this relation and 0.15 dex scatter,
    ~90% of the star-forming population is BPT 'sf', [NII]/Ha rises and [OIII]/Hb falls
    monotonically with oh12.

    Examples
    --------
    >>> round(float(logu_from_metallicity(1.0)), 2), round(float(logu_from_metallicity(2.0)), 2)
    (-2.25, -2.34)
    """
    a, b, _ = _LOGU
    return a + b * np.log10(metallicity)


def garn_best_a_halpha(log_mstar: float | np.ndarray) -> float | np.ndarray:
    """Mean H-alpha attenuation (mag) of star-forming galaxies at stellar mass M* (Garn & Best 2010).

    ``A_Ha = 0.91 + 0.77 X + 0.11 X**2 - 0.09 X**3`` with ``X = log10(M*/Msun) - 10``.

    Examples
    --------
    >>> round(float(garn_best_a_halpha(10.0)), 2)
    0.91
    """
    x = np.asarray(log_mstar, dtype=np.float64) - 10.0
    return 0.91 + 0.77 * x + 0.11 * x**2 - 0.09 * x**3


# --------------------------------------------------------------------------- small draws
def row_rng(seed: int, row: int, attempt: int = 0) -> np.random.Generator:
    """The generator of one galaxy draw: depends only on (seed, row, attempt)."""
    return np.random.default_rng([int(seed), int(row), int(attempt)])


def _truncated_normal(rng: np.random.Generator, mean: float, sigma: float, low: float, high: float) -> float:
    """One draw of N(mean, sigma) truncated to [low, high] (rejection; the window is wide)."""
    for _ in range(1000):
        x = rng.normal(mean, sigma)
        if low <= x <= high:
            return float(x)
    return float(rng.uniform(low, high))  # pragma: no cover - only for absurd windows


def _clipped_normal(rng: np.random.Generator, mean: float, sigma: float, n_sigma: float = 3.0) -> float:
    return float(np.clip(rng.normal(mean, sigma), mean - n_sigma * sigma, mean + n_sigma * sigma))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _draw_sfh(rng: np.random.Generator, kind: str) -> tuple[float, float]:
    """(age, tau) in Gyr of a delayed-tau history of host ``kind`` (see :data:`SFH_PRIORS`)."""
    prior = SFH_PRIORS[kind]
    age = _uniform(rng, prior["age"])
    return age, age / _uniform(rng, prior["age_over_tau"])


def _draw_metallicity(rng: np.random.Generator, log_mstar: float, young: bool) -> float:
    """Z/Zsun: Tremonti MZR (+0.1 dex) for hosts with young stars, Gallazzi stellar MZR otherwise.

    Both are clipped to :data:`Z_RANGE` (Z/Zsun 0.2-2.5, i.e. oh12 7.99-9.09): the MZR
    plus scatter leaves it only above log M* ~ 10.8 (Tremonti gives 9.13 at 11.5), where
    the bagpipes nebular grid stops changing (see :data:`Z_RANGE`); the clipped rows'
    oh12 is that of the metallicity actually used.
    """
    if young:
        log_z = tremonti_oh12(log_mstar) - OH12_SUN + rng.normal(0.0, _MZR_SCATTER)
    else:
        log_z = gallazzi_log_zstar(log_mstar) + rng.normal(0.0, _GALLAZZI_SCATTER)
    return float(np.clip(10.0 ** log_z, *Z_RANGE))


def _draw_logu(rng: np.random.Generator, metallicity: float) -> float:
    return float(np.clip(logu_from_metallicity(metallicity) + rng.normal(0.0, _LOGU[2]), *LOGU_RANGE))


def _draw_av(rng: np.random.Generator, log_mstar: float, kind: str) -> float:
    """Stellar (diffuse ISM) Calzetti A_V; lines and young stars see ``DUST_ETA`` times more.

    Star-forming hosts: the Garn & Best (2010) A(H-alpha)-M* relation converted to the
    stellar A_V = A_Ha R_V / k(H-alpha) / eta, with its 0.28 mag scatter in A_Ha
    (0.17 mag in A_V). Old hosts and post-starbursts: half-normal.
    """
    if kind in ("star_forming",):
        mean = garn_best_a_halpha(log_mstar) * _R_V / _K_HALPHA / DUST_ETA
        return float(np.clip(rng.normal(mean, _AV_SF_SCATTER), 0.0, _AV_SF_MAX))
    sigma, top = _AV_HALF_NORMAL["post_starburst" if kind == "post_starburst" else "old"]
    return float(min(abs(rng.normal(0.0, sigma)), top))


def _draw_veldisp(rng: np.random.Generator, log_mstar: float, quiescent: bool) -> float:
    """Stellar velocity dispersion (km/s) from an M*-sigma relation (after Zahid et al. 2016).

    Quiescent: ``log sigma = 2.07 + 0.286 (x - 10.26)`` (sigma ~ M*^0.3 above the break
    at 10^10.26 Msun, 117 km/s), 0.07 dex scatter. Star-forming (disc-dominated) galaxies
    sit 0.2 dex lower at fixed mass, 0.1 dex scatter.
    """
    a, b, x0, s, lo, hi = _SIGMA_QUIESCENT if quiescent else _SIGMA_STARFORMING
    return float(np.clip(10.0 ** (a + b * (log_mstar - x0) + rng.normal(0.0, s)), lo, hi))


def _draw_agn(rng: np.random.Generator, agn_type: str, population: str) -> dict:
    ratios = {f"agn_{k}": _clipped_normal(rng, *v) for k, v in AGN_RATIOS[agn_type].items()}
    return {"agn_type": agn_type, "agn_frac": _uniform(rng, AGN_FRAC[population]),
            "agn_sigma_kms": _uniform(rng, AGN_SIGMA), **ratios}


_NO_AGN = {"agn_type": "none", "agn_frac": 0.0, "agn_sigma_kms": np.nan, "agn_log_nii_ha": np.nan,
           "agn_log_oiii_hb": np.nan, "agn_log_oii_oiii": np.nan, "agn_log_sii_ha": np.nan}


# --------------------------------------------------------------------------- one galaxy
def draw_parameters(population: str, rng: np.random.Generator) -> dict:
    """Draw every physical parameter of one galaxy of ``population``.

    Parameters
    ----------
    population : str
        One of :data:`POPULATIONS`.
    rng : numpy.random.Generator
        Usually :func:`row_rng` ``(seed, row, attempt)``.

    Returns
    -------
    dict
        The :data:`PARAMETER_COLUMNS` except ``row`` and ``attempt``: ``host`` (the kind
        of stellar host: star_forming, passive, post_starburst or old_agn_host),
        ``log_mstar`` (living stellar mass, log Msun), ``age_gyr`` and ``tau_gyr``
        (delayed-tau SFH), ``burst_age_gyr`` and ``burst_frac`` (NaN and 0 without a
        burst), ``metallicity`` (Z/Zsun of stars and gas), ``oh12``, ``logu``, ``av``
        (Calzetti, diffuse ISM), ``dust_eta``, ``veldisp_kms`` and the AGN narrow-line
        parameters (``agn_type`` 'none', 'seyfert' or 'liner', ``agn_frac`` of the total
        H-alpha, line width and log line ratios before dust).

    Examples
    --------
    >>> p = draw_parameters("passive", row_rng(0, 0))
    >>> p["host"], p["age_gyr"] / p["tau_gyr"] >= 10.0, p["agn_type"]
    ('passive', True, 'none')
    """
    if population not in POPULATIONS:
        raise ValueError(f"unknown population {population!r}; expected one of {POPULATIONS}")
    log_mstar = _truncated_normal(rng, *MASS_PRIORS[population])
    agn = dict(_NO_AGN)
    if population in ("composite", "agn"):
        agn_type = "seyfert" if rng.random() < P_SEYFERT[population] else "liner"
        old = population == "agn" and rng.random() < P_OLD_HOST[agn_type]
        host = "old_agn_host" if old else "star_forming"
        agn = _draw_agn(rng, agn_type, population)
    else:
        host = population
    age, tau = _draw_sfh(rng, host)
    burst_age, burst_frac = np.nan, 0.0
    if host == "post_starburst":
        burst_age, burst_frac = _uniform(rng, BURST_AGE), _uniform(rng, BURST_FRAC)
    young = host in ("star_forming", "post_starburst")
    metallicity = _draw_metallicity(rng, log_mstar, young)
    return {"population": population, "host": host, "log_mstar": log_mstar, "age_gyr": age,
            "tau_gyr": tau, "burst_age_gyr": burst_age, "burst_frac": burst_frac,
            "metallicity": metallicity, "oh12": OH12_SUN + float(np.log10(metallicity)),
            "logu": _draw_logu(rng, metallicity), "av": _draw_av(rng, log_mstar, host),
            "dust_eta": DUST_ETA, "veldisp_kms": _draw_veldisp(rng, log_mstar, quiescent=host != "star_forming"),
            **agn}


# --------------------------------------------------------------------------- broad priors
#: SFH families of the ``broad`` prior set (bagpipes component names).
SFH_FAMILIES = ("delayed", "exponential", "constant", "lognormal", "dblplaw")
#: ``broad`` ranges: log M* uniform, gas 12+log(O/H) uniform (so no metallicity is
#: preferred), logU uniform and independent of Z, stellar/gas metallicity offset (dex),
#: velocity dispersion log-uniform (km/s), Salim et al. (2018) slope delta and 2175 A bump B,
#: birth-cloud factor eta, A_V of star-forming hosts, P(burst) and burst age/fraction.
BROAD = {
    "log_mstar": (8.5, 11.8), "oh12": (OH12_SUN + np.log10(Z_RANGE[0]), OH12_SUN + np.log10(Z_RANGE[1])),
    "logu": (-3.8, -2.0), "stellar_offset_dex": (-0.5, 0.1), "veldisp_kms": (30.0, 350.0),
    "dust_delta": (-0.7, 0.4), "dust_bump": (0.0, 2.0), "dust_eta": (1.0, 3.0), "av_young": (0.0, 1.6),
    "av_old_sigma": 0.4, "p_burst": 0.3, "burst_age_gyr": (0.005, 1.0), "burst_frac": (0.01, 0.2),
}


def _broad_young_sfh(rng: np.random.Generator) -> dict:
    """A star-forming host's SFH: one of :data:`SFH_FAMILIES`, still forming stars today.

    ``age_gyr``/``tau_gyr`` mean: delayed and exponential - age and e-folding time;
    constant - duration (``tau_gyr`` NaN); lognormal - time of the peak after the Big Bang
    (bagpipes ``tmax``) and the FWHM; dblplaw - ``tau_gyr`` the turnover time after the Big
    Bang, ``sfh_alpha``/``sfh_beta`` the falling/rising slopes (Carnall et al. 2018).
    """
    family = str(rng.choice(SFH_FAMILIES))
    alpha = beta = np.nan
    if family == "delayed":
        age = _uniform(rng, (0.5, 12.5))
        tau = age / _uniform(rng, (0.3, 6.0))
    elif family == "exponential":
        age = _uniform(rng, (0.5, 12.5))
        tau = age / _uniform(rng, (0.1, 4.0))
    elif family == "constant":
        age, tau = _uniform(rng, (0.1, 12.5)), np.nan
    elif family == "lognormal":
        age, tau = _uniform(rng, (3.0, 13.4)), _uniform(rng, (3.0, 14.0))
    else:
        age, tau = np.nan, _uniform(rng, (2.0, 13.0))
        alpha, beta = _uniform(rng, (0.3, 3.0)), _uniform(rng, (0.5, 10.0))
    return {"sfh": family, "age_gyr": age, "tau_gyr": tau, "sfh_alpha": alpha, "sfh_beta": beta}


def _broad_old_sfh(rng: np.random.Generator, kind: str) -> dict:
    """A quenched (or nearly quenched, ``old_agn_host``) host: delayed, exponential or dblplaw."""
    family = str(rng.choice(("delayed", "exponential", "dblplaw")))
    lo, hi = SFH_PRIORS[kind]["age"]
    alpha = beta = np.nan
    if family == "dblplaw":
        age, tau = np.nan, _uniform(rng, (1.5, 8.0))
        alpha, beta = _uniform(rng, (8.0, 30.0) if kind != "old_agn_host" else (4.0, 8.0)), _uniform(rng, (1.0, 10.0))
    else:
        age = _uniform(rng, (lo, hi))
        ratio = SFH_PRIORS[kind]["age_over_tau"]
        if family == "exponential":
            ratio = (0.8 * ratio[0], 0.8 * ratio[1])
        tau = age / _uniform(rng, ratio)
    return {"sfh": family, "age_gyr": age, "tau_gyr": tau, "sfh_alpha": alpha, "sfh_beta": beta}


def draw_broad_parameters(population: str, rng: np.random.Generator) -> dict:
    """Draw one galaxy from the ``broad`` prior set: domain randomisation for training.

    Where the data cannot pin a parameter down, its prior is wide and independent of the
    label, so a network cannot learn a shortcut that real galaxies need not follow:

    * log M* uniform on 8.5-11.8 for every population (no mass-metallicity relation);
    * gas-phase 12+log(O/H) uniform on 7.99-9.09 for hosts with young stars, and the
      stars' metallicity 0.1-0.5 dex below it (stellar Z lags the gas; Gallazzi et al. 2005
      against Tremonti et al. 2004); old hosts as in the ``survey`` set;
    * logU uniform on -3.8 to -2.0, independent of metallicity (the observed range of
      HII regions and galaxies, Dopita et al. 2006; Kewley et al. 2019);
    * SFH families delayed, exponential, constant, lognormal and double power law
      (Carnall et al. 2019; Leja et al. 2019) with a 30% chance of a recent burst
      (5 Myr-1 Gyr, 1-20% of the mass); quenched hosts delayed, exponential or a steep
      double power law;
    * dust: the Salim et al. (2018) law (Calzetti modified by a power-law slope delta
      -0.7..0.4, SMC-like to grey, and a 2175 A bump 0-2) with the birth-cloud factor
      eta 1-3 and A_V 0-1.6 for star-forming hosts;
    * velocity dispersion log-uniform on 30-350 km/s.

    AGN are drawn as in :func:`draw_parameters`.

    Examples
    --------
    >>> p = draw_broad_parameters("star_forming", row_rng(0, 3))
    >>> p["sfh"] in SFH_FAMILIES, 7.98 < p["oh12"] < 9.1, -3.8 <= p["logu"] <= -2.0
    (True, True, True)
    """
    if population not in POPULATIONS:
        raise ValueError(f"unknown population {population!r}; expected one of {POPULATIONS}")
    log_mstar = _uniform(rng, BROAD["log_mstar"])
    agn = dict(_NO_AGN)
    if population in ("composite", "agn"):
        agn_type = "seyfert" if rng.random() < P_SEYFERT[population] else "liner"
        old = population == "agn" and rng.random() < P_OLD_HOST[agn_type]
        host = "old_agn_host" if old else "star_forming"
        agn = _draw_agn(rng, agn_type, population)
    else:
        host = population
    sfh = _broad_young_sfh(rng) if host == "star_forming" else _broad_old_sfh(rng, host)
    burst_age, burst_frac = np.nan, 0.0
    if host == "post_starburst":
        burst_age, burst_frac = _uniform(rng, BURST_AGE), _uniform(rng, BURST_FRAC)
    elif host == "star_forming" and rng.random() < BROAD["p_burst"]:
        burst_age, burst_frac = _uniform(rng, BROAD["burst_age_gyr"]), _uniform(rng, BROAD["burst_frac"])
    young = host in ("star_forming", "post_starburst")
    if young:
        oh12 = _uniform(rng, BROAD["oh12"])
        metallicity = float(np.clip(10.0 ** (oh12 - OH12_SUN), *Z_RANGE))
        stellar = float(np.clip(metallicity * 10.0 ** _uniform(rng, BROAD["stellar_offset_dex"]), 0.1, Z_RANGE[1]))
        av = _uniform(rng, BROAD["av_young"])
    else:
        metallicity = float(np.clip(10.0 ** (gallazzi_log_zstar(log_mstar) + rng.normal(0.0, 0.25)), *Z_RANGE))
        stellar = metallicity
        av = float(min(abs(rng.normal(0.0, BROAD["av_old_sigma"])), 1.2))
    return {"population": population, "host": host, "log_mstar": log_mstar, "age_gyr": sfh["age_gyr"],
            "tau_gyr": sfh["tau_gyr"], "burst_age_gyr": burst_age, "burst_frac": burst_frac,
            "metallicity": metallicity, "oh12": OH12_SUN + float(np.log10(metallicity)),
            "logu": _uniform(rng, BROAD["logu"]), "av": av, "dust_eta": _uniform(rng, BROAD["dust_eta"]),
            "veldisp_kms": float(np.exp(_uniform(rng, tuple(np.log(BROAD["veldisp_kms"]))))),
            **agn, "sfh": sfh["sfh"], "sfh_alpha": sfh["sfh_alpha"], "sfh_beta": sfh["sfh_beta"],
            "stellar_metallicity": stellar, "dust_delta": _uniform(rng, BROAD["dust_delta"]),
            "dust_bump": _uniform(rng, BROAD["dust_bump"])}


def draw_galaxy(population: str, rng: np.random.Generator, prior_set: str = "survey") -> dict:
    """One galaxy from the named prior set (:data:`PRIOR_SETS`)."""
    if prior_set == "survey":
        return draw_parameters(population, rng)
    if prior_set == "broad":
        return draw_broad_parameters(population, rng)
    raise ValueError(f"unknown prior set {prior_set!r}; expected one of {PRIOR_SETS}")


def parameter_columns(prior_set: str = "survey") -> dict[str, str]:
    """Columns (and dtypes) of a parameter table drawn from ``prior_set``."""
    return {**PARAMETER_COLUMNS, **BROAD_COLUMNS} if prior_set == "broad" else dict(PARAMETER_COLUMNS)


# --------------------------------------------------------------------------- a whole library
def population_counts(n: int, fractions: dict[str, float] | None = None) -> dict[str, int]:
    """Exact counts per population for ``n`` galaxies (largest remainder; ties by order).

    Examples
    --------
    >>> population_counts(30)
    {'star_forming': 17, 'passive': 5, 'post_starburst': 1, 'composite': 4, 'agn': 3}
    """
    fractions = _normalised(fractions)
    raw = {p: round(n * f, 9) for p, f in fractions.items()}  # exact ties stay ties
    counts = {p: int(np.floor(v)) for p, v in raw.items()}
    order = sorted(raw, key=lambda p: (-(raw[p] - counts[p]), POPULATIONS.index(p)))
    for p in order[: n - sum(counts.values())]:
        counts[p] += 1
    return counts


def _normalised(fractions: dict[str, float] | None) -> dict[str, float]:
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    unknown = set(fractions) - set(POPULATIONS)
    if unknown:
        raise ValueError(f"unknown populations {sorted(unknown)}; expected a subset of {POPULATIONS}")
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"population fractions must be >= 0 with a positive sum, got {fractions}")
    total = sum(fractions.values())
    total = 1.0 if abs(total - 1.0) < 1e-9 else total  # idempotent: normalised fractions stay as they are
    return {p: round(fractions.get(p, 0.0) / total, 12) for p in POPULATIONS}


def assign_populations(n: int, seed: int, fractions: dict[str, float] | None = None) -> np.ndarray:
    """Population of each of ``n`` rows: exact counts, shuffled with ``default_rng(seed)``."""
    counts = population_counts(n, fractions)
    labels = np.concatenate([np.full(c, p, dtype=object) for p, c in counts.items()])
    return np.random.default_rng(int(seed)).permutation(labels)


def draw_library_parameters(n: int, seed: int, fractions: dict[str, float] | None = None,
                            prior_set: str = "survey") -> pd.DataFrame:
    """Parameters of every galaxy of a library: one row per spectrum, :func:`parameter_columns`.

    Row ``i`` is drawn with :func:`row_rng` ``(seed, i, 0)``; the result depends only on
    ``n``, ``seed``, ``fractions`` and ``prior_set``.
    """
    populations = assign_populations(n, seed, fractions)
    records = [{"row": i, "attempt": 0, **draw_galaxy(str(p), row_rng(seed, i, 0), prior_set)}
               for i, p in enumerate(populations)]
    columns = parameter_columns(prior_set)
    return typed_parameters(pd.DataFrame.from_records(records, columns=list(columns)), prior_set)


def typed_parameters(df: pd.DataFrame, prior_set: str = "survey") -> pd.DataFrame:
    """Cast the parameter columns of ``df`` to :func:`parameter_columns` dtypes (in place)."""
    for col, dtype in parameter_columns(prior_set).items():
        df[col] = df[col].astype(dtype)
    return df


# --------------------------------------------------------------------------- the table
def _mass_rows() -> list[dict]:
    ref = "SDSS mass distributions of each class (Kauffmann et al. 2003; Brinchmann et al. 2004)"
    extra = {"star_forming": "; 8.5-11.5 is the range of the Tremonti MZR fit"}
    return [{"parameter": "log_mstar (living M*, Msun)", "population": p, "distribution": f"N({m}, {s}) truncated",
             "range": f"[{lo}, {hi}]", "reference": ref + extra.get(p, ""), "low": lo, "high": hi}
            for p, (m, s, lo, hi) in MASS_PRIORS.items()]


def _sfh_rows() -> list[dict]:
    hosts = {"star_forming": "star_forming, composite, Seyfert/LINER hosts with young stars",
             "passive": "passive", "post_starburst": "post_starburst (host)",
             "old_agn_host": "agn, old host (80% of LINERs, 30% of Seyferts)"}
    rows = []
    for kind, prior in SFH_PRIORS.items():
        (a0, a1), (r0, r1) = prior["age"], prior["age_over_tau"]
        rows.append({"parameter": "age_gyr (delayed tau)", "population": hosts[kind], "distribution": "uniform",
                     "range": f"[{a0}, {a1}] Gyr", "reference": "delayed-tau SFH (Carnall et al. 2019); "
                     "ages < 13 Gyr (age of the Universe 13.47 Gyr)", "low": a0, "high": a1})
        rows.append({"parameter": "age_gyr / tau_gyr", "population": hosts[kind], "distribution": "uniform",
                     "range": f"[{r0}, {r1}]", "reference": "present SFR/peak SFR = (age/tau) e^(1-age/tau): "
                     "<= 6 on the main sequence, >= 10 quenched (H-alpha EW < 3 A)", "low": r0, "high": r1})
    return rows


def _build_priors_table() -> list[dict]:
    zlo, zhi = Z_RANGE
    ulo, uhi = LOGU_RANGE
    rows = _mass_rows() + _sfh_rows()
    rows += [
        {"parameter": "burst_age_gyr", "population": "post_starburst", "distribution": "uniform",
         "range": f"[{BURST_AGE[0]}, {BURST_AGE[1]}] Gyr", "reference": "E+A ages (French 2021, PASP 133, 072001)",
         "low": BURST_AGE[0], "high": BURST_AGE[1]},
        {"parameter": "burst_frac", "population": "post_starburst", "distribution": "uniform",
         "range": f"[{BURST_FRAC[0]}, {BURST_FRAC[1]}] of mass formed", "reference": "burst mass fractions "
         "(French 2021; Wild et al. 2020)", "low": BURST_FRAC[0], "high": BURST_FRAC[1]},
        {"parameter": "metallicity (Z/Zsun), oh12", "population": "star_forming, composite, post_starburst, "
         "AGN with star-forming host", "distribution": "12+log(O/H) = -1.492 + 1.847x - 0.08026x^2 "
         f"+ N(0, {_MZR_SCATTER}); Z clipped", "range": f"Z [{zlo}, {zhi}]; oh12 [{OH12_SUN + np.log10(zlo):.2f}, {OH12_SUN + np.log10(zhi):.2f}]",
         "reference": "Tremonti et al. 2004 MZR; oh12 = 8.69 + log10(Z/Zsun) (Asplund et al. 2009)",
         "low": zlo, "high": zhi},
        {"parameter": "metallicity (Z/Zsun)", "population": "passive, AGN with old host",
         "distribution": f"log Z* = median(x) + N(0, {_GALLAZZI_SCATTER}); Z clipped",
         "range": f"[{zlo}, {zhi}]", "reference": "Gallazzi et al. 2005 stellar MZR (Table 2 medians)",
         "low": zlo, "high": zhi},
        {"parameter": "logu", "population": "all", "distribution": f"{_LOGU[0]} {_LOGU[1]:+} log10(Z/Zsun) "
         f"+ N(0, {_LOGU[2]}), clipped", "range": f"[{ulo}, {uhi}]",
         "reference": "logU-Z anti-correlation (Dopita et al. 2006); zero point and slope calibrated on the "
         "bagpipes CLOUDY grid so that its star-forming sequence lies below Kauffmann et al. 2003",
         "low": ulo, "high": uhi},
        {"parameter": "av (Calzetti, stars)", "population": "star_forming hosts", "distribution":
         "A_Ha(x) R_V / k(Ha) / eta + N(0, 0.17), A_Ha = 0.91 + 0.77X + 0.11X^2 - 0.09X^3, X = x - 10",
         "range": f"[0, {_AV_SF_MAX}] mag", "reference": "Garn & Best 2010; Calzetti et al. 2000",
         "low": 0.0, "high": _AV_SF_MAX},
        {"parameter": "av (Calzetti, stars)", "population": "passive, old AGN hosts", "distribution":
         f"abs(N(0, {_AV_HALF_NORMAL['old'][0]})), clipped", "range": f"[0, {_AV_HALF_NORMAL['old'][1]}] mag",
         "reference": "little dust in early types", "low": 0.0, "high": _AV_HALF_NORMAL["old"][1]},
        {"parameter": "av (Calzetti, stars)", "population": "post_starburst", "distribution":
         f"abs(N(0, {_AV_HALF_NORMAL['post_starburst'][0]})), clipped",
         "range": f"[0, {_AV_HALF_NORMAL['post_starburst'][1]}] mag", "reference": "dusty post-starbursts "
         "(French 2021)", "low": 0.0, "high": _AV_HALF_NORMAL["post_starburst"][1]},
        {"parameter": "dust_eta", "population": "all", "distribution": "fixed", "range": f"{DUST_ETA}",
         "reference": "lines and < 10 Myr stars see eta * Av; E(B-V)_stars = 0.44 E(B-V)_gas (Calzetti et al. 2000)",
         "low": DUST_ETA, "high": DUST_ETA},
        {"parameter": "veldisp_kms", "population": "passive, post_starburst, old AGN hosts",
         "distribution": "log s = 2.07 + 0.286 (x - 10.26) + N(0, 0.07), clipped",
         "range": f"[{_SIGMA_QUIESCENT[4]:.0f}, {_SIGMA_QUIESCENT[5]:.0f}] km/s",
         "reference": "M*-sigma relation (Zahid et al. 2016)", "low": _SIGMA_QUIESCENT[4], "high": _SIGMA_QUIESCENT[5]},
        {"parameter": "veldisp_kms", "population": "star-forming hosts",
         "distribution": "log s = 1.87 + 0.286 (x - 10.26) + N(0, 0.1), clipped",
         "range": f"[{_SIGMA_STARFORMING[4]:.0f}, {_SIGMA_STARFORMING[5]:.0f}] km/s",
         "reference": "0.2 dex below the quiescent relation (discs)", "low": _SIGMA_STARFORMING[4],
         "high": _SIGMA_STARFORMING[5]},
    ]
    frac_refs = {"composite": "composites: mixed SF + AGN ionisation (Kauffmann et al. 2003; Kewley et al. 2006)",
                 "agn": "AGN-dominated lines above Kewley et al. 2001 (Kewley et al. 2006)"}
    for pop, (lo, hi) in AGN_FRAC.items():
        rows.append({"parameter": "agn_frac (of total H-alpha)", "population": pop, "distribution": "uniform",
                     "range": f"[{lo}, {hi}]", "reference": frac_refs[pop], "low": lo, "high": hi})
    rows.append({"parameter": "agn_type", "population": "composite; agn", "distribution":
                 f"P(Seyfert) = {P_SEYFERT['composite']}; {P_SEYFERT['agn']} (else LINER)", "range": "seyfert, liner",
                 "reference": "LINERs outnumber Seyferts locally (Ho 2008)", "low": np.nan, "high": np.nan})
    rows.append({"parameter": "agn host", "population": "agn", "distribution":
                 f"P(old host) = {P_OLD_HOST['liner']} (LINER), {P_OLD_HOST['seyfert']} (Seyfert)",
                 "range": "old_agn_host, star_forming", "reference": "LINERs in old, massive hosts (Ho 2008; "
                 "Kewley et al. 2006)", "low": np.nan, "high": np.nan})
    rows.append({"parameter": "agn_sigma_kms", "population": "composite, agn", "distribution": "uniform",
                 "range": f"[{AGN_SIGMA[0]:.0f}, {AGN_SIGMA[1]:.0f}] km/s",
                 "reference": "narrow-line widths of type-2 AGN (FWHM 350-950 km/s)",
                 "low": AGN_SIGMA[0], "high": AGN_SIGMA[1]})
    refs = {"log_nii_ha": "Seyfert / LINER loci of Kewley et al. 2006",
            "log_oiii_hb": "Seyfert / LINER loci of Kewley et al. 2006",
            "log_oii_oiii": "[OII]/[OIII] < 1 in Seyferts, > 1 in LINERs (Heckman 1980; Kewley et al. 2006)",
            "log_sii_ha": "Seyfert / LINER loci of Kewley et al. 2006"}
    for agn_type, ratios in AGN_RATIOS.items():
        for name, (m, s) in ratios.items():
            rows.append({"parameter": f"agn_{name}", "population": f"{agn_type} NLR", "distribution":
                         f"N({m}, {s}), clipped at 3 sigma", "range": f"[{m - 3 * s:.2f}, {m + 3 * s:.2f}]",
                         "reference": refs[name], "low": round(m - 3 * s, 10), "high": round(m + 3 * s, 10)})
    rows.append({"parameter": "AGN fixed ratios", "population": "composite, agn", "distribution": "fixed",
                 "range": "Ha/Hb = 3.1; [OIII]5007/4959 = 2.98; [NII]6584/6548 = 3.05; [SII]6717/6731 = 1.2; "
                 "[OII]3729/3726 = 1.0", "reference": "Osterbrock & Ferland 2006; Storey & Zeippen 2000",
                 "low": np.nan, "high": np.nan})
    return rows


#: Every prior as a row: parameter, population, distribution, range, reference, low, high.
PRIORS: list[dict] = _build_priors_table()


def priors_table_markdown() -> str:
    """:data:`PRIORS` as a Markdown table (parameter, population, distribution, range, reference)."""
    cols = ["parameter", "population", "distribution", "range", "reference"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in PRIORS:
        lines.append("| " + " | ".join(str(row[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)
