"""Training the stellar-parameter network on a synthetic grid (:mod:`survey_ml.simulate.stellar_grid`).

A recipe (``survey_ml/weights/stellar.toml``) names the grid, the observing conditions and
the network. Labels are drawn uniformly inside the grid's usable cells (Teff, log g, [Fe/H])
and in v sin i; their spectra are interpolated from the grid, broadened and put on the model's
order grid once (:func:`survey_ml.simulate.echelle_observe.render`); every batch then gets
fresh slant, noise, cosmic rays, bad pixels and normalisation
(:func:`~survey_ml.simulate.echelle_observe.degrade`) - the published per-batch S/N
augmentation. The loss is the Gaussian negative log-likelihood with the full covariance.

After training, the errors are calibrated per label on held-out spectra spanning the training
S/N range: the network's sigma rescaled in bins of the input's measured S/N so that 68.3% / 95.4%
of the residuals fall within 1 / 2 sigma in every bin (:func:`calibrate_errors`). The weights file carries the
model grid, the CCF template, the label range and that calibration.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.echelle import input_snr
from ..core.inference import WEIGHTS_DIR, load_model, save_weights, weights_sha256
from ..core.uncertainty import ErrorCalibration, calibrated_sigma
from ..models.stellar_resnet import LABELS, StellarResNet, gaussian_nll
from ..simulate.echelle_observe import EchelleObservation, broaden_batch, degrade, nuisance, render
from ..simulate.stellar_grid import StellarGrid
from .loop import train_epochs
from .spectral import load_recipe

__all__ = ["StellarSet", "make_stellar_set", "train_stellar", "calibrate_errors", "calibrated_sigma", "evaluate",
           "template_from_grid", "StellarTrainConfig", "train_stellar_task"]


@dataclass
class StellarSet:
    """Noise-free model-grid spectra and their labels (Teff, log g, [Fe/H], v sin i)."""

    clean: np.ndarray      # (n, n_orders, n_pix) float16
    labels: np.ndarray     # (n, 4) float64


def make_stellar_set(grid: StellarGrid, n: int, seed: int, conditions: EchelleObservation,
                     vsini_range: tuple[float, float] = (0.0, 30.0), chunk: int = 256) -> StellarSet:
    """``n`` labelled spectra drawn from ``grid``, rendered on the model grid (no noise yet)."""
    rng = np.random.default_rng(seed)
    labels = np.column_stack([grid.sample_labels(n, rng), rng.uniform(*vsini_range, n)])
    clean = np.empty((n, conditions.n_orders, conditions.n_pix), np.float16)
    for start in range(0, n, chunk):
        part = labels[start:start + chunk]
        flux = grid.interpolate(part[:, :3])
        clean[start:start + chunk] = render(grid.wavelength, flux, part[:, 3], rng, conditions,
                                            nuisance(part, rng, conditions))
    return StellarSet(clean, labels)


@dataclass(frozen=True)
class StellarTrainConfig:
    """``[train]`` of a stellar recipe."""

    n_train: int = 8000
    n_val: int = 1000
    n_test: int = 2000
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 0
    threads: int = 2


def _scaled(model: StellarResNet, labels: np.ndarray) -> torch.Tensor:
    return (torch.as_tensor(labels, dtype=torch.float32) - model.label_mean) / model.label_scale


def predict(model: StellarResNet, x: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Physical means ``(n, 4)`` and covariances ``(n, 4, 4)`` of inputs ``x``."""
    means, covs = [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            mean, cov = model.physical(*model(torch.from_numpy(np.asarray(x[start:start + batch_size], np.float32))))
            means.append(mean.numpy())
            covs.append(cov.numpy())
    return np.concatenate(means).astype(np.float64), np.concatenate(covs).astype(np.float64)


def train_stellar(data: StellarSet, val: StellarSet, conditions: EchelleObservation, config: StellarTrainConfig,
                  model_config: dict[str, Any] | None = None, progress: bool = False
                  ) -> tuple[StellarResNet, list[dict[str, float]]]:
    """Train a :class:`StellarResNet` on ``data`` (fresh noise per batch), selecting on ``val``."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    labels = np.concatenate([data.labels, val.labels])
    model = StellarResNet(n_orders=conditions.n_orders, n_pix=conditions.n_pix,
                          label_mean=tuple(float(v) for v in labels.mean(0)),
                          label_scale=tuple(float(v) for v in labels.std(0) + 1e-6), **(model_config or {}))
    rng = np.random.default_rng(config.seed + 1)
    val_x, _ = degrade(val.clean.astype(np.float32), np.random.default_rng(config.seed + 2), conditions)
    val_x = torch.from_numpy(val_x)
    val_y = _scaled(model, val.labels)
    target = _scaled(model, data.labels)

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        x, _ = degrade(data.clean[rows].astype(np.float32), rng, conditions)
        mu, chol = model(torch.from_numpy(x))
        return gaussian_nll(mu, chol, target[rows])

    def validation_loss() -> float:
        total = 0.0
        for start in range(0, len(val_x), 256):
            mu, chol = model(val_x[start:start + 256])
            total += float(gaussian_nll(mu, chol, val_y[start:start + 256])) * len(mu)
        return total / len(val_x)

    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.3, patience=2)
    history, _ = train_epochs(model, np.arange(len(data.labels)), batch_loss, validation_loss, optimiser, scheduler,
                              epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                              patience=config.patience, label="stellar", progress=progress)
    return model, history


def calibrate_errors(mean: np.ndarray, cov: np.ndarray, truth: np.ndarray, snr: np.ndarray, n_bins: int = 8
                     ) -> list[ErrorCalibration]:
    """Per label, the network's sigma rescaled in bins of the spectrum's S/N (conformal, 68.3 / 95.4%).

    One factor for all spectra is not enough: the network's sigma follows the S/N less steeply
    than its errors do (a single factor leaves 54% within 1 sigma at S/N 10 and 79% at S/N
    100). The factor is fitted in bins of ``1 / snr`` - the S/N measured on the model input
    (:func:`survey_ml.core.echelle.input_snr`), as the task measures it on survey spectra - on
    held-out spectra spanning the training S/N range
    (:class:`survey_ml.core.uncertainty.ErrorCalibration`); it grows as ``sqrt`` below the
    lowest S/N seen.

    >>> rng = np.random.default_rng(0)
    >>> snr = rng.uniform(10, 100, 20000)
    >>> truth = np.zeros((20000, 1)); mean = rng.normal(0, 30 / snr)[:, None]   # error ~ 1/snr
    >>> cov = np.ones((20000, 1, 1)) * 0.5 ** 2                                  # the net claims 0.5
    >>> cal = calibrate_errors(mean, cov, truth, snr)[0]
    >>> sigma = calibrated_sigma(cov, [cal], snr)[:, 0]
    >>> [round(float(np.mean(np.abs(mean[m, 0]) <= sigma[m])), 1) for m in (snr < 20, snr > 80)]
    [0.7, 0.7]
    """
    sigma = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    return [ErrorCalibration.fit(mean[:, j] - truth[:, j], sigma[:, j], 1.0 / np.asarray(snr, np.float64),
                                 n_bins=n_bins) for j in range(mean.shape[1])]


def evaluate(mean: np.ndarray, sigma: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """MAE, bias, scatter and 1-/2-sigma coverage per label."""
    out = {}
    for j, label in enumerate(LABELS):
        resid = mean[:, j] - truth[:, j]
        z = np.abs(resid) / sigma[:, j]
        out[label] = {"mae": float(np.mean(np.abs(resid))), "bias": float(np.mean(resid)),
                      "std": float(np.std(resid)), "coverage_1sigma": float(np.mean(z <= 1)),
                      "coverage_2sigma": float(np.mean(z <= 2)), "median_err": float(np.median(sigma[:, j]))}
    return out


def template_from_grid(grid: StellarGrid, conditions: EchelleObservation,
                       labels: tuple[float, float, float] = (5500.0, 4.5, 0.0), vsini: float = 2.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The CCF template: the grid spectrum at ``labels`` (a solar-type dwarf) at the instrument's resolution."""
    flux = grid.interpolate(np.array([labels]))[0].astype(np.float64)
    if not np.isfinite(flux).all():
        done = np.argwhere(grid.done())
        axes = [np.asarray(a) for a in (grid.axes.teff, grid.axes.logg, grid.axes.feh)]
        values = np.stack([axes[d][done[:, d]] for d in range(3)], axis=1)
        nearest = done[np.argmin(np.sum(((values - labels) / [1000.0, 1.0, 0.5]) ** 2, axis=1))]
        flux = grid.flux[tuple(nearest)].astype(np.float64)
    log_wave = np.linspace(np.log(grid.wavelength[0]), np.log(grid.wavelength[-1]), grid.wavelength.size)
    even = np.interp(np.exp(log_wave), grid.wavelength, flux)
    broadened = broaden_batch(log_wave, even[None], np.array([vsini]), conditions.resolution)[0]
    step = max(1, grid.wavelength.size // 40000)
    return np.exp(log_wave)[::step], broadened[::step].astype(np.float32)


def train_stellar_task(task_or_path: str | os.PathLike = "stellar", out: str | os.PathLike | None = None,
                       client=None, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                       trained: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train, calibrate and test the stellar network of a recipe; write the weights and report.

    The recipe's ``[grid] path`` is a grid built by ``bench/stellar_grid.py`` (relative paths
    are under ``cache_dir``, default ``~/.cache/survey_ml``). ``trained`` names weights this
    recipe already trained (with their ``.json`` report beside them): the training is skipped
    and only the calibration and test are redone - the same sets and draws as a full run, so
    the result is what training with today's calibration code would write.
    """
    recipe = load_recipe(task_or_path)
    cache = Path(cache_dir or Path.home() / ".cache" / "survey_ml")
    grid_path = Path(recipe["grid"]["path"])
    grid = StellarGrid(grid_path if grid_path.is_absolute() else cache / grid_path)
    if recipe["grid"].get("coarsened", False):  # every other node: what a partial build holds complete
        grid = grid.coarsened()
    conditions = EchelleObservation(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in recipe.get("observe", {}).items()})
    config = StellarTrainConfig(**recipe.get("train", {}))
    start = time.perf_counter()
    val = make_stellar_set(grid, config.n_val, config.seed + 1000, conditions)
    test = make_stellar_set(grid, config.n_test, config.seed + 2000, conditions)
    if trained is None:
        train = make_stellar_set(grid, config.n_train, config.seed, conditions)
        made = time.perf_counter() - start
        model, history = train_stellar(train, val, conditions, config, recipe.get("model", {}), progress=progress)
        del train
    else:
        model, _ = load_model(trained, "cpu")
        previous = json.loads(Path(trained).with_suffix(".json").read_text())
        made, history = previous["seconds_sets"], previous["history"]
    rng = np.random.default_rng(config.seed + 3)
    # the validation spectra under three noise draws: the calibration sees the whole S/N range densely
    val_x = np.concatenate([degrade(val.clean.astype(np.float32), rng, conditions)[0] for _ in range(3)])
    val_mean, val_cov = predict(model, val_x)
    calibration = calibrate_errors(val_mean, val_cov, np.tile(val.labels, (3, 1)),
                                   input_snr(val_x[:, 0], val_x[:, 1] > 0))
    report: dict[str, Any] = {"task": "stellar", "recipe": Path(recipe["recipe_path"]).name, "grid": str(grid.path),
                              "n_grid_nodes": int(grid.done().sum()), "grid_axes": grid.axes.to_dict(),
                              "n_usable_cells": int(len(grid.usable_cells())), "seconds_sets": made,
                              "history": history, "error_calibration": [c.to_dict() for c in calibration],
                              "test": {}}
    for snr in (10.0, 20.0, 50.0, 100.0):
        x, _ = degrade(test.clean.astype(np.float32), rng, conditions, snr=np.full(len(test.labels), snr))
        mean, cov = predict(model, x)
        sigma = calibrated_sigma(cov, calibration, input_snr(x[:, 0], x[:, 1] > 0))
        report["test"][f"snr_{snr:g}"] = evaluate(mean, sigma, test.labels)
    template = template_from_grid(grid, conditions)
    out = Path(out) if out is not None else WEIGHTS_DIR / "stellar.pt"
    save_weights(model, out, "stellar", list(LABELS), extra={
        "grid": torch.from_numpy(conditions.grid()), "template_wave": torch.from_numpy(template[0]),
        "template_flux": torch.from_numpy(template[1]),
        "label_min": [*grid.label_min.tolist(), 0.0], "label_max": [*grid.label_max.tolist(), 30.0],
        "error_calibration": [c.to_dict() for c in calibration], "conditions": dataclasses.asdict(conditions),
        "grid_attrs": {k: v for k, v in grid.attrs.items() if k != "axes"}})
    report["weights"] = str(out)
    report["weights_sha256"] = weights_sha256(out)
    report["seconds"] = time.perf_counter() - start + (0.0 if trained is None else previous["seconds"])
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=float))
    return report
