"""Training from a recipe: data, split, loss going down, weights that load and reproduce the run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from survey_ml.core.inference import forward_batches, load_model
from survey_ml.train.spectral import TrainConfig, load_recipe, recipe_config, train_model, train_task

TINY = """
task = "{task}"
release = "dr10"
[library]
n = 160
seed = 0
[training_set]
n = {n}
seed = 3
rows = "{rows}"
[model]
channels = [4, 8, 8, 8]
stem_pool = 4
in_channels = 2
heteroscedastic = {het}
[train]
epochs = 4
batch_size = 32
lr = 3e-3
seed = 0
"""


def test_shipped_recipes_parse_into_configs():
    for task in ("metallicity", "sfclass"):
        config = recipe_config(load_recipe(task))
        assert config.task == task and config.in_channels == 2 and config.stem_pool == 2
    assert recipe_config(load_recipe("metallicity")).heteroscedastic


@pytest.mark.parametrize("task,rows,het", [("metallicity", "starforming", "true"), ("sfclass", "balanced", "false")])
def test_train_task_from_a_recipe_writes_weights_that_reproduce_the_model(task, rows, het, small_library, tmp_path,
                                                                          client):
    recipe = tmp_path / f"{task}.toml"
    recipe.write_text(TINY.format(task=task, n=240, rows=rows, het=het))
    out = tmp_path / f"{task}.pt"
    report = train_task(recipe, out=out, client=client, cache_dir=small_library.path.parent)
    assert report["n_spectra"] == 240 and report["n_train"] + report["n_val"] + report["n_test"] == 240
    assert json.loads(out.with_suffix(".json").read_text())["weights_sha256"] == report["weights_sha256"]
    history = report["history"]
    assert len(history) == 4 and history[-1]["train_loss"] < history[0]["train_loss"]
    model, info = load_model(out, "cpu")
    assert info["task"] == task and info["config"]["channels"] == [4, 8, 8, 8]
    test = report["test"]
    if task == "metallicity":
        assert np.isfinite([test["bias"], test["sigma"]]).all() and 0 <= test["within_2sigma"] <= 1
    else:
        assert 0 <= test["accuracy"] <= 1


def test_training_reduces_the_error_on_a_learnable_problem():
    """A line ratio read off a synthetic spectrum: the network must learn it (not a smoke test)."""
    rng = np.random.default_rng(0)
    n, n_pix = 1500, 256
    y = rng.uniform(8.0, 9.0, n)
    x = rng.normal(0.0, 0.02, (n, 1, n_pix)).astype(np.float32)
    x[:, 0, 100] += (y - 8.0).astype(np.float32)          # the "line" carries the label
    x[:, 0, 40] += 0.5
    config = TrainConfig(epochs=25, batch_size=64, lr=3e-3, channels=(4, 8, 8, 8), stem_pool=1, seed=0)
    result = train_model(x, y, config)
    pred = forward_batches(result.model, x[result.test_index])[:, 0]
    rms = np.sqrt(np.mean((pred - y[result.test_index]) ** 2))
    assert rms < 0.5 * np.std(y)   # far better than guessing the mean (rms = std(y) = 0.29)


def test_recipe_with_randomised_instrument_and_uncertainty_ships_a_calibrated_error_model(small_library, tmp_path,
                                                                                          client):
    """Issue 15: young rows, the randomised instrument and an [uncertainty] table give weights whose
    metallicity task reports calibrated errors and an OOD score."""
    from survey_ml.core.uncertainty import ErrorCalibration, FeatureDensity
    from survey_ml.tasks.metallicity import _uncertainty

    recipe = tmp_path / "metallicity.toml"
    text = TINY.format(task="metallicity", n=240, rows="young", het="true").replace(
        'rows = "young"', 'rows = "young"\ninstrument = "randomised"')
    text += ('[uncertainty]\nn = 160\nseed = 5\nrows = "young"\ninstrument = "randomised"\n'
             'snr_r = { median = 10.0, min = 2.0, max = 60.0 }\nn_components = 4\nn_bins = 2\n'
             'library = { n = 160, seed = 0 }\n')
    recipe.write_text(text)
    out = tmp_path / "metallicity.pt"
    report = train_task(recipe, out=out, client=client, cache_dir=small_library.path.parent)
    cal = report["calibration"]
    assert cal["n"] == 160 and 0.0 <= cal["within_1sigma"] <= cal["within_2sigma"] <= 1.0
    assert abs(cal["within_1sigma"] - 0.683) < 0.15      # fitted on this very set: close to Gaussian coverage
    assert np.all(np.diff(cal["scales"]) >= 0)           # never narrower for a stranger spectrum
    _, info = load_model(out, "cpu")
    density, calibration = _uncertainty(info)
    assert isinstance(density, FeatureDensity) and isinstance(calibration, ErrorCalibration)
    assert density.components.shape[0] == 4 and np.isfinite(density.threshold)


def test_line_features_recipe_trains_a_network_that_reads_the_fitted_lines(small_library, tmp_path, client):
    """[model] line_features = true: the training set carries the fitted-line features of every spectrum,
    the network reads them beside the spectrum, and the task path (prepare -> forward) feeds them the same way."""
    from survey_ml.core.lines import LINE_FEATURE_NAMES, N_LINE_FEATURES
    from survey_ml.tasks.base import Block
    from survey_ml.tasks.metallicity import Metallicity

    recipe = tmp_path / "metallicity.toml"
    recipe.write_text(TINY.format(task="metallicity", n=240, rows="young", het="true").replace(
        "heteroscedastic = true", "heteroscedastic = true\nline_features = true"))
    out = tmp_path / "metallicity.pt"
    report = train_task(recipe, out=out, client=client, cache_dir=small_library.path.parent)
    assert report["history"][-1]["train_loss"] < report["history"][0]["train_loss"]
    model, info = load_model(out, "cpu")
    assert info["config"]["n_lines"] == N_LINE_FEATURES
    assert model.line_scale.shape == (N_LINE_FEATURES,) and bool((model.line_scale > 0).all())
    # the same spectra through the task: features fitted at the catalogue z, then the network
    from survey_ml.simulate.observe import LamostInstrument, observe_lamost
    from survey_ml.core.wavelength import LAMOST_LRS_GRID

    rng = np.random.default_rng(4)
    rows = small_library.truth.index[small_library.truth["ok"]].to_numpy()[:6]
    spectra = [observe_lamost(small_library.wave, small_library.flux(np.array([r]))[0], 0.08, 20.0, rng, k,
                              LamostInstrument())[0] for k, r in enumerate(rows)]
    n_pix = LAMOST_LRS_GRID.n_pix
    arrays = {k: np.zeros((6, n_pix), np.float32) for k in ("flux", "ivar")}
    arrays["mask"] = np.zeros((6, n_pix), np.int32)
    for i, s in enumerate(spectra):
        arrays["flux"][i, : s.flux.size], arrays["ivar"][i, : s.flux.size] = s.flux, s.ivar
        arrays["mask"][i, : s.flux.size] = s.andmask
    import pandas as pd

    block = Block(chunk=0, arrays=arrays, rows=pd.DataFrame({"z": [s.meta["z"] for s in spectra]}),
                  info={"grid": LAMOST_LRS_GRID.to_dict()}, status=np.full(6, "ok", dtype=object),
                  message=np.full(6, "", dtype=object), selected=np.arange(6))
    task = Metallicity(weights=str(out))
    batch = task.prepare(block, np.arange(6))
    assert len(batch.rows) == 6 and batch.inputs["lines"].shape == (6, N_LINE_FEATURES)
    assert batch.inputs["lines"][:, LINE_FEATURE_NAMES.index("missing_ha")].sum() == 0   # Halpha measured
    values = task.predict(task.load_model("cpu"), batch)
    assert np.isfinite(values["oh12"]).all() and (values["oh12_err"] > 0).all()


def test_ensemble_recipe_trains_members_on_one_split_and_reports_their_spread(small_library, tmp_path, client):
    """[train] ensemble = 2: a SpectralEnsemble whose variance is the members' plus their disagreement."""
    import torch

    from survey_ml.models.spectral_cnn import SpectralEnsemble

    recipe = tmp_path / "metallicity.toml"
    recipe.write_text(TINY.format(task="metallicity", n=240, rows="young", het="true").replace(
        "seed = 0\n", "seed = 0\nensemble = 2\n"))
    out = tmp_path / "metallicity.pt"
    report = train_task(recipe, out=out, client=client, cache_dir=small_library.path.parent)
    assert [m["member"] for m in report["members"]] == [0, 1]
    model, info = load_model(out, "cpu")
    assert isinstance(model, SpectralEnsemble) and len(model.members) == 2 and info["config"]["in_channels"] == 2
    a, b = (m.head.weight.detach() for m in model.members)
    assert not torch.allclose(a, b)                       # different initial weights, same data
    x = np.random.default_rng(2).random((8, 2, 4201), dtype=np.float32)
    pred = forward_batches(model, x)
    with torch.no_grad():
        members = [m(torch.from_numpy(x)) for m in model.members]
    mu = torch.stack([m[0] for m in members])[:, :, 0].numpy()
    var = torch.stack([torch.exp(m[1]) for m in members])[:, :, 0].numpy()
    np.testing.assert_allclose(pred[:, 0], mu.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(pred[:, 1] ** 2, var.mean(axis=0) + mu.var(axis=0), rtol=1e-4)
