"""Gas-phase metallicity, 12 + log(O/H), with a per-object error, from a LAMOST-like spectrum.

The shipped network (:class:`survey_ml.models.spectral_cnn.SpectralCNN`, heteroscedastic)
reads the 3800-8000 A model grid and gives the mean and standard deviation of
12 + log(O/H) (SCIENCE.md section 1). Values are given for every spectrum inside the
release cuts with at least ``min_coverage`` good pixels; they mean something for
star-forming galaxies (``sf_flag`` of the :mod:`~survey_ml.tasks.sfclass` task).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Batch, Block, Column, Task
from .spectra_inputs import coverage_of, forward_model_grid, model_grid_batch, model_inputs_of

__all__ = ["Metallicity"]


@dataclass(frozen=True)
class MetallicityOptions:
    """``[tasks.metallicity]``: coverage threshold and batch sizes."""

    min_coverage: float = 0.5      #: least share of good pixels on 3800-8000 A to predict
    batch_size: int = 512          #: spectra per forward pass on a CPU worker
    gpu_batch_size: int = 8192     #: spectra per forward pass on a GPU worker (bounds GPU memory)


class Metallicity(Task):
    """12 + log(O/H) and its error (``oh12``, ``oh12_err``) and the model-grid ``coverage``."""

    name = "metallicity"
    input_kind = "spectra"
    Options = MetallicityOptions
    default_weights = "metallicity.pt"
    columns = (
        Column("coverage", "float32", "", "share of good pixels on the 3800-8000 A model grid"),
        Column("oh12", "float32", "dex", "gas-phase metallicity 12 + log(O/H) (network mean)"),
        Column("oh12_err", "float32", "dex", "1-sigma error of oh12 (network standard deviation)"),
    )

    @classmethod
    def train(cls, recipe, *, out=None, client=None, cache_dir=None, progress=True) -> dict:
        """The shipped network's recipe (training set from the bagpipes library, :func:`survey_ml.train.train_task`)."""
        from ..train import train_task

        return train_task(recipe, out=out, client=client, cache_dir=cache_dir, progress=progress)

    def prepare(self, block: Block, rows: np.ndarray) -> Batch:
        return model_grid_batch(block, rows, self.options.min_coverage)

    def predict(self, model, batch: Batch) -> dict[str, np.ndarray]:
        pred = forward_model_grid(model, batch, self.options)
        out = {"oh12": pred[:, 0]}
        if pred.shape[1] > 1:
            out["oh12_err"] = pred[:, 1]
        return out

    def run(self, block: Block) -> dict[str, np.ndarray]:
        values = super().run(block)
        rows = self.select(block)  # coverage is measured for every selected row, predicted or not
        if len(rows):
            values["coverage"][rows] = coverage_of(model_inputs_of(block))[np.searchsorted(block.selected, rows)]
        return values
