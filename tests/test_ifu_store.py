"""The IFU release store (survey_ml.store, kind "maps"): mock SAMI and MaNGA releases ingested on a real
LocalCluster, bad files flagged, idempotent re-runs, the real SAMI galaxy, and H-alpha moment
maps from a synthetic LOGCUBE."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from survey_ml.io.errors import SurveyFileError
from survey_ml.store import (HALPHA_VACUUM, MAP_ARRAYS, PREPARE_INPUTS, discover_ifu_files, ingest_ifu,
                                 moment_maps_from_cube, open_ifu_release)
from survey_ml.io.ifu import C_KMS, IFUCube
from survey_ml.io.manga import (DRP_DONOTUSE, log_mstar_h70, read_drpall, read_manga_logcube, read_manga_maps,
                                write_drpall, write_manga_logcube)
from survey_ml.io.sami import read_sami_maps, sami_filename
from survey_ml.simulate.ifu import simulate_ifu_release

N_SAMI, N_MANGA = 40, 20
SAMI_CHUNK, MANGA_CHUNK = 16, 8


def assert_same_maps(stored, read) -> None:
    for name in MAP_ARRAYS:
        np.testing.assert_array_equal(getattr(stored, name), getattr(read, name), err_msg=name)
    assert stored.pixel_scale == read.pixel_scale


def _copy_sami(src_catid: int, folder: Path, catid: int, cube: str = "A", skip: str | None = None) -> Path:
    """Copy a mock SAMI galaxy's three maps under another catid / cube; the new Halpha path."""
    folder.mkdir(parents=True, exist_ok=True)
    for quantity in ("Halpha", "gas-velocity", "gas-vdisp"):
        if quantity != skip:
            src = folder.parent / str(src_catid) / sami_filename(src_catid, quantity)
            shutil.copy(src, folder / sami_filename(catid, quantity, cube))
    return folder / sami_filename(catid, "Halpha", cube)


# ----------------------------------------------------------------------------- SAMI
@pytest.fixture(scope="module")
def sami_release(tmp_path_factory, client):
    """40 mock SAMI galaxies, plus a non-FITS, a truncated, a companion-less and a repeated cube."""
    mock = simulate_ifu_release(tmp_path_factory.mktemp("sami") / "release", N_SAMI, "sami", seed=11, client=client)
    ifs = mock.root / "ifs"
    not_fits = _copy_sami(9000001, ifs / "9000101", 9000101)
    not_fits.write_text("SIMPLE? no: this is a text file\n" * 100)
    truncated = _copy_sami(9000002, ifs / "9000102", 9000102)
    truncated.write_bytes(truncated.read_bytes()[:10000])
    no_vdisp = _copy_sami(9000003, ifs / "9000103", 9000103, skip="gas-vdisp")
    repeat = _copy_sami(9000004, ifs / "9000004", 9000004, cube="B")    # the same galaxy observed again
    expected = {str(not_fits): "unreadable", str(truncated): "truncated", str(no_vdisp): "missing",
                str(repeat): "duplicate"}
    return mock, expected


@pytest.fixture(scope="module")
def sami_store(sami_release, tmp_path_factory, client):
    """Ingested in two goes: 25 files first (a list), then the whole folder (appended, unaligned)."""
    mock, _ = sami_release
    store = tmp_path_factory.mktemp("sami_store") / "store"
    first = ingest_ifu(mock.files[:25], store, "sami-mock", "sami", catalogue=mock.catalogue, client=client,
                       chunk_rows=SAMI_CHUNK)
    second = ingest_ifu(mock.root, store, "sami-mock", "sami", catalogue=mock.catalogue, client=client)
    return store, first, second


def test_sami_rows_and_catalogue_join(sami_release, sami_store):
    mock, expected = sami_release
    store, first, second = sami_store
    release = open_ifu_release(store)
    g = release.galaxies
    assert (first.n_new, second.n_new) == (25, N_SAMI - 25 + len(expected))
    assert release.n_rows == len(g) == N_SAMI + len(expected) and g["row"].tolist() == list(range(len(g)))
    assert g["file"].is_unique and set(g["file"]) == set(mock.files) | set(expected)
    assert release.survey == "sami" and release.map_size == 50 and release.chunk_rows == SAMI_CHUNK
    assert not release.has_cubes and not (release.zarr_path / "cubes").exists()
    info = json.loads((store / "release.json").read_text())
    assert info["kind"] == "ifu" and info["release"] == "sami-mock" and info["map_size"] == 50

    truth = pd.read_parquet(mock.truth)
    ok = g[g["status"] == "ok"].merge(truth, on="catid", suffixes=("", "_truth"))
    assert len(ok) == N_SAMI and set(ok["file"]) == set(mock.files)      # every good galaxy kept
    assert (ok["id"] == ok["catid"].astype(str)).all()
    np.testing.assert_allclose(ok["log_mstar"], ok["log_mstar_truth"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(ok["z"], ok["z_truth"], atol=1e-9, rtol=0)
    np.testing.assert_allclose(ok["r_e_arcsec"], ok["r_e_arcsec_truth"], rtol=1e-9)
    np.testing.assert_allclose(ok["abs_mag_r"], ok["abs_mag_r_truth"], atol=1e-9)
    np.testing.assert_allclose(ok["ra"], ok["ra_truth"], atol=1e-9)
    assert (ok["n_good"] == ok["n_good_truth"]).all() and (ok["format"] == "sami_maps").all()
    assert g["plateifu"].isna().all() and np.isnan(g["instsigma"]).all()


def test_sami_maps_round_trip_and_chunks(sami_release, sami_store):
    mock, _ = sami_release
    release = open_ifu_release(sami_store[0])
    g = release.galaxies.set_index("file")
    for path in mock.files:
        row = int(g.loc[path, "row"])
        assert_same_maps(release.galaxy(row), read_sami_maps(path))
    flux = release.maps("flux")
    assert flux.shape == (release.n_rows, 50, 50) and flux.dtype == np.float32
    assert set(flux.chunks[0][:-1]) == {SAMI_CHUNK}                     # Dask chunks = Zarr chunks
    block = release.read_block(16, 32)
    assert set(block) == set(MAP_ARRAYS) | {"pixel_scale"} and block["good"].shape == (16, 50, 50)
    np.testing.assert_array_equal(block["velocity"], release.maps("velocity")[16:32].compute())
    np.testing.assert_array_equal(block["pixel_scale"], 0.5)


def test_sami_bad_files_are_flagged_with_a_message_naming_them(sami_release, sami_store):
    _, expected = sami_release
    g = open_ifu_release(sami_store[0]).galaxies.set_index("file")
    for path, status in expected.items():
        assert g.loc[path, "status"] == status, (path, g.loc[path, "message"])
        assert g.loc[path, "message"].startswith(path), g.loc[path, "message"]
    by_status = {s: g.loc[p, "message"] for p, s in expected.items()}
    assert "not a FITS file" in by_status["unreadable"] and "truncated" in by_status["truncated"]
    assert "gas-vdisp" in by_status["missing"]
    assert "9000004_A_Halpha" in by_status["duplicate"] and "duplicate id 9000004" in by_status["duplicate"]
    assert g.loc[[p for p, s in expected.items() if s == "truncated"], "id"].iloc[0] == "9000102"
    assert (g["status"] != "ok").sum() == len(expected)
    assert sami_store[2].status_counts == {"ok": N_SAMI - 25, **{s: 1 for s in expected.values()}}


def test_rerun_writes_nothing(sami_release, sami_store, client):
    mock, _ = sami_release
    store = sami_store[0]
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in store.rglob("*") if p.is_file()}
    report = ingest_ifu(mock.root, store, "sami-mock", "sami", catalogue=mock.catalogue, client=client)
    assert report.n_new == 0 and report.n_rows == N_SAMI + 4
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in store.rglob("*") if p.is_file()}
    assert after == before
    with pytest.raises(ValueError, match="holds a sami release"):
        ingest_ifu(mock.root, store, "sami-mock", "manga", client=False)


def test_prepare_galaxies_reads_a_block(sami_store):
    from survey_ml.core.maps import prepare_galaxies

    release = open_ifu_release(sami_store[0])
    out = prepare_galaxies(release.read_block(0, 3, PREPARE_INPUTS))
    assert out["m0"].shape == (3, 64, 64) and len(out["status"]) == 3


def test_real_sami_galaxy(real_fixtures, tmp_path, client):
    folder = real_fixtures / "sami"
    report = ingest_ifu(folder, tmp_path / "store", "sami-dr3", "sami",
                        catalogue=folder / "sami_InputCatGAMADR3.csv", client=client)
    release = open_ifu_release(tmp_path / "store")
    assert report.n_new == 1 and report.status_counts == {"ok": 1}
    row = release.galaxies.iloc[0]
    assert row["id"] == "209807" and row["catid"] == 209807 and row["status"] == "ok"
    assert row["log_mstar"] == pytest.approx(10.81) and row["z"] == pytest.approx(0.05386)
    assert row["r_e_arcsec"] == pytest.approx(3.48) and (row["ny"], row["nx"]) == (50, 50)
    read = read_sami_maps(folder / "209807_A_Halpha_default_1-comp.fits")
    assert_same_maps(release.galaxy(0), read)
    assert row["n_good"] == read.good.sum() > 0


# ----------------------------------------------------------------------------- MaNGA
@pytest.fixture(scope="module")
def manga_release(tmp_path_factory, client):
    """20 mock MaNGA galaxies, plus a MAPS without H-alpha, a truncated .gz and a repeated file."""
    mock = simulate_ifu_release(tmp_path_factory.mktemp("manga") / "release", N_MANGA, "manga", seed=5,
                                client=client)
    src = Path(mock.files[0])
    no_ha = mock.root / "bad" / "manga-29999-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz"
    no_ha.parent.mkdir()
    with fits.open(src) as hdul:
        for hdu in hdul[1:]:
            for key in [k for k, v in hdu.header.items() if v == "Ha-6564"]:
                hdu.header[key] = "Hx-6564"
        hdul.writeto(no_ha)
    truncated = mock.root / "bad" / "manga-29998-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    repeat = mock.root / "VOR10-MILESHC-MASTARSSP" / src.name.replace("HYB10", "VOR10")
    repeat.parent.mkdir()
    shutil.copy(src, repeat)
    return mock, {str(no_ha): "wrong_format", str(truncated): "truncated", str(repeat): "duplicate"}


@pytest.fixture(scope="module")
def manga_store(manga_release, tmp_path_factory, client):
    mock, _ = manga_release
    store = tmp_path_factory.mktemp("manga_store") / "store"
    report = ingest_ifu(mock.root, store, "manga-mock", "manga", catalogue=mock.catalogue, client=client,
                        chunk_rows=MANGA_CHUNK)
    return store, report


def test_manga_rows_catalogue_and_maps(manga_release, manga_store):
    mock, expected = manga_release
    store, report = manga_store
    release = open_ifu_release(store)
    g = release.galaxies
    assert report.n_new == release.n_rows == N_MANGA + len(expected) and release.map_size == 74
    truth = pd.read_parquet(mock.truth)
    ok = g[g["status"] == "ok"].merge(truth, on="plateifu", suffixes=("", "_truth"))
    assert len(ok) == N_MANGA and set(ok["file"]) == set(mock.files)
    drpall = read_drpall(mock.catalogue).set_index("plateifu").loc[ok["plateifu"]]
    np.testing.assert_allclose(ok["log_mstar"], log_mstar_h70(drpall["nsa_elpetro_mass"].to_numpy()), atol=1e-12)
    np.testing.assert_allclose(ok["log_mstar"], ok["log_mstar_truth"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(ok["abs_mag_r"], ok["abs_mag_r_truth"], atol=1e-4)   # NSA h=1 -> h=0.7
    np.testing.assert_allclose(ok["z"], ok["z_truth"], atol=1e-9)
    assert (ok["id"] == ok["plateifu"]).all() and (ok["mangaid"] == ok["mangaid_truth"]).all()
    assert (ok["catid"] == -1).all() and np.allclose(ok["instsigma"], 65.93)
    assert set(ok["ny"]) == {50, 74} and set(g["format"].dropna()) == {"manga_maps"}
    assert not release.has_cubes and not (release.zarr_path / "cubes").exists()    # MAPS go straight to maps/*

    size = release.map_size
    for path in mock.files[:6] + [f for f, n in zip(ok["file"], ok["ny"]) if n == 50][:3]:
        row = int(g.set_index("file").loc[path, "row"])
        read = read_manga_maps(path)
        assert_same_maps(release.galaxy(row), read)
        ny, nx = read.shape
        y0, x0 = (size - ny) // 2, (size - nx) // 2
        full = release.read_block(row, row + 1)
        inside = np.zeros((size, size), bool)
        inside[y0:y0 + ny, x0:x0 + nx] = True
        for name in ("flux", "velocity_err", "dispersion"):
            assert np.isnan(full[name][0][~inside]).all(), name          # NaN padding all round
            np.testing.assert_array_equal(full[name][0][inside].reshape(ny, nx), getattr(read, name))
        assert not full["good"][0][~inside].any()


def test_manga_bad_files(manga_release, manga_store):
    _, expected = manga_release
    g = open_ifu_release(manga_store[0]).galaxies.set_index("file")
    for path, status in expected.items():
        assert g.loc[path, "status"] == status, (path, g.loc[path, "message"])
        assert g.loc[path, "message"].startswith(path)
    messages = {s: g.loc[p, "message"] for p, s in expected.items()}
    assert "Ha-6564" in messages["wrong_format"] and "gzip" in messages["truncated"]
    assert "HYB10-MILESHC-MASTARSSP" in messages["duplicate"].split("already ingested from")[1]


def test_too_large_maps(manga_release, tmp_path):
    mock, _ = manga_release
    truth = pd.read_parquet(mock.truth)
    files = [str(mock.root / f) for f in truth.groupby("grid").head(2)["file"]]
    report = ingest_ifu(files, tmp_path / "s", "m", "manga", client=False, map_size=60)
    release = open_ifu_release(tmp_path / "s")
    g = release.galaxies
    assert report.status_counts == {"ok": 2, "too_large": 2} and release.map_size == 60
    for _, row in g.iterrows():
        block = release.read_block(row["row"], row["row"] + 1)
        if row["status"] == "too_large":
            assert row["message"].startswith(row["file"]) and "74 x 74" in row["message"] and row["ny"] == 74
            assert np.isnan(block["flux"]).all() and not block["good"].any()
        else:                                               # 50 x 50 centred in 60 x 60
            assert np.isnan(block["flux"][0, :5]).all() and np.isnan(block["flux"][0, :, 55:]).all()
            assert_same_maps(release.galaxy(row["row"]), read_manga_maps(row["file"]))


# ----------------------------------------------------------------------------- moment maps
MANGA_WAVE = 10 ** (3.5589 + 1e-4 * np.arange(4563))


def synthetic_cube(seed: int, shape=(10, 10), noise: float = 0.01, z: float = 0.03, instsigma: float = 66.0,
                   plateifu: str = "9999-1901"):
    """Gaussian H-alpha lines (velocity, intrinsic dispersion, flux per spaxel) on a sloped continuum."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    truth = {"velocity": rng.uniform(-200, 200, shape), "dispersion": rng.uniform(30, 120, shape),
             "flux": rng.uniform(200, 1000, shape)}
    lam_obs = HALPHA_VACUUM * (1 + z)
    centre = lam_obs * (1 + truth["velocity"] / C_KMS)
    width = lam_obs * np.hypot(truth["dispersion"], instsigma) / C_KMS
    wave = MANGA_WAVE[:, None, None]
    line = truth["flux"] / (np.sqrt(2 * np.pi) * width) * np.exp(-0.5 * ((wave - centre) / width) ** 2)
    continuum = 5 + 0.004 * (wave - 6700) + rng.uniform(-1, 1, shape)
    flux = (line + continuum + rng.normal(0, noise, (len(MANGA_WAVE), ny, nx))).astype(np.float32)
    cube = IFUCube(flux=flux, ivar=np.full(flux.shape, noise**-2, np.float32),
                   mask=np.zeros(flux.shape, np.int32), wave=MANGA_WAVE.copy(), pixel_scale=0.5,
                   meta={"plateifu": plateifu, "mangaid": "1-999", "objra": 10.0, "objdec": 5.0})
    return cube, truth


def test_moment_maps_recover_the_lines(tmp_path):
    cube, truth = synthetic_cube(1)
    cube.mask[:, 0, 0] = DRP_DONOTUSE                       # a dead spaxel
    cube.ivar[:, 0, 1] = 0                                  # no information
    path = write_manga_logcube(tmp_path / "manga-9999-1901-LOGCUBE.fits", cube)
    read = read_manga_logcube(path)
    read.meta["instsigma"] = 66.0
    maps = moment_maps_from_cube(read, 0.03)
    good = maps.good
    assert not good[0, 0] and not good[0, 1] and np.isnan(maps.velocity[0, 0]) and good.sum() == 98
    assert np.abs(maps.velocity - truth["velocity"])[good].max() < 3
    assert np.abs(maps.dispersion - truth["dispersion"])[good].max() < 5
    assert np.abs(maps.flux / truth["flux"] - 1)[good].max() < 0.03
    assert maps.velocity.dtype == np.float32 and maps.meta["flux_unit"] == "1E-17 erg/s/cm^2/spaxel"

    read.meta.pop("instsigma")                              # no instrumental sigma: the observed width
    observed = moment_maps_from_cube(read, 0.03).dispersion
    assert np.abs(observed - np.hypot(truth["dispersion"], 66.0))[good].max() < 3


def test_moment_map_errors_and_snr_mask():
    cube, truth = synthetic_cube(2, shape=(20, 20), noise=1.0)
    cube.meta["instsigma"] = 66.0
    cube.flux[:, 5, 5] = (5 + 0.004 * (MANGA_WAVE - 6700)).astype(np.float32)   # continuum only: S/N ~ 0
    maps = moment_maps_from_cube(cube, 0.03)
    assert not maps.good[5, 5] and maps.good.sum() > 350
    good = maps.good
    for name in ("flux", "velocity", "dispersion"):
        pull = ((getattr(maps, name) - truth[name]) / getattr(maps, f"{name}_err"))[good]
        assert 0.8 < np.std(pull) < 1.25, (name, np.std(pull))
    with pytest.raises(SurveyFileError, match="do not cover") as err:
        moment_maps_from_cube(cube, 0.6)
    assert err.value.code == "no_coverage"


def test_logcube_release(tmp_path, client):
    """LOGCUBE-only MaNGA: z from DRPall, else the header; neither -> no_redshift; maps as computed directly."""
    folder = tmp_path / "redux"
    folder.mkdir()
    cubes = {}
    for k, plateifu in enumerate(["9001-1901", "9002-1901", "9003-1901"]):
        cube, _ = synthetic_cube(10 + k, shape=(6, 6), noise=0.05, plateifu=plateifu)
        cubes[plateifu] = write_manga_logcube(folder / f"manga-{plateifu}-LOGCUBE.fits", cube)
    fits.setval(cubes["9002-1901"], "Z", value=0.03)                     # z only in the header
    table = pd.DataFrame({"plateifu": ["9001-1901"], "mangaid": ["1-999"], "objra": [10.0], "objdec": [5.0],
                          "z": [0.03], "nsa_z": [0.03], "nsa_elpetro_mass": [4.9e9], "nsa_sersic_mass": [4.9e9],
                          "nsa_elpetro_ba": [0.6], "nsa_elpetro_phi": [30.0], "nsa_elpetro_th50_r": [3.0],
                          "nsa_elpetro_absmag": [np.full(7, -20.0, np.float32)], "drp3qual": [0]})
    drpall = write_drpall(tmp_path / "drpall-v3_1_1.fits", table)
    gz = Path(str(cubes["9001-1901"]) + ".gz")                           # and a gzipped one
    gz.write_bytes(gzip.compress(cubes["9001-1901"].read_bytes()))
    cubes["9001-1901"].unlink()
    cubes["9001-1901"] = gz

    report = ingest_ifu(folder, tmp_path / "store", "manga-cubes", "manga", catalogue=drpall, client=client,
                        map_size=8)
    g = open_ifu_release(tmp_path / "store").galaxies.set_index("id")
    assert report.status_counts == {"ok": 2, "no_redshift": 1}
    assert g.loc["9003-1901", "format"] == "manga_logcube"               # its planes are kept, it has no maps
    assert np.isnan(g.loc["9003-1901", "z"]) and g.loc["9003-1901", "n_good"] == 0
    assert g.loc["9003-1901", "message"].startswith(str(cubes["9003-1901"]))
    assert g.loc["9001-1901", "log_mstar"] == pytest.approx(10.0) and np.isnan(g.loc["9002-1901", "log_mstar"])
    release = open_ifu_release(tmp_path / "store")
    for plateifu in ("9001-1901", "9002-1901"):
        assert g.loc[plateifu, "format"] == "manga_logcube" and g.loc[plateifu, "z"] == pytest.approx(0.03)
        direct = moment_maps_from_cube(read_manga_logcube(cubes[plateifu]), 0.03)   # the whole cube read
        stored = release.galaxy(int(g.loc[plateifu, "row"]))
        for name in MAP_ARRAYS:
            np.testing.assert_array_equal(getattr(stored, name), getattr(direct, name), err_msg=name)
        assert stored.good.sum() == 36
        # SPECRES -> the instrumental sigma, as MAPS give EMLINE_INSTSIGMA (dispersion stored uncorrected)
        assert 60 < g.loc[plateifu, "instsigma"] < 70

    # A MAPS file of the same plate-ifu found beside a LOGCUBE wins in folder discovery.
    maps_file = folder / "manga-9002-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz"
    maps_file.write_bytes(b"")
    found = discover_ifu_files(folder, "manga")
    assert str(maps_file) in found and str(cubes["9002-1901"]) not in found and len(found) == 3


def test_open_ifu_release_refuses_spectra_stores(tmp_path):
    (tmp_path / "release.json").write_text(json.dumps({"release": "dr10", "grid": {}, "chunk_rows": 8}))
    with pytest.raises(ValueError, match="not an IFU release store"):
        open_ifu_release(tmp_path)
