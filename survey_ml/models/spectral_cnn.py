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

Two more knobs make the same design cheap enough for a CPU node: ``stem_pool`` averages
adjacent input pixels first (2 turns the 1 A grid into a 2 A grid, still ~1.5 pixels per
LAMOST resolution element at 5500 A), and ``channels`` sets the widths of the four
blocks. The defaults are the published network; :data:`FAST` is the survey_ml default
(``channels=(8, 16, 32, 64)``, ``stem_pool=2``: 7.2 MFLOP per spectrum instead of 58.8).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SpectralCNN", "SpectralEnsemble", "gaussian_nll", "conv_trunk_length", "forward_flops", "PUBLISHED", "FAST"]

CHANNELS = (16, 32, 64, 128)
KERNEL = 3
POOL = 3


#: The published architecture (SCIENCE.md section 1).
PUBLISHED: dict = {"channels": CHANNELS, "stem_pool": 1}
#: survey_ml's CPU-friendly variant of it: 2 A input pixels, half the channels.
FAST: dict = {"channels": (8, 16, 32, 64), "stem_pool": 2}


def conv_trunk_length(n_pix: int, n_blocks: int = len(CHANNELS), stem_pool: int = 1) -> int:
    """Length of the feature map after the four conv-conv-pool blocks.

    Examples
    --------
    >>> conv_trunk_length(4201)
    49
    >>> conv_trunk_length(4201, stem_pool=2)
    23
    """
    length = n_pix // stem_pool
    for _ in range(n_blocks):
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
    channels : tuple of int
        Widths of the four conv blocks (published: 16, 32, 64, 128).
    stem_pool : int
        Average-pool the input by this factor before the first conv (published: 1, none).
    target_shift, target_scale : float
        The network works on standardised targets; outputs are ``shift + scale * raw``
        (training sets them to the training targets' mean and standard deviation, so
        the last layer does not have to learn an offset of ~8.8 dex first).
    n_lines : int
        Emission-line features read beside the spectrum (0: none, the published design):
        :func:`survey_ml.core.lines.line_features`, standardised by the buffers
        ``line_shift`` / ``line_scale`` (set from the training set), through two ReLU layers
        of ``line_hidden`` units, whose output joins the flattened conv features before the
        head. ``forward(x, lines)`` then needs them.
    line_hidden : int
        Width of the line-feature layers.

    Examples
    --------
    >>> net = SpectralCNN()
    >>> net(torch.zeros(5, 1, 4201)).shape
    torch.Size([5, 1])
    >>> mean, log_var = SpectralCNN(heteroscedastic=True)(torch.zeros(2, 1, 4201))
    >>> tuple(mean.shape), tuple(log_var.shape)
    ((2, 1), (2, 1))
    >>> SpectralCNN(n_lines=17, **FAST)(torch.zeros(2, 1, 4201), torch.zeros(2, 17)).shape
    torch.Size([2, 1])
    """

    def __init__(self, n_pix: int = 4201, n_out: int = 1, in_channels: int = 1, heteroscedastic: bool = False,
                 channels: tuple[int, ...] = CHANNELS, stem_pool: int = 1, target_shift: float = 0.0,
                 target_scale: float = 1.0, n_lines: int = 0, line_hidden: int = 32):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        layers: list[nn.Module] = [nn.AvgPool1d(stem_pool, stem_pool)] if stem_pool > 1 else []
        c_in = in_channels
        for c_out in channels:
            layers += [nn.Conv1d(c_in, c_out, KERNEL), nn.ReLU(), nn.Conv1d(c_out, c_out, KERNEL), nn.ReLU(),
                       nn.MaxPool1d(POOL, POOL)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.n_pix, self.n_out, self.in_channels, self.heteroscedastic = n_pix, n_out, in_channels, heteroscedastic
        self.channels, self.stem_pool = channels, int(stem_pool)
        self.target_shift, self.target_scale = float(target_shift), float(target_scale)
        n_features = channels[-1] * conv_trunk_length(n_pix, len(channels), stem_pool)
        self.n_lines, self.line_hidden = int(n_lines), int(line_hidden)
        if self.n_lines:
            self.register_buffer("line_shift", torch.zeros(self.n_lines))
            self.register_buffer("line_scale", torch.ones(self.n_lines))
            self.line_net = nn.Sequential(nn.Linear(self.n_lines, self.line_hidden), nn.ReLU(),
                                          nn.Linear(self.line_hidden, self.line_hidden), nn.ReLU())
            n_features += self.line_hidden
        self.head = nn.Linear(n_features, n_out * (2 if heteroscedastic else 1))
        self._initialise()

    def _initialise(self) -> None:
        """He-normal convolutions and a Glorot head, zero biases.

        PyTorch's default (Kaiming-uniform with a = sqrt(5)) shrinks the activations ~3x per
        conv pair: after eight layers the features of min-max normalised spectra vary by
        ~1e-3 between spectra, the first-layer gradients are ~1e-5, and on a training set
        with a wide label range (the ``broad`` priors) the network never leaves the constant
        prediction. He initialisation (He et al. 2015) keeps the activation scale through
        the ReLU stack.
        """
        for layer in self.trunk:
            if isinstance(layer, nn.Conv1d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        for layer in getattr(self, "line_net", ()):
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def set_line_scaling(self, shift, scale) -> None:
        """Standardise the line features by these (the training set's mean and standard deviation)."""
        self.line_shift.copy_(torch.as_tensor(shift, dtype=torch.float32))
        self.line_scale.copy_(torch.clamp(torch.as_tensor(scale, dtype=torch.float32), min=1e-3))

    def forward(self, x: torch.Tensor, lines: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.head_output(self.features(x, lines))

    def head_output(self, features: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`forward` returns, from the trunk :meth:`features` (one pass gives both)."""
        out = self.head(features)
        if self.heteroscedastic:
            mean, log_var = out[:, : self.n_out], out[:, self.n_out:]
            return (self.target_shift + self.target_scale * mean,
                    log_var.clamp(-20.0, 10.0) + 2.0 * math.log(self.target_scale))
        if self.target_shift or self.target_scale != 1.0:
            return self.target_shift + self.target_scale * out
        return out

    def features(self, x: torch.Tensor, lines: torch.Tensor | None = None) -> torch.Tensor:
        """The features the head reads: the flattened conv trunk (and the line layers' output).

        Examples
        --------
        >>> SpectralCNN(**FAST).features(torch.zeros(3, 1, 4201)).shape
        torch.Size([3, 1472])
        >>> SpectralCNN(n_lines=17, **FAST).features(torch.zeros(3, 1, 4201), torch.zeros(3, 17)).shape
        torch.Size([3, 1504])
        """
        trunk = self.trunk(x)
        if not self.n_lines:
            return trunk
        if lines is None:
            raise ValueError(f"this network reads {self.n_lines} emission-line features beside the spectrum: "
                             "forward(x, lines)")
        return torch.cat([trunk, self.line_net((lines - self.line_shift) / self.line_scale)], dim=1)

    def config(self) -> dict:
        """The constructor arguments (what a weights file stores to rebuild the network)."""
        return {"n_pix": self.n_pix, "n_out": self.n_out, "in_channels": self.in_channels,
                "heteroscedastic": self.heteroscedastic, "channels": list(self.channels),
                "stem_pool": self.stem_pool, "target_shift": self.target_shift, "target_scale": self.target_scale,
                **({"n_lines": self.n_lines, "line_hidden": self.line_hidden} if self.n_lines else {})}


def gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """Mean negative log-likelihood of ``target`` under N(mean, exp(log_var)), constants dropped.

    ``beta > 0`` is the beta-NLL of Seitzer et al. (2022): each object's term is weighted
    by its (detached) variance to the power ``beta``, so hard, noisy spectra cannot make
    the network give up on the mean (plain NLL, ``beta = 0``, lets a large predicted
    variance excuse a poor mean; ``beta = 1`` gives the mean the MSE gradient).
    """
    nll = 0.5 * (log_var + (target - mean) ** 2 * torch.exp(-log_var))
    if beta:
        nll = nll * torch.exp(beta * log_var.detach())
    return nll.mean()


def forward_flops(net: SpectralCNN) -> int:
    """Floating-point operations of one forward pass of one spectrum (2 per multiply-add).

    Convolutions and the dense layer only (ReLU and pooling are a few per cent more and
    are not counted), the figure used to convert a machine's matmul peak into spectra/s.

    Examples
    --------
    >>> round(forward_flops(SpectralCNN()) / 1e6, 1), round(forward_flops(SpectralCNN(**FAST)) / 1e6, 1)
    (58.8, 7.2)
    """
    flops, length, c_in = 0, net.n_pix // net.stem_pool, net.in_channels
    for c_out in net.channels:
        for c_from in (c_in, c_out):
            length -= KERNEL - 1
            flops += 2 * KERNEL * c_from * c_out * length
        length //= POOL
        c_in = c_out
    if net.n_lines:
        flops += 2 * (net.n_lines * net.line_hidden + net.line_hidden**2)
    return flops + 2 * net.head.in_features * net.head.out_features


class SpectralEnsemble(nn.Module):
    """A deep ensemble of heteroscedastic :class:`SpectralCNN` members (Lakshminarayanan et al. 2017).

    Members share the architecture and the training split and differ in their initial
    weights and batch order. The ensemble's prediction is the mixture's mean and variance,
    ``mean = <mu_i>`` and ``var = <sigma_i^2> + Var(mu_i)``: the members' own (aleatoric)
    variances plus their disagreement, which grows on spectra unlike the training set - the
    epistemic part a single network cannot report. :meth:`features` concatenates the
    members' features (one pass gives the OOD density's input and the prediction).

    Parameters
    ----------
    members : list of dict
        Each member's :meth:`SpectralCNN.config` (all equal but for the target scaling).
    n_pix, n_out, in_channels, heteroscedastic, n_lines
        The members' shared values, repeated in :meth:`config` so that code reading a weights
        file's config (input channels, line features) treats an ensemble like one network;
        checked against the members when given.

    Examples
    --------
    >>> net = SpectralEnsemble([SpectralCNN(heteroscedastic=True, **FAST).config()] * 3)
    >>> mean, log_var = net(torch.zeros(2, 1, 4201))
    >>> tuple(mean.shape), tuple(log_var.shape), tuple(net.features(torch.zeros(2, 1, 4201)).shape)
    ((2, 1), (2, 1), (2, 4416))
    """

    def __init__(self, members: list[dict], n_pix: int | None = None, n_out: int | None = None,
                 in_channels: int | None = None, heteroscedastic: bool = True, n_lines: int | None = None):
        super().__init__()
        self.members = nn.ModuleList([SpectralCNN(**m) for m in members])
        if not self.members or not all(m.heteroscedastic for m in self.members) or not heteroscedastic:
            raise ValueError("a SpectralEnsemble needs at least one heteroscedastic SpectralCNN member")
        first = self.members[0]
        self.n_pix, self.n_out, self.in_channels = first.n_pix, first.n_out, first.in_channels
        self.n_lines, self.heteroscedastic = first.n_lines, True
        for name, given in (("n_pix", n_pix), ("n_out", n_out), ("in_channels", in_channels), ("n_lines", n_lines)):
            if given is not None and any(getattr(m, name) != given for m in self.members):
                raise ValueError(f"SpectralEnsemble: {name}={given} does not match its members")
        self._widths = [m.head.in_features for m in self.members]

    @classmethod
    def of(cls, networks: list[SpectralCNN]) -> "SpectralEnsemble":
        """An ensemble holding these trained networks (their weights copied)."""
        ensemble = cls([n.config() for n in networks])
        for member, net in zip(ensemble.members, networks):
            member.load_state_dict(net.state_dict())
        return ensemble

    def forward(self, x: torch.Tensor, lines: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head_output(self.features(x, lines))

    def features(self, x: torch.Tensor, lines: torch.Tensor | None = None) -> torch.Tensor:
        """The members' head inputs, side by side."""
        return torch.cat([m.features(x, lines) for m in self.members], dim=1)

    def head_output(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture mean and log-variance from the concatenated member :meth:`features`."""
        means, variances = [], []
        for member, part in zip(self.members, torch.split(features, self._widths, dim=1)):
            mean, log_var = member.head_output(part)
            means.append(mean)
            variances.append(torch.exp(log_var))
        mu = torch.stack(means)
        var = torch.stack(variances).mean(dim=0) + mu.var(dim=0, unbiased=False)
        return mu.mean(dim=0), torch.log(var)

    def config(self) -> dict:
        return {"members": [m.config() for m in self.members], "n_pix": self.n_pix, "n_out": self.n_out,
                "in_channels": self.in_channels, "heteroscedastic": True, "n_lines": self.n_lines}
