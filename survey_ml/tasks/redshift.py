"""Spectroscopic redshifts: the PDF network's candidates refined by PCA templates.

Runs on every usable spectrum whatever the release cuts (they select by the catalogue
redshift, which this task re-measures). The block step is
:func:`survey_ml.core.redshift.redshifts_from_model`; flag bits are
:data:`survey_ml.core.redshift.FLAGS` (0 = reliable).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.redshift import FLAGS
from .base import Batch, Block, Column, Task

__all__ = ["Redshift"]


@dataclass(frozen=True)
class RedshiftOptions:
    """``[tasks.redshift]``: template refinement, candidates and batch sizes."""

    refine: bool | None = None       #: template chi^2 refinement (default: the weights file's choice)
    batch_size: int = 256            #: spectra per forward pass on a CPU worker
    gpu_batch_size: int = 8192       #: spectra per forward pass on a GPU worker
    n_candidates: int = 3            #: peaks of p(z) handed to the template fit
    refine_options: dict = field(default_factory=dict)   #: scan settings (coarse_stride, fine_steps, n_poly ...)


class Redshift(Task):
    """``z_cnn``, its error, flag, delta chi^2 and the network's probability at the answer."""

    name = "redshift"
    input_kind = "spectra"
    Options = RedshiftOptions
    default_weights = "redshift.pt"
    columns = (
        Column("z_cnn", "float64", "", "redshift (PDF network + template chi^2 refinement)", ucd="src.redshift"),
        Column("z_cnn_err", "float32", "", "1-sigma error of z_cnn (chi^2 curvature with the weights' scale and floor)", ucd="stat.error;src.redshift"),
        Column("z_cnn_flag", "int32", "", "bits: 1 small delta chi^2, 2 low probability, 4 edge, 16 no data; 0 = reliable",
               fill=FLAGS["NO_DATA"], ucd="meta.code.qual"),
        Column("z_cnn_dchi2", "float32", "", "chi^2 of the best rival candidate minus the best; inf when p(z) has no rival peak (>= 0.1%)", ucd="stat.fit.chi2"),
        Column("z_cnn_pmax", "float32", "", "network probability within +-2 bins of z_cnn", ucd="stat.probability"),
    )

    @classmethod
    def train(cls, recipe, *, out=None, client=None, cache_dir=None, progress=True) -> dict:
        """A redshift recipe: PDF network (+ PCA templates) or the published CNN (:func:`survey_ml.train.redshift.train_redshift_task`)."""
        from ..train.redshift import train_redshift_task

        return train_redshift_task(recipe, out=out, client=client, cache_dir=cache_dir, progress=progress)

    def select(self, block: Block) -> np.ndarray:
        return block.usable

    def prepare(self, block: Block, rows: np.ndarray) -> Batch:
        a = block.arrays
        return Batch(rows, {"flux": a["flux"][rows], "ivar": a["ivar"][rows], "mask": a["mask"][rows],
                            "wavelength": block.wavelength()})

    def predict(self, model, batch: Batch) -> dict[str, np.ndarray]:
        from ..core.inference import batch_size_for
        from ..core.redshift import redshifts_from_model

        network, info = model
        size = batch_size_for(next(network.parameters()).device, self.options.batch_size, self.options.gpu_batch_size)
        frame = redshifts_from_model(network, info, **batch.inputs, refine=self.options.refine, batch_size=size,
                                     n_candidates=self.options.n_candidates,
                                     refine_options=dict(self.options.refine_options) or None)
        return {c.name: frame[c.name].to_numpy() for c in self.columns}
