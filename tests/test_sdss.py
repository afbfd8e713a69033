"""SDSS spec-lite and MPA-JHU galSpec readers/writers (survey_ml.io.sdss)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from survey_ml.io.errors import SurveyFileError
from survey_ml.io.sdss import read_galspec, read_sdss_spectrum, write_galspec, write_sdss_spectrum
from survey_ml.io.spectrum import Spectrum

N_PIX = 3000


def _f32(x: float) -> float:
    """A float the float32 columns of HDU2 hold exactly."""
    return float(np.float32(x))


def make_spectrum(seed: int = 0, plate: int = 1234) -> Spectrum:
    rng = np.random.default_rng(seed)
    loglam = (np.float32(3.5523) + np.float32(1e-4) * np.arange(N_PIX, dtype=np.float32))
    andmask = rng.integers(0, 2, N_PIX, dtype=np.uint32) << np.uint32(31)  # sign bit of int32
    return Spectrum(
        flux=rng.normal(10, 3, N_PIX).astype(np.float32),
        ivar=rng.uniform(0, 2, N_PIX).astype(np.float32),
        wavelength=10.0 ** loglam.astype(np.float64),
        andmask=andmask,
        ormask=andmask | rng.integers(0, 1 << 20, N_PIX, dtype=np.uint32),
        meta={"plate": plate, "mjd": 52000, "fiberid": 42, "specobjid": 1389395046911092736,
              "ra": 123.456789012, "dec": -1.23456789012, "class": "GALAXY",
              "subclass": "STARFORMING", "z": _f32(0.0812), "z_err": _f32(1.3e-5),
              "zwarning": 4, "sn_median_all": _f32(17.25), "vdisp": _f32(143.5)},
        extra={name: rng.normal(size=N_PIX).astype(np.float32)
               for name in ("wdisp", "sky", "model")},
    )


def assert_same_spectrum(got: Spectrum, want: Spectrum) -> None:
    for name in ("flux", "ivar", "wavelength", "andmask", "ormask"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got.extra.keys() == want.extra.keys()
    for name, arr in want.extra.items():
        assert got.extra[name].dtype == np.float32
        np.testing.assert_array_equal(got.extra[name], arr, err_msg=name)


@pytest.mark.parametrize("suffix", [".fits", ".fits.gz"])
def test_round_trip(tmp_path, suffix):
    spec = make_spectrum()
    path = tmp_path / f"spec-1234-52000-0042{suffix}"
    write_sdss_spectrum(path, spec)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == suffix.endswith(".gz")

    got = read_sdss_spectrum(path)
    assert_same_spectrum(got, spec)
    assert got.meta == {**spec.meta, "obsid": np.int64(1389395046911092736)}
    assert isinstance(got.meta["obsid"], np.int64)
    assert got.format == "sdss-spec" and got.path == str(path)
    assert got.good.sum() == np.count_nonzero((spec.ivar > 0) & (spec.andmask == 0))

    # the file follows the real spec-lite model
    with fits.open(path) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "COADD", "SPECOBJ"]
        assert dict(zip(hdul[1].columns.names, hdul[1].columns.formats)) == {
            "flux": "E", "loglam": "E", "ivar": "E", "and_mask": "J", "or_mask": "J",
            "wdisp": "E", "sky": "E", "model": "E"}
        assert hdul[0].header["PLATEID"] == 1234 and hdul[0].header["FIBERID"] == 42
        assert len(hdul[2].data) == 1

    # a second round trip changes nothing
    again = tmp_path / f"again{suffix}"
    write_sdss_spectrum(again, got)
    assert read_sdss_spectrum(again).meta == got.meta
    with pytest.raises(OSError):
        write_sdss_spectrum(again, got)
    write_sdss_spectrum(again, got, overwrite=True)


def test_hdu2_read_by_index_spall_and_case_insensitive(tmp_path):
    spec = make_spectrum()
    path = tmp_path / "spec.fits"
    write_sdss_spectrum(path, spec)
    with fits.open(path) as hdul:
        primary, coadd, specobj = (hdu.copy() for hdu in hdul)
    # BOSS files: HDU2 named SPALL; also upper-case COADD and lower-case HDU2 columns
    coadd = fits.BinTableHDU.from_columns(
        [fits.Column(name=c.name.upper(), format=c.format, array=coadd.data[c.name])
         for c in coadd.columns], name="COADD")
    spall = fits.BinTableHDU.from_columns(
        [fits.Column(name=c.name.lower(), format=c.format, array=specobj.data[c.name])
         for c in specobj.columns], name="SPALL")
    spall_path = tmp_path / "spec-spall.fits"
    fits.HDUList([primary, coadd, spall]).writeto(spall_path)

    got = read_sdss_spectrum(spall_path)
    assert_same_spectrum(got, spec)
    assert got.meta == read_sdss_spectrum(path).meta


def test_specobjid_beyond_int64_wraps(tmp_path):
    spec = make_spectrum(plate=9000)
    del spec.meta["specobjid"]  # the writer packs it from plate/fiber/MJD, as SDSS does
    path = tmp_path / "spec.fits"
    write_sdss_spectrum(path, spec)
    meta = read_sdss_spectrum(path).meta
    expected = (9000 << 50) | (42 << 38) | (2000 << 24)
    assert meta["specobjid"] == expected > np.iinfo(np.int64).max
    assert meta["obsid"] == np.int64(expected - (1 << 64)) < 0


def test_sn_median_per_band_takes_r(tmp_path):
    spec = make_spectrum()
    path = tmp_path / "spec.fits"
    write_sdss_spectrum(path, spec)
    with fits.open(path) as hdul:
        cols = [c for c in hdul[2].columns if c.name != "SN_MEDIAN_ALL"]
        cols.append(fits.Column(name="SN_MEDIAN_ALL", format="5E",
                                array=np.array([[1, 2, 7.5, 4, 5]], dtype=np.float32)))
        hdul[2] = fits.BinTableHDU.from_columns(cols, name="SPECOBJ")
        hdul.writeto(tmp_path / "sn5.fits")
    assert read_sdss_spectrum(tmp_path / "sn5.fits").meta["sn_median_all"] == 7.5


def _truncated(path: Path) -> None:
    write_sdss_spectrum(path, make_spectrum())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name, make_file", [
    ("spec.fits", _truncated),
    ("spec.fits.gz", _truncated),
    ("spec.fits", lambda path: path.write_text("plate,mjd\n1,2\n")),  # not FITS
    ("spec.fits", lambda path: path.write_bytes(b"")),  # empty
    ("missing.fits", lambda path: None),
], ids=["truncated", "truncated-gz", "not-fits", "empty", "missing"])
def test_unreadable_files_raise_with_path(tmp_path, name, make_file):
    path = tmp_path / name
    make_file(path)
    with pytest.raises(SurveyFileError) as info:
        read_sdss_spectrum(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def _image_only(path: Path) -> None:
    fits.PrimaryHDU(np.zeros((5, 10), np.float32)).writeto(path)


def _lamost_new_like(path: Path) -> None:
    primary = fits.PrimaryHDU()
    primary.header.update({"TELESCOP": "LAMOST", "DATA_V": "LAMOST DR9"})
    cols = [fits.Column(name=name, format="10E", array=np.ones((1, 10), np.float32))
            for name in ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK", "NORMALIZATION")]
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="COADD")]).writeto(path)


def _without_hdu2(path: Path) -> None:
    write_sdss_spectrum(path, make_spectrum())
    with fits.open(path) as hdul:
        fits.HDUList([hdul[0].copy(), hdul[1].copy()]).writeto(path, overwrite=True)


def _without_sky(path: Path) -> None:
    write_sdss_spectrum(path, make_spectrum())
    with fits.open(path) as hdul:
        hdul[1] = fits.BinTableHDU.from_columns(
            [c for c in hdul[1].columns if c.name != "sky"], name="COADD")
        hdul.writeto(path, overwrite=True)


def _two_rows(path: Path) -> None:
    write_sdss_spectrum(path, make_spectrum())
    with fits.open(path) as hdul:
        hdul[2] = fits.BinTableHDU.from_columns(hdul[2].columns, nrows=2, name="SPECOBJ")
        hdul.writeto(path, overwrite=True)


@pytest.mark.parametrize("writer, expected", [
    (_image_only, "HDU1 (COADD) must be a binary table but is absent"),
    (_lamost_new_like, "LAMOST"),
    (_without_hdu2, "HDU2 (SPECOBJ/SPALL) must be a binary table but is absent"),
    (_without_sky, "lacks column(s) sky"),
    (_two_rows, "must have one row, has 2"),
])
def test_wrong_structure(tmp_path, writer, expected):
    path = tmp_path / "spec.fits"
    writer(path)
    with pytest.raises(SurveyFileError) as info:
        read_sdss_spectrum(path)
    assert info.value.code == "wrong_format"
    assert str(path) in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize("name", ["spec-55859-F5902_sp01-001_dr7.fits.gz",
                                  "spec-55859-F5902_sp01-013_dr8.fits.gz"])
def test_real_lamost_file_is_rejected(real_fixtures, name):
    path = real_fixtures / "lamost" / name
    with pytest.raises(SurveyFileError) as info:
        read_sdss_spectrum(path)
    assert info.value.code == "wrong_format"
    assert str(path) in str(info.value) and "LAMOST" in str(info.value)


def test_writer_rejects_incomplete_spectrum(tmp_path):
    spec = make_spectrum()
    del spec.meta["z"]
    with pytest.raises(ValueError, match="lacks z"):
        write_sdss_spectrum(tmp_path / "a.fits", spec)
    spec = make_spectrum()
    spec.extra["sky"] = spec.extra["sky"][:-1]
    with pytest.raises(ValueError, match="sky"):
        write_sdss_spectrum(tmp_path / "b.fits", spec)


# --- MPA-JHU galSpec -------------------------------------------------------------------------

def make_galspec(n: int = 40, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f4 = lambda lo, hi: rng.uniform(lo, hi, n).astype(np.float32)  # noqa: E731
    df = pd.DataFrame({
        "plateid": rng.integers(266, 3000, n).astype(np.int16),
        "mjd": rng.integers(51600, 55000, n).astype(np.int32),
        "fiberid": rng.integers(1, 641, n).astype(np.int16),
        "ra": f4(0, 360), "dec": f4(-10, 70), "z": f4(0.01, 0.3),
        "reliable": rng.integers(0, 2, n).astype(np.int16),
    })
    for line in ("h_alpha_flux", "h_beta_flux", "oiii_5007_flux", "nii_6584_flux"):
        df[line], df[f"{line}_err"] = f4(0, 500), f4(1, 20)
    df["bptclass"] = rng.choice(np.array([-1, 1, 2, 3, 4, 5], np.int16), n)
    for pct, base in zip(("p2p5", "p16", "p50", "p84", "p97p5"), (8.5, 8.6, 8.7, 8.8, 8.9)):
        df[f"oh_{pct}"] = np.float32(base) + f4(0, 0.05)
    df["lgm_tot_p50"], df["lgm_fib_p50"], df["sfr_tot_p50"] = f4(9, 11.5), f4(8, 11), f4(-2, 1.5)
    return df


def _galspec_paths(tmp_path: Path, tag: str) -> tuple[Path, Path, Path]:
    return tuple(tmp_path / f"galSpec{kind}-{tag}.fits" for kind in ("Info", "Line", "Extra"))


def test_galspec_round_trip(tmp_path):
    df = make_galspec()
    info, line, extra = _galspec_paths(tmp_path, "dr8")
    write_galspec(df, info, line, extra)

    got = read_galspec(info, line, extra)
    pd.testing.assert_frame_equal(got, df)
    assert all(dtype.byteorder in "=|" for dtype in got.dtypes)
    assert set(got["bptclass"]) <= {-1, 1, 2, 3, 4, 5}

    with fits.open(line) as hdul:  # real files carry upper-case names, big-endian on disk
        assert "H_ALPHA_FLUX_ERR" in hdul[1].columns.names
    pd.testing.assert_frame_equal(read_galspec(info), df[list(df.columns[:7])])
    pd.testing.assert_frame_equal(read_galspec(info, extra_path=extra),
                                  df[list(df.columns[:7]) + list(df.columns[15:])])


def test_galspec_names_case_insensitive(tmp_path):
    df = make_galspec(n=5)
    info, line, extra = _galspec_paths(tmp_path, "a")
    write_galspec(df.rename(columns=str.upper), info, line, extra)
    with fits.open(extra) as hdul:
        hdul[1] = fits.BinTableHDU.from_columns(
            [fits.Column(name=c.name.lower(), format=c.format, array=hdul[1].data[c.name])
             for c in hdul[1].columns])
        hdul.writeto(extra, overwrite=True)
    pd.testing.assert_frame_equal(read_galspec(info, line, extra), df)


def test_galspec_row_count_mismatch(tmp_path):
    df = make_galspec()
    info, line, extra = _galspec_paths(tmp_path, "full")
    write_galspec(df, info, line, extra)
    _, short_line, short_extra = _galspec_paths(tmp_path, "short")
    write_galspec(df.iloc[:-3], tmp_path / "unused.fits", short_line, short_extra)

    with pytest.raises(SurveyFileError) as info_err:
        read_galspec(info, short_line, extra)
    message = str(info_err.value)
    assert info_err.value.code == "wrong_format"
    assert str(short_line) in message and str(info) in message
    assert "37 rows" in message and "has 40" in message

    with pytest.raises(SurveyFileError, match="galSpecExtra has 37 rows"):
        read_galspec(info, extra_path=short_extra)


def test_galspec_missing_column_and_bad_file(tmp_path):
    df = make_galspec(n=5)
    info, line, extra = _galspec_paths(tmp_path, "x")
    write_galspec(df, info, line, extra)
    with fits.open(extra) as hdul:
        hdul[1] = fits.BinTableHDU.from_columns(
            [c for c in hdul[1].columns if c.name != "BPTCLASS"])
        hdul.writeto(extra, overwrite=True)
    with pytest.raises(SurveyFileError, match=r"galSpecExtra\) lacks column\(s\) bptclass"):
        read_galspec(info, line, extra)

    line.write_bytes(line.read_bytes()[:3000])
    with pytest.raises(SurveyFileError) as err:
        read_galspec(info, line)
    assert str(line) in str(err.value)

    with pytest.raises(ValueError, match="oh_p50"):
        write_galspec(df.drop(columns="oh_p50"), *_galspec_paths(tmp_path, "y"))
    assert not _galspec_paths(tmp_path, "y")[0].exists()
