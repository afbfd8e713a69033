"""What the spectral networks share on a block: the model-grid inputs, computed once per block.

The metallicity CNN and the star-forming classifier read the same 2-channel inputs
(min-max normalised flux on 3800-8000 A, and the good-pixel coverage) of the same rows, so
the first of them to run on a block computes them and the other reuses them
(:meth:`survey_ml.tasks.base.Block.shared`).
"""
from __future__ import annotations

import numpy as np

from .base import Batch, Block

__all__ = ["model_inputs_of", "coverage_of", "reject_low_coverage", "model_grid_batch", "forward_model_grid",
           "spectra_wavelength"]


def spectra_wavelength(block: Block) -> np.ndarray:
    """The store's wavelength grid (A, vacuum) of a spectra block."""
    return block.wavelength()


def model_inputs_of(block: Block) -> np.ndarray:
    """(len(block.selected), 2, 4201) network inputs of the block's selected rows (cached per block)."""
    from ..preprocess.spectra import model_inputs

    def compute() -> np.ndarray:
        rows = block.selected
        a = block.arrays
        return model_inputs(a["flux"][rows], a["ivar"][rows], a["mask"][rows], spectra_wavelength(block),
                            in_channels=2)

    return block.shared("model_inputs", compute)


def coverage_of(x: np.ndarray) -> np.ndarray:
    """Share of good pixels per row of 2-channel model inputs (channel 1 is the coverage).

    Examples
    --------
    >>> coverage_of(np.stack([np.zeros((2, 4)), [[1, 1, 0, 0], [1, 1, 1, 1]]], axis=1)).tolist()
    [0.5, 1.0]
    """
    return x[:, 1].mean(axis=1).astype(np.float32)


def reject_low_coverage(block: Block, rows: np.ndarray, min_coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """The selected ``rows`` with enough coverage, and their positions in the shared inputs.

    Rows below ``min_coverage`` get status ``low_coverage`` and a message with their share.
    """
    x = model_inputs_of(block)
    position = np.searchsorted(block.selected, rows)
    cov = coverage_of(x)[position]
    enough = cov >= min_coverage
    block.reject(rows[~enough], "low_coverage",
                 [f"only {c:.0%} of 3800-8000 A has good pixels (< {min_coverage:.0%})" for c in cov[~enough]])
    return rows[enough], position[enough]


def model_grid_batch(block: Block, rows: np.ndarray, min_coverage: float) -> Batch:
    """The batch of a model-grid network: the shared inputs of ``rows`` with enough coverage."""
    x = model_inputs_of(block)
    keep, position = reject_low_coverage(block, rows, min_coverage)
    return Batch(keep, {"x": x[position]})


def forward_model_grid(model, batch: Batch, options) -> np.ndarray:
    """A model-grid network on a batch, in ``options.batch_size`` (CPU) or ``gpu_batch_size`` (GPU) passes.

    Uses as many input channels as the network was built with (the published architecture: 1).
    """
    from ..infer import batch_size_for, forward_batches

    network, info = model
    size = batch_size_for(next(network.parameters()).device, options.batch_size, options.gpu_batch_size)
    x = np.ascontiguousarray(batch.inputs["x"][:, : info["config"]["in_channels"]])
    return forward_batches(network, x, size)
