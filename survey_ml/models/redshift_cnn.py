"""Redshift networks: the published regression CNN and survey_ml's redshift-PDF network.

Published (SCIENCE.md section 2, :class:`PublishedRedshiftCNN`): a 2-channel input
(wavelength, flux); Conv(kernel 4, stride 2), then kernel-2 / stride-1 convolutions in the
pattern Conv-Conv-Pool, Conv-Conv-Pool, Conv-Pool, Conv-Pool, two fully connected layers
and one output (z); ReLU, MSE, Adam 1e-3, batch 32, early stopping (patience 5). The thesis
does not give the widths; the ones chosen here (:data:`PUBLISHED_CHANNELS`, six
convolutions of 16/16/32/32/64/64 channels, max-pool 2, a hidden layer of 96) give
1,718,305 parameters on its 8912-pixel input - within 0.5% of the published 1,710,589
(the first Conv(k4, s2) opens block one: Conv(k4,s2)-Conv-Pool, Conv-Conv-Pool, Conv-Pool,
Conv-Pool).

survey_ml (:class:`RedshiftPDFNet`): a classifier over bins of ln(1 + z) on a log-linear
grid, where a redshift is a translation. It returns logits; the softmax is p(z), whose
peaks are the candidates that :mod:`survey_ml.core.templates` refines with a local template
chi^2 (the network finds the right peak, the templates measure it to a fraction of a
pixel). Trunk: an average-pool stem (4 pixels, 276 km/s, about one PDF bin of 0.001 in
ln(1 + z): the network only has to find the bin), five Conv-Conv-MaxPool(2) blocks (kernel
5, 16/24/32/48/64 channels; 21.6 MFLOP per LAMOST spectrum),
a 1x1 convolution to 16 channels, Flatten, Linear -> 256 (ReLU, dropout 0.1) -> n_bins.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["PublishedRedshiftCNN", "RedshiftPDFNet", "PUBLISHED_CHANNELS", "parameter_count", "forward_flops"]

#: Conv widths chosen for the published network (see the module docstring).
PUBLISHED_CHANNELS = (16, 16, 32, 32, 64, 64)
#: Its hidden fully connected width.
PUBLISHED_HIDDEN = 96


def parameter_count(net: nn.Module) -> int:
    """Trainable parameters of a network.

    Examples
    --------
    >>> parameter_count(PublishedRedshiftCNN(n_pix=8912))
    1718305
    """
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


class PublishedRedshiftCNN(nn.Module):
    """The published redshift regression CNN (2-channel wavelength + flux input, 1 output).

    Parameters
    ----------
    n_pix : int
        Input length (8912 on the DEIMOS-like setup, 3950 on LAMOST).
    channels : tuple of int
        Widths of the six convolutions.
    hidden : int
        Width of the first fully connected layer.

    Examples
    --------
    >>> PublishedRedshiftCNN(n_pix=3950)(torch.zeros(3, 2, 3950)).shape
    torch.Size([3, 1])
    """

    def __init__(self, n_pix: int = 8912, channels: tuple[int, ...] = PUBLISHED_CHANNELS,
                 hidden: int = PUBLISHED_HIDDEN):
        super().__init__()
        c = [int(v) for v in channels]
        pool = nn.MaxPool1d(2, 2)
        self.trunk = nn.Sequential(
            nn.Conv1d(2, c[0], 4, stride=2), nn.ReLU(), nn.Conv1d(c[0], c[1], 2), nn.ReLU(), pool,
            nn.Conv1d(c[1], c[2], 2), nn.ReLU(), nn.Conv1d(c[2], c[3], 2), nn.ReLU(), pool,
            nn.Conv1d(c[3], c[4], 2), nn.ReLU(), pool,
            nn.Conv1d(c[4], c[5], 2), nn.ReLU(), pool,
            nn.Flatten())
        with torch.no_grad():
            n_features = self.trunk(torch.zeros(1, 2, n_pix)).shape[1]
        self.head = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.n_pix, self.channels, self.hidden = int(n_pix), tuple(c), int(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def config(self) -> dict:
        return {"n_pix": self.n_pix, "channels": list(self.channels), "hidden": self.hidden}


class RedshiftPDFNet(nn.Module):
    """p(ln(1 + z)) over fixed bins from a log-linear-grid spectrum (logits out).

    Parameters
    ----------
    n_pix : int
        Input length (the setup's model grid).
    n_bins : int
        Number of ln(1 + z) bins.
    in_channels : int
        2: scaled flux and good-pixel coverage (:func:`survey_ml.core.redshift_inputs.redshift_inputs`).
    channels : tuple of int
        Widths of the Conv-Conv-Pool blocks.
    stem_pool : int
        Average-pool the input by this factor first.
    hidden : int
        Width of the hidden fully connected layer.
    dropout : float
        Dropout before the output layer.
    bin_lo, bin_width : float
        The bins: ``ln(1 + z)`` edges ``bin_lo + bin_width * k`` (stored with the weights).

    Examples
    --------
    >>> net = RedshiftPDFNet(n_pix=3950, n_bins=408)
    >>> net(torch.zeros(2, 2, 3950)).shape
    torch.Size([2, 408])
    """

    def __init__(self, n_pix: int, n_bins: int, in_channels: int = 2, channels: tuple[int, ...] = (16, 24, 32, 48, 64),
                 stem_pool: int = 4, hidden: int = 256, dropout: float = 0.1, bin_lo: float = 0.0,
                 bin_width: float = 0.001):
        super().__init__()
        layers: list[nn.Module] = [nn.AvgPool1d(stem_pool, stem_pool)] if stem_pool > 1 else []
        c_in = in_channels
        for c_out in channels:
            layers += [nn.Conv1d(c_in, c_out, 5, padding=2), nn.ReLU(), nn.Conv1d(c_out, c_out, 5, padding=2),
                       nn.ReLU(), nn.MaxPool1d(2, 2)]
            c_in = c_out
        layers += [nn.Conv1d(c_in, 16, 1), nn.ReLU(), nn.Flatten()]
        self.trunk = nn.Sequential(*layers)
        with torch.no_grad():
            n_features = self.trunk(torch.zeros(1, in_channels, n_pix)).shape[1]
        self.head = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_bins))
        self.n_pix, self.n_bins, self.in_channels = int(n_pix), int(n_bins), int(in_channels)
        self.channels, self.stem_pool, self.hidden, self.dropout = tuple(int(c) for c in channels), int(stem_pool), \
            int(hidden), float(dropout)
        self.bin_lo, self.bin_width = float(bin_lo), float(bin_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def bin_centres(self) -> torch.Tensor:
        """ln(1 + z) at the centre of each bin."""
        return self.bin_lo + self.bin_width * (torch.arange(self.n_bins, dtype=torch.float64) + 0.5)

    def config(self) -> dict:
        return {"n_pix": self.n_pix, "n_bins": self.n_bins, "in_channels": self.in_channels,
                "channels": list(self.channels), "stem_pool": self.stem_pool, "hidden": self.hidden,
                "dropout": self.dropout, "bin_lo": self.bin_lo, "bin_width": self.bin_width}


def forward_flops(net: nn.Module, n_pix: int | None = None, in_channels: int = 2) -> int:
    """Floating-point operations of one forward pass of one spectrum (2 per multiply-add).

    Convolutions and linear layers, counted from the shapes a probe pass sees.

    Examples
    --------
    >>> round(forward_flops(RedshiftPDFNet(n_pix=3950, n_bins=408)) / 1e6, 1)
    21.6
    """
    flops = 0

    def count(module, inputs, output):
        nonlocal flops
        if isinstance(module, nn.Conv1d):
            flops += 2 * output.shape[1] * output.shape[2] * module.in_channels * module.kernel_size[0]
        elif isinstance(module, nn.Linear):
            flops += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    try:
        with torch.no_grad():
            n_lines = int(getattr(net, "n_lines", 0) or 0)   # a SpectralCNN that reads line features
            net(torch.zeros(1, in_channels, n_pix or net.n_pix), *((torch.zeros(1, n_lines),) if n_lines else ()))
    finally:
        for h in hooks:
            h.remove()
    return flops
