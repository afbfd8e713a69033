"""Redshifts for a block of spectra: the PDF network's candidates, refined by templates.

:func:`predict_redshifts` is the block function run-catalog calls on each Zarr chunk (and
the benchmark on held-out mocks):

1. the spectra go onto the setup's log-linear grid (:mod:`survey_ml.core.redshift_inputs`;
   on the LAMOST store grid this is the identity);
2. :class:`~survey_ml.models.redshift_cnn.RedshiftPDFNet` gives p(ln(1 + z)) over bins;
   its ``n_candidates`` highest peaks (at least ``min_separation`` bins apart) are the
   candidates;
3. :func:`survey_ml.core.templates.refine_redshifts` fits the PCA templates shipped in the same
   weights file around each candidate and keeps the best chi^2.

Outputs per spectrum: ``z_cnn`` (the refined redshift), ``z_cnn_err`` (1 sigma: the chi^2
curvature, rescaled and added in quadrature to a floor in dz/(1+z) when the weights carry an
``error_model``, :class:`survey_ml.core.uncertainty.ErrorFloor` fitted on a shifted held-out
set by :func:`survey_ml.train.redshift.calibrate_redshift_errors`), ``z_cnn_flag`` (0 = reliable; bits below), ``z_cnn_dchi2`` (chi^2 of the
best rival candidate minus the best, redrock's reliability figure) and ``z_cnn_pmax``
(network probability within +-2 bins of the answer). With ``refine=False`` the network alone
answers: the probability-weighted mean of its top peak, and that peak's width as the error.

Flag bits (:data:`FLAGS`): ``SMALL_DELTA_CHI2`` (1: a rival candidate within delta chi^2 < 9,
redrock's ZWARN threshold), ``LOW_PROBABILITY`` (2: the network puts < 50% on the answer),
``EDGE`` (4: the chi^2 minimum sits at the edge of its scan or of the trained z range),
``NO_DATA`` (16: too few good pixels to fit). A poor chi^2 per degree of freedom is not a
flag: at high S/N every template fit is formally poor (measured: those redshifts are the
best of all), and it already widens ``z_cnn_err``.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import torch

from .uncertainty import ErrorFloor
from .redshift_inputs import RedshiftSetup, on_setup_grid, scaled_inputs, setup_of
from .templates import TemplateSet, refine_redshifts

__all__ = ["predict_redshifts", "redshifts_from_model", "pdf_candidates", "FLAGS", "REDSHIFT_COLUMNS", "log_grid_spectra", "templates_of"]

FLAGS = {"SMALL_DELTA_CHI2": 1, "LOW_PROBABILITY": 2, "EDGE": 4, "NO_DATA": 16}
#: Columns :func:`predict_redshifts` returns, with dtypes.
REDSHIFT_COLUMNS = {"z_cnn": "float64", "z_cnn_err": "float32", "z_cnn_flag": "int32", "z_cnn_dchi2": "float32",
                    "z_cnn_pmax": "float32"}


def pdf_candidates(prob: np.ndarray, n_candidates: int = 3, min_separation: int = 5) -> np.ndarray:
    """Bin indices of the ``n_candidates`` highest local peaks per row, best first (-1: none).

    Peaks closer than ``min_separation`` bins to a higher one are skipped.

    Examples
    --------
    >>> p = np.array([[0.0, 0.1, 0.5, 0.1, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0]])
    >>> pdf_candidates(p, 3, 3).tolist()
    [[2, 8, -1]]
    """
    prob = np.asarray(prob)
    n, m = prob.shape
    out = np.full((n, n_candidates), -1, dtype=np.int64)
    padded = np.pad(prob, ((0, 0), (1, 1)), constant_values=-1.0)
    peak = (prob >= padded[:, :-2]) & (prob > padded[:, 2:]) & (prob > 0)
    order = np.argsort(-np.where(peak, prob, -1.0), axis=1)[:, : 4 * n_candidates]
    for i in range(n):
        taken: list[int] = []
        for j in order[i]:
            if not peak[i, j]:
                break
            if all(abs(int(j) - t) >= min_separation for t in taken):
                taken.append(int(j))
                if len(taken) == n_candidates:
                    break
        out[i, : len(taken)] = taken
    return out


def log_grid_spectra(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, wavelength: np.ndarray,
                     setup: RedshiftSetup) -> tuple[np.ndarray, np.ndarray]:
    """Flux and ivar on the setup's log-linear grid (ivar = 0 wherever a bad pixel contributes).

    On the setup's own grid (the LAMOST store) this returns the input values unchanged.
    """
    model_flux, coverage = on_setup_grid(flux, ivar, mask, wavelength, setup)
    return model_flux, _ivar_on_grid(ivar, wavelength, setup, coverage)


def _ivar_on_grid(ivar: np.ndarray, wavelength: np.ndarray, setup: RedshiftSetup, coverage: np.ndarray) -> np.ndarray:
    """ivar on the setup's grid, 0 wherever the coverage (:func:`on_setup_grid`) says a bad pixel contributes."""
    grid = setup.wavelength
    wavelength = np.asarray(wavelength, dtype=float)
    if wavelength.size == grid.size and np.allclose(wavelength, grid, rtol=1e-9):
        model_ivar = np.asarray(ivar, dtype=np.float32)
    else:
        model_ivar = np.stack([np.interp(grid, wavelength, row) for row in np.asarray(ivar, dtype=np.float64)])
    return np.where(coverage >= 0.999, model_ivar, 0.0).astype(np.float32)


def templates_of(info: dict) -> TemplateSet:
    """The :class:`TemplateSet` stored in a redshift weights file."""
    t = info["templates"]
    return TemplateSet(loglam0=float(t["loglam0"]), dloglam=float(t["dloglam"]),
                       components=t["components"].numpy() if isinstance(t["components"], torch.Tensor)
                       else np.asarray(t["components"]))


def predict_redshifts(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, wavelength: np.ndarray,
                      weights: str | os.PathLike, refine: bool | None = None, batch_size: int = 256,
                      threads: int | None = None, device: str | None = None, n_candidates: int = 3,
                      min_probability: float = 1e-3, refine_options: dict | None = None) -> pd.DataFrame:
    """Redshift, error and reliability flag for a block of native-grid spectra.

    Parameters
    ----------
    flux, ivar, mask : numpy.ndarray
        (n, n_pix) rows (good pixels: ivar > 0, mask == 0).
    wavelength : numpy.ndarray
        (n_pix,) their grid (A).
    weights : path
        A redshift weights file (network, setup, templates).
    refine : bool, optional
        Refine the network's candidates with the templates or not; default the weights file's
        choice (``refine.enabled`` of its recipe: on for LAMOST, off for the DEIMOS-like setup,
        where it measured worse than the network alone - see the recipe).
    batch_size : int
        Spectra per forward pass.
    threads, device
        torch threads and device (see :func:`survey_ml.core.inference.predict_spectra`).
    n_candidates : int
        Peaks of p(z) handed to the template fit (the top one always; the others only with
        at least ``min_probability`` within +-2 bins - scanning rivals the network all but
        rules out costs time and, measured, gains nothing).
    min_probability : float
        Least probability near a rival peak for it to be scanned.
    refine_options : dict, optional
        Overrides of the weights file's scan settings (``coarse_stride``, ``coarse_steps``,
        ``fine_stride``, ``fine_steps``, ``n_poly``).

    Returns
    -------
    pandas.DataFrame
        :data:`REDSHIFT_COLUMNS`, one row per input row.
    """
    from .inference import load_model, worker_threads

    model, info = load_model(weights, device)
    if len(flux):
        torch.set_num_threads(threads or worker_threads())
    return redshifts_from_model(model, info, flux, ivar, mask, wavelength, refine=refine, batch_size=batch_size,
                                n_candidates=n_candidates, min_probability=min_probability,
                                refine_options=refine_options)


def redshifts_from_model(model: torch.nn.Module, info: dict, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray,
                         wavelength: np.ndarray, refine: bool | None = None, batch_size: int = 256,
                         n_candidates: int = 3, min_probability: float = 1e-3,
                         refine_options: dict | None = None) -> pd.DataFrame:
    """:func:`predict_redshifts` with the model already built (``model, info`` of :func:`survey_ml.core.inference.load_model`).

    The block step of the redshift task: the model lives on the worker's device, torch
    threads are the caller's.
    """
    from .inference import forward_batches

    n = len(flux)
    frame = pd.DataFrame({c: np.zeros(n, dtype=d) for c, d in REDSHIFT_COLUMNS.items()})
    if n == 0:
        return frame
    setup = setup_of(info["setup"])
    if refine is None:
        refine = bool(info.get("refine", {}).get("enabled", True))
    grid_flux, coverage = on_setup_grid(flux, ivar, mask, wavelength, setup)   # once, for the network and the fit
    x = scaled_inputs(grid_flux, coverage)
    logits = forward_batches(model, x, batch_size).astype(np.float64)
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    centres = model.bin_centres().numpy()
    peaks = pdf_candidates(prob, n_candidates, min_separation=5)
    mass = _mass_near(prob, peaks, 2)
    peaks[:, 1:] = np.where(mass[:, 1:] >= min_probability, peaks[:, 1:], -1)  # rivals the network all but rules out
    cand = np.where(peaks >= 0, np.expm1(centres[np.clip(peaks, 0, None)]), np.nan)
    good_share = x[:, 1].mean(axis=1)
    flag = np.zeros(n, dtype=np.int32)
    if refine:
        log_flux, log_ivar = grid_flux, _ivar_on_grid(ivar, wavelength, setup, coverage)
        options = {**info.get("refine", {}), **(refine_options or {})}
        fit = refine_redshifts(math.log(setup.wavelength[0]), setup.grid.coeff1 * math.log(10.0), log_flux, log_ivar,
                               cand, templates_of(info), coarse_stride=int(options.get("coarse_stride", 8)),
                               coarse_steps=int(options.get("coarse_steps", 5)),
                               fine_stride=int(options.get("fine_stride", 2)),
                               fine_steps=int(options.get("fine_steps", 7)), n_poly=int(options.get("n_poly", 3)))
        z, z_err, dchi2 = fit.z, fit.z_err, fit.delta_chi2
        if "error_model" in info:  # curvature errors miss template and LSF mismatch: rescale + floor
            z_err = ErrorFloor.from_dict(info["error_model"]).apply(z_err, 1.0 + z)
        flag |= np.where(np.nan_to_num(dchi2, nan=0.0, posinf=np.inf) < 9.0, FLAGS["SMALL_DELTA_CHI2"], 0)
        flag |= np.where(fit.edge, FLAGS["EDGE"], 0)
    else:
        z, z_err = _peak_moments(prob, peaks[:, 0], centres)
        dchi2 = np.full(n, np.nan)
    ln1pz = np.log1p(z)
    near = np.abs(centres[None, :] - ln1pz[:, None]) <= 2.5 * model.bin_width
    pmax = np.where(np.isfinite(ln1pz), (prob * near).sum(axis=1), 0.0)
    flag |= np.where(pmax < 0.5, FLAGS["LOW_PROBABILITY"], 0)
    outside = (z < setup.z_min - 0.5 * model.bin_width * (1 + setup.z_min)) | (z > setup.z_max)
    flag |= np.where(outside, FLAGS["EDGE"], 0)
    no_data = (good_share < 0.05) | ~np.isfinite(z)
    flag |= np.where(no_data, FLAGS["NO_DATA"], 0)
    frame["z_cnn"] = np.where(no_data, np.nan, z)
    frame["z_cnn_err"] = np.where(no_data, np.nan, z_err).astype(np.float32)
    frame["z_cnn_flag"] = flag
    frame["z_cnn_dchi2"] = np.asarray(dchi2, dtype=np.float32)
    frame["z_cnn_pmax"] = pmax.astype(np.float32)
    return frame


def _mass_near(prob: np.ndarray, peaks: np.ndarray, half_width: int) -> np.ndarray:
    """Probability within +-half_width bins of each peak (0 where there is no peak)."""
    m = prob.shape[1]
    cumulative = np.concatenate([np.zeros((len(prob), 1)), np.cumsum(prob, axis=1)], axis=1)
    lo = np.clip(peaks - half_width, 0, m)
    hi = np.clip(peaks + half_width + 1, 0, m)
    mass = np.take_along_axis(cumulative, hi, axis=1) - np.take_along_axis(cumulative, lo, axis=1)
    return np.where(peaks >= 0, mass, 0.0)


def _peak_moments(prob: np.ndarray, peak: np.ndarray, centres: np.ndarray, half_width: int = 3
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Probability-weighted mean and standard deviation of z within +-half_width bins of each peak."""
    n, m = prob.shape
    k = np.clip(peak, 0, m - 1)[:, None] + np.arange(-half_width, half_width + 1)[None, :]
    inside = (k >= 0) & (k < m)
    k = np.clip(k, 0, m - 1)
    p = np.take_along_axis(prob, k, axis=1) * inside
    p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    ln1pz = (p * centres[k]).sum(axis=1)
    width = np.sqrt((p * (centres[k] - ln1pz[:, None]) ** 2).sum(axis=1))
    bin_width = centres[1] - centres[0]
    width = np.sqrt(width**2 + bin_width**2 / 12.0)
    z = np.expm1(ln1pz)
    return np.where(peak >= 0, z, np.nan), np.where(peak >= 0, (1 + z) * width, np.nan)
