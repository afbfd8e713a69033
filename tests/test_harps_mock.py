"""The independent HARPS mock (survey_ml.simulate.harps_mock): files the real reader reads, with the
S/N, radial velocity and labels it says they have. A line list of Gaussians stands in for MOOG."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_ml.core.echelle import cross_correlation_rv, segments
from survey_ml.io.echelle import read_harps_e2ds
from survey_ml.simulate import harps_mock

CENTRES = np.random.default_rng(3).uniform(5042.0, 5358.0, 400)


def gaussian_lines(teff, logg, feh, alpha=0.0, vmicro=None, wave_range=(5040.0, 5360.0), step=0.01, edit_lines=None,
                   **_):
    """Stands in for MOOG: 400 lines (some dropped by the line-list editor), deeper at higher [Fe/H]."""
    lines = np.zeros(len(CENTRES), dtype=[("wave", "f8"), ("loggf", "f8")])
    lines["wave"] = CENTRES
    if edit_lines is not None:
        lines = edit_lines(lines)
    wave = np.arange(wave_range[0], wave_range[1] + step / 2, step)
    depth = 0.5 * 10 ** (0.5 * feh) * (5500.0 / teff)
    flux = np.ones_like(wave)
    for centre in lines["wave"]:
        flux -= depth * np.exp(-0.5 * ((wave - centre) / 0.04) ** 2)
    return wave, np.clip(flux, 0.02, None)


def test_population_prior_and_its_grid_filter():
    rng = np.random.default_rng(0)
    stars = harps_mock.draw_population(400, rng, inside=lambda labels: labels[:, 2] > -1.0)
    assert len(stars) == 400 and (stars.feh > -1.0).all()
    giants = stars[stars.population.isin(["giant", "clump"])]
    dwarfs = stars[stars.population == "dwarf"]
    assert giants.logg.median() < 3.0 < dwarfs.logg.min() + 0.5 and giants.teff.median() < dwarfs.teff.median()
    assert stars.vsini.between(0, 29).all() and (stars.vmacro > 0).all() and (stars.vmicro >= 0.3).all()
    # [alpha/Fe] scatters about the Galactic trend the training grid follows exactly
    residual = stars.alpha - np.clip(-0.4 * stars.feh, 0, 0.4)
    assert 0.05 < residual.std() < 0.15


def test_macroturbulence_broadens_like_its_width():
    dv = 0.3
    for zeta in (2.0, 6.0):
        kernel = harps_mock.macroturbulence_kernel(dv, zeta)
        v = dv * (np.arange(len(kernel)) - len(kernel) // 2)
        rms = np.sqrt(np.sum(kernel * v ** 2))
        assert 0.4 * zeta < rms < 0.8 * zeta, (zeta, rms)


def test_written_e2ds_read_back_with_their_sn_and_velocity(tmp_path, real_fixtures):
    template = real_fixtures / "harps" / "HARPS.2003-12-13T06:19:48.371_e2ds_A.fits"
    truth_path = harps_mock.write_harps_mock(tmp_path / "mock", 3, seed=2, template=template,
                                             synthesize=gaussian_lines)
    truth = pd.read_parquet(truth_path)
    assert len(truth) == 3 and truth.object.is_unique
    assert {"teff", "logg", "feh", "alpha", "vmicro", "vmacro", "vsini", "rv_kms", "berv_kms", "sn50"} <= set(truth.columns)
    ref_wave, ref_flux = gaussian_lines(5500.0, 4.4, 0.0)
    for row in truth.itertuples():
        spectrum = read_harps_e2ds(tmp_path / "mock" / row.file)
        assert spectrum.meta["object"] == row.object and spectrum.blaze is not None and not spectrum.notes
        assert spectrum.meta["sn50"] == pytest.approx(row.sn50, abs=0.1)
        # the reader's variances give back the S/N written in the header, order 50 at its blaze peak
        o50 = 50
        peak = np.argsort(spectrum.flux[o50])[-200:]
        measured = np.median(spectrum.flux[o50, peak] * np.sqrt(spectrum.ivar[o50, peak]))
        assert measured == pytest.approx(row.sn50, rel=0.15)
        flux, ivar = spectrum.deblazed()
        assert spectrum.meta["berv"] == pytest.approx(row.berv_kms)
        pieces = segments(spectrum.rest_air(), flux, ivar, 4096, (5060.0, 5340.0))   # barycentric
        rv, ccf_peak = cross_correlation_rv(pieces, ref_wave, ref_flux)
        # a fast rotator's CCF is as wide as its lines: allow a tenth of v sin i (cosmic rays pull it)
        assert rv == pytest.approx(row.rv_kms, abs=max(0.5, 0.1 * row.vsini)) and ccf_peak > 0.25
