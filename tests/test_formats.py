"""Formats found by themselves (issue 18): each file's reader told from its headers; SDSS S/N per band."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from survey_ml.core.wavelength import LAMOST_LRS_GRID, SDSS_GRID
from survey_ml.io.errors import SurveyFileError
from survey_ml.io.registry import SPECTRUM_FORMATS, identify_spectrum, read_spectrum
from survey_ml.io.sdss import read_sdss_spectrum, write_sdss_spectrum
from survey_ml.store import ingest, open_release

from test_sdss import make_spectrum


def _sdss(path, seed: int, bands: bool = True):
    spec = make_spectrum(seed=seed, plate=1000 + seed)
    spec.meta.update(fiberid=10 + seed, specobjid=(1000 + seed) << 50 | (10 + seed) << 38)
    if bands:
        spec.meta.update(snru=1.5, snrg=4.0, snrr=8.5 + seed, snri=9.0, snrz=3.0)
    write_sdss_spectrum(path, spec)
    return path


def test_each_format_is_told_from_its_headers(tmp_path, real_fixtures):
    lamost = sorted((real_fixtures / "lamost").glob("*.fits.gz"))
    assert [identify_spectrum(p) for p in lamost] == ["lamost", "lamost"]  # DR7 image and DR8+ COADD layouts
    for suffix in (".fits", ".fits.gz"):
        assert identify_spectrum(_sdss(tmp_path / f"spec-1{suffix}", 1)) == "sdss"
    image = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((10, 10), np.float32))]).writeto(image)
    with pytest.raises(SurveyFileError) as err:
        identify_spectrum(image)
    assert err.value.code == "wrong_format" and "primary NAXIS=2 (10 x 10), no extension" in str(err.value)
    assert all(f.description in str(err.value) for f in SPECTRUM_FORMATS)


def test_reading_by_format_gives_what_each_reader_gives(tmp_path, real_fixtures):
    from survey_ml.io.lamost import read_lamost_spectrum

    for path in sorted((real_fixtures / "lamost").glob("*.fits.gz")):
        a, b = read_spectrum(path), read_lamost_spectrum(path)
        assert a.format == b.format and np.array_equal(a.flux, b.flux) and a.meta == b.meta
    sdss = _sdss(tmp_path / "spec-2.fits.gz", 2)
    assert read_spectrum(sdss).format == "sdss-spec"
    np.testing.assert_array_equal(read_spectrum(sdss).flux, read_sdss_spectrum(sdss).flux)


def test_sdss_snr_per_band_comes_from_sn_median(tmp_path):
    assert read_sdss_spectrum(_sdss(tmp_path / "spec-3.fits", 3)).meta["snrr"] == pytest.approx(11.5)
    assert "snrr" not in read_sdss_spectrum(_sdss(tmp_path / "spec-4.fits", 4, bands=False)).meta


def test_a_mixed_folder_ingests_as_one_store(tmp_path, real_fixtures, client):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted((real_fixtures / "lamost").glob("*.fits.gz")):
        (folder / path.name).symlink_to(path)
    for seed in (5, 6):
        _sdss(folder / f"spec-{1000 + seed}-52000-{10 + seed:04d}.fits", seed)
    image = folder / "not-a-spectrum.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((10, 10), np.float32))]).writeto(image)
    ingest(folder, tmp_path / "store", "mixed", client=client)  # reader="auto", the default
    release = open_release(tmp_path / "store")
    rows = release.rows.set_index("file")
    assert release.info["reader"] == "auto" and release.grid == SDSS_GRID  # holds LAMOST's pixels too
    assert sorted(rows["format"].dropna()) == ["lamost-new", "lamost-old", "sdss-spec", "sdss-spec"]
    assert (rows.drop(str(image))["status"] == "ok").all()
    assert rows.loc[str(image), "status"] == "wrong_format"
    assert rows.loc[str(image), "message"].startswith(f"{image}: not a spectrum format survey_ml reads")
    sdss = rows[rows["format"] == "sdss-spec"]
    assert sorted(sdss["snrr"].round(2)) == [13.5, 14.5]


def test_a_lamost_folder_read_by_format_is_the_store_lamost_makes(tmp_path, real_fixtures):
    auto = ingest(real_fixtures / "lamost", tmp_path / "auto", "dr10", client=False)
    named = ingest(real_fixtures / "lamost", tmp_path / "named", "dr10", reader="lamost", client=False)
    a, b = open_release(auto.store), open_release(named.store)
    assert a.grid == b.grid == LAMOST_LRS_GRID
    for name, values in b.read_block(0, b.n_rows).items():
        np.testing.assert_array_equal(a.read_block(0, a.n_rows)[name], values, err_msg=name)


def test_a_lamost_catalogue_with_only_obsid_and_file_ingests_every_row_from_the_headers(tmp_path, client):
    import pandas as pd

    from survey_ml.io.lamost import PartialCatalogueWarning
    from survey_ml.simulate import write_mock_release

    mock = write_mock_release(tmp_path / "mock", 24, seed=8, client=client)
    full = pd.read_csv(mock.catalogue)
    partial = tmp_path / "mock" / "partial.csv"
    full[["obsid", "file"]].to_csv(partial, index=False)          # no obsdate, lmjd, planid, z, snr...
    with pytest.warns(PartialCatalogueWarning, match="obsdate, lmjd, mjd, planid"):
        ingest(partial, tmp_path / "store_partial", "dr10", client=client)
    ingest(mock.catalogue, tmp_path / "store_full", "dr10", client=client)
    a, b = open_release(tmp_path / "store_partial").objects, open_release(tmp_path / "store_full").objects
    assert (a["status"] == "ok").all() and len(a) == 24
    pd.testing.assert_frame_equal(a.drop(columns=["file"]), b.drop(columns=["file"]))
