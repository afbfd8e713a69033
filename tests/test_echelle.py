"""High-resolution spectra: the HARPS / ESPRESSO / ESO readers on real files and the echelle store kind."""
from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits

from survey_ml.core.echelle import order_grid, resample_segments, segments
from survey_ml.io.echelle import (SPEED_OF_LIGHT_KMS, identify_echelle, read_echelle, read_espresso_s2d, read_eso_1d,
                                  read_harps_e2ds, read_harps_s1d)
from survey_ml.io.errors import SurveyFileError
from survey_ml.store import ingest, open_release

E2DS = "harps/HARPS.2003-12-13T06:19:48.371_e2ds_A.fits"
S1D = "harps/HARPS.2010-09-18T23:42:36.178_s1d_A.fits"
BLAZE = "harps/HARPS.2003-12-12T21:42:45.093_blaze_A.fits"
WAVE = "harps/HARPS.2003-12-12T21:47:59.366_wave_A.fits"


def test_e2ds_reads_the_real_gl273_exposure(real_fixtures):
    spectrum = read_echelle(real_fixtures / E2DS)
    assert spectrum.format == "harps-e2ds" and spectrum.flux.shape == (72, 4096)
    assert spectrum.meta["object"] == "Gl273" and spectrum.meta["berv"] == pytest.approx(15.2577, abs=1e-4)
    assert spectrum.frame == "earth" and spectrum.medium == "air" and spectrum.blaze is not None
    # the header polynomial is the wave frame's image (to 0.001 A = 1/15 of a pixel)
    wave = fits.getdata(real_fixtures / WAVE).astype(np.float64)
    assert np.abs(spectrum.wavelength - wave).max() < 1e-3
    assert spectrum.wavelength[0, 0] == pytest.approx(3779.5716, abs=1e-3)
    # photon + read noise gives back the DRS's S/N at the blaze peak of the red orders
    centre = slice(1948, 2148)
    sn = np.median(spectrum.flux[65, centre] * np.sqrt(spectrum.ivar[65, centre]))
    assert sn == pytest.approx(spectrum.meta["order_sn"][65], rel=0.05)
    # deblazing flattens an order: the blaze-peak / edge ratio of the raw counts is gone
    flux, ivar = spectrum.deblazed()
    raw_ratio = np.median(spectrum.flux[65, centre]) / np.median(spectrum.flux[65, 200:400])
    flat_ratio = np.median(flux[65, centre]) / np.median(flux[65, 200:400])
    assert raw_ratio > 1.3 and abs(flat_ratio - 1) < abs(raw_ratio - 1) / 2
    # the barycentric correction is a Doppler factor of BERV
    rest = spectrum.rest_air()
    assert np.allclose(rest / spectrum.wavelength - 1, 15.2577 / SPEED_OF_LIGHT_KMS, atol=1e-9)


def test_e2ds_without_its_blaze_beside_it_is_read_and_says_so(real_fixtures, tmp_path):
    os.symlink(real_fixtures / E2DS, tmp_path / os.path.basename(E2DS))
    spectrum = read_harps_e2ds(tmp_path / os.path.basename(E2DS))
    assert spectrum.blaze is None
    assert "HARPS.2003-12-12T21:42:45.093_blaze_A.fits not found" in spectrum.notes[0]
    explicit = read_harps_e2ds(tmp_path / os.path.basename(E2DS), blaze=real_fixtures / BLAZE)
    assert explicit.blaze is not None and explicit.blaze.shape == (72, 4096)


def test_s1d_reads_the_real_gl581_spectrum(real_fixtures):
    spectrum = read_echelle(real_fixtures / S1D)
    assert spectrum.format == "harps-s1d" and spectrum.flux.shape == (1, 313114)
    assert spectrum.wavelength[0, 0] == pytest.approx(3781.19) and spectrum.frame == "barycentric"
    assert spectrum.ivar_estimated and spectrum.meta["object"] == "Gl581"
    wave = spectrum.wavelength[0]
    near = spectrum.good[0] & (wave > 5490) & (wave < 5510)
    assert np.median(spectrum.flux[0, near] * np.sqrt(spectrum.ivar[0, near])) == pytest.approx(40.9, rel=1e-3)
    assert not spectrum.good[0][spectrum.flux[0] == 0].any()  # the DRS's gaps carry no weight


@pytest.mark.parametrize("frame, what", [(BLAZE, "LAMP,LAMP,TUN"), (WAVE, "WAVE,WAVE,THAR2")])
def test_calibration_frames_are_not_taken_for_spectra(real_fixtures, frame, what):
    with pytest.raises(SurveyFileError, match=f"CALIB frame \\(DPR TYPE {what}\\), not a science spectrum") as err:
        read_echelle(real_fixtures / frame)
    assert err.value.code == "wrong_format" and err.value.path.endswith(os.path.basename(frame))


def test_lamost_and_broken_files_are_named(real_fixtures, tmp_path):
    lamost = sorted((real_fixtures / "lamost").glob("*.fits*"))[0]
    with pytest.raises(SurveyFileError, match="not a high-resolution spectrum format") as err:
        identify_echelle(lamost)
    assert err.value.code == "wrong_format" and "tried: HARPS" in str(err.value)
    cut = tmp_path / "cut_e2ds_A.fits"
    cut.write_bytes((real_fixtures / E2DS).read_bytes()[:200_000])
    with pytest.raises(SurveyFileError, match="cut_e2ds_A.fits") as err:
        read_echelle(cut)
    assert err.value.code == "truncated"


def _espresso_s2d(path, n_orders=4, n_pix=300, air=True):
    wave = np.linspace(5000, 5300, n_orders * n_pix).reshape(n_orders, n_pix)
    flux = np.full((n_orders, n_pix), 100.0)
    err = np.full((n_orders, n_pix), 10.0)
    qual = np.zeros((n_orders, n_pix), np.int32)
    qual[1, 5] = 64
    primary = fits.PrimaryHDU(header=fits.Header({"INSTRUME": "ESPRESSO", "HIERARCH ESO QC BERV": -3.5,
                                                  "OBJECT": "HD 10700"}))
    name = "WAVEDATA_AIR_BARY" if air else "WAVEDATA_VAC_BARY"
    fits.HDUList([primary, fits.ImageHDU(flux, name="SCIDATA"), fits.ImageHDU(err, name="ERRDATA"),
                  fits.ImageHDU(qual, name="QUALDATA"), fits.ImageHDU(wave, name=name)]).writeto(path)
    return wave


def test_espresso_s2d(tmp_path):
    wave = _espresso_s2d(tmp_path / "r.ESPRE.2019-01-01_S2D_A.fits")
    assert identify_echelle(tmp_path / "r.ESPRE.2019-01-01_S2D_A.fits") == "espresso-s2d"
    spectrum = read_espresso_s2d(tmp_path / "r.ESPRE.2019-01-01_S2D_A.fits")
    assert spectrum.flux.shape == (4, 300) and spectrum.medium == "air" and spectrum.frame == "barycentric"
    assert spectrum.ivar[1, 5] == 0 and spectrum.ivar[0, 0] == pytest.approx(0.01)
    assert np.array_equal(spectrum.wavelength, wave) and spectrum.meta["berv"] == -3.5
    _espresso_s2d(tmp_path / "vac_S2D_A.fits", air=False)
    vacuum = read_echelle(tmp_path / "vac_S2D_A.fits")
    assert vacuum.medium == "vacuum"
    assert vacuum.rest_air()[0, 0] == pytest.approx(5000 / 1.000278, abs=0.01)  # air is ~1.4 A shorter at 5000 A


def test_eso_phase3_1d_in_nanometres(tmp_path):
    n = 5000
    wave_nm = np.linspace(500.0, 540.0, n)
    columns = [fits.Column("WAVE", f"{n}D", unit="nm", array=wave_nm[None]),
               fits.Column("FLUX", f"{n}E", array=np.full((1, n), 2.0)),
               fits.Column("ERR", f"{n}E", array=np.full((1, n), 0.5)),
               fits.Column("QUAL", f"{n}J", array=np.where(np.arange(n) == 7, 1, 0)[None])]
    primary = fits.PrimaryHDU(header=fits.Header({"OBJECT": "HD 1", "SPECSYS": "BARYCENT", "SNR": 55.0}))
    path = tmp_path / "ADP.2020-01-01T00:00:00.000.fits"
    fits.HDUList([primary, fits.BinTableHDU.from_columns(columns)]).writeto(path)
    assert identify_echelle(path) == "eso-1d"
    spectrum = read_eso_1d(path)
    assert spectrum.wavelength[0, 0] == pytest.approx(5000.0) and spectrum.frame == "barycentric"
    assert spectrum.ivar[0, 0] == pytest.approx(4.0) and spectrum.ivar[0, 7] == 0
    assert spectrum.meta["object"] == "HD 1" and spectrum.meta["sn50"] == 55.0


def test_segments_and_resampling_keep_the_spectrum(real_fixtures):
    spectrum = read_echelle(real_fixtures / E2DS)
    flux, ivar = spectrum.deblazed()
    pieces = segments(spectrum.rest_air(), flux, ivar, 4096, (5050, 5350))
    assert all(5050 <= p[0][0] and p[0][-1] <= 5350 for p in pieces) and len(pieces) >= 5
    grid = order_grid(5060, 5340, 8, 4096)
    model_flux, model_ivar = resample_segments(pieces, grid)
    assert model_flux.shape == (8, 4096)
    # everything is covered but the gap between HARPS's two CCDs (5304.6-5337.5 A in this exposure)
    gap = (grid > 5304.0) & (grid < 5338.0)
    assert (model_ivar[~gap] > 0).all() and (model_ivar[(grid > 5306) & (grid < 5336)] == 0).all()
    # where one order alone covers the grid, the model flux is that order interpolated
    w, f, v = pieces[2]
    inside = (grid > w[10]) & (grid < w[-10])
    for k, other in enumerate(pieces):
        if k != 2:
            inside &= ~((grid >= other[0][0]) & (grid <= other[0][-1]))
    assert inside.sum() > 1000
    assert np.allclose(np.interp(grid[inside], w, f), model_flux[inside], rtol=1e-5)


def test_echelle_store_on_a_cluster_flags_what_it_cannot_use(real_fixtures, tmp_path, client):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in (E2DS, S1D, BLAZE, WAVE):  # links: the real files are read in place
        os.symlink(real_fixtures / name, inputs / os.path.basename(name))
    os.symlink(real_fixtures / E2DS, inputs / "HARPS.2003-12-13T06:19:48.371_e2ds_B.fits")  # the same exposure again
    (inputs / "HARPS.2011-01-01T00:00:00.000_e2ds_A.fits").write_bytes(b"SIMPLE  = T" + b" " * 100)
    report = ingest(inputs, tmp_path / "store", "harps", kind="echelle", client=client, window=(5000, 5400),
                    chunk_rows=2)
    assert report.n_rows == 4  # the blaze and wave frames are read beside the e2ds, not as rows
    release = open_release(tmp_path / "store")
    rows = release.exposures.set_index("file")
    by_name = {os.path.basename(f): r for f, r in rows.iterrows()}
    assert by_name[os.path.basename(E2DS)]["status"] == "ok" and by_name[os.path.basename(S1D)]["status"] == "ok"
    assert by_name["HARPS.2003-12-13T06:19:48.371_e2ds_B.fits"]["status"] == "duplicate"
    broken = by_name["HARPS.2011-01-01T00:00:00.000_e2ds_A.fits"]
    assert broken["status"] in {"truncated", "unreadable"} and "HARPS.2011-01-01" in broken["message"]
    block = release.read_block(0, release.n_rows)
    assert block["flux"].shape[1:] == (release.info["n_segments"], 4096)
    ok = rows["status"].eq("ok").to_numpy()
    waves = block["wavelength"][ok]
    assert waves[waves > 0].min() >= 5000 and waves.max() <= 5400
    failed = ~rows["status"].isin(["ok", "duplicate"]).to_numpy()
    assert failed.sum() == 1 and (block["ivar"][failed] == 0).all()  # a file that could not be read holds nothing
    # the e2ds row is its file's deblazed orders at barycentric air wavelengths
    i = int(by_name[os.path.basename(E2DS)]["row"])
    spectrum = read_harps_e2ds(real_fixtures / E2DS)
    flux, _ = spectrum.deblazed()
    first = segments(spectrum.rest_air(), flux, spectrum.ivar, 4096, (5000, 5400))[0]
    assert np.array_equal(block["wavelength"][i, 0, :first[0].size], first[0])
    assert np.array_equal(block["flux"][i, 0, :first[0].size], first[1])
    s1d = read_harps_s1d(real_fixtures / S1D)
    assert by_name[os.path.basename(S1D)]["ivar_estimated"] and s1d.ivar_estimated
