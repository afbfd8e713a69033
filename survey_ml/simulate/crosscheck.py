"""A second, independently written LAMOST-DR10 mock generator, for cross-simulation validation.

The networks are trained on :mod:`survey_ml.simulate.library` + :mod:`~survey_ml.simulate.observe`.
A held-out split of that simulator only tests the networks against themselves; this module
makes spectra with *other* priors and *another* observation model (written from the physics,
sharing none of the first generator's code beyond the LAMOST file writers and header fields),
so that ``bench/cross_sim.py`` can ask: do the catalog's values and error bars hold on spectra
the models were not trained on?

Stellar populations and nebular lines are bagpipes (BC03 + CLOUDY), as in any bagpipes-based
simulator; everything around them differs:

============================  ==========================================================
prior                         this generator
============================  ==========================================================
populations                   70% star-forming hosts, 30% quenched; no AGN
log M*                        N(10.0, 0.55) on 8.5-11.5
gas 12+log(O/H)               Curti et al. (2020) MZR, Z0 = 8.793, M0 = 10^10.02, gamma = 0.28,
                              beta = 1.2, + N(0, 0.1); clipped to 7.99-9.09 (bagpipes' lines
                              stop responding above 2.5 Zsun)
stellar metallicity           the gas value (star-forming) / N(log Z*(M), 0.2) (quenched)
logU                          uniform -3.8 to -2.0, independent of metallicity
SFH (star-forming)            exponential (tau 2-15 Gyr), lognormal, or constant + a
                              10-300 Myr burst, even odds
SFH (quenched)                exponential with age/tau 12-40
dust                          Cardelli et al. (1989) or SMC (even odds), A_V 0-2 rising with
                              mass, eta 1.5-2.5
velocity dispersion           40-250 km/s, log-uniform
============================  ==========================================================

============================  ==========================================================
observation effect            this generator
============================  ==========================================================
redshift                      p(z) ~ z^1.5 exp(-z / 0.055) on 0.01-0.3
line-spread function          Gaussian, R(lambda) = R0 (lambda / 6000 A)^0.4 with R0 uniform
                              1500-2100 per spectrum, applied in four wavelength segments
pixels                        LAMOST log-linear grid (3909 pixels), flux-conserving
flux calibration              1 + sum_k c_k P_k(x), Legendre orders 1-4, c_k ~ N(0, 0.03);
                              a red/blue arm step N(0, 0.03) at 5700-5900 A
throughput                    blue and red arm efficiency curves with a dichroic dip
sky                           rising continuum + [OI] 5577/6300/6364, NaD, OH bands > 6800 A;
                              subtraction residuals 5% of the line flux
noise                         Gaussian: object + sky shot noise + read noise, scaled to a
                              measured S/N_r drawn log-uniform on 3-40
defects                       Poisson(2) cosmic rays left in the data (unmasked); a run of
                              5-20 dead pixels masked in a third of the spectra
catalogue redshift            true z + N(0, 4e-5 (1+z)); 1% wrong (uniform 0-0.5)
============================  ==========================================================

Labels: ``starforming`` is True for a galaxy whose noise-free lines sit in the BPT
star-forming region (below Kauffmann et al. 2003, log [NII]/Ha < 0.05) with EW(H-alpha) >= 3 A -
the definition the shipped ``p_starforming`` documents - computed here with this module's
own line and continuum measurement; ``bpt_class`` is 'sf', 'composite' (between Kauffmann
2003 and Kewley et al. 2001), 'agn' or 'passive' (EW < 3 A).

``write_crosscheck_release(out_dir, CrosscheckConfig(n=2000, seed=7))`` writes
``spectra/spec-*.fits.gz``, ``catalogue.csv`` (the LRS catalogue with a ``file`` column) and
``truth.parquet``; ``python -m survey_ml.simulate.crosscheck OUT --n 2000 --seed 7`` does
the same from a shell.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d

from ..io.lamost import CATALOGUE_DTYPES, write_lamost_catalogue, write_lamost_spectrum
from ..io.spectrum import Spectrum
from ..core.wavelength import LAMOST_LRS_GRID

__all__ = ["CrosscheckConfig", "draw_galaxies", "draw_observations", "write_crosscheck_release", "bpt_label",
           "curti_oh12"]

C_KMS = 299_792.458
N_PIX = 3909
#: Rest-frame vacuum grid of the bagpipes spectra (A): covers 3700 / 1.3 to 9100.
REST = np.arange(2700.0, 9300.0, 1.0)
R_BAND = (5600.0, 6900.0)
_LINES = {"ha": ("H  1  6562.80A",), "hb": ("H  1  4861.32A",), "oiii5007": ("O  3  5006.84A",),
          "nii6584": ("N  2  6583.45A",), "oii3727": ("O  2  3726.03A", "O  2  3728.81A"),
          "sii6717": ("S  2  6716.44A",), "sii6731": ("S  2  6730.82A",)}


@dataclass(frozen=True)
class CrosscheckConfig:
    """Size and seed of a cross-check release, and its redshift and S/N ranges."""

    n: int = 2000
    seed: int = 7
    z_range: tuple[float, float] = (0.01, 0.3)
    snr_range: tuple[float, float] = (3.0, 40.0)
    wrong_z_fraction: float = 0.01
    block_size: int = 100
    first_obsid: int = 5_000_000   #: obsids are first_obsid + 0..n-1 (parts of one big set: distinct ranges)


# --------------------------------------------------------------------------- priors
def curti_oh12(log_mstar: np.ndarray | float) -> np.ndarray:
    """Curti et al. (2020) mass-metallicity relation, 12 + log(O/H) at log M*.

    Examples
    --------
    >>> round(float(curti_oh12(10.02)), 3)
    8.723
    """
    x = np.asarray(log_mstar, dtype=float)
    return 8.793 - 0.28 / 1.2 * np.log10(1.0 + 10.0 ** (-1.2 * (x - 10.02)))


def draw_galaxies(n: int, seed: int) -> pd.DataFrame:
    """Physical parameters of ``n`` galaxies (pure numpy; see the module table for the priors).

    Examples
    --------
    >>> g = draw_galaxies(500, 1)
    >>> bool(g["oh12"].between(7.99, 9.091).all()), bool(g["logu"].between(-3.8, -2.0).all())
    (True, True)
    """
    rng = np.random.default_rng([seed, 1])
    sf = rng.random(n) < 0.7
    mass = np.clip(rng.normal(10.0, 0.55, n), 8.5, 11.5)
    oh12 = np.clip(curti_oh12(mass) + rng.normal(0.0, 0.1, n), 7.99, 9.09)
    zstar_q = np.clip(10 ** (np.interp(mass, [9.0, 10.0, 11.0, 11.5], [-0.6, -0.3, 0.05, 0.1]) + rng.normal(0, 0.2, n)),
                      0.2, 2.5)
    metallicity = np.where(sf, 10 ** (oh12 - 8.69), zstar_q)
    oh12 = np.where(sf, oh12, 8.69 + np.log10(zstar_q))
    family = np.where(sf, rng.choice(["exponential", "lognormal", "constant_burst"], n), "quenched")
    age = np.where(sf, rng.uniform(1.5, 12.0, n), rng.uniform(7.0, 12.5, n))
    tau = np.where(sf, rng.uniform(2.0, 15.0, n), age / rng.uniform(12.0, 40.0, n))
    tmax, fwhm = rng.uniform(4.0, 13.0, n), rng.uniform(4.0, 15.0, n)
    burst_age, burst_frac = rng.uniform(0.01, 0.3, n), rng.uniform(0.02, 0.15, n)
    av_mean = np.clip(0.3 + 0.6 * (mass - 9.0), 0.1, 2.0)
    av = np.where(sf, np.clip(rng.normal(av_mean, 0.3), 0.0, 2.0), np.abs(rng.normal(0.0, 0.3, n)))
    return pd.DataFrame({
        "galaxy": np.arange(n), "starforming_host": sf, "log_mstar": mass, "oh12": oh12, "metallicity": metallicity,
        "logu": rng.uniform(-3.8, -2.0, n), "sfh": family, "age_gyr": age, "tau_gyr": tau, "tmax_gyr": tmax,
        "fwhm_gyr": fwhm, "burst_age_gyr": burst_age, "burst_frac": burst_frac,
        "dust_law": rng.choice(["Cardelli", "SMC"], n), "av": av, "eta": rng.uniform(1.5, 2.5, n),
        "veldisp_kms": np.exp(rng.uniform(np.log(40.0), np.log(250.0), n))})


def draw_observations(config: CrosscheckConfig) -> pd.DataFrame:
    """Redshift, S/N_r, catalogue redshift and noise seed of every spectrum.

    Examples
    --------
    >>> obs = draw_observations(CrosscheckConfig(n=20000, seed=3))
    >>> round(float(np.mean(obs["z_catalogue_wrong"])), 2)
    0.01
    """
    rng = np.random.default_rng([config.seed, 2])
    n = config.n
    grid = np.linspace(*config.z_range, 5001)
    cdf = np.cumsum(grid**1.5 * np.exp(-grid / 0.055))
    z = np.interp(rng.random(n), (cdf - cdf[0]) / (cdf[-1] - cdf[0]), grid)
    wrong = rng.random(n) < config.wrong_z_fraction
    z_cat = np.where(wrong, rng.uniform(0.0, 0.5, n), z + rng.normal(0.0, 4e-5 * (1 + z)))
    return pd.DataFrame({"obsid": config.first_obsid + np.arange(n), "z": z, "z_catalogue": z_cat,
                         "z_catalogue_wrong": wrong,
                         "snr_r_target": np.exp(rng.uniform(*np.log(config.snr_range), n)),
                         "noise_seed": rng.integers(0, 2**62, n)})


# --------------------------------------------------------------------------- bagpipes
_MODELS: dict = {}


def _components(g: dict) -> dict:
    z_star = float(g["metallicity"])
    comps: dict = {"redshift": 0.0, "veldisp": float(g["veldisp_kms"]), "t_bc": 0.01,
                   "dust": {"type": str(g["dust_law"]), "Av": float(g["av"]), "eta": float(g["eta"])},
                   "nebular": {"logU": float(g["logu"]), "metallicity": z_star}}
    idle = -12.0
    live = str(g["sfh"])
    burst = live == "constant_burst"
    comps["exponential"] = {"age": float(g["age_gyr"]), "tau": float(g["tau_gyr"]), "metallicity": z_star,
                            "massformed": 0.0 if live in ("exponential", "quenched") else idle}
    comps["lognormal"] = {"tmax": float(g["tmax_gyr"]), "fwhm": float(g["fwhm_gyr"]), "metallicity": z_star,
                          "massformed": 0.0 if live == "lognormal" else idle}
    comps["constant"] = {"age_max": float(g["age_gyr"]), "age_min": 0.0, "metallicity": z_star,
                         "massformed": math.log10(1 - float(g["burst_frac"])) if burst else idle}
    comps["burst"] = {"age": float(g["burst_age_gyr"]), "metallicity": z_star,
                      "massformed": math.log10(float(g["burst_frac"])) if burst else idle}
    return comps


def _model(dust_law: str):
    """One bagpipes model per dust law and process (the law is fixed when a model is built)."""
    if dust_law not in _MODELS:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import bagpipes
            from .library import vacuum_to_air  # the Morton (1991) formula: physics constants, not priors

            setup = {"metallicity": 1.0, "logu": -3.0, "sfh": "exponential", "age_gyr": 5.0, "tau_gyr": 3.0,
                     "tmax_gyr": 5.0, "fwhm_gyr": 5.0, "burst_age_gyr": 0.1, "burst_frac": 0.05,
                     "dust_law": dust_law, "av": 0.5, "eta": 2.0, "veldisp_kms": 100.0}
            old = bagpipes.config.max_redshift
            bagpipes.config.max_redshift = 0.1
            try:
                _MODELS[dust_law] = bagpipes.model_galaxy(_components(setup), spec_wavs=vacuum_to_air(REST))
            finally:
                bagpipes.config.max_redshift = old
    return _MODELS[dust_law]


def bpt_label(nii_ha: float, oiii_hb: float, ew_ha: float) -> str:
    """'sf', 'composite', 'agn' or 'passive' from noise-free log line ratios and EW(H-alpha) (A).

    Examples
    --------
    >>> bpt_label(-0.6, -0.2, 20.0), bpt_label(-0.2, 0.1, 20.0), bpt_label(-0.6, -0.2, 1.0)
    ('sf', 'composite', 'passive')
    """
    if not (np.isfinite(ew_ha) and ew_ha >= 3.0 and np.isfinite(nii_ha) and np.isfinite(oiii_hb)):
        return "passive"
    if nii_ha < 0.05 and oiii_hb < 0.61 / (nii_ha - 0.05) + 1.3:
        return "sf"
    if nii_ha < 0.47 and oiii_hb < 0.61 / (nii_ha - 0.47) + 1.19:
        return "composite"
    return "agn"


def _rest_spectrum(g: dict) -> tuple[np.ndarray, dict]:
    """L_lambda (erg/s/A) on :data:`REST` and the truth measured on it (lines, EW, label)."""
    model = _model(str(g["dust_law"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.update(_components(g))
    if model.sfh.unphysical:
        raise ValueError("unphysical star-formation history")
    scale = 10 ** float(g["log_mstar"]) / 10 ** float(model.sfh.stellar_mass)
    flux = np.asarray(model.spectrum[:, 1], float) * scale
    lines = {k: scale * float(sum(model.line_fluxes[key] for key in keys)) for k, keys in _LINES.items()}
    side = ((REST > 6490) & (REST < 6530)) | ((REST > 6600) & (REST < 6640))
    cont = float(np.median(flux[side]))
    ew = lines["ha"] / cont if cont > 0 else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        n2 = float(np.log10(lines["nii6584"] / lines["ha"]))
        o3 = float(np.log10(lines["oiii5007"] / lines["hb"]))
    label = bpt_label(n2, o3, ew)
    return flux, {**lines, "ha_ew": ew, "log_nii_ha": n2, "log_oiii_hb": o3, "bpt_class": label,
                  "starforming": label == "sf", "sfr": float(model.sfh.sfr) * scale}


# --------------------------------------------------------------------------- observation
def _edges() -> np.ndarray:
    g = LAMOST_LRS_GRID
    return 10.0 ** (g.coeff0 + g.coeff1 * (np.arange(N_PIX + 1) - 0.5))


def _sky(wave: np.ndarray) -> np.ndarray:
    """A night-sky spectrum (relative units): a continuum rising to the red, airglow lines, OH bands."""
    sky = 0.6 + 0.8 * (wave / 9000.0) ** 2
    lines = [(5578.5, 8.0), (5891.6, 3.0), (5897.6, 2.5), (6301.9, 4.0), (6365.4, 1.5)]
    lines += [(w, 2.0 + 3.0 * ((w - 6800) / 2300)) for w in np.arange(6830.0, 9100.0, 37.0)]
    for w, h in lines:
        sky = sky + h * np.exp(-0.5 * ((wave - w) / 1.6) ** 2)
    return sky


def _throughput(wave: np.ndarray) -> np.ndarray:
    blue = 1.0 / (1.0 + np.exp((wave - 5850.0) / 60.0)) * np.clip((wave - 3600.0) / 900.0, 0.05, 1.0)
    red = 1.0 / (1.0 + np.exp(-(wave - 5750.0) / 60.0)) * np.clip((9400.0 - wave) / 1200.0, 0.05, 1.0)
    return np.maximum(blue + red, 0.03)


def _observe(rest_flux: np.ndarray, obs: dict, rng: np.random.Generator) -> tuple[Spectrum, dict]:
    """This generator's LAMOST LRS: LSF, redshift, pixels, calibration, sky, noise, defects, header."""
    from astropy.cosmology import Planck18

    from .observe import lamost_meta  # LAMOST header fields (file format only)

    z = float(obs["z"])
    edges = _edges()
    wave = np.sqrt(edges[1:] * edges[:-1])
    # LSF: R(lambda) = R0 (lambda/6000)^0.4, four segments blended linearly, on a 10 km/s log grid
    r0 = rng.uniform(1500.0, 2100.0)
    step = 10.0 / C_KMS
    log_grid = np.exp(np.arange(np.log(REST[0] + 5), np.log(REST[-1] - 5), step))
    lum = np.interp(log_grid, REST, rest_flux)
    centres = np.array([4000.0, 5200.0, 6500.0, 8000.0]) / (1 + z)
    blurred = [gaussian_filter1d(lum, C_KMS / (r0 * ((c * (1 + z)) / 6000.0) ** 0.4) / 2.3548 / 10.0, mode="nearest")
               for c in centres]
    weights = np.stack([np.interp(log_grid, centres, np.eye(4)[k]) for k in range(4)])
    lum = np.sum(weights * np.stack(blurred), axis=0)
    d_l = Planck18.luminosity_distance(z).to_value("cm")
    f_obs = lum / (4 * np.pi * d_l**2 * (1 + z)) * 1e17
    w_obs = log_grid * (1 + z)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (f_obs[1:] + f_obs[:-1]) * np.diff(w_obs))])
    flux = np.diff(np.interp(edges, w_obs, cum)) / np.diff(edges)
    # flux calibration: Legendre terms 1-4 and an arm step
    x = np.linspace(-1, 1, N_PIX)
    flux *= 1.0 + np.polynomial.legendre.legval(x, np.concatenate([[0.0], rng.normal(0.0, 0.03, 4)]))
    flux *= 1.0 + rng.normal(0.0, 0.03) * (wave > rng.uniform(5700.0, 5900.0))
    # noise: object + sky shot noise through the throughput, read noise; scaled to the S/N_r target
    thr = _throughput(wave)
    sky = _sky(wave)
    r = (wave >= R_BAND[0]) & (wave < R_BAND[1])
    obj_r = float(np.median(np.abs(flux[r])))
    sky_level = rng.uniform(0.5, 2.0) * obj_r / float(np.median(sky[r]))
    var_shape = (np.abs(flux) + sky_level * sky) / thr + 0.1 * obj_r
    sigma = np.sqrt(var_shape)
    sigma *= float(np.median(np.abs(flux[r]) / sigma[r])) / float(obs["snr_r_target"])
    residual = 0.05 * rng.normal() * sky_level * (sky - (0.6 + 0.8 * (wave / 9000.0) ** 2))
    data = flux + residual + rng.normal(0.0, 1.0, N_PIX) * sigma
    ivar = 1.0 / sigma**2
    andmask = np.zeros(N_PIX, np.uint32)
    for _ in range(rng.poisson(2.0)):  # cosmic rays the pipeline missed
        data[rng.integers(0, N_PIX)] += rng.uniform(10.0, 50.0) * float(np.median(sigma))
    if rng.random() < 1 / 3:
        start = int(rng.integers(0, N_PIX - 20))
        stop = start + int(rng.integers(5, 21))
        ivar[start:stop], andmask[start:stop] = 0.0, np.uint32(1 << 1)
    good = ivar > 0
    snr = {}
    for band, (lo, hi) in {"u": (3700, 4000), "g": (4000, 5500), "r": (5500, 6900), "i": (6900, 8200),
                           "z": (8200, 9100)}.items():
        sel = good & (wave >= lo) & (wave < hi)
        snr[band] = round(float(np.median(np.abs(data[sel]) * np.sqrt(ivar[sel]))), 2) if sel.sum() > 10 else 0.0
    meta = lamost_meta(int(obs["obsid"]), float(obs["z_catalogue"]), 4e-5 * (1 + z), snr,
                       ra=rng.uniform(0, 360), dec=float(np.degrees(np.arcsin(rng.uniform(-0.2, 1.0)))),
                       data_v="survey_ml crosscheck mock")
    spec = Spectrum(flux=data.astype(np.float32), ivar=ivar.astype(np.float32), wavelength=wave.astype(np.float32),
                    andmask=andmask, ormask=np.zeros(N_PIX, np.uint32), meta=meta, format="lamost-new")
    return spec, {"snr_r": snr["r"], "resolution_6000": r0}


def _block(galaxies: list[dict], observations: list[dict], spectra_dir: str) -> list[dict]:
    from .observe import catalogue_row  # LAMOST catalogue fields (file format only)

    rows = []
    for g, obs in zip(galaxies, observations):
        rng = np.random.default_rng(int(obs["noise_seed"]))
        try:
            rest, truth = _rest_spectrum(g)
        except Exception as exc:  # a failed model is recorded, never fatal
            rows.append({**g, **obs, "ok": False, "message": f"{type(exc).__name__}: {exc}"})
            continue
        spec, record = _observe(rest, obs, rng)
        name = spec.meta["filename"] + ".gz"
        write_lamost_spectrum(os.path.join(spectra_dir, name), spec, overwrite=True, compresslevel=1)
        rows.append({**g, **obs, **truth, **record, "ok": True, "message": "", "file": f"spectra/{name}",
                     "catalogue": catalogue_row(spec.meta, f"spectra/{name}")})
    return rows


def write_crosscheck_release(out_dir: str | os.PathLike, config: CrosscheckConfig = CrosscheckConfig(),
                             client=None, progress: bool = False) -> Path:
    """Write a cross-check release (spectra, catalogue, truth); returns its root.

    Parameters
    ----------
    out_dir : path
        Release root: ``spectra/``, ``catalogue.csv``, ``truth.parquet``.
    config : CrosscheckConfig
    client : distributed.Client, optional
        Blocks of ``config.block_size`` spectra as tasks there (else here, one after another).
    progress : bool
        Progress bar.
    """
    from ..cluster.client import run_blocks

    root = Path(out_dir)
    spectra = root / "spectra"
    spectra.mkdir(parents=True, exist_ok=True)
    galaxies = draw_galaxies(config.n, config.seed).to_dict("records")
    observations = draw_observations(config).to_dict("records")
    b = config.block_size
    blocks = [(galaxies[a: a + b], observations[a: a + b], str(spectra)) for a in range(0, config.n, b)]
    parts = run_blocks(_block, blocks, client, desc="crosscheck", progress=progress)
    rows = [r for part in parts for r in part]
    catalogue = pd.DataFrame([r["catalogue"] for r in rows if r["ok"]])
    write_lamost_catalogue(catalogue[[*CATALOGUE_DTYPES, "file"]], root / "catalogue.csv", overwrite=True)
    truth = pd.DataFrame([{k: v for k, v in r.items() if k != "catalogue"} for r in rows])
    truth.attrs["config"] = asdict(config)
    truth.to_parquet(root / "truth.parquet", index=False)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a cross-check LAMOST DR10 mock release (independent generator)")
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--first-obsid", type=int, default=5_000_000,
                        help="obsid of the first spectrum (give parts of one large set distinct ranges)")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit="4GiB") as cluster, \
            Client(cluster) as client:
        config = CrosscheckConfig(n=args.n, seed=args.seed, first_obsid=args.first_obsid)
        root = write_crosscheck_release(args.out, config, client=client,
                                        progress=True)
    print(root)


if __name__ == "__main__":
    main()
