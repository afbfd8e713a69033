"""The physical rest-frame galaxy spectral library: bagpipes (BC03 + CLOUDY) spectra with known truth.

``build_library(LibraryConfig(n=...))`` draws ``n`` galaxies from the priors of
:mod:`survey_ml.simulate.priors`, computes their rest-frame spectra with bagpipes on a
Dask cluster and caches the result::

    <cache_dir>/library-<digest>.zarr      group: flux (n, n_wave) float32, wave (n_wave,) float64
    <cache_dir>/library-<digest>.parquet   truth table, one row per spectrum (column ``row``)

``flux`` is the rest-frame luminosity density L_lambda in units of :data:`FLUX_SCALE`
(1e40 erg/s/A: float32 cannot hold erg/s/A, a 10^11 Msun galaxy emits ~1e41 erg/s/A);
:meth:`Library.flux` and :meth:`Library.array` return erg/s/A. The wavelength grid is
linear in the rest frame and in **vacuum**, like SDSS and LAMOST: bagpipes works in air
(its BC03/MILES continua and CLOUDY line list are air wavelengths), so the model is
evaluated at the air wavelengths of the vacuum grid (``vacuum_to_air``). The spectra
have the galaxy's own velocity dispersion (bagpipes ``veldisp``, model sampling
R = 3600) and no instrument: observing them (redshift, LSF, noise) is the job of the
observation model. Each Zarr chunk holds one block of rows and is written by exactly one
task; the Parquet file is written last, atomically, and is the commit record: a library
whose Parquet file exists and matches its config digest is complete, and is returned
as is, never recomputed.

Per galaxy (one ``model_galaxy.update``, ~90 ms on one core): bagpipes is run for one
solar mass formed and the spectrum and line fluxes are scaled to the drawn living
stellar mass ``log_mstar`` (everything bagpipes computes is linear in mass), so
``log_mstar`` is exact; then the AGN narrow-line region, if any, is added
(:func:`agn_narrow_lines`); then H-alpha EW and the BPT class are measured on the
noise-free spectrum and lines (:func:`classify_bpt`).

Bad spectra never stop a build: if bagpipes raises, or returns a spectrum that is not
finite and positive everywhere, the row's parameters are redrawn deterministically
(``priors.row_rng(seed, row, attempt)``, same population, up to :data:`MAX_ATTEMPTS`
draws in all; column ``attempt`` says which draw was kept). A row that fails every draw
keeps zeros in ``flux``, ``ok = False``, ``bpt_class = 'failed'`` and the reason in
``message``.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
import zarr.codecs

from ..cluster.client import current_client, run_blocks
from . import priors
from .priors import DEFAULT_FRACTIONS, PARAMETER_COLUMNS

__all__ = ["LibraryConfig", "Library", "build_library", "open_library", "library_paths",
           "default_cache_dir", "release_model", "agn_narrow_lines", "classify_bpt", "kauffmann03", "kewley01",
           "calzetti_a_lambda", "vacuum_to_air", "halpha_ew", "TRUTH_COLUMNS", "LINE_COLUMNS",
           "FLUX_SCALE", "LIBRARY_VERSION", "truth_columns", "MAX_ATTEMPTS", "CACHE_ENV"]

#: Bumped whenever the recipe changes (with priors.PRIORS_VERSION part of the digest).
LIBRARY_VERSION = 1
#: Stored flux unit, erg/s/A.
FLUX_SCALE = 1e40
#: Draws tried per row before it is marked ``ok = False``.
MAX_ATTEMPTS = 3
#: Environment variable naming the cache folder (default ``~/.cache/survey_ml``).
CACHE_ENV = "SURVEY_ML_CACHE"
C_KMS = 299_792.458

#: Truth-table line columns and the bagpipes (CLOUDY, air wavelength) keys summed into each.
LINE_KEYS: dict[str, tuple[str, ...]] = {
    "ha": ("H  1  6562.80A",), "hb": ("H  1  4861.32A",), "oiii5007": ("O  3  5006.84A",),
    "oiii4959": ("O  3  4958.91A",), "nii6584": ("N  2  6583.45A",), "nii6548": ("N  2  6548.05A",),
    "oii3727": ("O  2  3726.03A", "O  2  3728.81A"), "sii6717": ("S  2  6716.44A",),
    "sii6731": ("S  2  6730.82A",),
}
LINE_COLUMNS = tuple(LINE_KEYS)
#: Vacuum rest wavelengths (A) of the AGN narrow lines (the [OII] doublet as two lines).
AGN_LINE_WAVES: dict[str, float] = {
    "ha": 6564.61, "hb": 4862.68, "oiii5007": 5008.24, "oiii4959": 4960.30, "nii6584": 6585.27,
    "nii6548": 6549.86, "oii3726": 3727.09, "oii3729": 3729.88, "sii6717": 6718.29, "sii6731": 6732.67,
}
HALPHA_VACUUM = AGN_LINE_WAVES["ha"]
#: Pseudo-continuum windows (vacuum rest A) either side of H-alpha for its EW: clear of
#: [NII] and [SII] up to sigma = 400 km/s, and of HeI 6680.
EW_WINDOWS = ((6470.0, 6520.0), (6615.0, 6650.0))
#: Padding (A) of the bagpipes evaluation grid beyond the library grid (its last pixel is off).
_PAD = 100.0
#: H-alpha EW (A) below which a galaxy is 'passive' whatever its line ratios.
PASSIVE_EW = 3.0

#: Truth-table columns beyond the parameters, with dtypes.
_RESULT_COLUMNS: dict[str, str] = {
    "ok": "bool", "message": "string", "log_mformed": "float64", "sfr": "float64",
    **{c: "float64" for c in LINE_COLUMNS},
    "ha_host": "float64", "ha_agn": "float64", "ha_ew": "float64", "log_nii_ha": "float64",
    "log_oiii_hb": "float64", "bpt_class": "string", "starforming": "bool", "seconds": "float32",
}
#: Every truth-table column, with dtypes (a ``broad`` library adds :data:`priors.BROAD_COLUMNS`).
TRUTH_COLUMNS: dict[str, str] = {**PARAMETER_COLUMNS, **_RESULT_COLUMNS}


def truth_columns(prior_set: str = "survey") -> dict[str, str]:
    """Truth-table columns (with dtypes) of a library drawn from ``prior_set``."""
    return {**priors.parameter_columns(prior_set), **_RESULT_COLUMNS}


# --------------------------------------------------------------------------- configuration
@dataclass
class LibraryConfig:
    """What a library is: its size, seed, grid and population mix.

    Parameters
    ----------
    n : int
        Number of spectra.
    seed : int
        Seed of every draw; the same config always gives the same library.
    wave_min, wave_max, wave_step : float
        Rest-frame vacuum wavelength grid (A), ``wave_min + wave_step * i`` up to
        ``wave_max``; it must contain the H-alpha EW windows (6470-6650 A).
    r_spec : float
        bagpipes ``config.R_spec``: the model's sampling (R_spec / 2 resolution elements
        per pixel); 3600 samples H-alpha at 0.9 A.
    fractions : dict
        Target fraction of each population (normalised to sum to 1).
    block_size : int
        Spectra per Dask task and per Zarr chunk. It only sets the work split, not the
        content, so it is not part of :meth:`digest`.
    priors : str
        The prior set the galaxies are drawn from (:data:`priors.PRIOR_SETS`): ``survey``
        (scaling relations of SDSS galaxies) or ``broad`` (domain randomisation: several
        SFH families, the Salim dust law, logU independent of metallicity; for training
        networks that must hold on data from other priors).
    """

    n: int
    seed: int = 0
    wave_min: float = 2800.0
    wave_max: float = 9300.0
    wave_step: float = 1.0
    r_spec: float = 3600.0
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    block_size: int = 100
    priors: str = "survey"

    def __post_init__(self) -> None:
        if self.priors not in priors.PRIOR_SETS:
            raise ValueError(f"unknown prior set {self.priors!r}; expected one of {priors.PRIOR_SETS}")
        self.n, self.seed, self.block_size = int(self.n), int(self.seed), int(self.block_size)
        self.wave_min, self.wave_max = float(self.wave_min), float(self.wave_max)
        self.wave_step, self.r_spec = float(self.wave_step), float(self.r_spec)
        self.fractions = priors._normalised(self.fractions)  # noqa: SLF001 - validation shared with priors
        if self.n < 1 or self.block_size < 1:
            raise ValueError(f"n and block_size must be >= 1, got n={self.n}, block_size={self.block_size}")
        if not (self.wave_min <= EW_WINDOWS[0][0] and self.wave_max >= EW_WINDOWS[1][1] and self.wave_step > 0):
            raise ValueError(f"the grid {self.wave_min}-{self.wave_max} A (step {self.wave_step}) must cover "
                             f"the H-alpha EW windows {EW_WINDOWS}")

    @property
    def n_wave(self) -> int:
        return int(math.floor((self.wave_max - self.wave_min) / self.wave_step + 1e-9)) + 1

    def wave(self) -> np.ndarray:
        """Rest-frame vacuum wavelength of every pixel (A, float64)."""
        return self.wave_min + self.wave_step * np.arange(self.n_wave, dtype=np.float64)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LibraryConfig":
        return cls(**data)

    def digest(self) -> str:
        """A stable 16-hex-digit hash of everything that sets the library's content.

        That is every field except ``block_size``, plus :data:`LIBRARY_VERSION`,
        :data:`priors.PRIORS_VERSION` and the bagpipes version (read from the package
        metadata, without importing bagpipes).

        Examples
        --------
        >>> LibraryConfig(n=10).digest() == LibraryConfig(n=10, block_size=3).digest()
        True
        >>> LibraryConfig(n=10).digest() == LibraryConfig(n=10, seed=1).digest()
        False
        """
        content = {k: v for k, v in self.to_dict().items() if k != "block_size"}
        if content["priors"] == "survey":
            del content["priors"]  # libraries drawn before prior sets existed keep their digest
        content["fractions"] = {p: round(f, 12) for p, f in sorted(content["fractions"].items())}
        content.update(library_version=LIBRARY_VERSION, priors_version=priors.PRIORS_VERSION,
                       bagpipes=_bagpipes_version())
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _bagpipes_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bagpipes")
    except PackageNotFoundError:
        return "none"


# --------------------------------------------------------------------------- physics helpers
def vacuum_to_air(wave: np.ndarray) -> np.ndarray:
    """Air wavelengths (A) of vacuum wavelengths ``wave`` (Morton 1991, as SDSS ``vactoair``).

    Examples
    --------
    >>> round(float(vacuum_to_air(np.array([6564.61]))[0]), 1)
    6562.8
    """
    wave = np.asarray(wave, dtype=np.float64)
    return wave / (1.0 + 2.735182e-4 + 131.4182 / wave**2 + 2.76249e8 / wave**4)


def calzetti_a_lambda(wave: np.ndarray | float, av: float) -> np.ndarray:
    """Calzetti et al. (2000) attenuation A_lambda (mag) at ``wave`` (A, 1200-22000) for ``av``.

    ``k(lambda) = 2.659 (-2.156 + 1.509/l - 0.198/l^2 + 0.011/l^3) + R_V`` below 0.63 um,
    ``2.659 (-1.857 + 1.040/l) + R_V`` above (l in um), R_V = 4.05; A_lambda = A_V k / R_V.

    Examples
    --------
    >>> round(float(calzetti_a_lambda(5500.0, 1.0)), 2)
    1.0
    """
    lam = np.asarray(wave, dtype=np.float64) / 1e4
    r_v = 4.05
    blue = 2.659 * (-2.156 + 1.509 / lam - 0.198 / lam**2 + 0.011 / lam**3) + r_v
    red = 2.659 * (-1.857 + 1.040 / lam) + r_v
    return av * np.where(lam < 0.63, blue, red) / r_v


def kauffmann03(log_nii_ha: float | np.ndarray) -> float | np.ndarray:
    """Kauffmann et al. (2003) upper envelope of star formation: ``0.61 / (x - 0.05) + 1.3``."""
    return 0.61 / (np.asarray(log_nii_ha, dtype=np.float64) - 0.05) + 1.3


def kewley01(log_nii_ha: float | np.ndarray) -> float | np.ndarray:
    """Kewley et al. (2001) maximum starburst line: ``0.61 / (x - 0.47) + 1.19``."""
    return 0.61 / (np.asarray(log_nii_ha, dtype=np.float64) - 0.47) + 1.19


def classify_bpt(log_nii_ha: float, log_oiii_hb: float, ha_ew: float) -> str:
    """BPT class of noise-free lines: 'passive', 'sf', 'composite' or 'agn'.

    'passive' when H-alpha EW < 3 A (or undefined); else 'sf' below Kauffmann et al. (2003)
    (and log [NII]/Ha < 0.05), 'agn' above Kewley et al. (2001) (or log [NII]/Ha >= 0.47),
    'composite' in between. ``starforming = (class == 'sf')`` is the analogue of MPA-JHU
    BPTCLASS = 1.

    Examples
    --------
    >>> classify_bpt(-0.5, -0.3, 30.0), classify_bpt(-0.2, 0.0, 30.0), classify_bpt(0.0, 0.8, 30.0)
    ('sf', 'composite', 'agn')
    >>> classify_bpt(-0.5, -0.3, 1.0)
    'passive'
    """
    if not np.isfinite(ha_ew) or ha_ew < PASSIVE_EW:
        return "passive"
    x, y = log_nii_ha, log_oiii_hb
    if not (np.isfinite(x) and np.isfinite(y)):
        return "passive"
    if x < 0.05 and y < kauffmann03(x):
        return "sf"
    if x < 0.47 and y < kewley01(x):
        return "composite"
    return "agn"


def halpha_ew(wave: np.ndarray, flux: np.ndarray, ha_flux: float) -> float:
    """Rest-frame H-alpha emission EW (A, positive): line flux over the local continuum.

    The continuum is the straight line through the medians of :data:`EW_WINDOWS` (a
    pseudo-continuum that includes the stellar H-alpha absorption, like a survey
    pipeline's Lick-style sidebands).
    """
    centres, levels = [], []
    for lo, hi in EW_WINDOWS:
        sel = (wave >= lo) & (wave <= hi)
        centres.append(0.5 * (lo + hi))
        levels.append(float(np.median(flux[sel])))
    continuum = np.interp(HALPHA_VACUUM, centres, levels)
    return float(ha_flux / continuum) if continuum > 0 else float("nan")


def agn_narrow_lines(params: dict, host_ha: float) -> dict[str, float]:
    """Attenuated fluxes (erg/s) of the AGN narrow lines of one galaxy.

    The recipe: the AGN's observed H-alpha is ``f / (1 - f)`` times the host's observed
    H-alpha, so that it is the fraction ``f = agn_frac`` of the total. Before dust the
    ratios are drawn per galaxy (``agn_log_nii_ha``: [NII]6584/Ha, ``agn_log_oiii_hb``:
    [OIII]5007/Hb, ``agn_log_oii_oiii``: [OII]3726+3729/[OIII]5007, ``agn_log_sii_ha``:
    [SII]6717+6731/Ha) and fixed: Ha/Hb = 3.1 (NLR Balmer decrement, Osterbrock &
    Ferland 2006), [OIII]5007/4959 = 2.98, [NII]6584/6548 = 3.05 (Storey & Zeippen 2000),
    [SII]6717/6731 = 1.2 (n_e ~ 250 cm^-3), [OII]3729/3726 = 1.0. Every line is then
    attenuated by the Calzetti law at the galaxy's diffuse-ISM A_V (the NLR is not inside
    birth clouds, so no ``eta``). Type-2 view: no AGN continuum or broad lines.

    Returns
    -------
    dict
        Keys of :data:`AGN_LINE_WAVES` (the [OII] doublet as ``oii3726``/``oii3729``);
        all zeros when there is no AGN or no host H-alpha.
    """
    frac = float(params.get("agn_frac", 0.0) or 0.0)
    if params.get("agn_type", "none") == "none" or frac <= 0.0 or not host_ha > 0.0:
        return {k: 0.0 for k in AGN_LINE_WAVES}
    av = float(params["av"])
    ha_obs = frac / (1.0 - frac) * host_ha
    ha = ha_obs * 10.0 ** (0.4 * calzetti_a_lambda(AGN_LINE_WAVES["ha"], av))
    hb = ha / 3.1
    nii = ha * 10.0 ** params["agn_log_nii_ha"]
    oiii = hb * 10.0 ** params["agn_log_oiii_hb"]
    oii = oiii * 10.0 ** params["agn_log_oii_oiii"]
    sii = ha * 10.0 ** params["agn_log_sii_ha"]
    intrinsic = {"ha": ha, "hb": hb, "oiii5007": oiii, "oiii4959": oiii / 2.98, "nii6584": nii,
                 "nii6548": nii / 3.05, "oii3726": oii / 2.0, "oii3729": oii / 2.0,
                 "sii6717": sii * 1.2 / 2.2, "sii6731": sii / 2.2}
    return {k: float(v * 10.0 ** (-0.4 * calzetti_a_lambda(AGN_LINE_WAVES[k], av))) for k, v in intrinsic.items()}


def _add_gaussian(wave: np.ndarray, flux: np.ndarray, centre: float, line_flux: float, sigma_kms: float) -> None:
    """Add a pixel-integrated Gaussian line of ``line_flux`` (erg/s) to ``flux`` (erg/s/A), in place."""
    if line_flux <= 0.0:
        return
    step = wave[1] - wave[0]
    sigma = centre * sigma_kms / C_KMS
    sel = np.flatnonzero(np.abs(wave - centre) <= 6.0 * sigma + step)
    if sel.size == 0:
        return
    edges = np.append(wave[sel] - 0.5 * step, wave[sel[-1]] + 0.5 * step)
    cdf = np.array([0.5 * math.erf((e - centre) / (math.sqrt(2.0) * sigma)) for e in edges])
    flux[sel] += line_flux * np.diff(cdf) / step


# --------------------------------------------------------------------------- bagpipes, on a worker
_MODEL: dict = {}              # {"key": grid key, "model": bagpipes.model_galaxy}: one per process
_MODEL_LOCK = threading.Lock()  # the model is stateful: one galaxy at a time per process


def _import_bagpipes():
    """Import bagpipes quietly (it prints banners; its first import writes an IGM table)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bagpipes
    return bagpipes


#: Placeholders of the SFH components a ``broad`` galaxy does not use (1e-15 of the mass).
_IDLE_SFH = {"delayed": {"age": 1.0, "tau": 1.0}, "exponential": {"age": 1.0, "tau": 1.0},
             "constant": {"age_max": 1.0, "age_min": 0.0}, "lognormal": {"tmax": 5.0, "fwhm": 5.0},
             "dblplaw": {"tau": 5.0, "alpha": 2.0, "beta": 2.0}}


def _broad_sfh(params: dict) -> dict:
    """The family's parameters in bagpipes' names (see :func:`priors._broad_young_sfh`)."""
    family, age, tau = str(params["sfh"]), float(params["age_gyr"]), float(params["tau_gyr"])
    if family in ("delayed", "exponential"):
        return {"age": age, "tau": tau}
    if family == "constant":
        return {"age_max": age, "age_min": 0.0}
    if family == "lognormal":
        return {"tmax": age, "fwhm": tau}
    return {"tau": tau, "alpha": float(params["sfh_alpha"]), "beta": float(params["sfh_beta"])}


def _broad_components(params: dict) -> dict:
    """bagpipes components of a ``broad`` galaxy: every SFH family present, all but one idle,
    stars at ``stellar_metallicity``, the nebula at ``metallicity``, Salim dust."""
    burst_frac = float(params["burst_frac"])
    z_gas, z_star = float(params["metallicity"]), float(params["stellar_metallicity"])
    main = str(params["sfh"])
    components = {}
    for family, idle in _IDLE_SFH.items():
        live = family == main
        components[family] = {**(_broad_sfh(params) if live else idle), "metallicity": z_star,
                              "massformed": float(np.log10(1.0 - burst_frac)) if live else -15.0}
    burst_age = float(params["burst_age_gyr"]) if burst_frac > 0 else 0.5
    components["burst"] = {"age": burst_age, "metallicity": z_star,
                           "massformed": float(np.log10(burst_frac)) if burst_frac > 0 else -15.0}
    components["dust"] = {"type": "Salim", "Av": float(params["av"]), "eta": float(params["dust_eta"]),
                          "delta": float(params["dust_delta"]), "B": float(params["dust_bump"])}
    components["nebular"] = {"logU": float(params["logu"]), "metallicity": z_gas}
    components.update(veldisp=float(params["veldisp_kms"]), t_bc=0.01, redshift=0.0)
    return components


def _components(params: dict) -> dict:
    """bagpipes model components for one galaxy, normalised to 1 Msun formed in all."""
    if "sfh" in params and isinstance(params["sfh"], str):
        return _broad_components(params)
    burst_frac = float(params["burst_frac"])
    z = float(params["metallicity"])
    burst_age = float(params["burst_age_gyr"]) if burst_frac > 0 else 0.5
    return {
        "delayed": {"age": float(params["age_gyr"]), "tau": float(params["tau_gyr"]),
                    "massformed": float(np.log10(1.0 - burst_frac)), "metallicity": z},
        "burst": {"age": burst_age, "massformed": float(np.log10(burst_frac)) if burst_frac > 0 else -15.0,
                  "metallicity": z},
        "dust": {"type": "Calzetti", "Av": float(params["av"]), "eta": float(params["dust_eta"])},
        "nebular": {"logU": float(params["logu"]), "metallicity": z},
        "veldisp": float(params["veldisp_kms"]), "t_bc": 0.01, "redshift": 0.0,
    }


_SETUP_PARAMS = {"burst_frac": 0.0, "burst_age_gyr": np.nan, "metallicity": 1.0, "age_gyr": 5.0,
                 "tau_gyr": 2.0, "av": 0.5, "dust_eta": 2.0, "logu": -3.0, "veldisp_kms": 100.0}
_BROAD_SETUP_PARAMS = {**_SETUP_PARAMS, "sfh": "delayed", "sfh_alpha": np.nan, "sfh_beta": np.nan,
                       "stellar_metallicity": 1.0, "dust_delta": 0.0, "dust_bump": 0.0}


def _model_grid(config: LibraryConfig) -> tuple[np.ndarray, slice]:
    """Air wavelengths to evaluate bagpipes at (the vacuum grid, padded), and the crop back."""
    n_pad = int(math.ceil(_PAD / config.wave_step))
    vacuum = config.wave_min + config.wave_step * np.arange(-n_pad, config.n_wave + n_pad, dtype=np.float64)
    return vacuum_to_air(vacuum), slice(n_pad, n_pad + config.n_wave)


def _galaxy_model(config: LibraryConfig):
    """This process's bagpipes model for ``config``'s grid: built once (~1 s, ~700 MB), then reused."""
    bagpipes = _import_bagpipes()
    bagpipes.config.R_spec = config.r_spec  # read at construction and by every update (veldisp)
    key = (config.wave_min, config.wave_max, config.wave_step, config.r_spec, config.priors)
    if _MODEL.get("key") != key:
        _MODEL.clear()  # never two models in one process
        max_z = bagpipes.config.max_redshift
        bagpipes.config.max_redshift = 0.1  # the grid only needs to reach the rest frame
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spec_wavs, _ = _model_grid(config)
                setup = _BROAD_SETUP_PARAMS if config.priors == "broad" else _SETUP_PARAMS
                model = bagpipes.model_galaxy(_components(setup), spec_wavs=spec_wavs)
        finally:
            bagpipes.config.max_redshift = max_z
        _MODEL.update(key=key, model=model)
    return _MODEL["model"]


def release_model() -> bool:
    """Drop this process's cached bagpipes model (~700 MB); True if there was one.

    On a cluster: ``client.run(release_model)`` frees every worker's copy.
    """
    with _MODEL_LOCK:
        had = bool(_MODEL)
        _MODEL.clear()
    return had


class _BadSpectrum(Exception):
    pass


def _synthesize(model, params: dict, wave: np.ndarray, crop: slice) -> tuple[np.ndarray, dict]:
    """Spectrum (erg/s/A) and derived truth of one galaxy; raises _BadSpectrum when unusable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.update(_components(params))
    if model.sfh.unphysical:
        raise _BadSpectrum("bagpipes: stars older than the Universe")
    unit_mstar = 10.0 ** float(model.sfh.stellar_mass)  # living mass per 1 Msun formed
    if not (np.isfinite(unit_mstar) and unit_mstar > 0):
        raise _BadSpectrum(f"bagpipes: stellar mass per Msun formed = {unit_mstar}")
    scale = 10.0 ** float(params["log_mstar"]) / unit_mstar
    flux = np.array(model.spectrum[crop, 1], dtype=np.float64) * scale
    lines = {c: scale * float(sum(model.line_fluxes[k] for k in keys)) for c, keys in LINE_KEYS.items()}
    agn = agn_narrow_lines(params, lines["ha"])
    for name, f_line in agn.items():
        _add_gaussian(wave, flux, AGN_LINE_WAVES[name], f_line, float(params["agn_sigma_kms"]))
    host_ha = lines["ha"]
    for col in LINE_COLUMNS:
        lines[col] += (agn["oii3726"] + agn["oii3729"]) if col == "oii3727" else agn[col]
    if not (np.all(np.isfinite(flux)) and np.all(flux > 0)):
        raise _BadSpectrum(f"non-finite or non-positive flux ({int(np.sum(~(flux > 0)))} pixels)")
    if not all(np.isfinite(v) and v >= 0 for v in lines.values()):
        raise _BadSpectrum(f"bad line fluxes {lines}")
    ew = halpha_ew(wave, flux, lines["ha"])
    with np.errstate(divide="ignore", invalid="ignore"):
        x = float(np.log10(lines["nii6584"] / lines["ha"])) if lines["ha"] > 0 else np.nan
        y = float(np.log10(lines["oiii5007"] / lines["hb"])) if lines["hb"] > 0 else np.nan
    bpt = classify_bpt(x, y, ew)
    truth = {"ok": True, "message": "", "log_mformed": float(params["log_mstar"]) - math.log10(unit_mstar),
             "sfr": float(model.sfh.sfr) * scale, **lines, "ha_host": host_ha, "ha_agn": agn["ha"],
             "ha_ew": ew, "log_nii_ha": x if np.isfinite(x) else np.nan,
             "log_oiii_hb": y if np.isfinite(y) else np.nan, "bpt_class": bpt, "starforming": bpt == "sf"}
    return flux, truth


def _failed_truth(message: str) -> dict:
    truth: dict = {c: np.nan for c, t in _RESULT_COLUMNS.items() if t == "float64"}
    truth.update(ok=False, message=message, bpt_class="failed", starforming=False)
    return truth


def _one_galaxy(model, params: dict, seed: int, wave: np.ndarray, crop: slice,
                prior_set: str = "survey") -> tuple[np.ndarray, dict]:
    """Spectrum and truth row of one galaxy, redrawing its parameters if bagpipes fails."""
    row, population = int(params["row"]), str(params["population"])
    errors = []
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            params = {"row": row, "attempt": attempt,
                      **priors.draw_galaxy(population, priors.row_rng(seed, row, attempt), prior_set)}
        try:
            flux, truth = _synthesize(model, params, wave, crop)
            message = f"redrawn after: {'; '.join(errors)}" if errors else ""
            return flux, {**params, **truth, "message": message}
        except Exception as exc:  # a bagpipes failure must not stop the build: redraw, then flag
            errors.append(f"attempt {attempt}: {type(exc).__name__}: {exc}")
    return np.zeros(wave.size), {**params, **_failed_truth("; ".join(errors))}


def _build_block(records: list[dict], first_row: int, zarr_path: str, config: dict) -> pd.DataFrame:
    """Compute rows ``first_row ...`` (one Zarr chunk) on a worker; return their truth rows."""
    cfg = LibraryConfig.from_dict(config)
    wave = cfg.wave()
    _, crop = _model_grid(cfg)
    block = np.zeros((len(records), cfg.n_wave), dtype=np.float32)
    rows = []
    with _MODEL_LOCK:
        model = _galaxy_model(cfg)
        for i, params in enumerate(records):
            start = time.perf_counter()
            flux, truth = _one_galaxy(model, params, cfg.seed, wave, crop, cfg.priors)
            block[i] = flux / FLUX_SCALE
            rows.append({**truth, "seconds": time.perf_counter() - start})
    zarr.open_array(f"{zarr_path}/flux", mode="r+")[first_row: first_row + len(records)] = block
    columns = truth_columns(cfg.priors)
    return _typed_truth(pd.DataFrame.from_records(rows, columns=list(columns)), columns)


def _typed_truth(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    for col, dtype in columns.items():
        df[col] = df[col].astype(dtype)
    return df


# --------------------------------------------------------------------------- the library on disk
def default_cache_dir() -> Path:
    """``$SURVEY_ML_CACHE``, else ``~/.cache/survey_ml``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "survey_ml")


def library_paths(config: LibraryConfig, cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(Zarr, Parquet) paths of ``config``'s library in ``cache_dir``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = f"library-{config.digest()}"
    return root / f"{stem}.zarr", root / f"{stem}.parquet"


@dataclass
class Library:
    """A built library, opened for reading.

    Attributes
    ----------
    path : Path
        The Zarr group (``library-<digest>.zarr``); the truth table sits beside it.
    config : LibraryConfig
    wave : numpy.ndarray
        Rest-frame vacuum wavelength of every flux column (A, float64).
    truth : pandas.DataFrame
        One row per spectrum (:data:`TRUTH_COLUMNS`), row ``i`` = flux row ``i``.
    build_seconds : float
        Wall time the build took (as recorded when it was built).
    cached : bool
        True when this call found the library already built.
    info : dict
        Build record: digest, versions, n_workers, ms per spectrum.
    """

    path: Path
    config: LibraryConfig
    wave: np.ndarray
    truth: pd.DataFrame
    build_seconds: float
    cached: bool = False
    info: dict = field(default_factory=dict)

    @property
    def truth_path(self) -> Path:
        return self.path.with_suffix(".parquet")

    @property
    def n(self) -> int:
        return len(self.truth)

    def _zarr(self):
        return zarr.open_array(str(self.path / "flux"), mode="r")

    def flux(self, rows: int | slice | np.ndarray | list[int] | None = None) -> np.ndarray:
        """L_lambda (erg/s/A, float64) of ``rows`` (all by default), read from Zarr on demand."""
        arr = self._zarr()
        if rows is None:
            data = arr[:]
        elif isinstance(rows, (int, np.integer, slice)):
            data = arr[rows]
        else:
            data = arr.oindex[np.asarray(rows, dtype=np.int64), :]
        return np.asarray(data, dtype=np.float64) * FLUX_SCALE

    def array(self):
        """All spectra as a lazy ``dask.array`` in erg/s/A (float64), chunks = Zarr chunks (blocks)."""
        import dask.array as da

        return da.from_zarr(self._zarr()).astype(np.float64) * FLUX_SCALE


def _read_record(parquet: Path) -> dict | None:
    try:
        meta = pq.read_schema(parquet).metadata or {}
        return json.loads(meta[b"survey_ml_library"])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def _complete(zarr_path: Path, parquet: Path, config: LibraryConfig) -> dict | None:
    """The build record if the library at these paths is complete and is ``config``'s; else None."""
    if not parquet.exists():
        return None
    record = _read_record(parquet)
    if record is None or record.get("digest") != config.digest():
        return None
    try:
        n_rows = pq.ParquetFile(parquet).metadata.num_rows
        shape = zarr.open_array(str(zarr_path / "flux"), mode="r").shape
    except Exception:
        return None
    return record if n_rows == config.n and tuple(shape) == (config.n, config.n_wave) else None


def open_library(path: str | os.PathLike) -> Library:
    """Open a complete library by its Zarr or Parquet path.

    Raises
    ------
    FileNotFoundError
        If the library is missing or was never committed (no Parquet record).
    """
    zarr_path = Path(path).with_suffix(".zarr")
    parquet = zarr_path.with_suffix(".parquet")
    record = _read_record(parquet) if parquet.exists() else None
    if record is None:
        raise FileNotFoundError(f"{zarr_path}: no committed library (missing or unreadable {parquet.name})")
    config = LibraryConfig.from_dict(record["config"])
    group = zarr.open_group(str(zarr_path), mode="r")
    wave = np.asarray(group["wave"][:], dtype=np.float64)
    return Library(path=zarr_path, config=config, wave=wave, truth=pd.read_parquet(parquet),
                   build_seconds=float(record["build_seconds"]), cached=True, info=record)


def _create_zarr(zarr_path: Path, config: LibraryConfig) -> None:
    group = zarr.open_group(str(zarr_path), mode="w")
    compressor = zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")
    group.create_array("flux", shape=(config.n, config.n_wave), chunks=(config.block_size, config.n_wave),
                       dtype="float32", compressors=compressor, fill_value=0)
    wave = group.create_array("wave", shape=(config.n_wave,), dtype="float64", compressors=compressor)
    wave[:] = config.wave()
    group.attrs.update({"config": config.to_dict(), "digest": config.digest(), "flux_unit": "erg/s/Angstrom",
                        "flux_scale": FLUX_SCALE, "grid": {"wave_min": config.wave_min, "wave_step": config.wave_step,
                        "n_wave": config.n_wave, "frame": "rest", "medium": "vacuum"},
                        "library_version": LIBRARY_VERSION})


def _write_truth(parquet: Path, truth: pd.DataFrame, record: dict) -> None:
    table = pa.Table.from_pandas(truth, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"survey_ml_library"] = json.dumps(record).encode()
    tmp = parquet.with_name(f".{parquet.name}.tmp-{os.getpid()}")
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    os.replace(tmp, parquet)


def build_library(config: LibraryConfig, cache_dir: str | os.PathLike | None = None, client=None,
                  progress: bool = False) -> Library:
    """Build (or return the cached) bagpipes spectral library of ``config``, on a Dask cluster.

    Parameters
    ----------
    config : LibraryConfig
    cache_dir : path, optional
        Where ``library-<digest>.zarr`` and ``.parquet`` live (default
        :func:`default_cache_dir`: ``$SURVEY_ML_CACHE`` or ``~/.cache/survey_ml``).
    client : distributed.Client or False, optional
        Cluster to run on; default: the current client if there is one, else (and with
        ``False``) every block in this process, one after the other.
    progress : bool
        Show a progress bar over blocks and print the build time per spectrum.

    Returns
    -------
    Library
        ``cached`` tells whether it was already built; a complete library is never
        recomputed.

    Notes
    -----
    All parameters are drawn here, on the client, from ``config.seed``; each block task
    (``config.block_size`` rows = one Zarr chunk) only runs bagpipes, on a model built
    once per worker process and kept in a module global (~700 MB per worker; free it with
    ``client.run(release_model)``). The result
    is therefore the same whatever the number of workers or the block size. bagpipes is
    imported here first so that its one-time IGM table is written before any worker
    imports it (workers sharing this file system; remote workers need bagpipes
    installed and imported once beforehand).
    """
    zarr_path, parquet = library_paths(config, cache_dir)
    record = _complete(zarr_path, parquet, config)
    if record is not None:
        return open_library(zarr_path)
    start = time.perf_counter()
    _import_bagpipes()
    zarr_path.parent.mkdir(parents=True, exist_ok=True)
    parquet.unlink(missing_ok=True)  # a stale record must not vouch for the arrays rewritten below
    params = priors.draw_library_parameters(config.n, config.seed, config.fractions, config.priors)
    _create_zarr(zarr_path, config)
    records = params.to_dict("records")
    blocks = [(records[a: a + config.block_size], a, str(zarr_path), config.to_dict())
              for a in range(0, config.n, config.block_size)]
    client = current_client(client)
    parts = run_blocks(_build_block, blocks, client, desc="library", progress=progress)
    truth = pd.concat(parts).sort_values("row").reset_index(drop=True)
    seconds = time.perf_counter() - start
    n_workers = len(client.scheduler_info()["workers"]) if client else 1
    record = {"digest": config.digest(), "config": config.to_dict(), "library_version": LIBRARY_VERSION,
              "priors_version": priors.PRIORS_VERSION, "bagpipes_version": _bagpipes_version(),
              "build_seconds": seconds, "n_workers": n_workers, "ms_per_spectrum": 1e3 * seconds / config.n,
              "worker_ms_per_spectrum": 1e3 * float(truth["seconds"].mean()), "n_failed": int((~truth["ok"]).sum()),
              "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_truth(parquet, truth, record)
    if progress:
        print(f"library {record['digest']}: {config.n} spectra in {seconds:.1f} s on {n_workers} worker(s): "
              f"{record['ms_per_spectrum']:.1f} ms per spectrum wall, {record['worker_ms_per_spectrum']:.1f} ms "
              f"per spectrum per worker; {record['n_failed']} failed -> {zarr_path}", flush=True)
    return Library(path=zarr_path, config=config, wave=config.wave(), truth=truth, build_seconds=seconds,
                   cached=False, info=record)
