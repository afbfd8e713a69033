"""An independently made HARPS release for the stellar task: e2ds files from direct MOOG syntheses.

The stellar network learns from :mod:`survey_ml.simulate.stellar_grid` spectra interpolated
between grid nodes and observed by :mod:`survey_ml.simulate.echelle_observe`. This module makes
spectra the other way at every step, so that a good score here is not the network recognising
its own simulator:

* **labels** from a Galactic population (thin disc, thick disc and halo metallicities; main
  sequence, subgiants, red-giant branch and red clump), continuous - never on a grid node, so
  the grid's interpolation error counts against the network;
* **physics**: one MOOG synthesis per star at its exact labels; [alpha/Fe] scattered about the
  Galactic trend (the grid follows it exactly); microturbulence from Bruntt et al. (2012) and
  its scatter (the grid uses the GALAH relation); a line list with its own errors (10% of the
  lines dropped, log gf perturbed by 0.05 dex); 12C/13C of 30 (dwarfs) and 10 (giants);
* **broadening**: radial-tangential macroturbulence (Doyle et al. 2014 for dwarfs, 5 km/s for
  giants; training has none), rotation with a per-star limb darkening, and a per-order
  resolving power 105,000-120,000 (training: 115,000 everywhere);
* **observation**: a real instrument - the wavelength solution and blaze of the HARPS Gl273
  e2ds in ``shared/fixtures/real/harps`` - in counts: a Planck continuum of the star across the
  orders, a 2% flat-field error in the blaze, Poisson and read noise, cosmic rays, a radial
  velocity of tens of km/s that the task must find by cross-correlation, the Earth's motion
  (the header's BERV, which the reader applies), and the e2ds header
  that the reader turns into variances and S/N.

The files are written as HARPS DRS e2ds with the blaze frame linked beside them, so the run
reads them exactly as it reads real HARPS data (``survey-ml run-catalog harps --input``); a
``truth.parquet`` beside them holds the labels.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.echelle import SPEED_OF_LIGHT_KMS, read_harps_e2ds

__all__ = ["HarpsMockPlan", "draw_population", "bruntt_vmicro", "doyle_vmacro", "macroturbulence_kernel",
           "line_list_errors", "star_spectrum", "observe_e2ds", "write_harps_mock", "DEFAULT_TEMPLATE"]

#: The real HARPS e2ds whose wavelength solution, blaze and header the mock borrows.
DEFAULT_TEMPLATE = (Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "real" / "harps"
                    / "HARPS.2003-12-13T06:19:48.371_e2ds_A.fits")


@dataclass(frozen=True)
class HarpsMockPlan:
    """How the mock stars are drawn and observed.

    The defaults differ from the training recipe (``survey_ml/weights/stellar.toml``) on purpose;
    see the module docstring.
    """

    sn50: tuple[float, float] = (15.0, 150.0)   # S/N per pixel at 550 nm, log-uniform
    rv_sigma_kms: float = 35.0
    resolution: tuple[float, float] = (105000.0, 120000.0)   # per order
    drop_lines: float = 0.10
    loggf_sigma: float = 0.05
    alpha_scatter: float = 0.08
    vmicro_scatter: float = 0.15
    blaze_error: float = 0.02
    cosmic_rays: float = 3.0                    # mean per order
    synth_range: tuple[float, float] = (5040.0, 5360.0)   # rest frame, A (air)
    step: float = 0.01


def bruntt_vmicro(teff: np.ndarray, logg: np.ndarray) -> np.ndarray:
    """Microturbulence (km/s) of Bruntt et al. (2012, MNRAS 423, 122), eq. 3, floored at 0.3.

    >>> bruntt_vmicro(np.array([5777.0]), np.array([4.44])).round(2).tolist()
    [0.97]
    """
    dt = np.asarray(teff, np.float64) - 5700.0
    return np.maximum(1.095 + 5.44e-4 * dt + 2.56e-7 * dt ** 2 - 0.378 * (np.asarray(logg, np.float64) - 4.0), 0.3)


def doyle_vmacro(teff: np.ndarray, logg: np.ndarray) -> np.ndarray:
    """Radial-tangential macroturbulence (km/s): Doyle et al. (2014, MNRAS 444, 3592) for dwarfs
    (log g >= 3.5), 5 km/s for giants; floored at 0.5.

    >>> doyle_vmacro(np.array([5777.0, 4500.0]), np.array([4.44, 2.5])).round(2).tolist()
    [3.21, 5.0]
    """
    teff = np.asarray(teff, np.float64)
    logg = np.asarray(logg, np.float64)
    dt = teff - 5777.0
    dwarf = 3.21 + 2.33e-3 * dt + 2.0e-6 * dt ** 2 - 2.0 * (logg - 4.44)
    return np.maximum(np.where(logg >= 3.5, dwarf, 5.0), 0.5)


def draw_population(n: int, rng: np.random.Generator,
                    inside: Callable[[np.ndarray], np.ndarray] | None = None,
                    plan: HarpsMockPlan | None = None) -> pd.DataFrame:
    """``n`` stars of a Galactic field population: their labels and the nuisance parameters.

    Parameters
    ----------
    n : int
        Number of stars.
    rng : numpy.random.Generator
    inside : callable, optional
        ``(m, 3)`` (Teff, log g, [Fe/H]) -> ``(m,)`` bool: keep only stars where this is True
        (the training grid's usable cells), drawing again until ``n`` are kept.
    plan : HarpsMockPlan, optional
        Its ``alpha_scatter`` and ``vmicro_scatter``.

    Returns
    -------
    pandas.DataFrame
        ``teff, logg, feh, alpha, vmicro, vmacro, vsini, limb_darkening, population``.

    Examples
    --------
    >>> stars = draw_population(500, np.random.default_rng(1))
    >>> bool(stars.teff.between(4000, 7000).all()), sorted(stars.population.unique())
    (True, ['clump', 'dwarf', 'giant', 'subgiant'])
    """
    plan = plan or HarpsMockPlan()
    kept: list[pd.DataFrame] = []
    total = 0
    while total < n:
        m = 2 * (n - total) + 16
        kind = rng.choice(["dwarf", "subgiant", "giant", "clump"], size=m, p=[0.55, 0.15, 0.2, 0.1])
        teff = np.empty(m)
        logg = np.empty(m)
        d, s, g, c = (kind == k for k in ("dwarf", "subgiant", "giant", "clump"))
        teff[d] = rng.uniform(4200.0, 6900.0, d.sum())
        # main sequence: log g from 4.65 (K dwarfs) to 4.15 (F dwarfs), with 0.1 dex spread
        logg[d] = 4.65 - 0.5 * (teff[d] - 4200.0) / 2700.0 + rng.normal(0.0, 0.1, d.sum())
        teff[s] = rng.uniform(5000.0, 6400.0, s.sum())
        logg[s] = rng.uniform(3.4, 4.1, s.sum())
        teff[g] = rng.uniform(4050.0, 5300.0, g.sum())
        logg[g] = 1.0 + 2.4 * (teff[g] - 4000.0) / 1300.0 + rng.normal(0.0, 0.2, g.sum())   # RGB
        teff[c] = rng.normal(4800.0, 120.0, c.sum())
        logg[c] = rng.normal(2.5, 0.12, c.sum())
        disc = rng.choice(["thin", "thick", "halo"], size=m, p=[0.78, 0.16, 0.06])
        feh = np.where(disc == "thin", rng.normal(-0.05, 0.22, m),
                       np.where(disc == "thick", rng.normal(-0.6, 0.3, m), rng.normal(-1.5, 0.45, m)))
        alpha_trend = np.clip(-0.4 * feh, 0.0, 0.4) + np.where(disc == "thick", 0.05, 0.0)
        table = pd.DataFrame({"teff": teff, "logg": logg, "feh": feh, "alpha": alpha_trend, "population": kind,
                              "disc": disc})
        ok = table.teff.between(4000.0, 7000.0) & table.logg.between(0.5, 4.9) & table.feh.between(-2.4, 0.45)
        if inside is not None:
            ok &= inside(table[["teff", "logg", "feh"]].to_numpy())
        table = table[ok.to_numpy()]
        kept.append(table)
        total += len(table)
    stars = pd.concat(kept, ignore_index=True).iloc[:n].copy()
    k = len(stars)
    stars["alpha"] = stars["alpha"] + rng.normal(0.0, plan.alpha_scatter, k)
    stars["vmicro"] = bruntt_vmicro(stars.teff, stars.logg) + rng.normal(0.0, plan.vmicro_scatter, k)
    stars["vmicro"] = stars["vmicro"].clip(lower=0.3)
    stars["vmacro"] = doyle_vmacro(stars.teff, stars.logg)
    # rotation: slow for cool and evolved stars, a tail of fast F dwarfs (capped at the network's 30 km/s)
    slow = rng.exponential(2.5, k)
    fast = rng.uniform(5.0, 28.0, k)
    hot = (stars.teff > 6200.0).to_numpy() & (stars.logg > 3.5).to_numpy()
    stars["vsini"] = np.minimum(np.where(hot & (rng.random(k) < 0.6), fast, slow), 29.0)
    stars["limb_darkening"] = np.clip(0.9 - 0.3 * (stars.teff - 4000.0) / 3000.0 + rng.normal(0, 0.03, k), 0.3, 0.95)
    return stars.reset_index(drop=True)


def line_list_errors(rng: np.random.Generator, drop: float, loggf_sigma: float
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """A line-list editor for :func:`survey_ml.simulate.stellar_synthesis.synthesize`: drops a
    fraction ``drop`` of the lines and adds ``N(0, loggf_sigma)`` to every log gf.

    >>> lines = np.zeros(1000, dtype=[("wave", "f8"), ("loggf", "f8")])
    >>> edited = line_list_errors(np.random.default_rng(0), 0.1, 0.05)(lines)
    >>> 850 < len(edited) < 950, bool(0.04 < edited["loggf"].std() < 0.06)
    (True, True)
    """
    def edit(lines: np.ndarray) -> np.ndarray:
        lines = lines[rng.random(len(lines)) >= drop]
        lines["loggf"] = lines["loggf"] + rng.normal(0.0, loggf_sigma, len(lines))
        return lines

    return edit


def macroturbulence_kernel(dv: float, zeta: float, limb_darkening: float = 0.6, n_mu: int = 64) -> np.ndarray:
    """The radial-tangential macroturbulence profile (Gray 2005, ch. 17) on pixels of ``dv`` km/s.

    Half the surface moves radially, half tangentially, each with a Gaussian speed distribution
    ``exp(-(v / zeta)^2)``; projected onto the line of sight at ``mu = cos(theta)`` and averaged
    over the limb-darkened disc.

    >>> k = macroturbulence_kernel(0.5, 4.0)
    >>> round(float(k.sum()), 6), len(k) % 2, bool(k[len(k) // 2] == k.max())
    (1.0, 1, True)
    """
    half = int(np.ceil(4.0 * zeta / dv))
    v = dv * np.arange(-half, half + 1)
    mu = (np.arange(n_mu) + 0.5) / n_mu
    weight = (1.0 - limb_darkening + limb_darkening * mu) * mu
    profile = np.zeros_like(v)
    for m, w in zip(mu, weight):
        for s in (zeta * m, zeta * np.sqrt(1.0 - m * m)):
            s = max(s, 0.05 * dv)
            profile += 0.5 * w * np.exp(-(v / s) ** 2) / s
    return profile / profile.sum()


def _rotation_profile(dv: float, vsini: float, epsilon: float) -> np.ndarray:
    """Gray's rotation profile sampled at ``dv`` km/s (1 sample for ``vsini`` below a pixel)."""
    if vsini < dv:
        return np.array([1.0])
    half = int(np.ceil(vsini / dv))
    x = dv * np.arange(-half, half + 1) / vsini
    y = np.clip(1.0 - x ** 2, 0.0, None)
    profile = 2.0 * (1.0 - epsilon) * np.sqrt(y) + 0.5 * np.pi * epsilon * y
    return profile / profile.sum()


def star_spectrum(star: pd.Series | dict, plan: HarpsMockPlan, seed: int,
                  moog: str | os.PathLike | None = None, synthesize: Callable[..., tuple[np.ndarray, np.ndarray]]
                  | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rest-frame, unbroadened spectrum of one star with its own line-list errors.

    ``synthesize`` has the signature of :func:`survey_ml.simulate.stellar_synthesis.synthesize`
    (the default: MOOG). Returns ``(ln wavelength on an even grid, normalised flux)`` ready for
    broadening.
    """
    if synthesize is None:
        from .stellar_synthesis import synthesize

    rng = np.random.default_rng(seed)
    wave, flux = synthesize(float(star["teff"]), float(star["logg"]), float(star["feh"]), float(star["alpha"]),
                            float(star["vmicro"]), wave_range=plan.synth_range, step=plan.step,
                            c12c13=30.0 if float(star["logg"]) >= 3.5 else 10.0, moog=moog,
                            edit_lines=line_list_errors(rng, plan.drop_lines, plan.loggf_sigma))
    ln_wave = np.linspace(np.log(wave[0]), np.log(wave[-1]), wave.size)
    return ln_wave, np.interp(ln_wave, np.log(wave), flux)


def _broadened(ln_wave: np.ndarray, flux: np.ndarray, star, resolution: float) -> np.ndarray:
    from scipy.signal import fftconvolve

    dv = (ln_wave[1] - ln_wave[0]) * SPEED_OF_LIGHT_KMS
    kernel = np.convolve(_rotation_profile(dv, float(star["vsini"]), float(star["limb_darkening"])),
                         macroturbulence_kernel(dv, float(star["vmacro"]), float(star["limb_darkening"])))
    sigma = SPEED_OF_LIGHT_KMS / resolution / 2.3548
    half = int(np.ceil(5 * sigma / dv))
    gauss = np.exp(-0.5 * (dv * np.arange(-half, half + 1) / sigma) ** 2)
    kernel = np.convolve(kernel, gauss / gauss.sum())
    pad = len(kernel) // 2
    padded = np.concatenate([np.full(pad, flux[0]), flux, np.full(pad, flux[-1])])
    return fftconvolve(padded, kernel / kernel.sum(), mode="valid")


def _planck(wave_a: np.ndarray, teff: float) -> np.ndarray:
    x = 1.4387769e8 / (wave_a * teff)      # hc / (lambda k T), lambda in A
    return 1.0 / (wave_a ** 5 * np.expm1(x))


def observe_e2ds(ln_wave: np.ndarray, flux: np.ndarray, star, wavelength: np.ndarray, blaze: np.ndarray,
                 read_var: float, plan: HarpsMockPlan, rng: np.random.Generator) -> tuple[np.ndarray, float,
                                                                                            np.ndarray, np.ndarray]:
    """Counts ``(n_orders, n_pix)`` of one star through an e2ds wavelength solution and blaze.

    Orders outside the synthesis carry the continuum only. Returns the counts, the S/N per pixel
    at 550 nm (order-peak, as the DRS's ``SN50``), the S/N of every order and the resolving
    power drawn for every order.
    """
    n_orders, n_pix = wavelength.shape
    # Earth-frame wavelengths: the star's barycentric RV less the Earth's motion (BERV)
    shift = (1.0 + float(star["rv_kms"]) / SPEED_OF_LIGHT_KMS) / (1.0 + float(star["berv_kms"]) / SPEED_OF_LIGHT_KMS)
    resolution = rng.uniform(*plan.resolution, n_orders)
    normalised = np.ones((n_orders, n_pix))
    lo, hi = np.exp(ln_wave[0]) * shift, np.exp(ln_wave[-1]) * shift
    for o in range(n_orders):
        if wavelength[o, -1] < lo or wavelength[o, 0] > hi:
            continue
        smooth = _broadened(ln_wave, flux, star, resolution[o])
        rest = np.log(wavelength[o] / shift)
        normalised[o] = np.interp(rest, ln_wave, smooth, left=1.0, right=1.0)
    continuum = _planck(wavelength, float(star["teff"]))
    x = np.linspace(-1.0, 1.0, n_pix)
    flat_error = 1.0 + plan.blaze_error * rng.uniform(-1, 1, (n_orders, 1)) * np.polynomial.legendre.legval(
        x, [0, 0, 1])[None, :] + 0.5 * plan.blaze_error * rng.uniform(-1, 1, (n_orders, 1)) * x[None, :]
    shape = continuum * np.clip(blaze, 0.0, None) * flat_error
    # the DRS's SN50 is order 50 (HARPS: 5530-5594 A): scale so that its blaze peak has the drawn S/N
    target = float(np.exp(rng.uniform(*np.log(plan.sn50))))
    o50 = 50 if n_orders > 50 else int(np.argmin(np.abs(wavelength[:, n_pix // 2] - 5500.0)))
    peak = float(np.nanmax(shape[o50]))
    counts_at_peak = 0.5 * (target ** 2 + np.sqrt(target ** 4 + 4 * target ** 2 * read_var))   # S/N^2 (N + R) = N^2
    expected = np.clip(normalised * shape / peak * counts_at_peak, 0.0, None)
    counts = rng.poisson(expected).astype(np.float64) + rng.normal(0.0, np.sqrt(read_var), expected.shape)
    for o in range(n_orders):
        for _ in range(rng.poisson(plan.cosmic_rays)):
            p = rng.integers(1, n_pix - 1)
            counts[o, p - 1:p + 2] += rng.uniform(0.5, 5.0) * counts_at_peak * np.array([0.3, 1.0, 0.3])
    order_peak = np.nanmax(expected, axis=1)
    order_sn = order_peak / np.sqrt(order_peak + read_var)
    return counts.astype(np.float32), float(order_sn[o50]), order_sn, resolution


def _one_star(k: int, star: dict, plan: HarpsMockPlan, template: str, folder: str, seed: int,
              moog: str | None, synthesize: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """Synthesise, observe and write one star's e2ds; returns its truth row."""
    from astropy.io import fits

    spectrum = read_harps_e2ds(template)
    with fits.open(template) as hdul:
        header = hdul[0].header.copy()
    prefix = "ESO" if str(header.get("INSTRUME", "")).strip().upper() == "HARPS" else "TNG"
    rons = [float(v) for key, v in header.items() if key.startswith(f"{prefix} DET OUT") and key.endswith(" RON")]
    read_var = float(header[f"HIERARCH {prefix} DRS SPE EXT WINDOW"]) * (
        np.mean(rons) / float(header[f"HIERARCH {prefix} DRS CCD CONAD"])) ** 2
    rng = np.random.default_rng([seed, k])
    ln_wave, flux = star_spectrum(star, plan, seed=int(rng.integers(2 ** 31)), moog=moog, synthesize=synthesize)
    counts, sn50, order_sn, resolution = observe_e2ds(ln_wave, flux, star, spectrum.wavelength, spectrum.blaze,
                                                      read_var, plan, rng)
    name = f"MOCK{k:04d}"
    mjd = 61000.0 + k / 1440.0
    date = pd.Timestamp("2025-02-24") + pd.Timedelta(minutes=k)
    stamp = date.strftime("%Y-%m-%dT%H:%M:%S.000")
    header["OBJECT"] = name
    header[f"HIERARCH {prefix} OBS TARG NAME"] = name
    header["DATE-OBS"] = stamp
    header["MJD-OBS"] = mjd
    header[f"HIERARCH {prefix} DRS BERV"] = float(star["berv_kms"])
    for o, value in enumerate(order_sn):
        key = f"HIERARCH {prefix} DRS SPE EXT SN{o}"
        if key in header:
            header[key] = round(float(value), 1)
    header[f"HIERARCH {prefix} DRS SPE EXT SN50"] = round(sn50, 1)
    header.add_history("survey_ml.simulate.harps_mock: synthetic star on the wavelength solution and blaze of "
                       + os.path.basename(template))
    path = Path(folder) / f"HARPS.{stamp}_e2ds_A.fits"
    fits.PrimaryHDU(counts, header).writeto(path, overwrite=True, output_verify="silentfix")
    row = {"object": name, "file": path.name, **{key: star[key] for key in
           ("teff", "logg", "feh", "alpha", "vmicro", "vmacro", "vsini", "limb_darkening", "rv_kms", "berv_kms",
            "population",
            "disc")}, "sn50": round(sn50, 1), "resolution_median": float(np.median(resolution))}
    return row


def write_harps_mock(folder: str | os.PathLike, n: int, seed: int = 0, plan: HarpsMockPlan | None = None,
                     template: str | os.PathLike = DEFAULT_TEMPLATE,
                     inside: Callable[[np.ndarray], np.ndarray] | None = None, client=None,
                     moog: str | os.PathLike | None = None,
                     synthesize: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    """Write ``n`` mock HARPS e2ds files, the template's blaze frame (linked) and ``truth.parquet``.

    Parameters
    ----------
    folder : path
        Output folder (created).
    n, seed : int
        Number of stars and the seed of everything random.
    plan : HarpsMockPlan, optional
    template : path
        A real HARPS or HARPS-N e2ds whose blaze frame lies beside it.
    inside : callable, optional
        Restrict the labels (see :func:`draw_population`), e.g. to a grid's usable cells.
    client : distributed.Client, optional
        Synthesise the stars on this cluster (one MOOG run, ~15 s, per star).
    moog : path, optional
        The MOOGSILENT executable (default: built or found by :func:`~.stellar_synthesis.find_moog`).
    synthesize : callable, optional
        Instead of MOOG, a function with the signature of
        :func:`~survey_ml.simulate.stellar_synthesis.synthesize` (tests use a line list of
        Gaussians).

    Returns
    -------
    pathlib.Path
        The truth table.
    """
    from .stellar_synthesis import find_moog

    plan = plan or HarpsMockPlan()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    template = Path(template)
    blaze = read_harps_e2ds(template).meta["blaze_file"]
    if not blaze:
        raise FileNotFoundError(f"{template}: its blaze frame is not beside it")
    link = folder / blaze
    if not link.exists():
        os.symlink(template.parent / blaze, link)
    rng = np.random.default_rng(seed)
    stars = draw_population(n, rng, inside, plan)
    stars["rv_kms"] = rng.normal(0.0, plan.rv_sigma_kms, n).clip(-90.0, 90.0)   # barycentric
    stars["berv_kms"] = rng.uniform(-30.0, 30.0, n)
    exe = None if synthesize is not None else str(moog or find_moog())
    records = stars.to_dict("records")
    args = [(k, records[k], plan, str(template), str(folder), seed, exe, synthesize) for k in range(n)]
    if client is None:
        rows = [_one_star(*a) for a in args]
    else:
        futures = [client.submit(_one_star, *a, pure=False) for a in args]
        rows = client.gather(futures, errors="skip")   # a star MOOG cannot do is left out of the truth
    truth = pd.DataFrame(rows)
    truth.attrs["plan"] = asdict(plan)
    path = folder / "truth.parquet"
    truth.to_parquet(path, index=False)
    return path
