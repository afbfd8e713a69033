"""Training the spectral CNNs on re-observed library spectra, with the published recipe.

Training data are made the way a release is, minus the files: rows of the bagpipes library
(``simulate.library``) are observed through the LAMOST model (``simulate.observe``) at
redshifts and S/N_r drawn from the release spec, then put through exactly the inference
preprocessing (``preprocess.spectra``: good pixels only, the 3800-8000 A model grid,
min-max normalisation). Blocks of spectra are made on the Dask cluster.

The published recipe (SCIENCE.md section 1): MSE loss (BCE with two sigmoid outputs for
the star-forming classifier), Adam at lr 1e-3, ReduceLROnPlateau (factor 0.1, patience 10
on the validation loss), batch 128, 100 epochs, the best-validation checkpoint, a 7:1:2
train/validation/test split. :class:`TrainConfig` holds all of it, so a weights file can
always be reproduced from the config saved beside it.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .cluster import run_blocks
from .models.spectral_cnn import SpectralCNN, gaussian_nll
from .preprocess.spectra import model_inputs
from .simulate.observe import LamostInstrument, observe_lamost
from .simulate.release import ObservationPlan, draw_observations

__all__ = ["TrainingSet", "make_training_set", "TrainConfig", "TrainResult", "split_indices", "train_model"]


@dataclass
class TrainingSet:
    """Model inputs with their truth.

    Attributes
    ----------
    x : numpy.ndarray
        (n, in_channels, 4201) float32 network inputs.
    truth : pandas.DataFrame
        One row per input: the observation (``z_true``, ``snr_r_requested``, header
        ``snrr``) and the library truth (``oh12``, ``starforming``, ``bpt_class``, ...).
    """

    x: np.ndarray
    truth: pd.DataFrame


def _observe_inputs(plan_rows: pd.DataFrame, library_path: str, instrument: LamostInstrument,
                    in_channels: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Observe one block of library rows and turn them into network inputs (runs on a worker)."""
    from .simulate.library import open_library

    library = open_library(library_path)
    rows = np.sort(plan_rows["library_row"].unique())
    rest = dict(zip(rows, library.flux(rows)))
    spectra, records = [], []
    for obs in plan_rows.itertuples(index=False):
        spec, record = observe_lamost(library.wave, rest[obs.library_row], obs.z_true, obs.snr_r_requested,
                                      np.random.default_rng(obs.noise_seed), obs.obsid, instrument)
        spectra.append(spec)
        records.append({"obsid": obs.obsid, "library_row": int(obs.library_row), "z_true": obs.z_true,
                        "z": spec.meta["z"], "snr_r_requested": obs.snr_r_requested, "snrr": spec.meta["snrr"]})
    wave = instrument.wavelength
    x = model_inputs(np.stack([s.flux for s in spectra]), np.stack([s.ivar for s in spectra]),
                     np.stack([s.andmask for s in spectra]), wave, in_channels)
    return x, pd.DataFrame(records)


def make_training_set(library, n: int, seed: int = 0, plan: ObservationPlan = ObservationPlan(),
                      rows: np.ndarray | None = None, instrument: LamostInstrument = LamostInstrument(),
                      in_channels: int = 1, client=None, block_size: int = 250,
                      progress: bool = False) -> TrainingSet:
    """``n`` observed spectra of library rows, as network inputs with their truth.

    Parameters
    ----------
    library : survey_ml.simulate.library.Library
    n : int
        Spectra to make (library rows are re-observed as often as needed).
    seed : int
        Seed of the redshift, S/N and noise draws.
    plan : ObservationPlan
        Redshift and S/N_r distributions (the release spec's ``[simulate]``).
    rows : array_like, optional
        Library rows to draw from (e.g. the star-forming ones); default all usable rows.
    instrument : LamostInstrument
    in_channels : int
        1 (flux) or 2 (flux and coverage).
    client : distributed.Client, optional
        Make blocks on the cluster (else here).
    block_size : int
        Spectra per task.
    progress : bool
        Progress bar.
    """
    truth = library.truth
    pool = np.asarray(rows) if rows is not None else truth.index[truth["ok"]].to_numpy()
    rng = np.random.default_rng(seed)
    draws = draw_observations(n, len(pool), rng, plan)
    draws["library_row"] = pool[draws["library_row"].to_numpy()]
    blocks = [(draws.iloc[a: a + block_size], str(library.path), instrument, in_channels)
              for a in range(0, n, block_size)]
    parts = run_blocks(_observe_inputs, blocks, client, desc="training set", progress=progress)
    x = np.concatenate([p[0] for p in parts])
    observed = pd.concat([p[1] for p in parts], ignore_index=True)
    merged = observed.merge(truth.rename(columns={"row": "library_row"}), on="library_row", how="left",
                            suffixes=("", "_library"))
    return TrainingSet(x=x, truth=merged)


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved beside the weights).

    Defaults are the published recipe; ``heteroscedastic`` and ``in_channels`` are our
    extensions (per-object uncertainty; a coverage channel).
    """

    task: str = "metallicity"            # "metallicity" (regression) or "sfclass" (2 sigmoid outputs)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    early_stop_patience: int | None = None  # None: run all epochs, keep the best
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0
    heteroscedastic: bool = False
    in_channels: int = 1
    threads: int | None = None
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """A trained network, its history and the split it was trained on."""

    model: SpectralCNN
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    test_index: np.ndarray | None = None
    seconds: float = 0.0


def split_indices(n: int, split: tuple[float, float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint random train/validation/test indices in the given proportions (reproducible).

    Examples
    --------
    >>> tr, va, te = split_indices(10, (0.7, 0.1, 0.2), 0)
    >>> len(tr), len(va), len(te), len(set(tr) | set(va) | set(te))
    (7, 1, 2, 10)
    """
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(split[0] * n))
    n_val = int(round(split[1] * n))
    return np.sort(order[:n_train]), np.sort(order[n_train: n_train + n_val]), np.sort(order[n_train + n_val:])


def _loss(model: SpectralCNN, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    out = model(x)
    if config.task == "sfclass":
        return nn.functional.binary_cross_entropy_with_logits(out, y)
    if config.heteroscedastic:
        mean, log_var = out
        return gaussian_nll(mean, log_var, y)
    return nn.functional.mse_loss(out, y)


def _targets(y: np.ndarray, task: str) -> np.ndarray:
    if task == "sfclass":  # one-hot (star-forming, not), two sigmoid outputs as published
        y = np.asarray(y, dtype=bool)
        return np.stack([y, ~y], axis=1).astype(np.float32)
    return np.asarray(y, dtype=np.float32)[:, None]


def train_model(x: np.ndarray, y: np.ndarray, config: TrainConfig = TrainConfig(),
                progress: bool = False) -> TrainResult:
    """Train a :class:`SpectralCNN` on inputs ``x`` and targets ``y`` with ``config``.

    Parameters
    ----------
    x : numpy.ndarray
        (n, in_channels, n_pix) float32 network inputs.
    y : numpy.ndarray
        (n,) targets: 12 + log(O/H), or booleans (star-forming) for ``task="sfclass"``.
    config : TrainConfig
    progress : bool
        Print one line per epoch.

    Returns
    -------
    TrainResult
        With the best-validation weights loaded into ``model``.
    """
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_out = 2 if config.task == "sfclass" else 1
    model = SpectralCNN(n_pix=x.shape[-1], n_out=n_out, in_channels=x.shape[1],
                        heteroscedastic=config.heteroscedastic and config.task != "sfclass").to(device)
    tr, va, te = split_indices(len(x), config.split, config.seed)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(_targets(y, config.task))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=config.plateau_factor,
                                                           patience=config.plateau_patience)
    generator = torch.Generator().manual_seed(config.seed)
    best, best_state, best_epoch, history, stale = np.inf, copy.deepcopy(model.state_dict()), -1, [], 0
    for epoch in range(config.epochs):
        model.train()
        order = tr[torch.randperm(len(tr), generator=generator).numpy()]
        total = 0.0
        for k in range(0, len(order), config.batch_size):
            idx = order[k: k + config.batch_size]
            loss = _loss(model, xt[idx].to(device), yt[idx].to(device), config)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss) * len(idx)
        val = _evaluate(model, xt, yt, va, config, device)
        scheduler.step(val)
        history.append({"epoch": epoch, "train_loss": total / max(len(tr), 1), "val_loss": val,
                        "lr": optimiser.param_groups[0]["lr"]})
        if progress:
            print(f"epoch {epoch:3d}  train {history[-1]['train_loss']:.5f}  val {val:.5f}  "
                  f"lr {history[-1]['lr']:.1e}", flush=True)
        if val < best:
            best, best_state, best_epoch, stale = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if config.early_stop_patience is not None and stale >= config.early_stop_patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model=model, config=config, history=history, best_epoch=best_epoch, train_index=tr,
                       val_index=va, test_index=te, seconds=time.perf_counter() - start)


def _evaluate(model: SpectralCNN, xt: torch.Tensor, yt: torch.Tensor, index: np.ndarray, config: TrainConfig,
              device: torch.device, batch: int = 1024) -> float:
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for k in range(0, len(index), batch):
            idx = index[k: k + batch]
            total += float(_loss(model, xt[idx].to(device), yt[idx].to(device), config)) * len(idx)
    return total / max(len(index), 1)
