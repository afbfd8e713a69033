"""LAMOST LRS readers and writers: the real DR7 and DR8+ files, round trips, bad files."""
from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from survey_ml.io.errors import SurveyFileError
from survey_ml.io.lamost import (CATALOGUE_DTYPES, PartialCatalogueWarning, lamost_filename, read_lamost_catalogue,
                                 read_lamost_spectrum, write_lamost_catalogue, write_lamost_spectrum)
from survey_ml.simulate.parametric import make_lamost_spectrum

OLD = "spec-55859-F5902_sp01-001_dr7.fits.gz"
NEW = "spec-55859-F5902_sp01-013_dr8.fits.gz"
ARRAYS = ("flux", "ivar", "wavelength", "andmask", "ormask")


def assert_same(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    assert a.meta == b.meta or _meta_equal(a.meta, b.meta)


def _meta_equal(m1, m2):
    assert m1.keys() == m2.keys()
    for k in m1:
        v1, v2 = m1[k], m2[k]
        if isinstance(v1, float) and np.isnan(v1):
            assert np.isnan(v2), k
        else:
            assert v1 == v2, k
    return True


@pytest.mark.parametrize("name, layout, obsid, snrr, fibermask", [
    (OLD, "lamost-old", 101001, 27.16, 2), (NEW, "lamost-new", 101013, 8.79, 0)])
def test_real_files_read_exactly(real_fixtures, name, layout, obsid, snrr, fibermask):
    path = real_fixtures / "lamost" / name
    spec = read_lamost_spectrum(path)
    assert spec.format == layout and spec.path == str(path)
    assert spec.meta["obsid"] == obsid and spec.meta["snrr"] == snrr
    assert spec.meta["fibermask"] == fibermask
    assert spec.n_pix == 3908
    # Independent read with astropy by hand.
    with fits.open(path) as hdul:
        header = hdul[0].header
        if layout == "lamost-old":
            rows = hdul[0].data
            flux, ivar, wave, andmask, ormask = rows
        else:
            row = hdul["COADD"].data[0]
            flux, ivar, wave, andmask, ormask = (row[c] for c in ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK"))
        assert np.array_equal(spec.flux, flux) and np.array_equal(spec.ivar, ivar)
        assert np.array_equal(spec.wavelength, wave)
        assert np.array_equal(spec.andmask, andmask.astype(np.uint32))
        assert np.array_equal(spec.ormask, ormask.astype(np.uint32))
        for key in ("RA", "DEC", "Z", "Z_ERR", "SNRU", "SNRG", "SNRI", "SNRZ", "COEFF0", "COEFF1", "HELIO_RV"):
            assert spec.meta[key.lower()] == header[key], key
        for key in ("CLASS", "SUBCLASS", "PLANID", "DESIG", "OBJTYPE", "ZFLAG", "DATA_V"):
            assert spec.meta[key.lower()] == header[key].strip(), key
        for key in ("LMJD", "MJD", "SPID", "FIBERID", "NEXP"):
            assert spec.meta[key.lower()] == header[key], key
    # The log-linear dispersion: wavelength_i = 10**(COEFF0 + COEFF1 * i). The header rounds
    # COEFF0 to 4 decimals, so the stored float32 wavelengths agree to ~1e-3 of a pixel.
    expected = 10 ** (spec.meta["coeff0"] + spec.meta["coeff1"] * np.arange(spec.n_pix))
    dpix = np.abs(np.log10(spec.wavelength / expected)) / spec.meta["coeff1"]
    assert dpix.max() < 0.005
    assert spec.wavelength[0] == pytest.approx(3699.986, abs=1e-3)


def test_layout_specific_keywords(real_fixtures):
    old = read_lamost_spectrum(real_fixtures / "lamost" / OLD)
    new = read_lamost_spectrum(real_fixtures / "lamost" / NEW)
    assert old.meta["mags"]["MAG1"] == 18.78 and old.meta["fibertype"] == "Obj"
    assert new.meta["mags"]["MAG_PS_R"] == 17.72 and new.meta["norm"] == 0
    assert new.normalization is None  # NORM = 0: the column holds only -9999


@pytest.mark.parametrize("name", [OLD, NEW])
@pytest.mark.parametrize("suffix", [".fits", ".fits.gz"])
def test_real_files_read_write_read(real_fixtures, tmp_path, name, suffix):
    spec = read_lamost_spectrum(real_fixtures / "lamost" / name)
    layout = "old" if spec.format == "lamost-old" else "new"
    out = write_lamost_spectrum(tmp_path / f"copy{suffix}", spec, layout=layout)
    again = read_lamost_spectrum(out)
    assert again.format == spec.format
    assert_same(spec, again)
    with fits.open(out) as hdul:  # a valid FITS file by astropy's own checks
        hdul.verify("exception")


@pytest.mark.parametrize("layout", ["old", "new"])
def test_mock_round_trip(tmp_path, layout):
    spec, _ = make_lamost_spectrum(np.random.default_rng(3), 1_000_123, z=0.08, snr_r=12.0)
    spec.andmask[10:20] = 4  # masks survive as exact bit patterns
    spec.ormask[10:30] = 2**20 + 1
    spec.normalization = None if layout == "old" else np.linspace(1, 2, spec.n_pix, dtype=np.float32)
    path = write_lamost_spectrum(tmp_path / lamost_filename(58000, "MOCK1", 3, 7), spec, layout=layout)
    again = read_lamost_spectrum(path)
    for name in ARRAYS:
        assert np.array_equal(getattr(again, name), getattr(spec, name)), name
    assert {k: again.meta[k] for k in spec.meta} == spec.meta  # every field written comes back
    # ... and a second generation is identical in every array and field
    assert_same(again, read_lamost_spectrum(write_lamost_spectrum(tmp_path / "b.fits", again, layout=layout)))
    if layout == "new":
        assert np.array_equal(again.normalization, spec.normalization)


def test_writer_refuses_to_overwrite(tmp_path):
    spec, _ = make_lamost_spectrum(np.random.default_rng(0), 1, z=0.1, snr_r=10.0)
    path = write_lamost_spectrum(tmp_path / "a.fits", spec)
    with pytest.raises(FileExistsError):
        write_lamost_spectrum(path, spec)


def _cut_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_fits(path):
    path.write_text("obsid,ra,dec\n1,2,3\n")


def _empty(path):
    path.write_bytes(b"")


def _bad_gzip(path):
    data = bytearray(path.read_bytes())
    data[200:400] = b"\x00" * 200
    path.write_bytes(bytes(data))


def _sdss_like(path):
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.ones(5))], name="COADD")])
    with gzip.open(path, "wb") as fh:
        hdul.writeto(fh)


def _image_3_rows(path):
    with gzip.open(path, "wb") as fh:
        fits.PrimaryHDU(np.ones((3, 100), np.float32)).writeto(fh)


def _no_obsid(path):
    with fits.open(io.BytesIO(gzip.decompress(path.read_bytes()))) as hdul:
        hdul[0].header.remove("OBSID")
        with gzip.open(path, "wb") as fh:
            hdul.writeto(fh)


@pytest.mark.parametrize("damage, code, words", [
    (_cut_half, "truncated", "truncated"),
    (_not_fits, "unreadable", "not a FITS file"),
    (_empty, "truncated", "empty"),
    (_bad_gzip, "truncated", "gzip"),
    (_sdss_like, "wrong_format", "COADD table"),
    (_image_3_rows, "wrong_format", "5 rows"),
    (_no_obsid, "bad_header", "OBSID"),
])
def test_bad_files_raise_one_error_type(tmp_path, damage, code, words):
    spec, _ = make_lamost_spectrum(np.random.default_rng(1), 5, z=0.1, snr_r=10.0)
    path = tmp_path / "spec-58000-MOCK1_sp01-005.fits.gz"
    write_lamost_spectrum(path, spec, layout="old" if damage is _no_obsid else "new")
    damage(path)
    with pytest.raises(SurveyFileError) as info:
        read_lamost_spectrum(path)
    assert info.value.code == code
    assert str(path) in str(info.value) and words in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(SurveyFileError, match="does not exist") as info:
        read_lamost_spectrum(tmp_path / "nope.fits.gz")
    assert info.value.code == "missing"


def _catalogue(n=25):
    rng = np.random.default_rng(4)
    return pd.DataFrame({
        "obsid": np.arange(n) + 101001, "designation": [f"J{i:06d}" for i in range(n)],
        "obsdate": "2011-10-24", "lmjd": 55859, "mjd": 55858, "planid": "F5902", "spid": 1,
        "fiberid": np.arange(n) + 1, "ra_obs": rng.uniform(0, 360, n), "dec_obs": rng.uniform(-5, 60, n),
        "snru": 1.0, "snrg": 5.5, "snrr": rng.uniform(3, 30, n).round(2), "snri": 9.0, "snrz": 4.0,
        "class": "GALAXY", "subclass": "", "z": rng.uniform(0, 0.3, n), "z_err": 1e-5,
        "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-5, 60, n), "fibermask": 0,
        "mag_r": rng.uniform(14, 18, n),
    })


@pytest.mark.parametrize("suffix", [".csv", ".fits"])
def test_catalogue_round_trip_and_dtypes(tmp_path, suffix):
    df = _catalogue()
    path = write_lamost_catalogue(df, tmp_path / f"dr10_lrs{suffix}")
    got = read_lamost_catalogue(path)
    for col, dtype in CATALOGUE_DTYPES.items():
        assert str(got[col].dtype) == dtype, col
    assert got["obsid"].tolist() == df["obsid"].tolist()
    assert np.allclose(got["snrr"], df["snrr"].astype(np.float32))
    assert np.array_equal(got["ra"].to_numpy(), df["ra"].to_numpy())
    assert "mag_r" in got.columns


def test_catalogue_pipe_delimited_csv(tmp_path):
    path = tmp_path / "dr5.csv"
    _catalogue(3).to_csv(path, sep="|", index=False)
    got = read_lamost_catalogue(path)
    assert got["fiberid"].tolist() == [1, 2, 3]


def test_a_partial_catalogue_needs_only_obsid_and_a_file_name_and_says_what_it_lacks(tmp_path):
    path = tmp_path / "cat.csv"
    _catalogue(3).drop(columns=["snrr", "z", "obsdate"]).to_csv(path, index=False)
    with pytest.warns(PartialCatalogueWarning, match="lacks column.s. obsdate, snrr, z; ingest reads them") as info:
        got = read_lamost_catalogue(path)
    assert str(path) in str(info[0].message)
    assert got["z"].isna().all() and got["obsdate"].isna().all() and got["fiberid"].tolist() == [1, 2, 3]
    _catalogue(3)[["obsid"]].assign(filename=["a.fits", "b.fits", "c.fits"]).to_csv(path, index=False)
    with pytest.warns(PartialCatalogueWarning):
        assert read_lamost_catalogue(path)["filename"].tolist() == ["a.fits", "b.fits", "c.fits"]


def test_catalogue_errors_name_the_file(tmp_path):
    path = tmp_path / "cat.csv"
    _catalogue(3).drop(columns=["obsid"]).to_csv(path, index=False)
    with pytest.raises(SurveyFileError, match="needs obsid and a file name") as info:
        read_lamost_catalogue(path)
    assert str(path) in str(info.value) and info.value.code == "wrong_format"
    _catalogue(3).drop(columns=["spid"]).to_csv(path, index=False)
    with pytest.raises(SurveyFileError, match="lmjd, planid, spid and fiberid"):
        read_lamost_catalogue(path)
    bad = _catalogue(3)
    bad["lmjd"] = ["55859", "oops", "55860"]
    bad.to_csv(path, index=False)
    with pytest.raises(SurveyFileError, match="lmjd"):
        read_lamost_catalogue(path)


def _assert_identical(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    assert a.meta.keys() == b.meta.keys()
    for key, value in a.meta.items():
        other = b.meta[key]
        assert type(value) is type(other), key
        assert value == other or (isinstance(value, float) and np.isnan(value) and np.isnan(other)), key


def test_fast_reader_matches_astropy_on_real_files(real_fixtures):
    from survey_ml.io._fits import load_fits_bytes
    from survey_ml.io.lamost import _read_astropy, _read_fast

    for path in sorted((real_fixtures / "lamost").glob("spec-*.fits.gz")):
        raw = load_fits_bytes(str(path))
        _assert_identical(_read_fast(raw, str(path)), _read_astropy(raw, str(path)))


@pytest.mark.parametrize("layout", ["old", "new"])
def test_fast_reader_matches_astropy_on_written_files(tmp_path, layout):
    from survey_ml.io._fits import load_fits_bytes
    from survey_ml.io.lamost import _read_astropy, _read_fast

    rng = np.random.default_rng(8)
    for k in range(5):
        spec, _ = make_lamost_spectrum(rng, 7000 + k, z=0.05 * (k + 1), snr_r=5.0 + 5 * k)
        spec.andmask[k * 10: k * 10 + 7] = 2**k
        spec.meta["desig"] = "LAMOST J0000'quote"  # escaped quote in a string card
        path = write_lamost_spectrum(tmp_path / f"s{k}.fits", spec, layout=layout)
        raw = load_fits_bytes(path)
        _assert_identical(_read_fast(raw, path), _read_astropy(raw, path))
