"""Mock survey releases with known truth: library spectra re-observed in the survey's own files.

A release of any size (100 to 300,000 spectra) re-observes rows of one cached rest-frame
library (``library.py``) at new redshifts and noise, so the library is built once. What is
written is exactly what the survey ships - one ``spec-*.fits.gz`` per spectrum in the LAMOST
DR7 or DR8+ layout and an LRS catalogue (CSV) - plus a truth table (Parquet) joining every
spectrum to its library parameters and the observation record.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cluster.client import run_blocks
from ..io.lamost import CATALOGUE_DTYPES, write_lamost_catalogue, write_lamost_spectrum
from .observe import BANDS, LamostInstrument, catalogue_row, observe_lamost
from .parametric import MockRelease

__all__ = ["ObservationPlan", "draw_observations", "simulate_release", "simulate_settings"]


@dataclass(frozen=True)
class ObservationPlan:
    """How a mock release samples redshift and S/N (the ``[simulate]`` table of a release spec).

    Redshifts follow p(z) ~ z^2 exp(-(z / z_scale)^1.5) on [z_min, z_max] - a magnitude-limited
    galaxy sample, peaking near z ~ 0.07 for z_scale = 0.07. S/N_r is lognormal with the
    given median and log-width, clipped to [snr_min, snr_max] (mostly 3-30, as in LAMOST DR10).
    """

    z_min: float = 0.002
    z_max: float = 0.3
    z_scale: float = 0.07
    snr_median: float = 8.0
    snr_sigma_ln: float = 0.6
    snr_min: float = 2.0
    snr_max: float = 60.0
    old_layout_fraction: float = 0.2
    first_obsid: int = 1_000_000

    @classmethod
    def from_spec(cls, spec: dict[str, Any], variant: str | None = None) -> "ObservationPlan":
        """From a parsed release spec: its ``[simulate]`` table, overridden by ``[simulate.<variant>]``."""
        sim = simulate_settings(spec, variant)
        z, snr = sim.get("redshift", {}), sim.get("snr_r", {})
        return cls(z_min=z.get("min", cls.z_min), z_max=z.get("max", cls.z_max),
                   z_scale=z.get("scale", cls.z_scale), snr_median=snr.get("median", cls.snr_median),
                   snr_sigma_ln=snr.get("sigma_ln", cls.snr_sigma_ln), snr_min=snr.get("min", cls.snr_min),
                   snr_max=snr.get("max", cls.snr_max),
                   old_layout_fraction=sim.get("old_layout_fraction", cls.old_layout_fraction),
                   first_obsid=sim.get("first_obsid", cls.first_obsid))


def simulate_settings(spec: dict[str, Any], variant: str | None = None) -> dict[str, Any]:
    """The ``[simulate]`` table of a release spec, with a named variant's keys laid over it."""
    base = {k: v for k, v in spec.get("simulate", {}).items() if not isinstance(v, dict) or k in ("redshift", "snr_r")}
    if variant is None:
        return base
    try:
        return {**base, **spec["simulate"][variant]}
    except KeyError:
        raise KeyError(f"release spec has no [simulate.{variant}] table") from None


def _draw_redshifts(n: int, rng: np.random.Generator, plan: ObservationPlan) -> np.ndarray:
    grid = np.linspace(plan.z_min, plan.z_max, 4001)
    pdf = grid**2 * np.exp(-((grid / plan.z_scale) ** 1.5))
    cdf = np.cumsum(pdf)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    return np.interp(rng.uniform(0.0, 1.0, n), cdf, grid)


def draw_observations(n: int, n_library: int, rng: np.random.Generator, plan: ObservationPlan) -> pd.DataFrame:
    """One row per mock spectrum: obsid, library row, true redshift, requested S/N_r, layout, seed."""
    snr = np.clip(rng.lognormal(np.log(plan.snr_median), plan.snr_sigma_ln, n), plan.snr_min, plan.snr_max)
    return pd.DataFrame({
        "obsid": plan.first_obsid + np.arange(n, dtype=np.int64),
        "library_row": rng.integers(0, n_library, n),
        "z_true": _draw_redshifts(n, rng, plan),
        "snr_r_requested": snr,
        "layout": np.where(rng.uniform(size=n) < plan.old_layout_fraction, "old", "new"),
        "noise_seed": rng.integers(0, 2**63 - 1, n, dtype=np.int64),
    })


def _observe_block(plan_rows: pd.DataFrame, library_path: str, spectra_dir: str,
                   instrument: LamostInstrument) -> list[dict]:
    """Observe and write one block of mock spectra (runs on a worker)."""
    from .library import open_library

    library = open_library(library_path)
    rows = np.sort(plan_rows["library_row"].unique())
    flux = dict(zip(rows, library.flux(rows)))
    records = []
    for obs in plan_rows.itertuples(index=False):
        rng = np.random.default_rng(obs.noise_seed)
        spec, record = observe_lamost(library.wave, flux[obs.library_row], obs.z_true, obs.snr_r_requested,
                                      rng, obs.obsid, instrument)
        name = spec.meta["filename"] + ".gz"
        write_lamost_spectrum(os.path.join(spectra_dir, name), spec, layout=obs.layout, overwrite=True,
                              compresslevel=1)
        del record["calibration_terms"]
        record["z_true"] = record.pop("z")
        for band in BANDS:  # the header's SNRU..SNRZ are these measurements
            del record[f"snr{band}_measured"]
        records.append({**record, "library_row": int(obs.library_row), "layout": obs.layout,
                        **catalogue_row(spec.meta, f"spectra/{name}")})
    return records


def simulate_release(library, out_dir: str | os.PathLike, n: int, seed: int = 0,
                     plan: ObservationPlan = ObservationPlan(), instrument: LamostInstrument = LamostInstrument(),
                     client=None, block_size: int = 250, progress: bool = False) -> MockRelease:
    """Write a mock LAMOST LRS release of ``n`` spectra re-observed from ``library``.

    Parameters
    ----------
    library : survey_ml.simulate.library.Library
        The rest-frame library (built once, cached).
    out_dir : path
        Release root: ``spectra/``, ``catalogue.csv`` and ``truth.parquet`` go here.
    n : int
        Number of spectra.
    seed : int
        The same seed, library and ``n`` give identical files, on any number of workers.
    plan : ObservationPlan
        Redshift and S/N sampling.
    instrument : LamostInstrument
        The observation model's instrument.
    client : distributed.Client, optional
        Observe blocks in parallel there (else in this process).
    block_size : int
        Spectra per task.
    progress : bool
        Progress bar.

    Returns
    -------
    MockRelease
        Paths of the spectra, catalogue and truth table. The truth table has one row per
        spectrum: ``obsid``, ``file``, ``z_true``, ``snr_r_requested``, measured ``snr*``,
        the library row and every library truth column (``oh12``, ``starforming``,
        ``bpt_class``, ``log_mstar``, line fluxes, ...).
    """
    root = Path(out_dir)
    spectra_dir = root / "spectra"
    spectra_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan_table = draw_observations(n, len(library.truth), rng, plan)
    blocks = [(plan_table.iloc[a: a + block_size], str(library.path), str(spectra_dir), instrument)
              for a in range(0, n, block_size)]
    parts = run_blocks(_observe_block, blocks, client, desc="simulate", progress=progress)
    observed = pd.DataFrame([r for part in parts for r in part]).sort_values("obsid").reset_index(drop=True)
    catalogue = root / "catalogue.csv"
    # The catalogue carries what the survey publishes (never the truth), plus each file's path.
    write_lamost_catalogue(observed[[*CATALOGUE_DTYPES, "file"]], catalogue, overwrite=True)
    library_truth = library.truth.rename(columns={"row": "library_row"})
    truth = observed.rename(columns={"z": "z_cat"}).merge(library_truth, on="library_row", how="left",
                                                          suffixes=("", "_library"))
    truth.to_parquet(root / "truth.parquet", index=False)
    return MockRelease(root=root, spectra_dir=spectra_dir, catalogue=catalogue, truth=root / "truth.parquet",
                       files=sorted(str(root / f) for f in observed["file"]))
