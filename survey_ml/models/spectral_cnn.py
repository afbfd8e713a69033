"""The 1-D CNN of the LAMOST DR10 metallicity study, and its heteroscedastic variant.

Published architecture (SCIENCE.md section 1): eight Conv1D layers (kernel 3, stride 1,
ReLU, no padding - Keras' default ``valid``) in four blocks of two with 16, 32, 64 and 128
channels, a MaxPool1D (window 3, stride 3) after each block, Flatten, and one Dense layer:
one output for 12 + log(O/H), or two (sigmoid) for the star-forming classifier. On the
4201-pixel model grid the flattened trunk has 128 x 49 = 6272 features.

:class:`SpectralCNN` builds that network; ``heteroscedastic=True`` adds a second output per
target, the log-variance of a Gaussian likelihood, so each prediction carries its own
uncertainty (trained with :func:`gaussian_nll`); ``in_channels=2`` lets the network see a
second channel (e.g. the good-pixel coverage) beside the normalised flux.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SpectralCNN", "gaussian_nll", "conv_trunk_length", "forward_flops"]

CHANNELS = (16, 32, 64, 128)
KERNEL = 3
POOL = 3


def conv_trunk_length(n_pix: int) -> int:
    """Length of the feature map after the four conv-conv-pool blocks.

    Examples
    --------
    >>> conv_trunk_length(4201)
    49
    """
    length = n_pix
    for _ in CHANNELS:
        length = (length - 2 * (KERNEL - 1)) // POOL
    return length


class SpectralCNN(nn.Module):
    """The published 1-D CNN (optionally with a heteroscedastic head).

    Parameters
    ----------
    n_pix : int
        Input length (4201 on the published 3800-8000 A, 1 A grid).
    n_out : int
        Targets: 1 (metallicity) or 2 (star-forming classifier logits).
    in_channels : int
        1 (normalised flux, as published) or more (e.g. flux and coverage).
    heteroscedastic : bool
        Also predict a log-variance per target; ``forward`` then returns ``(mean, log_var)``.

    Examples
    --------
    >>> net = SpectralCNN()
    >>> net(torch.zeros(5, 1, 4201)).shape
    torch.Size([5, 1])
    >>> mean, log_var = SpectralCNN(heteroscedastic=True)(torch.zeros(2, 1, 4201))
    >>> tuple(mean.shape), tuple(log_var.shape)
    ((2, 1), (2, 1))
    """

    def __init__(self, n_pix: int = 4201, n_out: int = 1, in_channels: int = 1, heteroscedastic: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in CHANNELS:
            layers += [nn.Conv1d(c_in, c_out, KERNEL), nn.ReLU(), nn.Conv1d(c_out, c_out, KERNEL), nn.ReLU(),
                       nn.MaxPool1d(POOL, POOL)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.n_pix, self.n_out, self.in_channels, self.heteroscedastic = n_pix, n_out, in_channels, heteroscedastic
        n_features = CHANNELS[-1] * conv_trunk_length(n_pix)
        self.head = nn.Linear(n_features, n_out * (2 if heteroscedastic else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.trunk(x))
        if self.heteroscedastic:
            mean, log_var = out[:, : self.n_out], out[:, self.n_out:]
            return mean, log_var.clamp(-20.0, 10.0)
        return out


def gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``target`` under N(mean, exp(log_var)), constants dropped."""
    return 0.5 * (log_var + (target - mean) ** 2 * torch.exp(-log_var)).mean()


def forward_flops(net: SpectralCNN) -> int:
    """Floating-point operations of one forward pass of one spectrum (2 per multiply-add).

    Convolutions and the dense layer only (ReLU and pooling are a few per cent more and
    are not counted), the figure used to convert a machine's matmul peak into spectra/s.
    """
    flops, length, c_in = 0, net.n_pix, net.in_channels
    for c_out in CHANNELS:
        for c_from in (c_in, c_out):
            length -= KERNEL - 1
            flops += 2 * KERNEL * c_from * c_out * length
        length //= POOL
        c_in = c_out
    return flops + 2 * net.head.in_features * net.head.out_features
