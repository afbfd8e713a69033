"""The scaling relations a finished catalog supports, fitted and plotted.

* Mass-metallicity (MZR): when the catalog has ``oh12`` and ``sf_flag`` and stellar masses
  are given (:func:`attach_masses`: a table matched by obsid or position; a mock release's
  truth table), fitted on the ``sf_flag`` rows (:func:`survey_ml.relations.fit_mzr`).
* Tully-Fisher (TFR): when it has the kinematic columns, the reverse, forward and r-band
  relations (ltsfit) on ``kin_flag == 0`` rows.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["attach_masses", "fit_catalog_mzr", "fit_catalog_tfr"]


def attach_masses(catalog: pd.DataFrame, masses: str | os.PathLike, radius_arcsec: float = 1.0) -> np.ndarray:
    """Stellar masses (log Msun) for the catalog rows, from a table matched by obsid or position.

    The table (Parquet, CSV or FITS) needs a mass column - ``log_mstar`` (a mock
    release's truth table), or MPA-JHU ``lgm_fib_p50`` / ``lgm_tot_p50`` (their -9999 and
    other non-physical values count as missing) - and either ``obsid`` or ``ra``/``dec``
    (matched within ``radius_arcsec``, as the LAMOST study matched MPA-JHU within 1").
    """
    path = Path(masses)
    if path.suffix in (".parquet", ".pq"):
        table = pd.read_parquet(path)
    elif path.suffix in (".fits", ".fit") or path.name.endswith((".fits.gz", ".fit.gz")):
        from astropy.table import Table

        t = Table.read(path)
        table = t[[c for c in t.colnames if len(t[c].shape) <= 1]].to_pandas()
    else:
        table = pd.read_csv(path)
    table.columns = [str(c).lower() for c in table.columns]
    column = next((c for c in ("log_mstar", "lgm_fib_p50", "lgm_tot_p50") if c in table.columns), None)
    if column is None:
        raise ValueError(f"{path}: no stellar-mass column (log_mstar, lgm_fib_p50 or lgm_tot_p50)")
    mass = table[column].to_numpy(dtype=float)
    mass = np.where((mass > 5) & (mass < 13), mass, np.nan)
    if "obsid" in table.columns:
        lookup = pd.Series(mass, index=table["obsid"].to_numpy(np.int64))
        lookup = lookup[~lookup.index.duplicated()]
        return lookup.reindex(catalog["obsid"].to_numpy(np.int64)).to_numpy(dtype=float)
    if {"ra", "dec"} <= set(table.columns):
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        ours = SkyCoord(catalog["ra"].to_numpy(float) * u.deg, catalog["dec"].to_numpy(float) * u.deg)
        theirs = SkyCoord(table["ra"].to_numpy(float) * u.deg, table["dec"].to_numpy(float) * u.deg)
        index, sep, _ = ours.match_to_catalog_sky(theirs)
        return np.where(sep.arcsec <= radius_arcsec, mass[index], np.nan)
    raise ValueError(f"{path}: needs an obsid column or ra/dec to match the catalog")


def fit_catalog_mzr(catalog: pd.DataFrame, masses: str | os.PathLike, spec: dict[str, Any], out: Path,
                    name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The MZR of the ``sf_flag`` rows with a mass: the fit's JSON-ready summary and its plot."""
    from .mzr import fit_mzr, plot_mzr

    mzr_spec = spec.get("mzr", {})
    log_mstar = attach_masses(catalog, masses, float(mzr_spec.get("match_radius_arcsec", 1.0)))
    sf = catalog["sf_flag"].to_numpy(bool) & np.isfinite(catalog["oh12"].to_numpy(float))
    oh12 = catalog["oh12"].to_numpy(float)
    try:
        fit = fit_mzr(log_mstar[sf], oh12[sf], x_range=tuple(mzr_spec.get("x_range", (8.5, 11.5))))
    except ValueError as err:
        return {"n": int(sf.sum()), "summary": f"not fitted: {err}"}, {}
    mzr = {"n": fit.n, "coeffs": fit.coeffs.tolist(), "coeffs_err": fit.coeffs_err.tolist(),
           "scatter": fit.scatter, "x_range": list(fit.x_range), "summary": fit.summary(), "masses": str(masses),
           "running_median": {k: np.asarray(v).tolist() for k, v in fit.bins.items()}}
    plot = plot_mzr(fit, log_mstar[sf], oh12[sf], out / "mzr.png", title=f"{name}: {fit.summary()}")
    return mzr, {"mzr_plot": str(plot)}


def fit_catalog_tfr(catalog: pd.DataFrame, out: Path, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Reverse, forward and r-band TFR fits (ltsfit) on ``kin_flag == 0`` rows, with plots."""
    from .tfr import fit_tfr, plot_tfr

    good = catalog["kin_flag"].to_numpy() == 0
    log_v = np.log10(catalog["vmax_ad_kms"].to_numpy(float))
    log_v_err = catalog["vmax_kms_err"].to_numpy(float) / (catalog["vmax_kms"].to_numpy(float) * math.log(10)) + 0.01
    mass, mag = catalog["log_mstar"].to_numpy(float), catalog["abs_mag_r"].to_numpy(float)
    axes = {"reverse": (mass, log_v, 0.1, log_v_err), "forward": (log_v, mass, log_v_err, 0.1),
            "r_band": (log_v, mag, log_v_err, 0.1)}
    fits, plots = {}, {}
    for kind, (x, y, xe, ye) in axes.items():
        use = good & np.isfinite(x) & np.isfinite(y)
        if use.sum() < 10:
            fits[kind] = {"error": f"only {int(use.sum())} galaxies", "n": int(use.sum())}
            continue
        try:
            fit = fit_tfr(x[use], y[use], np.broadcast_to(xe, x.shape)[use], np.broadcast_to(ye, y.shape)[use],
                          kind=kind)
        except ValueError as err:
            fits[kind] = {"error": str(err), "n": int(use.sum())}
            continue
        fits[kind] = {"slope": fit.slope, "slope_err": fit.slope_err, "intercept": fit.intercept,
                      "intercept_err": fit.intercept_err, "pivot": fit.pivot, "sig_int": fit.sig_int,
                      "rms": fit.rms, "n": fit.n, "n_clipped": fit.n_clipped}
        plots[f"tfr_{kind}"] = str(plot_tfr(fit, x[use], y[use], out / f"tfr_{kind}.png", kind=kind,
                                            title=f"{name}: {kind} TFR"))
    return fits, plots
