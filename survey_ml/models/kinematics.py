"""The self-supervised physics-aware kinematic model (SCIENCE.md section 4) and its PSF-aware decoder.

Two CNN encoders read a galaxy's de-rotated 64 x 64 moment maps (moment 0 scaled to [0, 1],
moment 1 clipped at its 96th percentile and scaled to [-1, 1]); each is
Conv(3x3)+ReLU+MaxPool(2) x 4 (16, 32, 64, 128 channels), Linear 2048 -> 256 (ReLU,
Dropout 0.1) -> 2, HardTanh, rescaled into physical ranges (:data:`RANGES`):
encoder 1 (moment 0) gives the inclination and the disc scale length, encoder 2 (moment 1)
the asymptotic velocity Vmax and the turn-over radius of an arctan rotation curve.

The decoder is analytic and differentiable: a thin exponential disc
``I(R) = exp(-R / r_scale)`` rotating with ``V(R) = (2 Vmax / pi) arctan(R / r_turn)``, seen at
inclination i with its major axis on +x (receding side) - ``R^2 = x^2 + (y / cos i)^2`` and
``v_los = V(R) sin i x / R`` - rendered as moment maps in the inputs' own scalings
(moment 0 over its peak; moment 1 in units of the map's velocity scale, clipped to [-1, 1]).
The published thin-disc thickness of one pixel is dropped: at 64 x 64 over a SAMI/MaNGA
field it changes the maps by far less than the noise.

``psf_aware=True`` adds what the published model lacks: the rendered intensity and
intensity-weighted velocity are convolved with the survey's Gaussian PSF (per galaxy, in
64-grid pixels) before the moment maps are formed - the beam-smeared moment 1 is
``PSF * (I v) / PSF * I`` - so the encoders are trained to explain smeared maps with the
*intrinsic* disc, and Vmax / r_turn are no longer pushed up/out to mimic beam smearing.

Velocities are in units of each galaxy's velocity scale (the clip value of its moment-1
map, km/s); lengths in 64-grid pixels. :func:`to_physical` turns them into km/s and arcsec.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MapEncoder", "KinematicModel", "RANGES", "render_maps", "gaussian_blur", "rotation_velocity",
           "masked_mse"]

#: Physical range each HardTanh output is mapped onto: (low, high).
RANGES: dict[str, tuple[float, float]] = {
    "inclination_deg": (5.0, 89.0),
    "r_scale_pix": (0.5, 24.0),
    "vmax_unit": (0.05, 3.0),      # Vmax over the map's velocity scale (the 96th-percentile |v|)
    "r_turn_pix": (0.1, 24.0),
}
PARAMETERS = tuple(RANGES)


class MapEncoder(nn.Module):
    """Conv(3x3)+ReLU+MaxPool(2) x 4, Linear 2048 -> 256 (ReLU, Dropout) -> 2, HardTanh (published)."""

    def __init__(self, size: int = 64, channels: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        n_features = c_in * (size // 2 ** len(channels)) ** 2
        self.hidden = nn.Sequential(nn.Linear(n_features, 256), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Sequential(nn.Linear(256, 2), nn.Hardtanh())

    def head(self, features: torch.Tensor, mc: bool = False, hidden: bool = False,
             keep: torch.Tensor | None = None) -> torch.Tensor:
        """Dense layers on trunk features (or on hidden activations, ``hidden=True``); ``mc`` keeps
        dropout on (Monte Carlo dropout). ``keep`` (same shape as the hidden layer, 0/1) gives the
        dropout mask explicitly instead of drawing it from torch's global generator."""
        h = features if hidden else self.hidden(features)
        if mc and keep is not None:
            h = h * keep / (1.0 - self.dropout.p)
        else:
            h = nn.functional.dropout(h, self.dropout.p, training=True) if mc else self.dropout(h)
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def _to_range(h: torch.Tensor, name: str) -> torch.Tensor:
    lo, hi = RANGES[name]
    return lo + 0.5 * (h + 1.0) * (hi - lo)


def rotation_velocity(radius: torch.Tensor, vmax: torch.Tensor, r_turn: torch.Tensor) -> torch.Tensor:
    """The arctan rotation curve ``V(R) = (2 Vmax / pi) arctan(R / r_turn)``.

    Examples
    --------
    >>> round(float(rotation_velocity(torch.tensor(100.0), torch.tensor(200.0), torch.tensor(1.0))), 2)
    198.73
    """
    return 2.0 / math.pi * vmax * torch.atan(radius / r_turn)


def gaussian_blur(image: torch.Tensor, sigma: torch.Tensor, half_width: int = 12) -> torch.Tensor:
    """Blur each (H, W) image of a (B, H, W) stack with its own Gaussian sigma (pixels), zero outside.

    Separable, one grouped convolution per axis; ``sigma <= 0`` leaves an image unchanged.
    """
    b = image.shape[0]
    t = torch.arange(-half_width, half_width + 1, dtype=image.dtype, device=image.device)
    s = sigma.to(image.dtype).clamp_min(1e-3)[:, None]
    kernel = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (t == 0).to(image.dtype)[None, :].expand(b, -1)
    kernel = torch.where((sigma > 0)[:, None], kernel, delta)
    x = image[None]                                                       # (1, B, H, W)
    x = nn.functional.conv2d(x, kernel[:, None, :, None], padding=(half_width, 0), groups=b)
    x = nn.functional.conv2d(x, kernel[:, None, None, :], padding=(0, half_width), groups=b)
    return x[0]


def render_maps(params: dict[str, torch.Tensor], size: int = 64, psf_sigma_pix: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Model moment-0 and moment-1 maps (B, size, size) for disc parameters (each (B,)).

    Moment 0 is scaled to a peak of 1; moment 1 is in units of the velocity scale (``vmax_unit``),
    clipped to [-1, 1] like the inputs. With ``psf_sigma_pix`` the intensity and the intensity-
    weighted velocity are beam-smeared first.

    Examples
    --------
    >>> p = {"inclination_deg": torch.tensor([60.0]), "r_scale_pix": torch.tensor([6.0]),
    ...      "vmax_unit": torch.tensor([0.8]), "r_turn_pix": torch.tensor([3.0])}
    >>> m0, m1 = render_maps(p)
    >>> float(m0.max()), round(float(m1[0, 31, 63]), 3)
    (1.0, 0.651)
    """
    c = (size - 1) / 2.0
    device = params["inclination_deg"].device
    axis = torch.arange(size, dtype=torch.float32, device=device) - c
    y, x = torch.meshgrid(axis, axis, indexing="ij")                     # (size, size), +x = receding
    inc = torch.deg2rad(params["inclination_deg"])[:, None, None]
    r_scale = params["r_scale_pix"][:, None, None]
    y_disc = y[None] / torch.cos(inc)
    radius = torch.sqrt(x[None] ** 2 + y_disc**2 + 1e-6)
    intensity = torch.exp(-radius / r_scale)
    v = rotation_velocity(radius, params["vmax_unit"][:, None, None], params["r_turn_pix"][:, None, None])
    v_los = v * torch.sin(inc) * x[None] / radius
    if psf_sigma_pix is not None:
        weighted = gaussian_blur(intensity * v_los, psf_sigma_pix)
        intensity = gaussian_blur(intensity, psf_sigma_pix)
        v_los = weighted / intensity.clamp_min(1e-12)
    m0 = intensity / intensity.amax(dim=(1, 2), keepdim=True)
    return m0, v_los.clamp(-1.0, 1.0)


def masked_mse(model: torch.Tensor, data: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the good pixels of each map: (B,)."""
    w = mask.to(data.dtype)
    return ((model - data) ** 2 * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp_min(1.0)


class KinematicModel(nn.Module):
    """Two encoders and the analytic decoder (published), optionally PSF-aware.

    Parameters
    ----------
    size : int
        Map size (64).
    dropout : float
        Dropout of the encoders' hidden layer (also the Monte Carlo dropout rate).
    psf_aware : bool
        Convolve the rendered maps with each galaxy's PSF before the loss.

    Examples
    --------
    >>> net = KinematicModel()
    >>> params, m0, m1 = net(torch.rand(2, 64, 64), torch.rand(2, 64, 64) * 2 - 1)
    >>> sorted(params), tuple(m0.shape)
    (['inclination_deg', 'r_scale_pix', 'r_turn_pix', 'vmax_unit'], (2, 64, 64))
    """

    def __init__(self, size: int = 64, dropout: float = 0.1, psf_aware: bool = False):
        super().__init__()
        self.moment0_encoder = MapEncoder(size, dropout=dropout)
        self.moment1_encoder = MapEncoder(size, dropout=dropout)
        self.size, self.dropout_p, self.psf_aware = int(size), float(dropout), bool(psf_aware)

    def features(self, m0: torch.Tensor, m1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk features of both encoders (deterministic: computed once for Monte Carlo dropout)."""
        return self.moment0_encoder.trunk(m0[:, None]), self.moment1_encoder.trunk(m1[:, None])

    def parameters_from(self, f0: torch.Tensor, f1: torch.Tensor, mc: bool = False,
                        hidden: bool = False, keep: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> dict[str, torch.Tensor]:
        """Physical parameters from both encoders' trunk features (or hidden activations);
        ``keep``: explicit dropout masks of the two encoders (see :meth:`MapEncoder.head`)."""
        k0, k1 = keep if keep is not None else (None, None)
        h0, h1 = self.moment0_encoder.head(f0, mc, hidden, k0), self.moment1_encoder.head(f1, mc, hidden, k1)
        return {"inclination_deg": _to_range(h0[:, 0], "inclination_deg"),
                "r_scale_pix": _to_range(h0[:, 1], "r_scale_pix"),
                "vmax_unit": _to_range(h1[:, 0], "vmax_unit"), "r_turn_pix": _to_range(h1[:, 1], "r_turn_pix")}

    def forward(self, m0: torch.Tensor, m1: torch.Tensor, psf_sigma_pix: torch.Tensor | None = None):
        params = self.parameters_from(*self.features(m0, m1))
        model_m0, model_m1 = render_maps(params, self.size, psf_sigma_pix if self.psf_aware else None)
        return params, model_m0, model_m1

    def config(self) -> dict:
        return {"size": self.size, "dropout": self.dropout_p, "psf_aware": self.psf_aware}
