"""Stellar parameters: grid building on a cluster, training mechanics, the task on the real HARPS files.

The physics of the training grid (MOOG + model atmospheres) is checked in
test_stellar_synthesis.py; here a toy line list stands in for it so that the machinery -
grid nodes on Dask workers, interpolation, rendering, training, calibration, weights, the
task in run_catalog - is tested in seconds.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from survey_ml.core.echelle import cross_correlation_rv, input_snr
from survey_ml.simulate.echelle_observe import EchelleObservation, degrade, render
from survey_ml.simulate.stellar_grid import GridAxes, StellarGrid, alpha_for, build_grid
from survey_ml.train.stellar import (StellarTrainConfig, calibrate_errors, calibrated_sigma, evaluate,
                                     make_stellar_set, predict, template_from_grid, train_stellar)

WAVE = np.arange(5030.0, 5370.0, 0.02)
_LINES = np.random.default_rng(7).uniform(5035.0, 5365.0, 400)
_STRENGTH = np.random.default_rng(8).uniform(0.1, 0.8, 400)
_EXCITATION = np.random.default_rng(9).uniform(0.0, 5.0, 400)


def toy_spectrum(teff: float, logg: float, feh: float, alpha: float, vmicro: float | None):
    """Toy absorption lines: depths grow with metallicity and fall with temperature (Boltzmann-like),
    widths grow with gravity. Not physics: a stand-in that makes labels readable from a spectrum."""
    depth = _STRENGTH * 10 ** (0.5 * feh) * np.exp(-_EXCITATION * (teff - 5000.0) / 5000.0)
    depth = np.clip(depth, 0.0, 0.95)
    width = 0.03 + 0.01 * logg
    tau = np.zeros_like(WAVE)
    for centre, d in zip(_LINES, depth):
        near = np.abs(WAVE - centre) < 8 * width
        tau[near] += d * np.exp(-0.5 * ((WAVE[near] - centre) / width) ** 2)
    return WAVE, np.exp(-tau)


AXES = GridAxes((4500.0, 5500.0, 6500.0), (3.0, 4.0, 5.0), (-1.0, 0.0))
SMALL = EchelleObservation(n_pix=1024, snr=(20.0, 80.0))


@pytest.fixture(scope="module")
def toy_grid(tmp_path_factory, client):
    path = tmp_path_factory.mktemp("grid") / "toy.zarr"
    result = build_grid(path, AXES, toy_spectrum, client=client, attrs={"synthesis": "toy lines (tests)"})
    assert result["made"] == 18 and not result["failed"]
    again = build_grid(path, AXES, toy_spectrum, client=client)  # a finished grid is not made again
    assert again["made"] == 0 and again["already"] == 18
    return StellarGrid(path)


def test_grid_interpolates_between_nodes(toy_grid):
    node = toy_grid.interpolate(np.array([[5500.0, 4.0, 0.0]]))[0]
    assert np.allclose(node, toy_spectrum(5500.0, 4.0, 0.0, 0.0, None)[1], atol=1e-6)
    middle = toy_grid.interpolate(np.array([[5000.0, 4.0, 0.0]]))[0]
    ends = 0.5 * (toy_spectrum(4500.0, 4.0, 0.0, 0, None)[1] + toy_spectrum(5500.0, 4.0, 0.0, 0, None)[1])
    assert np.allclose(middle, ends, atol=1e-6)
    assert np.isnan(toy_grid.interpolate(np.array([[7000.0, 4.0, 0.0]]))).all()
    labels = toy_grid.sample_labels(500, np.random.default_rng(0))
    assert (labels.min(0) >= [4500, 3, -1]).all() and (labels.max(0) <= [6500, 5, 0]).all()
    assert alpha_for(-1.0) == pytest.approx(0.4)


def test_render_and_degrade_make_what_the_task_sees(toy_grid):
    rng = np.random.default_rng(1)
    flux = toy_grid.interpolate(np.array([[5500.0, 4.0, 0.0], [5500.0, 4.0, 0.0]]))
    clean = render(toy_grid.wavelength, flux, np.array([0.0, 25.0]), rng, SMALL)
    assert clean.shape == (2, 8, 1024) and clean[1].min() > clean[0].min()  # rotation fills the lines in
    x, snr = degrade(clean, rng, SMALL, snr=np.array([50.0, 50.0]))
    continuum = x[0, 0][(clean[0] > 0.999) & (x[0, 1] > 0)]
    scatter = 1.4826 * np.median(np.abs(continuum - np.median(continuum)))  # robust: cosmic rays stay in
    assert abs(np.median(continuum) - 1) < 0.02 and scatter == pytest.approx(1 / 50, rel=0.2)
    assert 0 < (x[:, 1] == 0).sum() < 0.5 * x[:, 1].size  # bad columns (and perhaps the CCD gap) masked


def test_training_learns_and_calibrates(toy_grid, tmp_path):
    train = make_stellar_set(toy_grid, 800, 0, SMALL)
    val = make_stellar_set(toy_grid, 200, 1, SMALL)
    config = StellarTrainConfig(epochs=5, batch_size=32, lr=3e-3, patience=None, threads=2)
    model, history = train_stellar(train, val, SMALL, config, {"channels": (8, 8, 8, 8, 8), "hidden": (32, 32)})
    assert min(h["val_loss"] for h in history) < history[0]["val_loss"]
    x, _ = degrade(val.clean.astype(np.float32), np.random.default_rng(5), SMALL)
    mean, cov = predict(model, x)
    snr = input_snr(x[:, 0], x[:, 1] > 0)
    calibration = calibrate_errors(mean, cov, val.labels, snr)
    sigma = calibrated_sigma(cov, calibration, snr)
    scores = evaluate(mean, sigma, val.labels)
    # calibrated on this very set, in S/N bins of 50 spectra for 1 and 2 sigma at once (a compromise
    # where a 5-epoch network's residuals are far from Gaussian: its tails are thin)
    assert all(abs(s["coverage_1sigma"] - 0.683) < 0.06 and 0.92 <= s["coverage_2sigma"]
               for s in scores.values()), {k: (s["coverage_1sigma"], s["coverage_2sigma"]) for k, s in scores.items()}
    # the factor grows towards low S/N (the network's own sigma follows the noise too little)
    assert all(c.scales[-1] >= c.scales[0] for c in calibration)
    # after 5 short epochs v sin i (line widths) is read far better than a guess of the mean
    assert scores["vsini"]["mae"] < 0.6 * np.mean(np.abs(val.labels[:, 3] - val.labels[:, 3].mean()))


def test_cross_correlation_finds_an_injected_velocity(toy_grid):
    template = template_from_grid(toy_grid, SMALL, labels=(5500.0, 4.0, 0.0))
    wave, flux = toy_spectrum(5500.0, 4.0, 0.0, 0.0, None)
    for rv in (-87.3, 12.6):
        observed = np.interp(wave, wave * (1 + rv / 299792.458), flux)
        pieces = [(wave[i:i + 4096], observed[i:i + 4096], np.full(4096, 1e4)) for i in range(200, 16000, 4096)]
        measured, peak = cross_correlation_rv(pieces, *template)
        assert measured == pytest.approx(rv, abs=0.1) and peak > 0.5


def test_gaussian_nll_with_full_covariance_matches_torch():
    from survey_ml.models.stellar_resnet import gaussian_nll

    rng = np.random.default_rng(0)
    a = torch.tensor(rng.normal(size=(5, 4, 4)), dtype=torch.float64)
    cov = a @ a.transpose(1, 2) + torch.eye(4, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    mu, y = torch.zeros(5, 4, dtype=torch.float64), torch.tensor(rng.normal(size=(5, 4)))
    expected = -torch.distributions.MultivariateNormal(mu, scale_tril=chol).log_prob(y) - 2 * np.log(2 * np.pi)
    assert float(gaussian_nll(mu, chol, y)) == pytest.approx(float(expected.mean()), rel=1e-9)


def test_stellar_task_runs_on_the_real_harps_files(toy_grid, real_fixtures, tmp_path, client):
    """run_catalog harps over the Gl273 e2ds and Gl581 s1d with small weights trained on the toy grid."""
    from survey_ml.core.inference import save_weights
    from survey_ml.dask.runner import run_catalog

    conditions = EchelleObservation()  # the task's layout: 8 x 4096 over 5050-5350 A
    train = make_stellar_set(toy_grid, 64, 0, conditions)
    model, _ = train_stellar(train, make_stellar_set(toy_grid, 32, 1, conditions), conditions,
                             StellarTrainConfig(epochs=1, batch_size=32, threads=1),
                             {"channels": (4, 4, 4, 4, 4), "hidden": (8, 8), "stem_width": 4, "squeeze": 2})
    weights = tmp_path / "stellar_toy.pt"
    template = template_from_grid(toy_grid, conditions)
    save_weights(model, weights, "stellar", ["teff", "logg", "feh", "vsini"], extra={
        "grid": torch.from_numpy(conditions.grid()), "template_wave": torch.from_numpy(template[0]),
        "template_flux": torch.from_numpy(template[1]), "label_min": [4500.0, 3.0, -1.0, 0.0],
        "label_max": [6500.0, 5.0, 0.0, 30.0], "error_scale": [1.0, 1.0, 1.0, 1.0]})
    inputs = tmp_path / "harps"
    inputs.mkdir()
    for name in ("HARPS.2003-12-13T06:19:48.371_e2ds_A.fits", "HARPS.2003-12-12T21:42:45.093_blaze_A.fits",
                 "HARPS.2010-09-18T23:42:36.178_s1d_A.fits"):
        os.symlink(real_fixtures / "harps" / name, inputs / name)
    report = run_catalog("harps", input=inputs, out=tmp_path / "out", client=client,
                         weights={"stellar": str(weights)}, progress=False)
    catalog = pd.read_parquet(report.catalog_dir)
    assert len(catalog) == 2 and set(catalog["status"]) == {"ok"}
    assert catalog["object"].tolist() == ["Gl273", "Gl581"]
    for column in ("teff", "teff_err", "logg", "feh", "vsini", "rho_teff_logg", "rv_kms"):
        assert np.isfinite(catalog[column]).all(), column
    assert (catalog["teff_err"] > 0).all() and (catalog["rho_teff_logg"].abs() <= 1).all()
    assert os.path.exists(report.outputs["fits"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Kiel diagram" in html
