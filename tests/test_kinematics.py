"""The kinematic model: the analytic decoder (plain and PSF-aware), Monte Carlo dropout, and a small
self-supervised training that recovers Vmax."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from survey_ml.train.kinematics import KinematicTrainConfig, mc_dropout, physical_samples, summarise, train_kinematic_model
from survey_ml.models.kinematics import KinematicModel, render_maps


def _params(**values) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(np.atleast_1d(v), dtype=torch.float32) for k, v in values.items()}


def test_decoder_renders_the_analytic_thin_disc_exactly():
    inc, r_scale, vmax, r_turn = 50.0, 5.0, 0.9, 2.5
    m0, m1 = render_maps(_params(inclination_deg=inc, r_scale_pix=r_scale, vmax_unit=vmax, r_turn_pix=r_turn))
    c = 31.5
    for j, i in ((31, 40), (20, 45), (50, 10), (33, 33)):      # (row y, column x)
        x, y = i - c, j - c
        radius = math.hypot(x, y / math.cos(math.radians(inc)))
        v = 2 / math.pi * vmax * math.atan(radius / r_turn) * math.sin(math.radians(inc)) * x / radius
        assert float(m1[0, j, i]) == pytest_approx(np.clip(v, -1, 1))
        peak = math.exp(-math.hypot(0.5, 0.5 / math.cos(math.radians(inc))) / r_scale)
        assert float(m0[0, j, i]) == pytest_approx(math.exp(-radius / r_scale) / peak)
    # the receding side is +x, and the minor axis has no line-of-sight velocity
    assert float(m1[0, 31, 50]) > 0 > float(m1[0, 31, 13])
    assert abs(float(m1[0, 5, 31]) + float(m1[0, 5, 32])) < 1e-6


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=2e-4, abs=2e-6)


def test_psf_aware_decoder_is_the_beam_smeared_moment_one():
    p = _params(inclination_deg=65.0, r_scale_pix=4.0, vmax_unit=0.5, r_turn_pix=2.0)
    sigma = 2.2
    m0_flat, _ = render_maps(p)
    # the unsmeared intensity and velocity, smeared by hand with scipy
    c = 31.5
    y, x = np.mgrid[0:64, 0:64] - c
    cos_i = math.cos(math.radians(65.0))
    radius = np.sqrt(x**2 + (y / cos_i) ** 2 + 1e-6)
    intensity = np.exp(-radius / 4.0)
    v = 2 / math.pi * 0.5 * np.arctan(radius / 2.0) * math.sin(math.radians(65.0)) * x / radius
    smeared_i = gaussian_filter(intensity, sigma, mode="constant", truncate=12 / sigma)
    smeared_v = gaussian_filter(intensity * v, sigma, mode="constant", truncate=12 / sigma) / smeared_i
    m0, m1 = render_maps(p, psf_sigma_pix=torch.tensor([sigma]))
    np.testing.assert_allclose(m1[0].numpy(), smeared_v, atol=2e-5)
    np.testing.assert_allclose(m0[0].numpy(), smeared_i / smeared_i.max(), atol=2e-5)
    # beam smearing flattens the inner velocity gradient
    assert float(m1[0, 31, 34]) < float(render_maps(p)[1][0, 31, 34])
    assert float(m0_flat.max()) == 1.0


def _mock_maps(n: int, seed: int):
    """Beam-smeared, noisy maps of discs drawn from the decoder's own family, as preprocessing scales them."""
    rng = np.random.default_rng(seed)
    inc = np.degrees(np.arccos(rng.uniform(np.cos(np.radians(80)), np.cos(np.radians(30)), n)))
    r_scale = rng.uniform(3.0, 8.0, n)
    r_turn = r_scale * rng.uniform(0.3, 1.0, n)
    vmax = 10 ** (2.1 + 0.2 * rng.normal(size=n))
    psf = rng.uniform(1.0, 2.0, n)
    p = _params(inclination_deg=inc, r_scale_pix=r_scale, vmax_unit=vmax / 1000.0, r_turn_pix=r_turn)
    with torch.no_grad():
        intensity, v = render_maps(p, psf_sigma_pix=torch.tensor(psf, dtype=torch.float32))
    intensity, v = intensity.numpy(), v.numpy() * 1000.0
    mask = intensity > 0.03
    v = v + rng.normal(0.0, 5.0, v.shape)
    scale = np.array([np.percentile(np.abs(vv[m]), 96) for vv, m in zip(v, mask)])
    m1 = np.clip(v / scale[:, None, None], -1, 1) * mask
    m0 = (intensity + rng.normal(0.0, 0.01, intensity.shape)) * mask
    return m0, m1, mask, psf, scale, {"inclination_deg": inc, "vmax_kms": vmax,
                                      "v22_kms": 2 / np.pi * vmax * np.arctan(2.2 * r_scale / r_turn)}


def test_self_supervised_training_recovers_vmax_and_mc_dropout_gives_errors():
    """A real assertion: no labels, 240 mock galaxies, a few epochs - V2.2 to ~5%, Vmax to ~15%."""
    torch.set_num_threads(2)
    m0, m1, mask, psf, scale, truth = _mock_maps(240, seed=3)
    result = train_kinematic_model(m0, m1, mask, psf, KinematicTrainConfig(epochs=12, lr=1e-3, batch_size=16))
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    draws = mc_dropout(result.model, m0, m1, samples=50)
    assert draws["vmax_unit"].shape == (240, 50)
    assert np.all(draws["vmax_unit"].std(axis=1) > 0)          # dropout is on at inference
    est = summarise(physical_samples(draws, scale, np.ones(240)))
    v22 = np.median(np.abs(est["v22_kms"] / truth["v22_kms"] - 1))
    vmax = np.median(np.abs(est["vmax_kms"] / truth["vmax_kms"] - 1))
    inc = np.median(np.abs(est["inclination_deg"] - truth["inclination_deg"]))
    assert v22 < 0.08 and vmax < 0.2 and inc < 8.0, (v22, vmax, inc)
    # deterministic mode is reproducible
    a = mc_dropout(result.model, m0[:5], m1[:5], samples=0)["vmax_unit"]
    b = mc_dropout(result.model, m0[:5], m1[:5], samples=0)["vmax_unit"]
    np.testing.assert_array_equal(a, b)


def test_model_shapes_and_parameter_ranges():
    net = KinematicModel(psf_aware=True)
    with torch.no_grad():
        params, m0, m1 = net(torch.rand(3, 64, 64), torch.rand(3, 64, 64) * 2 - 1, torch.full((3,), 1.5))
    assert m0.shape == m1.shape == (3, 64, 64)
    assert float(m1.abs().max()) <= 1.0 and float(m0.max()) == 1.0
    assert (params["inclination_deg"] >= 5).all() and (params["inclination_deg"] <= 89).all()


def test_mc_dropout_draws_do_not_depend_on_batching_or_concurrent_tasks():
    """A galaxy's Monte Carlo draws come from its own generator: same numbers alone, in another batch, or
    while another thread draws (tasks sharing a multi-threaded Dask worker)."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(3)
    model = KinematicModel()
    rng = np.random.default_rng(4)
    m0 = rng.random((12, 64, 64), dtype=np.float32)
    m1 = rng.uniform(-1, 1, (12, 64, 64)).astype(np.float32)
    whole = mc_dropout(model, m0, m1, samples=20, batch=5)["vmax_unit"]
    alone = mc_dropout(model, m0[7:8], m1[7:8], samples=20)["vmax_unit"]
    np.testing.assert_allclose(alone[0], whole[7], rtol=1e-5)
    assert whole[7].std() > 0                                       # dropout really on
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda sl: mc_dropout(model, m0[sl], m1[sl], samples=20)["vmax_unit"],
                        [slice(0, 6), slice(6, 12)])
    np.testing.assert_allclose(np.vstack([a, b]), whole, rtol=1e-5)
    assert not np.allclose(mc_dropout(model, m0, m1, samples=20, seed=1)["vmax_unit"], whole)
