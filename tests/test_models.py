"""The published spectral CNN: architecture as published, FLOP count, heteroscedastic loss."""
from __future__ import annotations

import torch
from torch import nn

from survey_ml.models.spectral_cnn import SpectralCNN, conv_trunk_length, forward_flops, gaussian_nll


def test_architecture_is_the_published_one():
    net = SpectralCNN()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv1d)]
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool1d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3,) and c.stride == (1,) and c.padding == (0,) for c in convs)
    assert len(pools) == 4 and all(p.kernel_size == 3 and p.stride == 3 for p in pools)
    assert net.head.in_features == 128 * conv_trunk_length(4201) == 6272 and net.head.out_features == 1
    assert SpectralCNN(n_out=2).head.out_features == 2


def test_flop_count_matches_the_layers():
    net = SpectralCNN()
    counted = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv1d):
            counted.append(2 * output.numel() * module.in_channels * module.kernel_size[0])
        elif isinstance(module, nn.Linear):
            counted.append(2 * module.in_features * module.out_features)

    for m in net.modules():
        m.register_forward_hook(hook)
    net(torch.zeros(1, 1, 4201))
    assert sum(counted) == forward_flops(net)


def test_gaussian_nll_is_minimised_at_the_true_variance():
    torch.manual_seed(0)
    target = torch.randn(20000, 1) * 0.1
    mean = torch.zeros_like(target)
    losses = {s: float(gaussian_nll(mean, torch.full_like(target, 2 * torch.log(torch.tensor(s))), target))
              for s in (0.05, 0.1, 0.2)}
    assert min(losses, key=losses.get) == 0.1
    mean_out, log_var = SpectralCNN(heteroscedastic=True, in_channels=2)(torch.zeros(3, 2, 4201))
    assert mean_out.shape == log_var.shape == (3, 1)
