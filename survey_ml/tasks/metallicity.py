"""Gas-phase metallicity, 12 + log(O/H), with a per-object error, from a LAMOST-like spectrum.

The shipped network (:class:`survey_ml.models.spectral_cnn.SpectralCNN`, heteroscedastic)
reads the 3800-8000 A model grid and gives the mean and standard deviation of
12 + log(O/H) (SCIENCE.md section 1). Values are given for every spectrum inside the
release cuts with at least ``min_coverage`` good pixels; they mean something for
star-forming galaxies (``sf_flag`` of the :mod:`~survey_ml.tasks.sfclass` task).
"""
from __future__ import annotations

import numpy as np

from .base import Batch, Block, Column
from .spectra_inputs import ModelGridTask, selected_coverage

__all__ = ["Metallicity"]


class Metallicity(ModelGridTask):
    """12 + log(O/H) and its error (``oh12``, ``oh12_err``) and the model-grid ``coverage``."""

    name = "metallicity"
    default_weights = "metallicity.pt"
    columns = (
        Column("coverage", "float32", "", "share of good pixels on the 3800-8000 A model grid"),
        Column("oh12", "float32", "dex", "gas-phase metallicity 12 + log(O/H) (network mean)"),
        Column("oh12_err", "float32", "dex", "1-sigma error of oh12 (network standard deviation)"),
    )

    def predict(self, model, batch: Batch) -> dict[str, np.ndarray]:
        pred = self.forward(model, batch)
        out = {"oh12": pred[:, 0]}
        if pred.shape[1] > 1:
            out["oh12_err"] = pred[:, 1]
        return out

    def run(self, block: Block) -> dict[str, np.ndarray]:
        values = super().run(block)
        rows = self.select(block)  # coverage is measured for every selected row, predicted or not
        if len(rows):
            values["coverage"][rows] = selected_coverage(block)[np.searchsorted(block.selected, rows)]
        return values
