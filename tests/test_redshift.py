"""Redshifts: the template refinement, the DEIMOS-like observation, the shipped weights on unseen galaxies,
and training from a recipe."""
from __future__ import annotations

import math

import numpy as np
import pytest

from survey_ml.core.inference import WEIGHTS_DIR, load_model
from survey_ml.core.metrics import coverage_within, nmad, outlier_fraction
from survey_ml.core.redshift import FLAGS, pdf_candidates, predict_redshifts
from survey_ml.core.templates import TemplateSet, refine_redshifts


def _toy_templates() -> TemplateSet:
    """Three rest-frame components: a continuum with a 4000 A break, emission lines, absorption lines."""
    dlog = 1e-4 * math.log(10.0) / 4
    wave = np.exp(math.log(2500.0) + dlog * np.arange(60000))
    gauss = lambda centre, sigma: np.exp(-0.5 * ((wave - centre) / sigma) ** 2)  # noqa: E731
    continuum = 1.0 / (1.0 + np.exp(-(wave - 4000.0) / 30.0)) + 0.3
    emission = sum(a * gauss(c, 2.5) for c, a in ((3728.5, 2.0), (4862.7, 1.0), (5008.2, 2.5), (6564.6, 3.0),
                                                   (6585.3, 1.0)))
    absorption = -sum(a * gauss(c, 4.0) for c, a in ((3934.8, 0.3), (3969.6, 0.3), (5177.0, 0.1), (5895.0, 0.1)))
    return TemplateSet(math.log(2500.0), dlog, np.stack([continuum, emission, absorption]).astype(np.float32))


def test_template_refinement_recovers_injected_redshifts_with_calibrated_errors():
    templates = _toy_templates()
    rng = np.random.default_rng(4)
    n, dlog = 200, 1e-4 * math.log(10.0)
    log0 = 3.5682 * math.log(10.0)
    obs_loglam = log0 + dlog * np.arange(3950)
    z = rng.uniform(0.02, 0.45, n)
    coef = np.stack([rng.uniform(1, 3, n), rng.uniform(0, 2, n), rng.uniform(0, 2, n)], axis=1)
    rest = np.exp(obs_loglam[None, :] - np.log1p(z)[:, None])
    comps = np.stack([np.interp(rest, templates.wave, c) for c in templates.components], axis=1)
    model = (coef[:, :, None] * comps).sum(axis=1)
    sigma = 0.1 * np.ones_like(model)
    flux = model + rng.normal(0.0, 1.0, model.shape) * sigma
    ivar = 1.0 / sigma**2
    ivar[:, 1000:1010] = 0.0                       # a masked gap
    flux[:, 1000:1010] = np.nan                    # whose values are garbage
    # the right candidate up to 0.8 bins off, and two wrong ones
    candidates = np.stack([np.expm1(np.log1p(z) + rng.uniform(-0.0008, 0.0008, n)),
                           np.where(z > 0.25, z - rng.uniform(0.02, 0.2, n), z + rng.uniform(0.02, 0.2, n)),
                           np.full(n, np.nan)], axis=1)
    candidates[:50] = candidates[:50, [1, 0, 2]]   # the right one second in line for a quarter of them
    res = refine_redshifts(log0, dlog, flux, ivar, candidates, templates)
    dz = (res.z - z) / (1 + z)
    assert np.all(np.abs(dz) < 5e-4)                                 # no outliers: all within ~2 pixels (2.3e-4)
    assert nmad(z, res.z) < 3e-5
    assert 0.55 < coverage_within(res.z - z, res.z_err, 1.0) < 0.85   # the errors mean what they say
    assert 0.88 < coverage_within(res.z - z, res.z_err, 2.0) <= 1.0
    assert np.all(res.delta_chi2 > 9.0)                              # the wrong candidates are clearly worse
    assert np.all(res.candidate[:50] == 1) and np.all(res.candidate[50:] == 0)
    assert res.dof[0] == 3950 - 10 - 6


def test_refinement_needs_a_grid_step_that_is_a_whole_number_of_template_steps():
    templates = _toy_templates()
    with pytest.raises(ValueError, match="whole multiple"):
        refine_redshifts(8.0, 1.5 * templates.dloglam, np.ones((1, 10)), np.ones((1, 10)), np.array([[0.1]]),
                         templates)


def test_spectra_without_data_get_no_redshift_and_the_no_data_flag():
    weights = WEIGHTS_DIR / "redshift.pt"
    _, info = load_model(weights, "cpu")
    from survey_ml.core.redshift_inputs import setup_of

    wave = setup_of(info["setup"]).wavelength
    flux = np.ones((3, wave.size), dtype=np.float32)
    ivar = np.zeros_like(flux)
    ivar[2] = 1.0
    mask = np.zeros(flux.shape, dtype=np.uint32)
    mask[1] = 1 << 31
    res = predict_redshifts(flux, ivar, mask, wave, weights)
    assert np.isnan(res["z_cnn"][:2]).all() and (res["z_cnn_flag"][:2] & FLAGS["NO_DATA"]).all()
    assert np.isfinite(res["z_cnn"][2])  # a featureless spectrum still gets an answer - and flags
    assert res["z_cnn_flag"][2] != 0


def test_deimos_like_noise_is_a_fifth_of_the_flux_scatter():
    from survey_ml.simulate.deimos import DeimosInstrument, observe_deimos

    wave = np.linspace(500.0, 11000.0, 40000)
    lum = 1e40 * (wave / 5000.0) ** -1.5
    flux, ivar = observe_deimos(wave, lum, 2.0, np.random.default_rng(1))
    clean, _ = observe_deimos(wave, lum, 2.0, np.random.default_rng(1), DeimosInstrument(noise_fraction=1e-9))
    assert flux.size == 8912 and np.allclose(DeimosInstrument().wavelength[[0, -1]], [4100.0, 11000.0])
    assert np.std(flux - clean) == pytest.approx(0.2 * np.std(clean), rel=0.05)
    assert np.allclose(1 / np.sqrt(ivar), 0.2 * np.std(clean), rtol=1e-4)
    with pytest.raises(ValueError, match="does not cover"):
        observe_deimos(np.linspace(2000.0, 11000.0, 100), np.ones(100), 3.0, np.random.default_rng(0))


def test_shipped_weights_recover_redshifts_of_unseen_galaxies(small_library, client):
    """A real accuracy assertion: 300 LAMOST mocks of seed-0 galaxies (the weights were made from seed 1)."""
    from survey_ml.train.redshift import make_redshift_set

    data = make_redshift_set(small_library, 300, "lamost", seed=5, z_range=(0.01, 0.3), client=client)
    mask = (data.ivar <= 0).astype(np.uint8)
    res = predict_redshifts(data.flux, data.ivar, mask, data.wavelength, WEIGHTS_DIR / "redshift.pt")
    z_true, z = data.truth["z_true"].to_numpy(), res["z_cnn"].to_numpy()
    snr = data.truth["snr_r_requested"].to_numpy()
    assert nmad(z_true, z) < 0.001 and outlier_fraction(z_true, z) <= 0.01
    good = snr >= 5
    assert nmad(z_true[good], z[good]) < 0.0005 and outlier_fraction(z_true[good], z[good]) == 0.0
    assert 0.4 < coverage_within(z - z_true, res["z_cnn_err"].to_numpy(), 1.0) < 0.95
    network = predict_redshifts(data.flux, data.ivar, mask, data.wavelength, WEIGHTS_DIR / "redshift.pt",
                                refine=False)["z_cnn"].to_numpy()
    assert nmad(z_true, network) < 0.01


def test_a_recipe_trains_weights_that_predict(tmp_path):
    """train_redshift_task end to end on a tiny library: weights + templates written, loadable, predicting."""
    from survey_ml.train.redshift import train_redshift_task

    recipe = (WEIGHTS_DIR / "redshift.toml").read_text()
    for old, new in (("n = 4000 ", "n = 12 "), ("n = 40000", "n = 120"), ("epochs = 14", "epochs = 2"),
                     ("n_spectra = 2000", "n_spectra = 10"), ("n_components = 8", "n_components = 4"),
                     ("n = 6000", "n = 60"), ("library = { n = 4000,", "library = { n = 12,")):
        assert old in recipe
        recipe = recipe.replace(old, new)
    path = tmp_path / "tiny.toml"
    path.write_text(recipe)
    report = train_redshift_task(path, out=tmp_path / "tiny.pt", cache_dir=tmp_path / "cache")
    assert report["epochs_run"] == 2 and report["n_spectra"] == 120
    assert report["history"][1]["train_loss"] < report["history"][0]["train_loss"]
    model, info = load_model(tmp_path / "tiny.pt", "cpu")
    assert info["setup"] == "lamost" and tuple(info["templates"]["components"].shape)[0] == 4
    assert (tmp_path / "tiny.json").is_file() and set(report["test"]) == {"network", "refined"}
    # the error model of the shifted set is in the weights, and run-catalog's path applies it
    scale, floor = info["error_model"]["scale"], info["error_model"]["floor"]
    assert scale > 0 and floor >= 0 and report["calibration"]["n"] > 0
    assert report["calibration"]["error_model"] == {"scale": scale, "floor": floor}


def test_pdf_candidates_respect_the_separation_and_order():
    p = np.zeros((2, 40))
    p[0, [5, 7, 20, 30]] = [0.4, 0.3, 0.2, 0.1]
    p[1, 10] = 1.0
    got = pdf_candidates(p, n_candidates=3, min_separation=5)
    assert got.tolist() == [[5, 20, 30], [10, -1, -1]]
