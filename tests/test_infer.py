"""Partition-wise inference on a real LocalCluster: one model per worker, same numbers as a plain loop."""
from __future__ import annotations

import dask.array as da
import numpy as np
import torch

from survey_ml.core.inference import cached_models, load_model, predict_spectra, save_weights, weights_sha256
from survey_ml.models.spectral_cnn import SpectralCNN
from survey_ml.core.spectra import minmax_normalise, to_model_grid
from survey_ml.simulate import write_mock_release
from survey_ml.store import ingest, open_release


def test_weights_round_trip_without_pickle(tmp_path):
    torch.manual_seed(0)
    net = SpectralCNN(heteroscedastic=True)
    path = save_weights(net, tmp_path / "m.pt", "metallicity", ["oh12"])
    model, info = load_model(path, "cpu")
    assert info["task"] == "metallicity" and info["sha256"] == weights_sha256(path)
    x = torch.rand(3, 1, 4201)
    with torch.inference_mode():
        assert torch.equal(model(x)[0], net.eval()(x)[0])
    assert load_model(path, "cpu")[0] is model  # cached


def test_map_blocks_matches_a_plain_torch_loop_and_loads_once_per_worker(tmp_path, client):
    torch.manual_seed(1)
    weights = save_weights(SpectralCNN(), tmp_path / "m.pt", "metallicity", ["oh12"])
    mock = write_mock_release(tmp_path / "mock", 48, seed=6)
    ingest(mock.spectra_dir, tmp_path / "store", "dr10", client=client, chunk_rows=8)
    release = open_release(tmp_path / "store")
    wave = release.wavelength()
    flux, ivar, mask = (release.array(a) for a in ("flux", "ivar", "mask"))
    pred = da.map_blocks(predict_spectra, flux, ivar, mask, wavelength=wave, weights=str(weights),
                         dtype=np.float32, chunks=(flux.chunks[0], (1,)),
                         meta=np.empty((0, 1), np.float32)).compute()
    # the plain loop a user would write
    model = SpectralCNN()
    model.load_state_dict(torch.load(weights, weights_only=True)["state_dict"])
    model.eval()
    f, i, m = (a.compute() for a in (flux, ivar, mask))
    x = minmax_normalise(to_model_grid(f, i, m, wave)[0])[:, None, :]
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    assert pred.shape == (48, 1) and np.allclose(pred, expected, atol=1e-5)
    sha = weights_sha256(weights)
    per_worker = client.run(lambda: [k for k in __import__("survey_ml.core.inference", fromlist=["cached_models"]).cached_models() if k[0] == sha])
    assert all(len(v) <= 1 for v in per_worker.values()) and sum(len(v) for v in per_worker.values()) >= 1
    assert (sha, "cpu") not in cached_models()  # the client never built it


def test_empty_block_gives_an_empty_array(tmp_path):
    weights = save_weights(SpectralCNN(n_out=2), tmp_path / "c.pt", "sfclass", ["p_sf", "p_not"])
    out = predict_spectra(np.empty((0, 10)), np.empty((0, 10)), np.empty((0, 10)), np.arange(10.0), weights)
    assert out.shape == (0, 2)


def test_batch_size_does_not_change_predictions():
    """forward_batches: one block in batches of 3 or 512 gives the same numbers (the GPU batch is only a speed knob)."""
    from survey_ml.core.inference import forward_batches, shipped_weights

    model, info = load_model(shipped_weights("metallicity"), "cpu")
    rng = np.random.default_rng(0)
    x = rng.random((10, 2, 4201), dtype=np.float32)
    lines = rng.random((10, info["config"]["n_lines"]), dtype=np.float32)   # the fitted-line features it reads
    small, large = forward_batches(model, x, 3, lines=lines), forward_batches(model, x, 512, lines=lines)
    assert small.shape == (10, 2) and np.allclose(small, large, rtol=1e-5, atol=1e-6)


@__import__("pytest").mark.gpu
def test_gpu_predictions_match_cpu():
    """On a GPU: the same weights on cuda (pinned host buffer, large batch) agree with the CPU to 1e-3 dex."""
    from survey_ml.core.inference import forward_batches, shipped_weights

    rng = np.random.default_rng(1)
    x = rng.random((4096, 2, 4201), dtype=np.float32)
    model, info = load_model(shipped_weights("metallicity"), "cpu")
    lines = rng.random((4096, info["config"]["n_lines"]), dtype=np.float32)
    cpu = forward_batches(model, x, 512, lines=lines)
    gpu = forward_batches(load_model(shipped_weights("metallicity"), "cuda")[0], x, 8192, lines=lines)
    assert np.abs(gpu - cpu).max() < 1e-3
