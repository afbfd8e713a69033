"""What the model-grid networks share: their inputs (computed once per block), options, batches and training.

The metallicity CNN and the star-forming classifier read the same 2-channel inputs
(min-max normalised flux on 3800-8000 A, and the good-pixel coverage) of the same rows, so
the first of them to run on a block computes them and the other reuses them
(:meth:`survey_ml.tasks.base.Block.shared`). Both are :class:`ModelGridTask` subclasses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Batch, Block, Task

__all__ = ["model_inputs_of", "line_features_of", "coverage_of", "selected_coverage", "reject_low_coverage", "ModelGridOptions",
           "ModelGridTask"]


def model_inputs_of(block: Block) -> np.ndarray:
    """(len(block.selected), 2, 4201) network inputs of the block's selected rows (cached per block)."""
    from ..core.spectra import model_inputs

    def compute() -> np.ndarray:
        rows = block.selected
        a = block.arrays
        return model_inputs(a["flux"][rows], a["ivar"][rows], a["mask"][rows], block.wavelength(),
                            in_channels=2)

    return block.shared("model_inputs", compute)


def line_features_of(block: Block) -> np.ndarray:
    """(len(block.selected), n) emission-line features of the block's selected rows, fitted at the
    catalogue redshift (cached per block: the metallicity and star-forming networks share them)."""
    from ..core.lines import line_features

    def compute() -> np.ndarray:
        rows = block.selected
        a = block.arrays
        return line_features(a["flux"][rows], a["ivar"][rows], a["mask"][rows], block.wavelength(),
                             block.rows["z"].to_numpy(float)[rows])

    return block.shared("line_features", compute)


def coverage_of(x: np.ndarray) -> np.ndarray:
    """Share of good pixels per row of 2-channel model inputs (channel 1 is the coverage).

    Examples
    --------
    >>> coverage_of(np.stack([np.zeros((2, 4)), [[1, 1, 0, 0], [1, 1, 1, 1]]], axis=1)).tolist()
    [0.5, 1.0]
    """
    return x[:, 1].mean(axis=1).astype(np.float32)


def selected_coverage(block: Block) -> np.ndarray:
    """:func:`coverage_of` the block's selected rows (cached per block)."""
    return block.shared("coverage", lambda: coverage_of(model_inputs_of(block)))


def reject_low_coverage(block: Block, rows: np.ndarray, min_coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """The selected ``rows`` with enough coverage, and their positions in the shared inputs.

    Rows below ``min_coverage`` get status ``low_coverage`` and a message with their share.
    """
    position = np.searchsorted(block.selected, rows)
    cov = selected_coverage(block)[position]
    enough = cov >= min_coverage
    block.reject(rows[~enough], "low_coverage",
                 [f"only {c:.0%} of 3800-8000 A has good pixels (< {min_coverage:.0%})" for c in cov[~enough]])
    return rows[enough], position[enough]


@dataclass(frozen=True)
class ModelGridOptions:
    """What every model-grid network takes from its ``[tasks.<name>]`` table."""

    min_coverage: float = 0.5      #: least share of good pixels on 3800-8000 A to predict
    batch_size: int = 512          #: spectra per forward pass on a CPU worker
    gpu_batch_size: int = 8192     #: spectra per forward pass on a GPU worker (bounds GPU memory)


class ModelGridTask(Task):
    """A network on the shared model-grid inputs (:class:`~survey_ml.models.spectral_cnn.SpectralCNN`).

    Rows inside the release cuts with less than ``min_coverage`` good pixels are rejected as
    ``low_coverage``; :meth:`forward` runs the network in the device's batch size.
    """

    input_kind = "spectra"
    Options = ModelGridOptions

    @classmethod
    def train(cls, recipe, *, out=None, client=None, cache_dir=None, progress=True) -> dict:
        """The shipped network's recipe (training set from the bagpipes library, :func:`survey_ml.train.spectral.train_task`)."""
        from ..train.spectral import train_task

        return train_task(recipe, out=out, client=client, cache_dir=cache_dir, progress=progress)

    def prepare(self, block: Block, rows: np.ndarray) -> Batch:
        keep, position = reject_low_coverage(block, rows, self.options.min_coverage)
        inputs = {"x": model_inputs_of(block)[position]}
        if len(keep) and self.load_model(block.device)[1]["config"].get("n_lines"):
            inputs["lines"] = line_features_of(block)[position]   # a network that reads the fitted lines
        return Batch(keep, inputs)

    def forward(self, model, batch: Batch, features: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The network on a batch; as many input channels as it was built with (the published one: 1).

        With ``features``, also the trunk features of the same pass (for an OOD score).
        """
        from ..core.inference import batch_size_for, forward_batches

        network, info = model
        size = batch_size_for(next(network.parameters()).device, self.options.batch_size, self.options.gpu_batch_size)
        x = np.ascontiguousarray(batch.inputs["x"][:, : info["config"]["in_channels"]])
        return forward_batches(network, x, size, features=features, lines=batch.inputs.get("lines"))
