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
    """12 + log(O/H), its calibrated error and an out-of-distribution score per spectrum."""

    name = "metallicity"
    default_weights = "metallicity.pt"
    columns = (
        Column("coverage", "float32", "", "share of good pixels on the 3800-8000 A model grid", ucd="meta.code.qual;arith.ratio"),
        Column("oh12", "float32", "dex", "gas-phase metallicity 12 + log(O/H) (network mean)", ucd="phys.abund.Z"),
        Column("oh12_err", "float32", "dex", "1-sigma error of oh12: the network's standard deviation, "
               "calibrated on shifted held-out mocks and widened with oh12_ood", ucd="stat.error;phys.abund.Z"),
        Column("oh12_ood", "float32", "", "out-of-distribution score of the spectrum's network features "
               "(about 1 for spectra like the training set; large for spectra unlike it)", ucd="stat.fit.goodness"),
        Column("oh12_ood_flag", "bool", "", "oh12_ood above the 99th percentile of held-out training "
               "spectra: oh12 is an extrapolation", ucd="meta.code.qual"),
    )

    def predict(self, model, batch: Batch) -> dict[str, np.ndarray]:
        network, info = model
        uncertainty = _uncertainty(info)
        if uncertainty is None:
            pred = self.forward(model, batch)
            return {"oh12": pred[:, 0], **({"oh12_err": pred[:, 1]} if pred.shape[1] > 1 else {})}
        pred, features = self.forward(model, batch, features=True)
        density, calibration = uncertainty
        score = density.score(features)
        return {"oh12": pred[:, 0], "oh12_err": calibration.apply(pred[:, 1], score), "oh12_ood": score,
                "oh12_ood_flag": score > density.threshold}

    def run(self, block: Block) -> dict[str, np.ndarray]:
        values = super().run(block)
        rows = self.select(block)  # coverage is measured for every selected row, predicted or not
        if len(rows):
            values["coverage"][rows] = selected_coverage(block)[np.searchsorted(block.selected, rows)]
        return values


_UNCERTAINTY: dict[str, tuple] = {}


def _uncertainty(info: dict) -> tuple | None:
    """The weights file's (FeatureDensity, ErrorCalibration), built once per process; None if it has none."""
    if "uncertainty" not in info:
        return None
    key = info["sha256"]
    if key not in _UNCERTAINTY:
        from ..core.uncertainty import ErrorCalibration, FeatureDensity

        stored = info["uncertainty"]
        _UNCERTAINTY[key] = (FeatureDensity.from_dict(stored["density"]),
                             ErrorCalibration.from_dict(stored["calibration"]))
    return _UNCERTAINTY[key]
