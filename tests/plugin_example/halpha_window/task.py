from dataclasses import dataclass

import numpy as np
import torch

from survey_ml.tasks import Batch, Column, Task


class WindowNet(torch.nn.Module):
    """A small network over the spectrum around H-alpha."""

    def __init__(self, n_pix: int = 32, hidden: int = 16):
        super().__init__()
        self.n_pix, self.hidden = n_pix, hidden
        self.layers = torch.nn.Sequential(torch.nn.Linear(n_pix, hidden), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden, 1))

    def config(self) -> dict:                       # what rebuilds it from a weights file
        return {"n_pix": self.n_pix, "hidden": self.hidden}

    def forward(self, x):
        return self.layers(x)


@dataclass(frozen=True)
class WindowOptions:
    half_width_a: float = 40.0                      # rest-frame A on each side of H-alpha


def halpha_windows(wave, flux, z, n_pix, half_width):
    """Flux on n_pix rest-frame points around H-alpha, over its median."""
    rest = 6564.61 + np.linspace(-half_width, half_width, n_pix)
    x = np.stack([np.interp(rest * (1 + zi), wave, f) for zi, f in zip(z, flux)])
    return (x / np.maximum(np.median(np.abs(x), axis=1, keepdims=True), 1e-30)).astype(np.float32)


class HalphaWindow(Task):
    name = "halpha_window"
    input_kind = "spectra"
    Options = WindowOptions
    model_class = WindowNet
    columns = (Column("halpha_score", "float32", "", "WindowNet's score of the H-alpha region"),)

    def prepare(self, block, rows):
        z = block.rows["z"].to_numpy(float)[rows]
        x = halpha_windows(block.wavelength(), block.arrays["flux"][rows], z, 32, self.options.half_width_a)
        return Batch(rows, {"x": torch.from_numpy(x)})

    def predict(self, model, batch):
        network, info = model                       # built once per worker, on its device
        device = next(network.parameters()).device
        with torch.inference_mode():
            score = network(batch.inputs["x"].to(device))[:, 0]
        return {"halpha_score": score.cpu().numpy()}
