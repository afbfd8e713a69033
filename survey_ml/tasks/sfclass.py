"""Star-forming classification: P(star-forming) and the published ``sf_flag`` rule.

The shipped classifier (:class:`survey_ml.models.spectral_cnn.SpectralCNN` with two sigmoid
outputs: star-forming, not) reads the same model-grid inputs as the metallicity network.
``p_starforming`` is their normalised ratio; ``sf_flag`` is ``p_starforming >= confidence``
(the published rule: 0.85). What "star-forming" means is the label the training library
gives (:func:`survey_ml.simulate.library.classify_bpt`), computed from the noise-free line
fluxes: log [NII]/H-alpha and log [OIII]/H-beta below the Kauffmann et al. (2003) line
(and log [NII]/H-alpha < 0.05) **and** EW(H-alpha) >= 3 A - the analogue of MPA-JHU
BPTCLASS = 1. Composites (between Kauffmann 2003 and Kewley et al. 2001), AGN and galaxies
with EW(H-alpha) < 3 A are "not star-forming", even with ongoing star formation: it is a
line-ratio class, not a specific-SFR cut. The independent generator
(:mod:`survey_ml.simulate.crosscheck`) computes the same label with its own line and
continuum measurement, and ``bench/cross_sim.py`` scores the classifier against it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Batch, Block, Column
from .spectra_inputs import ModelGridOptions, ModelGridTask

__all__ = ["StarFormingClass"]


@dataclass(frozen=True)
class StarFormingOptions(ModelGridOptions):
    """``[tasks.sfclass]``: the flag threshold, and the model-grid network's coverage threshold and batch sizes."""

    confidence: float = 0.85       #: sf_flag = p_starforming >= confidence (published: 0.85)


class StarFormingClass(ModelGridTask):
    """``p_starforming`` and ``sf_flag`` for every selected spectrum with enough coverage."""

    name = "sfclass"
    Options = StarFormingOptions
    default_weights = "sfclass.pt"
    columns = (
        Column("p_starforming", "float32", "", "probability that the galaxy's lines are BPT star-forming: below Kauffmann et al. (2003) and EW(H-alpha) >= 3 A (MPA-JHU BPTCLASS 1)", ucd="stat.probability"),
        Column("sf_flag", "bool", "", "p_starforming >= confidence (0.85, the published rule)", ucd="meta.code.class"),
    )

    def predict(self, model, batch: Batch) -> dict[str, np.ndarray]:
        from ..core.inference import starforming_probability

        return {"p_starforming": starforming_probability(self.forward(model, batch))}

    def finish(self, block: Block, values: dict[str, np.ndarray]) -> None:
        values["sf_flag"] = np.nan_to_num(values["p_starforming"], nan=0.0) >= self.options.confidence
