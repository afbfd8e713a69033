"""The LAMOST observation model: S/N, resolution, pixels, masks and header fields."""
from __future__ import annotations

import numpy as np
import pytest

from survey_ml.io.lamost import read_lamost_spectrum, write_lamost_spectrum
from survey_ml.simulate.observe import (MASK_BADCCD, LamostInstrument, measure_band_snr, observe_lamost,
                                        sky_spectrum)

REST = np.arange(2800.0, 9300.0, 1.0)


def galaxy(line_flux: float = 0.0, width: float = 1.0) -> np.ndarray:
    """A smooth continuum (L_lambda ~ 2e39 erg/s/A at 5500 A) and, optionally, an H-alpha line."""
    lum = 2e39 * (REST / 5500.0) ** -0.5
    if line_flux:
        lum = lum + line_flux / (np.sqrt(2 * np.pi) * width) * np.exp(-0.5 * ((REST - 6564.61) / width) ** 2)
    return lum


@pytest.mark.parametrize("snr", [3.0, 5.0, 10.0, 30.0])
def test_measured_snr_matches_requested_within_10_percent(snr):
    rng = np.random.default_rng(int(snr))
    measured = [observe_lamost(REST, galaxy(), 0.1, snr, rng, 1_000_000 + k)[1]["snrr_measured"] for k in range(20)]
    assert abs(np.median(measured) / snr - 1.0) < 0.10
    assert np.all(np.abs(np.array(measured) / snr - 1.0) < 0.25)


def test_noise_is_what_ivar_says():
    rng = np.random.default_rng(3)
    spec, _ = observe_lamost(REST, galaxy(), 0.05, 20.0, rng, 1, LamostInstrument(calibration_rms=0, arm_jump_rms=0))
    clean, _ = observe_lamost(REST, galaxy(), 0.05, 1e6, np.random.default_rng(3), 1,
                              LamostInstrument(calibration_rms=0, arm_jump_rms=0))
    good = spec.ivar > 0
    pulls = (spec.flux[good] - clean.flux[good]) * np.sqrt(spec.ivar[good])
    assert abs(np.std(pulls) - 1.0) < 0.05 and abs(np.mean(pulls)) < 0.05


def test_line_lands_at_redshifted_wavelength_with_lamost_resolution():
    z, flux = 0.12, 3e41
    inst = LamostInstrument(calibration_rms=0, arm_jump_rms=0, bad_clusters_per_spectrum=0)
    spec, rec = observe_lamost(REST, galaxy(flux), z, 1e5, np.random.default_rng(0), 7, inst)
    base, _ = observe_lamost(REST, galaxy(), z, 1e5, np.random.default_rng(0), 7, inst)
    line = spec.flux.astype(float) - base.flux
    wave = spec.wavelength.astype(float)
    centre = np.sum(wave * line) / np.sum(line)
    assert centre == pytest.approx(6564.61 * (1 + z), abs=0.3)
    sigma = np.sqrt(np.sum(line * (wave - centre) ** 2) / np.sum(line))
    expected = np.hypot(6564.61 * (1 + z) / 1800 / 2.3548, 1.0 * (1 + z))  # LSF + intrinsic width
    assert sigma == pytest.approx(expected, rel=0.1)
    # flux is conserved through the LSF and the pixels: F = L / (4 pi d_L^2), in 1e-17 erg/s/cm2
    # (f_lambda carries 1/(1+z) and d(lambda_obs) = (1+z) d(lambda_rest))
    total = np.sum(line * np.diff(10 ** (3.5682 + 1e-4 * (np.arange(3910) - 0.5))))
    assert total == pytest.approx(flux * rec["flux_scale_1e17"] * (1 + z), rel=0.01)


def test_dead_pixels_and_sky_flags():
    inst = LamostInstrument(bad_clusters_per_spectrum=4)
    spec, rec = observe_lamost(REST, galaxy(), 0.1, 10.0, np.random.default_rng(11), 9, inst)
    dead = (spec.andmask & MASK_BADCCD) > 0
    assert dead.sum() == rec["n_dead_pixels"] > 0 and (spec.ivar[dead] == 0).all()
    sky = sky_spectrum(spec.wavelength.astype(float))
    assert spec.ormask[np.argmax(sky)] != 0 and spec.ormask[np.argmin(sky)] == 0


def test_header_fields_round_trip_through_the_reader(tmp_path):
    spec, rec = observe_lamost(REST, galaxy(1e41), 0.2, 12.0, np.random.default_rng(5), 1_234_567)
    path = write_lamost_spectrum(tmp_path / (spec.meta["filename"] + ".gz"), spec)
    again = read_lamost_spectrum(path)
    assert again.meta["obsid"] == 1_234_567 and again.meta["class"] == "GALAXY"
    assert again.meta["snrr"] == rec["snrr_measured"]
    assert abs(again.meta["z"] - 0.2) < 5 * again.meta["z_err"]
    assert np.array_equal(again.flux, spec.flux) and np.array_equal(again.andmask, spec.andmask)
    assert again.n_pix == 3909 and again.wavelength[0] == pytest.approx(3699.99, abs=0.01)
    assert measure_band_snr(again.wavelength, again.flux, again.ivar)["r"] == again.meta["snrr"]


def test_rest_frame_must_cover_the_observed_range():
    with pytest.raises(ValueError, match="does not cover"):
        observe_lamost(np.arange(4000.0, 9000.0), np.ones(5000), 0.1, 10.0, np.random.default_rng(0), 1)


def test_release_spec_plans_the_redshift_and_snr_draws():
    from survey_ml.simulate.release import ObservationPlan, draw_observations
    from survey_ml.config import load_release_spec

    spec = load_release_spec("dr10")
    rng = np.random.default_rng(0)
    lamost = draw_observations(20000, 100, rng, ObservationPlan.from_spec(spec))
    assert lamost["z_true"].between(0.002, 0.3).all() and 0.05 < lamost["z_true"].median() < 0.12
    assert lamost["snr_r_requested"].between(2, 60).all()
    assert 0.75 < lamost["snr_r_requested"].between(3, 30).mean() < 0.99  # mostly 3-30
    assert 0.17 < (lamost["layout"] == "old").mean() < 0.23 and lamost["obsid"].is_unique
    wide = draw_observations(20000, 100, rng, ObservationPlan.from_spec(spec, "wide"))
    assert wide["z_true"].max() > 0.45 and wide["z_true"].between(0.0, 0.5).all()
    # the wide variant's library reaches far enough into the blue for z = 0.5 on the LAMOST grid
    rest = np.arange(spec["simulate"]["wide"]["library_wave_min"], 9300.0, 1.0)
    spec_z05, _ = observe_lamost(rest, 2e39 * (rest / 5500.0) ** -0.5, 0.5, 10.0, rng, 3)
    assert np.isfinite(spec_z05.flux).all()
