"""The mock IFU release: population, renderer (projection, beam smearing, noise, masks), files, truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from survey_ml.io import manga as manga_io
from survey_ml.io.sami import read_sami_catalogue, read_sami_maps
from survey_ml.simulate.ifu import (CLUMPY_FRACTION, DISTURBED_FRACTION, INSTRUMENTS, MANGA_LSF_WIDENING,
                                    POPULATION, RC_TYPE_FRACTIONS, TFR_INJECTED, draw_population,
                                    fit_population, inclination_from_ellipticity, render_galaxy,
                                    rotation_curve, simulate_ifu_release)

SAMI_CATALOGUE = "sami/sami_InputCatGAMADR3.csv"


def _offsets(maps) -> tuple[np.ndarray, np.ndarray]:
    """Spaxel-centre offsets (arcsec) from the map centre: x (columns, West), y (rows, North)."""
    ny, nx = maps.shape
    return ((np.arange(nx) - (nx - 1) / 2) * maps.pixel_scale, (np.arange(ny) - (ny - 1) / 2) * maps.pixel_scale)


def _tfr_slope(truth: pd.DataFrame) -> float:
    return float(np.polyfit(truth["log_mstar"] - TFR_INJECTED["pivot"], np.log10(truth["vmax_kms"]), 1)[0])


# ------------------------------------------------------------------------------- population
def test_population_constants_are_the_catalogue_fit(real_fixtures):
    fitted = fit_population(real_fixtures / SAMI_CATALOGUE)
    assert fitted["n_galaxies"] == POPULATION["n_galaxies"]
    for col in POPULATION["columns"]:
        np.testing.assert_allclose(fitted["quantiles"][col], POPULATION["quantiles"][col], atol=1e-4)
    np.testing.assert_allclose(fitted["correlation"], POPULATION["correlation"], atol=1e-3)


def test_drawn_population_matches_the_sami_catalogue(real_fixtures):
    cat = pd.read_csv(real_fixtures / SAMI_CATALOGUE)
    cat = cat[(cat["mstar"] >= 7.5) & (cat["r_e"] > 0)].dropna(subset=["mstar", "r_e", "z_spec", "ellip", "pa", "m_r"])
    pop = draw_population(4000, np.random.default_rng(3), "sami")
    assert pop["log_mstar"].min() >= 7.5
    assert abs(pop["log_mstar"].median() - cat["mstar"].median()) < 0.05
    assert abs(np.log10(pop["r_e_arcsec"].median() / cat["r_e"].median())) < 0.02
    assert abs(pop["z"].median() - cat["z_spec"].median()) < 0.003
    assert abs(pop["ellip"].median() - cat["ellip"].median()) < 0.02
    assert abs(pop["abs_mag_r"].median() - cat["m_r"].median()) < 0.1
    # The copula keeps the catalogue's strongest dependences.
    assert abs(np.corrcoef(pop["log_mstar"], pop["z"])[0, 1] - np.corrcoef(cat["mstar"], cat["z_spec"])[0, 1]) < 0.06
    assert np.corrcoef(pop["log_mstar"], pop["abs_mag_r"])[0, 1] < -0.9


def test_truth_follows_the_injected_tfr_and_departure_fractions():
    pop = draw_population(200, np.random.default_rng(11), "sami")
    assert abs(_tfr_slope(pop) - TFR_INJECTED["slope"]) < 0.03
    big = draw_population(5000, np.random.default_rng(12), "manga")
    for kind, share in RC_TYPE_FRACTIONS.items():
        assert abs((big["rc_type"] == kind).mean() - share) < 0.02
    assert abs(big["clumpy"].mean() - CLUMPY_FRACTION) < 0.02
    assert abs(big["disturbed"].mean() - DISTURBED_FRACTION) < 0.015
    assert set(big.loc[big["disturbed"], "disturbance"]) == {"twist", "noncircular"}
    assert (big.loc[~big["disturbed"], "disturbance"] == "none").all()
    # MaNGA bundles: 50 x 50 maps up to 61 fibres, 74 x 74 above.
    assert set(big["grid"]) == {50, 74}
    assert ((big["bundle_fibres"] <= 61) == (big["grid"] == 50)).all()


def test_inclination_and_rotation_curves():
    e = np.array([0.0, 0.5, 0.8])
    expected = np.degrees(np.arccos(np.sqrt(np.clip(((1 - e) ** 2 - 0.04) / 0.96, 0, 1))))
    np.testing.assert_allclose(inclination_from_ellipticity(e), expected)
    assert inclination_from_ellipticity(0.5) == pytest.approx(62.1, abs=0.1)
    r = np.linspace(0.1, 20.0, 400)
    assert rotation_curve(2.0, 200.0, 2.0) == pytest.approx(100.0)
    assert rotation_curve(2.0, 200.0, 2.0, "tanh") == pytest.approx(200.0 * np.tanh(1.0))
    rising = rotation_curve(r, 200.0, 1.0, "rising", 0.04, 2.0)
    assert np.all(np.diff(rising) > 0) and rising[-1] > 200.0
    declining = rotation_curve(r, 200.0, 0.3, "declining", 0.4, 2.0)
    assert declining.max() > 1.15 * 200.0 and declining[-1] < 0.9 * declining.max()
    with pytest.raises(ValueError):
        rotation_curve(r, 200.0, 1.0, "keplerian")


# ------------------------------------------------------------------------------- rendering
GALAXY = {"pa_deg": 0.0, "vmax_kms": 200.0, "r_turn_arcsec": 1.0, "r_scale_arcsec": 2.0,
          "sigma_gas_kms": 25.0, "detection_scalelengths": 6.0}


@pytest.mark.parametrize("inc", [30.0, 75.0])
def test_major_axis_velocity_is_v_sin_i(inc):
    maps, truth = render_galaxy({**GALAXY, "inc_deg": inc}, "sami", np.random.default_rng(0), psf=False, noise=False)
    x, y = _offsets(maps)
    col = int(np.argmin(np.abs(x)))            # PA = 0: the receding major axis is +y (North)
    sin_i = np.sin(np.radians(inc))
    for row in np.nonzero((np.abs(y) >= 3.0) & (np.abs(y) <= 7.0))[0]:
        assert maps.good[row, col]
        expected = np.sign(y[row]) * rotation_curve(np.hypot(y[row], x[col]), 200.0, 1.0) * sin_i
        assert maps.velocity[row, col] == pytest.approx(expected, rel=0.05)
    assert np.nanmax(np.abs(maps.velocity)) == pytest.approx(rotation_curve(7.25, 200.0, 1.0) * sin_i, rel=0.05)
    assert truth["v22_kms"] == pytest.approx(rotation_curve(4.4, 200.0, 1.0))
    # The dispersion is the gas's once the LSF is removed (SAMI publishes it so).
    outer = maps.good & (np.hypot(*np.meshgrid(x, y)) > 4.0)
    assert np.nanmedian(maps.dispersion[outer]) == pytest.approx(25.0, rel=0.1)


def test_edge_on_rotates_faster_than_face_on():
    v = {}
    for inc in (20.0, 80.0):
        maps, _ = render_galaxy({**GALAXY, "inc_deg": inc}, "sami", np.random.default_rng(0), psf=False, noise=False)
        v[inc] = np.nanmax(np.abs(maps.velocity))
    assert v[80.0] / v[20.0] == pytest.approx(np.sin(np.radians(80)) / np.sin(np.radians(20)), rel=0.05)


def test_beam_smearing_flattens_the_centre_and_raises_its_dispersion():
    galaxy = {**GALAXY, "inc_deg": 60.0, "r_turn_arcsec": 0.5, "beam_fwhm_arcsec": 2.5}
    sharp, _ = render_galaxy(galaxy, "sami", np.random.default_rng(0), psf=False, noise=False)
    smeared, _ = render_galaxy(galaxy, "sami", np.random.default_rng(0), psf=True, noise=False)
    x, y = _offsets(sharp)
    col, rows = int(np.argmin(np.abs(x))), np.nonzero(np.abs(y) <= 1.0)[0]

    def gradient(m):
        return (m.velocity[rows[-1], col] - m.velocity[rows[0], col]) / (y[rows[-1]] - y[rows[0]])

    assert gradient(smeared) < 0.7 * gradient(sharp)
    centre = (slice(rows[0], rows[-1] + 1), slice(col - 1, col + 2))
    assert np.nanmean(smeared.dispersion[centre]) > 2.5 * np.nanmean(sharp.dispersion[centre])
    # Far from the centre the seeing matters less; without it the dispersion is the intrinsic one.
    r = np.hypot(*np.meshgrid(x, y))
    outer = sharp.good & smeared.good & (r > 6.0)
    assert np.nanmedian(smeared.dispersion[outer]) < 1.4 * np.nanmedian(sharp.dispersion[outer])
    assert np.nanmedian(sharp.dispersion[outer]) == pytest.approx(25.0, rel=0.02)


@pytest.mark.parametrize("survey", ["sami", "manga"])
def test_errors_are_one_sigma_and_masks_follow_snr_and_footprint(survey):
    galaxy = {**GALAXY, "inc_deg": 50.0, "pa_deg": 40.0, "detection_scalelengths": 4.0}
    clean, _ = render_galaxy(galaxy, survey, np.random.default_rng(1), noise=False)
    noisy, truth = render_galaxy(galaxy, survey, np.random.default_rng(1))
    # Errors from the fit covariance are 1 sigma where the fit is linear enough (S/N >= 10;
    # below, as for any least-squares line fit, they understate the scatter).
    use = clean.good & noisy.good & (clean.flux >= 10 * clean.flux_err)
    assert use.sum() > 150
    for name in ("flux", "velocity", "dispersion"):
        pulls = (getattr(noisy, name) - getattr(clean, name))[use] / getattr(noisy, name + "_err")[use]
        assert 0.85 < np.std(pulls) < 1.15, name
    assert np.all(noisy.flux[noisy.good] >= 3.0 * noisy.flux_err[noisy.good])
    assert np.isnan(noisy.velocity[~noisy.good]).all() and np.isnan(noisy.flux[~noisy.good]).all()
    x, y = np.meshgrid(*_offsets(noisy))
    if survey == "sami":
        assert np.hypot(x, y)[noisy.good].max() <= 7.5
    else:  # a 61-fibre hexagon, corners on the x axis
        assert np.abs(y)[noisy.good].max() <= np.sqrt(3) / 2 * 11.25 and np.abs(x)[noisy.good].max() <= 11.25
    assert (~noisy.good).any() and truth["n_good"] == noisy.good.sum()
    assert 0 < truth["r_max_arcsec"] and truth["sigma_outer_kms"] == pytest.approx(25.0, abs=0.5)
    if survey == "manga":  # MaNGA publishes the line width with the LSF in it
        r = np.hypot(x, y)
        width = np.nanmedian(clean.dispersion[clean.good & (r > 4)])
        assert width == pytest.approx(np.hypot(25.0, INSTRUMENTS["manga"].lsf_sigma_kms), rel=0.05)


# ------------------------------------------------------------------------------- releases
@pytest.fixture(scope="module")
def sami_release(tmp_path_factory):
    return simulate_ifu_release(tmp_path_factory.mktemp("sami"), 200, "sami", seed=5, block_size=64)


def test_sami_release_files_catalogue_and_truth(sami_release):
    truth = pd.read_parquet(sami_release.truth)
    assert len(truth) == len(sami_release.files) == 200 and truth["catid"].is_unique
    assert abs(_tfr_slope(truth) - TFR_INJECTED["slope"]) < 0.03
    resid = np.log10(truth["vmax_kms"]) - (TFR_INJECTED["intercept"] + TFR_INJECTED["slope"]
                                           * (truth["log_mstar"] - TFR_INJECTED["pivot"]))
    np.testing.assert_allclose(resid, truth["log_vmax_offset"], atol=1e-9)
    for k in range(0, 200, 25):
        maps = read_sami_maps(sami_release.files[k])
        row = truth.iloc[k]
        assert maps.meta["catid"] == row["catid"] and maps.shape == (50, 50)
        assert maps.good.sum() == row["n_good"]
        assert (sami_release.root / row["file_velocity"]).exists()
    catalogue = read_sami_catalogue(sami_release.catalogue)
    assert catalogue["catid"].tolist() == truth["catid"].tolist()
    np.testing.assert_allclose(catalogue["mstar"], truth["log_mstar"])
    assert not {"vmax_kms", "inc_deg"} & set(catalogue.columns)
    assert {"v22_kms", "r_max_arcsec", "sigma_outer_kms", "rc_type", "clumpy", "disturbed", "beam_fwhm_arcsec",
            "r_turn_arcsec", "abs_mag_r"} <= set(truth.columns)


def test_manga_release_reads_back_with_nsa_units(tmp_path):
    release = simulate_ifu_release(tmp_path, 12, "manga", seed=2)
    truth = pd.read_parquet(release.truth)
    drpall = manga_io.read_drpall(release.catalogue)
    assert drpall["plateifu"].tolist() == truth["plateifu"].tolist()
    np.testing.assert_allclose(manga_io.log_mstar_h70(drpall["nsa_elpetro_mass"].to_numpy()), truth["log_mstar"])
    for k, path in enumerate(release.files):
        assert path.endswith("-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz")
        maps = manga_io.read_manga_maps(path)
        assert maps.meta["plateifu"] == truth["plateifu"][k] and maps.shape == (truth["grid"][k],) * 2
        assert maps.meta["z"] == pytest.approx(truth["z"][k])
        assert maps.good.sum() == truth["n_good"][k]
    with fits.open(release.files[0]) as hdul:  # the DAP's INSTSIGMA, which the study widens by 1.045
        channels = manga_io.channel_names(hdul["EMLINE_INSTSIGMA"].header)
        inst = hdul["EMLINE_INSTSIGMA"].data[channels.index(manga_io.HALPHA), 0, 0]
    assert inst * MANGA_LSF_WIDENING == pytest.approx(truth["lsf_sigma_kms"][0], rel=1e-3)


def _arrays(release) -> list[np.ndarray]:
    out = []
    for path in release.files:
        m = read_sami_maps(path)
        out += [m.flux, m.flux_err, m.velocity, m.velocity_err, m.dispersion, m.dispersion_err]
    return out


def test_same_seed_same_release_on_any_number_of_workers(tmp_path, client):
    local = simulate_ifu_release(tmp_path / "a", 8, "sami", seed=9, block_size=3)
    dask = simulate_ifu_release(tmp_path / "b", 8, "sami", seed=9, block_size=5, client=client)
    other = simulate_ifu_release(tmp_path / "c", 8, "sami", seed=10)
    pd.testing.assert_frame_equal(pd.read_parquet(local.truth), pd.read_parquet(dask.truth))
    for a, b in zip(_arrays(local), _arrays(dask)):
        np.testing.assert_array_equal(a, b)
    assert not pd.read_parquet(other.truth)["vmax_kms"].equals(pd.read_parquet(local.truth)["vmax_kms"])
