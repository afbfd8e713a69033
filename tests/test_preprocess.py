"""Spectra -> model grid, lifted over a real ingested store with dask.array.map_blocks."""
from __future__ import annotations

import dask.array as da
import numpy as np

from survey_ml.io.lamost import read_lamost_spectrum
from survey_ml.core.spectra import MODEL_WAVELENGTH, minmax_normalise, to_model_grid
from survey_ml.simulate import write_mock_release
from survey_ml.store import ingest, open_release


def test_model_grid_is_the_published_one():
    assert MODEL_WAVELENGTH.size == 4201 and MODEL_WAVELENGTH[0] == 3800.0 and MODEL_WAVELENGTH[-1] == 8000.0


def test_block_function_over_a_store(tmp_path, client):
    mock = write_mock_release(tmp_path / "mock", 40, seed=8)
    ingest(mock.spectra_dir, tmp_path / "store", "dr10", client=client, chunk_rows=16)
    release = open_release(tmp_path / "store")
    wave = release.wavelength()
    flux, ivar, mask = (release.array(a) for a in ("flux", "ivar", "mask"))

    def block(f, i, m):
        model_flux, _ = to_model_grid(f, i, m, wave)
        return minmax_normalise(model_flux)

    model = da.map_blocks(block, flux, ivar, mask, dtype=np.float32, chunks=(flux.chunks[0], (4201,)),
                          meta=np.empty((0, 4201), np.float32)).compute()
    assert model.shape == (40, 4201) and model.min() == 0.0 and model.max() == 1.0
    row = release.objects.iloc[7]
    spec = read_lamost_spectrum(row["file"])
    direct = np.interp(MODEL_WAVELENGTH, spec.wavelength.astype(float), spec.flux)
    # the store uses the exact grid, the file float32 wavelengths (0.5 mA steps): equal to
    # ~1e-6, ~5e-5 on the steep sides of emission lines
    assert np.allclose(model[7], minmax_normalise(direct[None, :].astype(np.float32))[0], atol=1e-4)


def test_masked_pixels_are_bridged_not_used():
    wave = np.arange(3700.0, 8100.0, 1.0)
    flux = np.ones((1, wave.size))
    flux[0, 1000:1010] = 1e6  # a cosmic ray, masked
    mask = np.zeros_like(flux, dtype=np.uint32)
    mask[0, 1000:1010] = 4
    model_flux, coverage = to_model_grid(flux, np.ones_like(flux), mask, wave)
    assert np.allclose(model_flux, 1.0)
    gap = (MODEL_WAVELENGTH >= wave[1000]) & (MODEL_WAVELENGTH <= wave[1009])
    assert (coverage[0, gap] == 0).all() and (coverage[0, ~gap] > 0).all()
    empty, cov = to_model_grid(flux, np.zeros_like(flux), mask, wave)
    assert (empty == 0).all() and (cov == 0).all()


def test_vectorised_rows_equal_np_interp_and_gappy_rows_use_their_good_pixels():
    """The whole-block fast path (rows without gaps) gives np.interp's values; rows with gaps are bridged."""
    from survey_ml.core.spectra import MODEL_WAVELENGTH, to_model_grid
    from survey_ml.core.wavelength import LAMOST_LRS_GRID

    wave = LAMOST_LRS_GRID.wavelength()
    rng = np.random.default_rng(1)
    flux = rng.normal(10, 2, (40, wave.size)).astype(np.float32)
    ivar = np.ones_like(flux)
    mask = np.zeros(flux.shape, dtype=np.uint32)
    mask[5, 1200:1230] = 1          # a gap inside the model range
    ivar[6, 2000] = 0.0             # one dead pixel
    flux[7, 3000] = np.nan          # a NaN
    model, coverage = to_model_grid(flux, ivar, mask, wave)
    for i in range(40):
        good = (ivar[i] > 0) & (mask[i] == 0) & np.isfinite(flux[i])
        expected = np.interp(MODEL_WAVELENGTH, wave[good], flux[i, good])
        np.testing.assert_allclose(model[i], expected, rtol=1e-5, atol=1e-5)
    assert (coverage[[0, 1, 8]] == 1).all() and coverage[5].min() == 0 and coverage[6].min() < 1
