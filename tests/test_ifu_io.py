"""IFU readers and writers (survey_ml.io.manga, survey_ml.io.sami): the real SAMI files of
galaxy 209807, MaNGA MAPS/LOGCUBE/DRPall round trips, H-alpha found by name, bad files."""
from __future__ import annotations

import doctest
import gzip

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from survey_ml.io.errors import SurveyFileError
from survey_ml.io import ifu, manga, sami
from survey_ml.io.ifu import IFUCube, IFUMaps
from survey_ml.io.manga import (DONOTUSE, NOVALUE, log_mstar_h70, read_drpall, read_manga_logcube,
                                read_manga_maps, write_drpall, write_manga_logcube, write_manga_maps)
from survey_ml.io.sami import (read_sami_catalogue, read_sami_gaskin_pa, read_sami_maps,
                               write_sami_catalogue, write_sami_maps)

CATID = 209807
MAP_ARRAYS = ("flux", "flux_err", "velocity", "velocity_err", "dispersion", "dispersion_err", "good")


def assert_maps_equal(a: IFUMaps, b: IFUMaps) -> None:
    for name in MAP_ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).shape == getattr(b, name).shape
    assert a.pixel_scale == b.pixel_scale


def make_maps(survey: str, seed: int = 0, shape: tuple[int, int] = (34, 32)) -> IFUMaps:
    """A rotating disc with noise: NaN outside an ellipse, a few spaxels flagged not good."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx] - np.array([(ny - 1) / 2, (nx - 1) / 2])[:, None, None]
    r = np.hypot(x, y / 0.7)
    inside = r < 0.45 * min(ny, nx)
    f32 = np.float32
    flux = (5 * np.exp(-r / 4) * rng.uniform(0.8, 1.2, shape)).astype(f32)
    flux_err = rng.uniform(0.01, 0.3, shape).astype(f32)
    velocity = (150 * np.tanh(x / 3) * 0.7 + rng.normal(0, 5, shape)).astype(f32)
    velocity_err = rng.uniform(1, 20, shape).astype(f32)
    dispersion = rng.uniform(30, 120, shape).astype(f32)
    dispersion_err = rng.uniform(1, 20, shape).astype(f32)
    arrays = [flux, flux_err, velocity, velocity_err, dispersion, dispersion_err]
    for arr in arrays:
        arr[~inside] = np.nan
    good = inside.copy()
    if survey == "manga":
        flux_err[~inside] = np.inf           # ivar 0, as the DAP writes
        velocity_err[~inside] = np.inf
        dispersion_err[~inside] = np.inf
        flagged = inside & (rng.uniform(size=shape) < 0.05)   # DONOTUSE with finite values
        good &= ~flagged
        meta = {"plateifu": "8485-1901", "mangaid": "1-209232", "objra": 232.544703894,
                "objdec": 48.6902009334, "scinpvel": 14630.0, "ecoopa": 47.5, "ecooell": 0.31,
                "reff": 4.2, "dapqual": 0, "drp3qual": 0, "daptype": "HYB10-MILESHC-MASTARSSP"}
    else:
        meta = {"ra": 135.021042, "dec": 0.079667, "z": 0.05386}
    return IFUMaps(*arrays, good=good, pixel_scale=0.5, meta=meta)


# ----------------------------------------------------------------------------- SAMI, real files
@pytest.fixture(scope="module")
def sami_dir(real_fixtures):
    folder = real_fixtures / "sami"
    if not (folder / f"{CATID}_A_Halpha_default_1-comp.fits").exists():
        pytest.skip(f"SAMI fixtures for {CATID} not found in {folder}")
    return folder


def test_real_sami_maps_read_exactly(sami_dir):
    maps = read_sami_maps(sami_dir / f"{CATID}_A_Halpha_default_1-comp.fits")
    expected = {}
    for quantity, err_name, names in (("Halpha", "HALPHA_ERR", ("flux", "flux_err")),
                                      ("gas-velocity", "V_ERR", ("velocity", "velocity_err")),
                                      ("gas-vdisp", "VDISP_ERR", ("dispersion", "dispersion_err"))):
        with fits.open(sami_dir / f"{CATID}_A_{quantity}_default_1-comp.fits") as hdul:
            assert hdul[0].data.shape == ((2, 50, 50) if quantity == "Halpha" else (1, 50, 50))
            assert hdul[err_name].data.shape == hdul[0].data.shape
            expected[names[0]] = hdul[0].data[0]          # Halpha: total; kinematics: component 1
            expected[names[1]] = hdul[err_name].data[0]
    for name, arr in expected.items():
        got = getattr(maps, name)
        assert got.dtype == np.float32 and got.shape == (50, 50)
        np.testing.assert_array_equal(got, arr, err_msg=name)   # NaNs compare equal
    good = np.ones((50, 50), bool)
    for name, arr in expected.items():
        good &= np.isfinite(arr) & ((arr > 0) if name.endswith("_err") else True)
    np.testing.assert_array_equal(maps.good, good)
    assert maps.good.sum() == 728
    assert maps.pixel_scale == 0.5
    assert maps.meta["catid"] == CATID and maps.meta["id"] == CATID and maps.meta["survey"] == "sami"
    assert maps.meta["ra"] == pytest.approx(135.021042) and maps.meta["dec"] == pytest.approx(0.079667)
    assert np.isnan(maps.meta["z"]) and maps.meta["n_components"] == 1
    assert maps.path.endswith(f"{CATID}_A_Halpha_default_1-comp.fits")
    # the same galaxy from the folder + catid
    assert_maps_equal(maps, read_sami_maps(sami_dir, catid=CATID))


def test_real_sami_halpha_planes_total_equals_component_1(sami_dir):
    """Documents the real 1-comp layout: plane 0 (total) and plane 1 (component 1) agree."""
    with fits.open(sami_dir / f"{CATID}_A_Halpha_default_1-comp.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data[0], hdul[0].data[1])
        assert "HALPHA_ERR" in hdul


def test_real_sami_maps_rewrite_round_trip(sami_dir, tmp_path):
    maps = read_sami_maps(sami_dir, catid=CATID)
    written = write_sami_maps(tmp_path, CATID, maps)
    assert [p.name for p in written] == [f"{CATID}_A_{q}_default_1-comp.fits"
                                         for q in ("Halpha", "gas-velocity", "gas-vdisp")]
    again = read_sami_maps(written[0])
    assert_maps_equal(maps, again)
    for name in ("ra", "dec", "catid", "cube", "binning", "components", "n_components", "bunit"):
        assert again.meta[name] == maps.meta[name]
    for quantity, err_name in sami.ERR_EXTENSIONS.items():   # same layout as the real files
        name = f"{CATID}_A_{quantity}_default_1-comp.fits"
        with fits.open(sami_dir / name) as real, fits.open(tmp_path / name) as ours:
            assert [h.name for h in ours] == [h.name for h in real] and ours[err_name].name == err_name
            assert ours[0].data.shape == real[0].data.shape and ours[0].data.dtype == real[0].data.dtype
            for key in ("CRPIX1", "CRPIX2", "CDELT1", "CDELT2", "CRVAL1", "CRVAL2", "CTYPE1", "BUNIT"):
                assert ours[0].header[key] == real[0].header[key], key


def test_real_sami_catalogue(sami_dir):
    cat = read_sami_catalogue(sami_dir / "sami_InputCatGAMADR3.csv")
    assert len(cat) == 5536 and not any(c.startswith("unnamed") or c == "" for c in cat.columns)
    for col, dtype in sami.CATALOGUE_DTYPES.items():
        assert str(cat[col].dtype) == dtype, col
    row = cat[cat.catid == CATID]
    assert len(row) == 1
    assert row.ra_obj.iloc[0] == pytest.approx(135.02105889) and row.z_spec.iloc[0] == pytest.approx(0.05386)
    assert row.mstar.iloc[0] == pytest.approx(10.81) and row.r_e.iloc[0] == pytest.approx(3.48)


def test_real_sami_gaskin_pa(sami_dir):
    pa = read_sami_gaskin_pa(sami_dir / "sami_samiDR3gaskinPA.csv")
    assert len(pa) == 3426 and {"catid", "pa_gaskin", "pa_gaskin_err", "cubeidpub"} <= set(pa.columns)
    assert pa.catid.dtype == np.int64 and pa.pa_gaskin.dtype == np.float64
    row = pa[pa.catid == CATID]
    assert len(row) == 1 and row.pa_gaskin.iloc[0] == 345.5 and row.cubeidpub.iloc[0] == f"{CATID}_A"
    assert pa.catid.duplicated().any()   # repeat observations (cubes B, C, D) are separate rows


def test_sami_catalogue_round_trip(sami_dir, tmp_path):
    cat = read_sami_catalogue(sami_dir / "sami_InputCatGAMADR3.csv").head(50)
    path = write_sami_catalogue(tmp_path / "cat.csv", cat)
    assert path.read_text().startswith(",catid,")   # the real layout: unnamed index column first
    pd.testing.assert_frame_equal(read_sami_catalogue(path), cat)


# ----------------------------------------------------------------------------- SAMI, synthetic
def test_sami_maps_round_trip_synthetic(tmp_path):
    maps = make_maps("sami", shape=(50, 50))
    rng = np.random.default_rng(3)
    nii = (rng.uniform(0, 1, (50, 50)).astype(np.float32),
           rng.uniform(0.01, 0.1, (50, 50)).astype(np.float32))
    written = write_sami_maps(tmp_path, 12345, maps, cube="B", lines={"NII6583": nii})
    assert written[-1].name == "12345_B_NII6583_default_1-comp.fits"
    again = read_sami_maps(tmp_path, catid=12345, cube="B")
    assert_maps_equal(maps, again)
    assert again.meta["z"] == maps.meta["z"] and again.meta["cube"] == "B"
    with fits.open(written[-1]) as hdul:
        assert hdul[0].data.shape == (50, 50) and hdul[1].name == "NII6583_ERR"
        np.testing.assert_array_equal(hdul[0].data, np.where(maps.good, nii[0], np.nan))


def test_sami_missing_map_names_the_file(tmp_path):
    maps = make_maps("sami", shape=(50, 50))
    written = write_sami_maps(tmp_path, 7, maps)
    written[2].unlink()
    with pytest.raises(SurveyFileError, match="7_A_gas-vdisp_default_1-comp.fits") as err:
        read_sami_maps(written[0])
    assert err.value.code == "missing"


def test_sami_bad_error_hdu(tmp_path):
    maps = make_maps("sami", shape=(50, 50))
    written = write_sami_maps(tmp_path, 7, maps)
    with fits.open(written[1]) as hdul:
        fits.HDUList([hdul[0].copy()]).writeto(written[1], overwrite=True)   # drop V_ERR
    with pytest.raises(SurveyFileError, match="V_ERR") as err:
        read_sami_maps(written[0])
    assert "gas-velocity" in str(err.value)


# ----------------------------------------------------------------------------- MaNGA MAPS
@pytest.mark.parametrize("name", ["maps.fits", "maps.fits.gz"])
def test_manga_maps_round_trip(tmp_path, name):
    maps = make_maps("manga")
    path = write_manga_maps(tmp_path / name, maps)
    again = read_manga_maps(path)
    assert_maps_equal(maps, again)
    assert again.meta["channels"] == list(manga.DEFAULT_CHANNELS) and again.meta["ha_channel"] == 3
    for key, value in maps.meta.items():
        assert again.meta[key] == value, key
    assert again.meta["id"] == "8485-1901" and again.meta["ra"] == maps.meta["objra"]
    assert again.meta["z"] == pytest.approx(14630.0 / 299792.458)
    assert again.meta["instsigma"] == pytest.approx(65.93, abs=0.01)   # R ~ 1931 at H-alpha
    assert again.flux.dtype == np.float32 and again.good.dtype == bool
    # the real DAP layout
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        for ext in ("SPX_SKYCOO", "SPX_ELLCOO", "SPX_SNR", "BINID", "EMLINE_GFLUX", "EMLINE_GFLUX_IVAR",
                    "EMLINE_GFLUX_MASK", "EMLINE_GVEL", "EMLINE_GVEL_IVAR", "EMLINE_GVEL_MASK",
                    "EMLINE_GSIGMA", "EMLINE_GSIGMA_IVAR", "EMLINE_GSIGMA_MASK", "EMLINE_INSTSIGMA"):
            assert ext in names, ext
        for key in manga.MAPS_FIELDS:
            assert key in hdul[0].header, key
        assert hdul["SPX_ELLCOO"].data.shape == (4, 34, 32) and hdul["BINID"].data.dtype.kind == "i"
        assert hdul["EMLINE_GFLUX"].data.dtype == np.dtype(">f4")
        assert hdul["EMLINE_GVEL_MASK"].data.dtype == np.dtype(">i4")
        assert hdul["EMLINE_GFLUX"].header["C04"] == "Ha-6564" and hdul["EMLINE_GFLUX"].data.shape[0] == 5
        mask = hdul["EMLINE_GFLUX_MASK"].data[3]
        # unmeasured spaxels: value 0 with NOVALUE|DONOTUSE, as the DAP writes them
        outside = ~np.isfinite(maps.flux)
        assert (hdul["EMLINE_GFLUX"].data[3][outside] == 0).all() and (mask[outside] & NOVALUE).all()
        assert ((mask & DONOTUSE) != 0).sum() == (~maps.good).sum()
        for i in (0, 1, 2, 4):   # other channels filled plausibly
            assert np.isfinite(hdul["EMLINE_GFLUX"].data[i]).all()


@pytest.mark.parametrize("channels, key", [
    (("Ha-6564", "OII-3727", "Hb-4862"), "C{:02d}"),          # H-alpha first
    (("OII-3727", "Hb-4862", "OIII-5008", "NII-6585", "Ha-6564"), "C{:d}"),   # last, unpadded keys
    (tuple(f"L{i}-{4000 + i}" for i in range(23)) + ("Ha-6564", "NII-6585"), "C{:02d}"),  # C24 as in DR17
])
def test_manga_halpha_found_by_name(tmp_path, channels, key):
    maps = make_maps("manga", seed=1)
    path = write_manga_maps(tmp_path / "m.fits", maps, channels=channels, channel_key=key)
    again = read_manga_maps(path)
    assert again.meta["ha_channel"] == channels.index("Ha-6564")
    assert again.meta["instsigma"] == pytest.approx(65.93, abs=0.01)   # its own channel, by name
    assert_maps_equal(maps, again)


def test_manga_instsigma_from_meta(tmp_path):
    maps = make_maps("manga")
    maps.meta["instsigma"] = 70.0
    again = read_manga_maps(write_manga_maps(tmp_path / "m.fits", maps))
    assert again.meta["instsigma"] == 70.0


def test_manga_no_halpha_channel(tmp_path):
    path = write_manga_maps(tmp_path / "noha.fits", make_maps("manga"))
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            for k in [k for k, v in hdu.header.items() if v == "Ha-6564"]:
                hdu.header[k] = "Hx-6564"
        hdul.writeto(path, overwrite=True)
    with pytest.raises(SurveyFileError, match="Ha-6564") as err:
        read_manga_maps(path)
    assert "noha.fits" in str(err.value) and err.value.code == "wrong_format"


def test_manga_truncated_and_not_fits(tmp_path):
    path = write_manga_maps(tmp_path / "manga-1-2-MAPS.fits.gz", make_maps("manga"))
    blob = path.read_bytes()
    cut = tmp_path / "manga-cut-MAPS.fits.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SurveyFileError, match="manga-cut-MAPS.fits.gz") as err:
        read_manga_maps(cut)
    assert err.value.code == "truncated"
    plain = tmp_path / "manga-cut-MAPS.fits"       # truncated plain FITS too
    plain.write_bytes(gzip.decompress(blob)[:-2880 * 3])
    with pytest.raises(SurveyFileError, match="manga-cut-MAPS.fits"):
        read_manga_maps(plain)
    text = tmp_path / "notes-MAPS.fits"
    text.write_text("plateifu,ra\n8485-1901,232.5\n")
    with pytest.raises(SurveyFileError, match="notes-MAPS.fits.*not a FITS file"):
        read_manga_maps(text)
    with pytest.raises(SurveyFileError, match="does not exist"):
        read_manga_maps(tmp_path / "absent.fits")


@pytest.mark.parametrize("drop, reshape", [("EMLINE_GSIGMA_IVAR", None), (None, "EMLINE_GVEL")])
def test_manga_missing_extension_or_shape_mismatch(tmp_path, drop, reshape):
    path = write_manga_maps(tmp_path / "bad.fits", make_maps("manga"))
    with fits.open(path) as hdul:
        hdus = [h.copy() for h in hdul if h.name != drop]
        if reshape:
            target = next(h for h in hdus if h.name == reshape)
            target.data = target.data[:, :-1, :]
        fits.HDUList(hdus).writeto(path, overwrite=True)
    with pytest.raises(SurveyFileError, match=drop or reshape) as err:
        read_manga_maps(path)
    assert "bad.fits" in str(err.value) and err.value.code == "wrong_format"


def test_manga_donotuse_and_ivar_zero_not_good(tmp_path):
    maps = make_maps("manga", seed=2)
    path = write_manga_maps(tmp_path / "m.fits", maps)
    j, i = 17, 16
    assert maps.good[j, i]
    with fits.open(path) as hdul:
        ha = manga.channel_names(hdul["EMLINE_GFLUX"].header).index("Ha-6564")
        hdul["EMLINE_GVEL_MASK"].data[ha, j, i] |= DONOTUSE      # bit 30 alone
        hdul["EMLINE_GSIGMA_IVAR"].data[ha, j, i + 1] = 0.0       # no error known
        hdul["EMLINE_GFLUX_IVAR"].data[ha, j, i + 2] = -1.0
        hdul["EMLINE_GFLUX_MASK"].data[0, j, i + 3] |= DONOTUSE   # another channel: no effect
        hdul.writeto(path, overwrite=True)
    again = read_manga_maps(path)
    assert not again.good[j, i] and np.isfinite(again.velocity[j, i])   # flagged, value kept
    assert not again.good[j, i + 1] and again.dispersion_err[j, i + 1] == np.inf
    assert not again.good[j, i + 2] and again.flux_err[j, i + 2] == np.inf
    assert again.good[j, i + 3]
    assert again.good.sum() == maps.good.sum() - 3


# ----------------------------------------------------------------------------- LOGCUBE, DRPall
@pytest.mark.parametrize("name", ["manga-8485-1901-LOGCUBE.fits", "manga-8485-1901-LOGCUBE.fits.gz"])
def test_manga_logcube_round_trip(tmp_path, name):
    rng = np.random.default_rng(4)
    nwave, ny, nx = 4563, 5, 4
    wave = 10 ** (3.5589 + 1e-4 * np.arange(nwave))
    mask = np.where(rng.uniform(size=(nwave, ny, nx)) < 0.02, manga.DRP_DONOTUSE, 0).astype(np.int32)
    cube = IFUCube(flux=rng.normal(1, 0.3, (nwave, ny, nx)).astype(np.float32),
                   ivar=rng.uniform(0, 50, (nwave, ny, nx)).astype(np.float32), mask=mask, wave=wave,
                   pixel_scale=0.5, meta={"plateifu": "8485-1901", "mangaid": "1-209232",
                                          "objra": 232.544703894, "objdec": 48.6902009334, "drp3qual": 0})
    path = write_manga_logcube(tmp_path / name, cube)
    again = read_manga_logcube(path)
    for attr, dtype in (("flux", np.float32), ("ivar", np.float32), ("mask", np.int32), ("wave", np.float64)):
        np.testing.assert_array_equal(getattr(again, attr), getattr(cube, attr), err_msg=attr)
        assert getattr(again, attr).dtype == dtype
    assert again.pixel_scale == 0.5
    assert again.meta["plateifu"] == "8485-1901" and again.meta["id"] == "8485-1901"
    assert again.meta["ra"] == cube.meta["objra"] and again.meta["drp3qual"] == 0
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "FLUX", "IVAR", "MASK", "WAVE", "SPECRES"]
        assert hdul["FLUX"].header["CRVAL3"] == pytest.approx(wave[0])


def test_manga_logcube_bad_wave(tmp_path):
    cube = IFUCube(np.zeros((10, 3, 3), np.float32), np.ones((10, 3, 3), np.float32),
                   np.zeros((10, 3, 3), np.int32), np.linspace(3600, 3700, 10), 0.5,
                   {"plateifu": "1-2", "objra": 1.0, "objdec": 2.0})
    path = write_manga_logcube(tmp_path / "c.fits", cube)
    with fits.open(path) as hdul:
        hdul["WAVE"].data = hdul["WAVE"].data[:-1]
        hdul.writeto(path, overwrite=True)
    with pytest.raises(SurveyFileError, match="c.fits: WAVE"):
        read_manga_logcube(path)


def _drpall_table(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    absmag = rng.uniform(-23, -15, (n, 7)).astype(np.float32)
    return pd.DataFrame({
        "plateifu": [f"84{i:02d}-1901" for i in range(n)], "mangaid": [f"1-{200000 + i}" for i in range(n)],
        "objra": rng.uniform(0, 360, n), "objdec": rng.uniform(-10, 70, n),
        "z": rng.uniform(0.01, 0.15, n).astype(np.float32),
        "nsa_z": rng.uniform(0.01, 0.15, n).astype(np.float32),
        "nsa_elpetro_mass": (10 ** rng.uniform(8, 11, n)).astype(np.float32),
        "nsa_sersic_mass": (10 ** rng.uniform(8, 11, n)).astype(np.float32),
        "nsa_elpetro_ba": rng.uniform(0.2, 1, n).astype(np.float32),
        "nsa_elpetro_phi": rng.uniform(0, 180, n).astype(np.float32),
        "nsa_elpetro_th50_r": rng.uniform(1, 10, n).astype(np.float32),
        "nsa_elpetro_absmag": list(absmag), "drp3qual": rng.integers(0, 2, n).astype(np.int32),
    })


@pytest.mark.parametrize("name", ["drpall-v3_1_1.fits", "drpall-v3_1_1.fits.gz"])
def test_drpall_round_trip(tmp_path, name):
    table = _drpall_table()
    path = write_drpall(tmp_path / name, table)
    with fits.open(path) as hdul:
        assert hdul[1].name == "MANGA" and "nsa_elpetro_absmag" in hdul[1].columns.names
        assert hdul[1].columns["nsa_elpetro_absmag"].format == "7E"
    df = read_drpall(path)
    scalars = [c for c in table.columns if c != "nsa_elpetro_absmag"]
    pd.testing.assert_frame_equal(df[scalars], table[scalars], check_dtype=False)
    for col in scalars:
        assert df[col].dtype.kind == table[col].dtype.kind or col in ("plateifu", "mangaid"), col
    absmag = np.stack(table.nsa_elpetro_absmag)
    np.testing.assert_array_equal(np.stack(df.nsa_elpetro_absmag), absmag)
    np.testing.assert_array_equal(df.nsa_elpetro_absmag_r, absmag[:, 4])
    np.testing.assert_array_equal(df.nsa_elpetro_absmag_f, absmag[:, 0])
    # written again from what was read (derived band columns are not duplicated in the file)
    again = read_drpall(write_drpall(tmp_path / ("2" + name), df))
    assert list(again.columns) == list(df.columns)


def test_drpall_missing_column_and_wrong_hdu(tmp_path):
    table = _drpall_table().drop(columns="nsa_sersic_mass")
    with pytest.raises(ValueError, match="nsa_sersic_mass"):
        write_drpall(tmp_path / "d.fits", table)
    path = tmp_path / "d.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("plateifu", "10A", array=["1-2"])], name="MANGA")]).writeto(path)
    with pytest.raises(SurveyFileError, match="d.fits: DRPall table MANGA lacks column.*nsa_z"):
        read_drpall(path)
    other = tmp_path / "e.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("x", "E", array=[1.0])], name="MASTAR")]).writeto(other)
    with pytest.raises(SurveyFileError, match="MANGA"):
        read_drpall(other)


def test_log_mstar_h70():
    assert log_mstar_h70(4.9e9) == pytest.approx(10.0)
    assert log_mstar_h70(1e10) == pytest.approx(10 + np.log10(1 / 0.49))
    out = log_mstar_h70(np.array([4.9e10, 0.0, -9999.0, np.nan]))
    assert out[0] == pytest.approx(11.0) and np.isnan(out[1:]).all()


@pytest.mark.parametrize("module", [ifu, manga, sami], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
