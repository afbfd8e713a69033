"""A fast parametric mock of LAMOST LRS galaxy spectra, for engine, I/O and demo runs.

Each spectrum is a smooth stellar continuum (power law with a 4000 A break) plus Gaussian
nebular lines whose ratios follow an injected gas-phase metallicity through the Pettini &
Pagel (2004) N2 and O3N2 calibrations, redshifted, broadened to LAMOST resolution
(R ~ 1800), sampled on the native log-linear grid and given Gaussian noise scaled to a
requested median S/N in the r band. It is physically sensible but deliberately simple:
training and accuracy work uses the bagpipes library of ``survey_ml.simulate`` (BC03 +
CLOUDY), not this model. Here the point is files that look and behave like the survey's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.lamost import lamost_filename, write_lamost_catalogue, write_lamost_spectrum
from ..io.spectrum import Spectrum
from ..core.wavelength import LAMOST_LRS_GRID
from .observe import BANDS, catalogue_row, lamost_meta

__all__ = ["make_lamost_spectrum", "write_mock_release", "MockRelease"]

C_KMS = 299_792.458
LAMOST_R = 1800.0
LAMOST_N_PIX = 3909

#: Rest-frame vacuum wavelengths (A) of the nebular lines drawn.
LINES = {"OII3727": 3728.48, "Hb": 4862.68, "OIII4959": 4960.30, "OIII5007": 5008.24,
         "NII6548": 6549.86, "Ha": 6564.61, "NII6584": 6585.27, "SII6717": 6718.29,
         "SII6731": 6732.67}


def _line_fluxes(oh12: float, ha_flux: float) -> dict[str, float]:
    """Line fluxes for a star-forming nebula of metallicity ``oh12`` (PP04 N2 and O3N2)."""
    n2 = (oh12 - 8.90) / 0.57                 # log [NII]6584 / Ha
    o3n2 = (8.73 - oh12) / 0.32               # log ([OIII]5007/Hb) / ([NII]6584/Ha)
    hb = ha_flux / 2.86                       # case B, no extra reddening
    nii = ha_flux * 10 ** n2
    oiii = hb * 10 ** (o3n2 + n2)
    return {"Ha": ha_flux, "Hb": hb, "NII6584": nii, "NII6548": nii / 3.05,
            "OIII5007": oiii, "OIII4959": oiii / 2.98, "OII3727": 1.5 * hb,
            "SII6717": 0.12 * ha_flux, "SII6731": 0.09 * ha_flux}


def make_lamost_spectrum(rng: np.random.Generator, obsid: int, z: float, snr_r: float,
                         oh12: float = 8.8, starforming: bool = True,
                         n_pix: int = LAMOST_N_PIX) -> tuple[Spectrum, dict]:
    """One mock LAMOST LRS galaxy spectrum on the native grid.

    Parameters
    ----------
    rng : numpy.random.Generator
    obsid : int
        OBSID to write in the header.
    z : float
        Redshift.
    snr_r : float
        Target median per-pixel S/N in the r band.
    oh12 : float
        Gas-phase 12 + log(O/H) of the emission lines.
    starforming : bool
        Emission lines present (False: a passive continuum with a stronger break).
    n_pix : int
        Pixels from COEFF0 = 3.5682.

    Returns
    -------
    spectrum : Spectrum
        With LAMOST header fields in ``meta`` (SNRU..SNRZ measured from the noise).
    truth : dict
        obsid, z, snr_r (requested), oh12, starforming, beta, d4000, ha_ew.
    """
    grid = LAMOST_LRS_GRID
    z = round(float(z), 8)  # header precision of LAMOST's Z card
    wave = grid.wavelength()[:n_pix]
    rest = wave / (1.0 + z)
    beta = rng.normal(-1.0 if starforming else 0.5, 0.4)
    d4000 = rng.uniform(1.1, 1.4) if starforming else rng.uniform(1.6, 2.0)
    continuum = (rest / 5500.0) ** beta
    continuum /= 1.0 + (d4000 - 1.0) / (1.0 + np.exp((rest - 4000.0) / 30.0))
    flux = 100.0 * continuum
    ha_ew = rng.uniform(10.0, 120.0) if starforming else 0.0
    if starforming:
        cont_ha = np.interp(6564.61, rest, flux)
        sigma_v = rng.uniform(40.0, 120.0)
        for name, f_line in _line_fluxes(oh12, ha_ew * cont_ha).items():
            centre = LINES[name] * (1.0 + z)
            sigma = centre * np.hypot(1.0 / (LAMOST_R * 2.3548), sigma_v / C_KMS)
            flux = flux + f_line / (1.0 + z) / (np.sqrt(2 * np.pi) * sigma) * np.exp(
                -0.5 * ((wave - centre) / sigma) ** 2)
    r_band = (wave >= BANDS["r"][0]) & (wave < BANDS["r"][1])
    # Sky-limited noise: roughly constant sigma, a bit worse in the blue and at the red end.
    shape = 1.0 + 0.6 * np.exp(-(wave - 3700.0) / 300.0) + 0.3 * ((wave - 3700.0) / 5400.0) ** 4
    sigma = shape * np.median(flux[r_band]) / (snr_r * np.median(shape[r_band]))
    noisy = flux + rng.normal(0.0, 1.0, n_pix) * sigma
    ivar = (1.0 / sigma**2).astype(np.float32)
    snr = {b: float(np.median(np.abs(flux[(wave >= lo) & (wave < hi)]) / sigma[(wave >= lo) & (wave < hi)]))
           if ((wave >= lo) & (wave < hi)).any() else 0.0 for b, (lo, hi) in BANDS.items()}
    meta = lamost_meta(obsid, z, abs(rng.normal(0, 1e-4)), {b: round(v, 2) for b, v in snr.items()},
                       ra=rng.uniform(0, 360), dec=np.degrees(np.arcsin(rng.uniform(-0.2, 1.0))))
    zeros = np.zeros(n_pix, dtype=np.uint32)
    spectrum = Spectrum(flux=noisy.astype(np.float32), ivar=ivar, wavelength=wave.astype(np.float32),
                        andmask=zeros, ormask=zeros.copy(), meta=meta, format="lamost-new")
    truth = {"obsid": int(obsid), "z": float(z), "snr_r": float(snr_r), "oh12": float(oh12) if starforming else np.nan,
             "starforming": bool(starforming), "beta": float(beta), "d4000": float(d4000), "ha_ew": float(ha_ew)}
    return spectrum, truth


@dataclass
class MockRelease:
    """Files of a mock release: spectra directory, catalogue and truth table."""

    root: Path
    spectra_dir: Path
    catalogue: Path
    truth: Path
    files: list[str]


def _draw(rng: np.random.Generator) -> tuple[float, float, float, bool]:
    z = float(rng.uniform(0.01, 0.25))
    snr_r = float(np.clip(rng.lognormal(np.log(10.0), 0.6), 3.0, 60.0))  # mostly 3-30
    oh12 = float(np.clip(rng.normal(8.85, 0.15), 8.2, 9.3))
    return z, snr_r, oh12, bool(rng.random() < 0.7)


def _write_block(root: str, first_obsid: int, n: int, seed: int, layout: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        obsid = first_obsid + k
        z, snr_r, oh12, sf = _draw(rng)
        spec, truth = make_lamost_spectrum(rng, obsid, z, snr_r, oh12, sf)
        lay = layout if layout in ("old", "new") else ("old" if rng.random() < 0.2 else "new")
        name = lamost_filename(spec.meta["lmjd"], spec.meta["planid"], spec.meta["spid"], spec.meta["fiberid"])
        path = os.path.join(root, name)
        write_lamost_spectrum(path, spec, layout=lay, overwrite=True, compresslevel=1)
        rows.append({**truth, **catalogue_row(spec.meta, os.path.relpath(path, os.path.dirname(root))),
                     "layout": lay})
    return rows


def write_mock_release(out_dir: str | os.PathLike, n: int, seed: int = 0, layout: str = "mixed",
                       client=None, block_size: int = 500, first_obsid: int = 1_000_000) -> MockRelease:
    """Write ``n`` mock LAMOST LRS spectra, their LRS catalogue (CSV) and a truth table.

    Parameters
    ----------
    out_dir : path
        Output root; spectra go to ``out_dir/spectra/``.
    n : int
        Number of spectra.
    seed : int
        Seed; the same seed and ``n`` give identical files.
    layout : {"mixed", "new", "old"}
        File layout; ``mixed`` writes ~20% DR7-style files among DR8+ ones.
    client : distributed.Client, optional
        Write blocks in parallel on this cluster (else in this process).
    block_size : int
        Spectra per task.
    first_obsid : int
        OBSID of the first spectrum (the rest follow on); file names derive from it.

    Returns
    -------
    MockRelease
    """
    root = Path(out_dir)
    spectra_dir = root / "spectra"
    spectra_dir.mkdir(parents=True, exist_ok=True)
    blocks = [(str(spectra_dir), first_obsid + a, min(block_size, n - a), seed * 100_003 + a, layout)
              for a in range(0, n, block_size)]
    if client is not None:
        futures = [client.submit(_write_block, *b, pure=False) for b in blocks]
        parts = client.gather(futures)
    else:
        parts = [_write_block(*b) for b in blocks]
    table = pd.DataFrame([row for part in parts for row in part])
    catalogue = root / "catalogue.csv"
    write_lamost_catalogue(table, catalogue, overwrite=True)
    truth = root / "truth.parquet"
    table[["obsid", "file", "layout", "z", "snr_r", "oh12", "starforming", "beta", "d4000", "ha_ew"]].to_parquet(truth)
    return MockRelease(root=root, spectra_dir=spectra_dir, catalogue=catalogue, truth=truth,
                       files=sorted(str(root / f) for f in table["file"]))
