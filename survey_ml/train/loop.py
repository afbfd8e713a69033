"""The epoch loop every survey_ml network trains with: shuffled mini-batches, validation, best state.

The metallicity / star-forming CNNs (:mod:`survey_ml.train.spectral`), the redshift networks
(:mod:`survey_ml.train.redshift`) and the self-supervised kinematic model
(:mod:`survey_ml.train.kinematics`) differ in their data, loss and schedule, not in the loop: each
passes its batch loss and its validation loss as functions.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["train_epochs"]


def train_epochs(model: torch.nn.Module, train_index: np.ndarray, batch_loss: Callable[[np.ndarray], torch.Tensor],
                 validation_loss: Callable[[], float], optimiser: torch.optim.Optimizer, scheduler, *, epochs: int,
                 batch_size: int, seed: int, patience: int | None = None, label: str = "", progress: bool = False,
                 start: float | None = None) -> tuple[list[dict[str, float]], int]:
    """Train ``model`` for up to ``epochs`` epochs; leave the best-validation weights loaded, in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
    train_index : numpy.ndarray
        Rows to train on; shuffled each epoch by a generator seeded with ``seed``.
    batch_loss : callable
        ``batch_loss(rows)`` -> the (differentiable) mean loss of those rows, model in train mode.
    validation_loss : callable
        ``validation_loss()`` -> the validation loss (called in eval mode, without gradients).
    optimiser, scheduler
        A torch optimiser and its learning-rate scheduler: ``ReduceLROnPlateau`` steps on the
        validation loss, any other once per epoch.
    epochs, batch_size
    patience : int, optional
        Stop after this many epochs without a better validation loss (None: never).
    label : str
        Prefix of the per-epoch progress line.
    progress : bool
        Print one line per epoch.
    start : float, optional
        ``time.perf_counter()`` the history's ``seconds`` count from (default: now).

    Returns
    -------
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``lr``, ``seconds``.
    best_epoch : int
    """
    start = time.perf_counter() if start is None else start
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, stale, history = np.inf, copy.deepcopy(model.state_dict()), -1, 0, []
    for epoch in range(epochs):
        model.train()
        order = train_index[torch.randperm(len(train_index), generator=generator).numpy()]
        total = 0.0
        for k in range(0, len(order), batch_size):
            rows = order[k: k + batch_size]
            loss = batch_loss(rows)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(rows)
        model.eval()
        with torch.inference_mode():
            val = float(validation_loss())
        if plateau:
            scheduler.step(val)
        else:
            scheduler.step()
        history.append({"epoch": epoch, "train_loss": total / max(len(train_index), 1), "val_loss": val,
                        "lr": optimiser.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
        if progress:
            print(f"{label + ' ' if label else ''}epoch {epoch:3d}  train {history[-1]['train_loss']:.5f}  "
                  f"val {val:.5f}  lr {history[-1]['lr']:.1e}  {history[-1]['seconds']:.0f} s", flush=True)
        if val < best:
            best, best_state, best_epoch, stale = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if patience is not None and stale >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch
