"""Self-supervised training, Monte Carlo dropout inference and physical units for the kinematic model.

The model (:class:`survey_ml.models.kinematics.KinematicModel`) learns from the survey itself:
the loss is the masked MSE between the input moment maps and the maps its analytic decoder
renders from the encoded parameters - no labels. :func:`train_kinematic_model` runs that
(published: Adam lr 1e-4, x0.975 every 2 epochs, ~300 epochs, batch 16-64 on a GPU; the
defaults here are shorter and faster for a CPU node and are recorded with the weights).

:func:`mc_dropout` keeps dropout on at inference and draws ``T`` (default 100) sets of
parameters per galaxy. Dropout sits only in the encoders' dense layers, so the
convolutional trunks and the hidden dense layer (dropout acts on its output) run once per
galaxy and only the dropout and the last 256 -> 2 layer are drawn ``T`` times - the same
samples as ``T`` full passes, at a few per cent of the cost. Means and standard deviations are
taken over the samples in physical units (:func:`physical_samples`: Vmax and V2.2 in km/s,
radii in arcsec); these are modelling errors of the network (lower limits: they know
nothing of the data's noise beyond what the training saw).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..models.kinematics import PARAMETERS, KinematicModel, masked_mse
from .loop import train_epochs

__all__ = ["KinematicTrainConfig", "train_kinematic_model", "mc_dropout", "physical_samples", "reconstruction_error",
           "summarise", "train_kinematics_task", "prepare_map_files"]


@dataclass
class KinematicTrainConfig:
    """A self-supervised training run (saved with the weights)."""

    epochs: int = 60
    batch_size: int = 32
    lr: float = 5e-4
    lr_decay: float = 0.975          # multiplied in every ``decay_every`` epochs (published)
    decay_every: int = 2
    val_fraction: float = 0.1
    seed: int = 0
    psf_aware: bool = True
    dropout: float = 0.1
    threads: int | None = None


@dataclass
class KinematicTrainResult:
    model: KinematicModel
    config: KinematicTrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0


def _loss(model: KinematicModel, m0, m1, mask, psf) -> torch.Tensor:
    _, r0, r1 = model(m0, m1, psf)
    return (masked_mse(r0, m0, mask) + masked_mse(r1, m1, mask)).mean()


def train_kinematic_model(m0: np.ndarray, m1: np.ndarray, mask: np.ndarray, psf_sigma_pix: np.ndarray,
                          config: KinematicTrainConfig = KinematicTrainConfig(), progress: bool = False
                          ) -> KinematicTrainResult:
    """Train on a release's own maps (self-supervised); keep the best validation loss.

    Parameters
    ----------
    m0, m1 : numpy.ndarray
        (n, 64, 64) scaled moment maps (de-rotated).
    mask : numpy.ndarray
        (n, 64, 64) good pixels.
    psf_sigma_pix : numpy.ndarray
        (n,) PSF Gaussian sigma in 64-grid pixels (used by a PSF-aware model).
    config : KinematicTrainConfig
    progress : bool
        One line per epoch.
    """
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    n = len(m0)
    order = np.random.default_rng(config.seed).permutation(n)
    n_val = max(1, int(round(config.val_fraction * n))) if n > 10 else 0
    val, train = order[:n_val], order[n_val:]
    t0, t1 = torch.from_numpy(np.nan_to_num(m0).astype(np.float32)), torch.from_numpy(np.nan_to_num(m1).astype(np.float32))
    tm, tp = torch.from_numpy(mask.astype(bool)), torch.from_numpy(np.asarray(psf_sigma_pix, dtype=np.float32))
    model = KinematicModel(size=m0.shape[-1], dropout=config.dropout, psf_aware=config.psf_aware)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=config.decay_every, gamma=config.lr_decay)

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(idx)
        return _loss(model, t0[idx], t1[idx], tm[idx], tp[idx])

    def validation_loss() -> float:
        idx = torch.from_numpy(val if len(val) else train)
        return float(_loss(model, t0[idx], t1[idx], tm[idx], tp[idx]))

    history, best_epoch = train_epochs(model, train, batch_loss, validation_loss, optimiser, scheduler,
                                       epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                                       label="kinematics", progress=progress, start=start)
    return KinematicTrainResult(model=model, config=config, history=history, best_epoch=best_epoch,
                                seconds=time.perf_counter() - start)


def galaxy_seeds(m0: np.ndarray, m1: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 64-bit seed per galaxy from its own input maps (and ``seed``).

    Monte Carlo dropout masks drawn from these are the same whichever chunk, batch, worker or
    thread a galaxy lands in, so a catalog does not change with ``chunk_rows`` or the cluster.
    """
    import hashlib

    seeds = np.empty(len(m0), dtype=np.uint64)
    for i in range(len(m0)):
        digest = hashlib.blake2b(np.ascontiguousarray(m0[i], dtype=np.float32).tobytes(), digest_size=8,
                                 key=int(seed).to_bytes(8, "little", signed=True))
        digest.update(np.ascontiguousarray(m1[i], dtype=np.float32).tobytes())
        seeds[i] = np.frombuffer(digest.digest(), dtype=np.uint64)[0]
    return seeds


def mc_dropout(model: KinematicModel, m0: np.ndarray, m1: np.ndarray, samples: int = 100, seed: int = 0,
               batch: int = 256) -> dict[str, np.ndarray]:
    """``samples`` Monte Carlo dropout draws of the model parameters per galaxy: each (n, samples).

    Each galaxy's dropout masks come from its own generator (:func:`galaxy_seeds`), never from
    torch's process-wide one, so the draws are reproducible and independent of batching and of
    other tasks running in the same worker. ``samples=0`` returns the deterministic (dropout
    off) parameters as (n, 1).
    """
    out: dict[str, list[np.ndarray]] = {p: [] for p in PARAMETERS}
    model.eval()
    p_keep = 1.0 - model.moment0_encoder.dropout.p
    seeds = galaxy_seeds(m0, m1, seed) if samples else None
    device = next(model.parameters()).device  # the masks are drawn on the host, the same on any device
    with torch.inference_mode():
        for a in range(0, len(m0), batch):
            x0 = torch.from_numpy(np.nan_to_num(m0[a: a + batch]).astype(np.float32)).to(device)
            x1 = torch.from_numpy(np.nan_to_num(m1[a: a + batch]).astype(np.float32)).to(device)
            f0, f1 = model.features(x0, x1)
            b = len(x0)
            if samples == 0:
                draws = [model.parameters_from(f0, f1)]
            else:  # the hidden layers are deterministic too: only the dropout and last layer are drawn
                h0, h1 = model.moment0_encoder.hidden(f0), model.moment1_encoder.hidden(f1)
                width = h0.shape[1]
                keep = np.empty((2, samples, b, width), dtype=np.float32)
                for i, galaxy_seed in enumerate(seeds[a: a + b]):
                    keep[:, :, i] = np.random.default_rng(int(galaxy_seed)).random((2, samples, width)) < p_keep
                masks = (torch.from_numpy(keep[0].reshape(samples * b, width)).to(device),
                         torch.from_numpy(keep[1].reshape(samples * b, width)).to(device))
                draws = [model.parameters_from(h0.repeat(samples, 1), h1.repeat(samples, 1), mc=True, hidden=True,
                                               keep=masks)]
            for p in PARAMETERS:
                values = draws[0][p].cpu().numpy()
                out[p].append(values[:, None] if samples == 0 else values.reshape(samples, b).T)
    return {p: np.concatenate(v) if v else np.empty((0, max(samples, 1))) for p, v in out.items()}


def physical_samples(draws: dict[str, np.ndarray], velocity_scale_kms: np.ndarray, pixel_scale_arcsec: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Parameter draws in physical units, plus V2.2 = V(2.2 r_scale) per draw.

    Returns inclination_deg, r_scale_arcsec, r_turn_arcsec, vmax_kms, v22_kms - each (n, samples).

    Examples
    --------
    >>> d = {"inclination_deg": np.array([[60.0]]), "r_scale_pix": np.array([[4.0]]),
    ...      "vmax_unit": np.array([[1.5]]), "r_turn_pix": np.array([[2.0]])}
    >>> p = physical_samples(d, np.array([100.0]), np.array([0.5]))
    >>> float(p["vmax_kms"][0, 0]), float(p["r_scale_arcsec"][0, 0]), round(float(p["v22_kms"][0, 0]), 1)
    (150.0, 2.0, 128.7)
    """
    v = np.asarray(velocity_scale_kms, dtype=float)[:, None]
    s = np.asarray(pixel_scale_arcsec, dtype=float)[:, None]
    vmax = draws["vmax_unit"] * v
    v22 = 2.0 / math.pi * vmax * np.arctan(2.2 * draws["r_scale_pix"] / draws["r_turn_pix"])
    return {"inclination_deg": draws["inclination_deg"], "r_scale_arcsec": draws["r_scale_pix"] * s,
            "r_turn_arcsec": draws["r_turn_pix"] * s, "vmax_kms": vmax, "v22_kms": v22}


def reconstruction_error(model: KinematicModel, m0: np.ndarray, m1: np.ndarray, mask: np.ndarray,
                         psf_sigma_pix: np.ndarray, batch: int = 256) -> np.ndarray:
    """Per-galaxy reconstruction MSE of moment 1 over its good pixels, divided by the model's Vmax
    (in velocity-scale units) - the published post-cut statistic."""
    out = []
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for a in range(0, len(m0), batch):
            x0 = torch.from_numpy(np.nan_to_num(m0[a: a + batch]).astype(np.float32)).to(device)
            x1 = torch.from_numpy(np.nan_to_num(m1[a: a + batch]).astype(np.float32)).to(device)
            psf = torch.from_numpy(np.asarray(psf_sigma_pix[a: a + batch], dtype=np.float32)).to(device)
            params, r0, r1 = model(x0, x1, psf)
            mse = masked_mse(r1, x1, torch.from_numpy(mask[a: a + batch].astype(bool)).to(device))
            out.append((mse / params["vmax_unit"]).cpu().numpy())
    return np.concatenate(out) if out else np.empty(0)


def summarise(samples: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean and standard deviation over the draws of each physical parameter: ``{name}``, ``{name}_err``."""
    out: dict[str, Any] = {}
    for name, values in samples.items():
        out[name] = values.mean(axis=1)
        out[f"{name}_err"] = values.std(axis=1)
    return out


# --------------------------------------------------------------------------- shipped weights
def prepare_map_files(paths: list[str], survey: str) -> dict[str, np.ndarray]:
    """Read one block of IFU map files (SAMI H-alpha files or MaNGA MAPS) and prepare them (a Dask task)."""
    from ..io.manga import read_manga_maps
    from ..io.sami import read_sami_maps
    from ..core.maps import prepare_galaxies

    read = read_sami_maps if survey == "sami" else read_manga_maps
    galaxies = []
    for path in paths:
        maps = read(path)
        galaxies.append({"flux": maps.flux, "flux_err": maps.flux_err, "velocity": maps.velocity,
                         "velocity_err": maps.velocity_err, "good": maps.good, "pixel_scale": maps.pixel_scale})
    return prepare_galaxies(galaxies)


def train_kinematics_task(task_or_path: str = "kinematics_sami", out=None, client=None, cache_dir=None,
                          progress: bool = False) -> dict[str, Any]:
    """Train shipped kinematic weights from a recipe (``survey_ml/weights/kinematics_*.toml``).

    The recipe names a mock IFU release (survey, size, seed: the benchmark's release uses
    seed 0, so it is galaxies this training never saw), the survey PSF, the decoder and the
    training settings. The release is written once under the cache folder, read back from
    its files, prepared on the cluster, and the model is trained self-supervised on it -
    exactly what ``train = "solo"`` does on a real release. The truth is used only for the
    figures in the report.
    """
    import json
    from pathlib import Path

    import pandas as pd

    from ..cluster.client import run_blocks
    from ..core.inference import save_weights, weights_sha256
    from ..simulate.ifu import simulate_ifu_release
    from ..simulate.library import default_cache_dir
    from .spectral import load_recipe

    recipe = load_recipe(task_or_path)
    out = Path(out) if out else Path(recipe["recipe_path"]).with_suffix(".pt")
    mock = recipe["mock"]
    root = Path(cache_dir or default_cache_dir()) / f"ifu-{mock['survey']}-{int(mock['n'])}-seed{int(mock['seed'])}"
    t0 = time.perf_counter()
    if not (root / "truth.parquet").exists():
        simulate_ifu_release(root, int(mock["n"]), survey=mock["survey"], seed=int(mock["seed"]), client=client,
                             progress=progress)
    truth = pd.read_parquet(root / "truth.parquet")
    files = [str(root / f) for f in truth["file"]]
    parts = run_blocks(prepare_map_files, [(files[a: a + 50], mock["survey"]) for a in range(0, len(files), 50)], client)
    prepared = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    t_data = time.perf_counter() - t0
    ok = prepared["status"] == "ok"
    psf = float(recipe["psf_fwhm_arcsec"]) / 2.3548 / prepared["pixel_scale_arcsec"]
    config = KinematicTrainConfig(**{**recipe.get("train", {}), **recipe.get("model", {})})
    result = train_kinematic_model(prepared["m0"][ok], prepared["m1"][ok], prepared["mask"][ok], psf[ok], config,
                                   progress=progress)
    est = summarise(physical_samples(mc_dropout(result.model, prepared["m0"][ok], prepared["m1"][ok], 100),
                                     prepared["velocity_scale_kms"][ok], prepared["pixel_scale_arcsec"][ok]))
    t = truth[ok]
    sel = t["inc_deg"].to_numpy() >= 30
    figures = {"n_galaxies": int(len(truth)), "n_prepared": int(ok.sum()),
               "median_rel_err_v22": float(np.median(np.abs(est["v22_kms"] / t["v22_kms"].to_numpy() - 1)[sel])),
               "median_rel_err_vmax": float(np.median(np.abs(est["vmax_kms"] / t["vmax_kms"].to_numpy() - 1)[sel])),
               "median_abs_err_inclination_deg": float(np.median(np.abs(est["inclination_deg"]
                                                                        - t["inc_deg"].to_numpy())[sel]))}
    training = {"recipe": Path(recipe["recipe_path"]).name, "mock": dict(mock),
                "psf_fwhm_arcsec": float(recipe["psf_fwhm_arcsec"]), "best_epoch": result.best_epoch,
                "epochs_run": len(result.history), "seconds": {"data": t_data, "training": result.seconds},
                "training_release_figures": figures}
    save_weights(result.model, out, "kinematics", list(PARAMETERS),
                 extra={"survey": mock["survey"], "psf_fwhm_arcsec": float(recipe["psf_fwhm_arcsec"]),
                        "training": training})
    report = {**training, "history": result.history, "weights_sha256": weights_sha256(out)}
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report
