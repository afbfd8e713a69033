"""MaNGA LOGCUBEs in the IFU store (survey_ml.store, kind "maps"): cube planes in Zarr, then H-alpha moment
maps as a separate Dask step on those chunks, on a real LocalCluster with real LOGCUBE files."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_ml.store import (CUBE_ARRAYS, CUBE_FILL, MAP_ARRAYS, MANGA_LOGCUBE_GRID, PREPARE_INPUTS, ingest_ifu,
                                 moment_maps_from_store, open_ifu_release)
from survey_ml.io.ifu import C_KMS, IFUCube
from survey_ml.io.manga import DRP_DONOTUSE, read_manga_logcube, write_drpall, write_manga_logcube
from survey_ml.core.moments import HALPHA_VACUUM, halpha_planes, halpha_window, moment_maps_from_cube

WAVE = MANGA_LOGCUBE_GRID.wavelength()
#: Redshifts of the good cubes: H-alpha in wavelength chunk 10, 10-11, 11, 11-12 and 12 (256 planes each).
REDSHIFTS = {"9001-1901": 0.025, "9002-1901": 0.05, "9003-1901": 0.08, "9004-1901": 0.11, "9005-1901": 0.14}
SPAXELS, MAP_SIZE, CHUNK = 20, 24, 2


def logcube(plateifu: str, z: float, seed: int, wave: np.ndarray = WAVE) -> IFUCube:
    """A 20 x 20 rotating H-alpha disc on a sloped continuum, with MaNGA-like mask bits and dead pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SPAXELS, :SPAXELS] - (SPAXELS - 1) / 2
    velocity = 150 * np.tanh(x / 4)
    dispersion = 40 + 30 * np.exp(-(x**2 + y**2) / 20)
    flux = 800 * np.exp(-np.hypot(x, y) / 6)
    lam = HALPHA_VACUUM * (1 + z)
    centre = lam * (1 + velocity / C_KMS)
    width = lam * np.hypot(dispersion, 66.0) / C_KMS
    w = wave[:, None, None]
    cube = (flux / (np.sqrt(2 * np.pi) * width) * np.exp(-0.5 * ((w - centre) / width) ** 2)
            + 4 + 0.002 * (w - 6700) + rng.normal(0, 0.05, (wave.size, SPAXELS, SPAXELS))).astype(np.float32)
    ivar = np.full(cube.shape, 400.0, np.float32)
    ivar[rng.random(cube.shape) < 0.01] = 0                             # pixels without information
    mask = np.where(rng.random(cube.shape) < 0.02, 1 << rng.integers(0, 11, cube.shape), 0).astype(np.int32)
    mask[:, 0, :3] |= DRP_DONOTUSE | 1                                  # uncovered corner spaxels
    return IFUCube(flux=cube, ivar=ivar, mask=mask, wave=wave.copy(), pixel_scale=0.5,
                   meta={"plateifu": plateifu, "mangaid": f"1-{plateifu[:4]}", "objra": 10.0, "objdec": 5.0})


@pytest.fixture(scope="module")
def cube_files(tmp_path_factory):
    """Five good LOGCUBEs (one gzipped), a truncated one and one on another wavelength grid, plus a DRPall."""
    folder = tmp_path_factory.mktemp("cubes") / "redux"
    folder.mkdir()
    good = {}
    for k, (plateifu, z) in enumerate(REDSHIFTS.items()):
        good[plateifu] = write_manga_logcube(folder / f"manga-{plateifu}-LOGCUBE.fits", logcube(plateifu, z, k))
    gz = Path(f"{good['9003-1901']}.gz")
    gz.write_bytes(gzip.compress(good["9003-1901"].read_bytes(), compresslevel=1))
    good["9003-1901"].unlink()
    good["9003-1901"] = gz
    truncated = folder / "manga-9006-1901-LOGCUBE.fits"
    truncated.write_bytes(good["9001-1901"].read_bytes()[:-5000])
    other_grid = write_manga_logcube(folder / "manga-9007-1901-LOGCUBE.fits",
                                     logcube("9007-1901", 0.03, 7, wave=10 ** (3.6 + 1e-4 * np.arange(3000))))
    ids = [*REDSHIFTS, "9006-1901", "9007-1901"]
    table = pd.DataFrame({"plateifu": ids, "mangaid": [f"1-{i[:4]}" for i in ids], "objra": 10.0, "objdec": 5.0,
                          "z": [*REDSHIFTS.values(), 0.03, 0.03], "nsa_z": 0.03, "nsa_elpetro_mass": 4.9e9,
                          "nsa_sersic_mass": 4.9e9, "nsa_elpetro_ba": 0.6, "nsa_elpetro_phi": 30.0,
                          "nsa_elpetro_th50_r": 3.0, "nsa_elpetro_absmag": [np.full(7, -20.0, np.float32)] * 7,
                          "drp3qual": 0})
    drpall = write_drpall(folder.parent / "drpall-v3_1_1.fits", table)
    bad = {str(truncated): "truncated", str(other_grid): "off_grid"}
    return folder, {k: str(v) for k, v in good.items()}, bad, drpall


@pytest.fixture(scope="module")
def cube_store(cube_files, tmp_path_factory, client):
    """Ingested in two goes (3 files, then the folder: appended into a half-written chunk)."""
    folder, good, _, drpall = cube_files
    store = tmp_path_factory.mktemp("cube_store") / "store"
    first = ingest_ifu(sorted(good.values())[:3], store, "manga-cubes", "manga", catalogue=drpall, client=client,
                       chunk_rows=CHUNK, map_size=MAP_SIZE)
    second = ingest_ifu(folder, store, "manga-cubes", "manga", catalogue=drpall, client=client)
    return store, first, second


def test_cubes_hold_the_files_planes(cube_files, cube_store):
    _, good, _, _ = cube_files
    release = open_ifu_release(cube_store[0])
    g = release.galaxies.set_index("file")
    assert release.has_cubes and release.n_rows == 7 and release.chunk_rows == CHUNK
    np.testing.assert_array_equal(release.wave, WAVE)
    y0 = (MAP_SIZE - SPAXELS) // 2
    for plateifu, path in good.items():
        row = int(g.loc[path, "row"])
        assert g.loc[path, "format"] == "manga_logcube" and (g.loc[path, "ny"], g.loc[path, "nx"]) == (20, 20)
        read, stored = read_manga_logcube(path), release.galaxy_cube(row)
        for name, dtype in CUBE_ARRAYS.items():
            assert getattr(stored, name).dtype == dtype
            np.testing.assert_array_equal(getattr(stored, name), getattr(read, name), err_msg=name)
        assert stored.pixel_scale == 0.5 and stored.meta["plateifu"] == plateifu
        part = release.galaxy_cube(row, wave_range=(6500.0, 6600.0))         # a window of planes only
        np.testing.assert_array_equal(part.flux, read.flux[(WAVE >= 6500) & (WAVE <= 6600)])
        padded = release.cube("mask")[row, :300].compute()                  # centred, padding = no coverage
        inside = np.zeros((MAP_SIZE, MAP_SIZE), bool)
        inside[y0:y0 + SPAXELS, y0:y0 + SPAXELS] = True
        assert (padded[:, ~inside] == CUBE_FILL["mask"]).all()
        np.testing.assert_array_equal(padded[:, inside].reshape(300, 20, 20), read.mask[:300])


def test_cube_chunks_hold_whole_galaxies_and_halpha_touches_two_wavelength_chunks(cube_store):
    release = open_ifu_release(cube_store[0])
    flux = release.cube("flux")
    assert flux.shape == (7, 4563, MAP_SIZE, MAP_SIZE) and flux.dtype == np.float32
    assert flux.chunks[0] == (2, 2, 2, 1) and flux.chunks[2:] == ((MAP_SIZE,), (MAP_SIZE,))   # whole galaxies
    assert set(flux.chunks[1][:-1]) == {256} and len(flux.chunks[1]) == 18
    edges = np.cumsum((0,) + flux.chunks[1])
    touched = []
    for z in np.linspace(0.0, 0.15, 61):                   # H-alpha and side bands at any z of a MaNGA release
        planes = halpha_planes(release.wave, z)
        first, last = np.searchsorted(edges, [planes.start, planes.stop - 1], "right") - 1
        touched.append(last - first + 1)
    assert max(touched) == 2 and min(touched) == 1


def test_maps_from_stored_cubes_equal_moment_maps_of_the_files(cube_files, cube_store):
    from survey_ml.core.maps import prepare_galaxies

    _, good, _, _ = cube_files
    store, first, second = cube_store
    assert (first.n_new, second.n_new) == (3, 4) and second.n_rows == 7
    assert first.status_counts == {"ok": 3} and second.status_counts == {"ok": 2, "truncated": 1, "off_grid": 1}
    release = open_ifu_release(store)
    g = release.galaxies.set_index("file")
    for plateifu, path in good.items():
        row = g.loc[path]
        assert row["status"] == "ok" and row["z"] == REDSHIFTS[plateifu] and 60 < row["instsigma"] < 70
        direct = moment_maps_from_cube(read_manga_logcube(path), REDSHIFTS[plateifu])      # the whole file read
        stored = release.galaxy(int(row["row"]))
        for name in MAP_ARRAYS:
            np.testing.assert_array_equal(getattr(stored, name), getattr(direct, name), err_msg=name)
        assert row["n_good"] == direct.good.sum() > 300
        assert np.nanmax(np.abs(stored.velocity)) < 200
    assert release.info["moments"]["window_kms"] == 600.0
    out = prepare_galaxies(release.read_block(0, release.n_rows, PREPARE_INPUTS))     # the maps the pipeline reads
    assert out["m0"].shape == (7, 64, 64) and list(out["status"][:5]) == ["ok"] * 5


def test_bad_cubes_are_flagged_rows_naming_their_file(cube_files, cube_store):
    _, good, bad, _ = cube_files
    release = open_ifu_release(cube_store[0])
    g = release.galaxies.set_index("file")
    for path, status in bad.items():
        row = g.loc[path]
        assert row["status"] == status and row["message"].startswith(path), row["message"]
        assert pd.isna(row["format"])
        assert (release.cube("ivar")[int(row["row"])].compute() == 0).all()           # no cube stored
        assert not release.read_block(int(row["row"]), int(row["row"]) + 1)["good"].any()
    messages = {s: g.loc[p, "message"] for p, s in bad.items()}
    assert "truncated" in messages["truncated"]
    assert "LOGCUBE grid" in messages["off_grid"] and "3000 pixels" in messages["off_grid"]
    assert (g.loc[list(good.values()), "status"] == "ok").all()


def test_rerun_is_idempotent(cube_files, cube_store, client):
    folder, _, _, drpall = cube_files
    store = cube_store[0]
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in store.rglob("*") if p.is_file()}
    report = ingest_ifu(folder, store, "manga-cubes", "manga", catalogue=drpall, client=client)
    assert report.n_new == 0 and report.n_rows == 7
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in store.rglob("*") if p.is_file()} == before


def test_moment_maps_from_store_reads_only_the_halpha_chunks(cube_files, cube_store, tmp_path, client):
    """Re-measured with another window on a copy whose other cube chunks are garbage: only H-alpha's are read."""
    _, good, _, _ = cube_files
    store = tmp_path / "store"
    shutil.copytree(cube_store[0], store)
    release = open_ifu_release(store)
    needed = set()                                          # (row chunk, wavelength chunk) the step may read
    for row, z in zip(release.galaxies["row"], release.galaxies["z"]):
        planes = halpha_planes(release.wave, z, 2000.0)
        needed |= {(row // CHUNK, k) for k in range(planes.start // 256, (planes.stop - 1) // 256 + 1)}
    spoiled = 0
    for name in CUBE_ARRAYS:
        chunks = release.zarr_path / "cubes" / name / "c"
        for chunk in (c for c in chunks.rglob("*") if c.is_file()):
            row_chunk, wave_chunk = (int(part) for part in chunk.relative_to(chunks).parts[:2])
            if (row_chunk, wave_chunk) not in needed:
                chunk.write_bytes(b"not a blosc chunk")
                spoiled += 1
    assert spoiled > 100
    again = moment_maps_from_store(store, client, window_kms=400.0, continuum_kms=(800.0, 2000.0))
    assert again.info["moments"]["continuum_kms"] == [800.0, 2000.0]
    g = again.galaxies.set_index("file")
    for plateifu, path in good.items():
        direct = moment_maps_from_cube(read_manga_logcube(path), REDSHIFTS[plateifu], window_kms=400.0,
                                       continuum_kms=(800.0, 2000.0))
        stored = again.galaxy(int(g.loc[path, "row"]))
        for name in MAP_ARRAYS:
            np.testing.assert_array_equal(getattr(stored, name), getattr(direct, name), err_msg=name)
        assert g.loc[path, "n_good"] == direct.good.sum() and g.loc[path, "status"] == "ok"
    assert (again.galaxies["status"] == open_ifu_release(cube_store[0]).galaxies["status"]).all()
    with pytest.raises(Exception):                          # a spoiled chunk really is unreadable
        again.cube("flux")[0, :256].compute()


def test_cube_window_keeps_a_wavelength_range(cube_files, tmp_path):
    """cube_window = H-alpha for z <= 0.1: the z = 0.14 galaxy is a no_coverage row naming its file."""
    _, good, _, drpall = cube_files
    files = [good["9001-1901"], good["9005-1901"]]
    report = ingest_ifu(files, tmp_path / "store", "m", "manga", catalogue=drpall, client=False, map_size=20,
                        cube_window=halpha_window(0.0, 0.1))
    release = open_ifu_release(tmp_path / "store")
    keep = (WAVE >= halpha_window(0.0, 0.1)[0]) & (WAVE <= halpha_window(0.0, 0.1)[1])
    assert report.status_counts == {"ok": 1, "no_coverage": 1} and release.chunk_rows == 64
    np.testing.assert_array_equal(release.wave, WAVE[keep])
    assert release.cube("flux").shape == (2, keep.sum(), 20, 20)
    np.testing.assert_array_equal(release.galaxy_cube(0).flux, read_manga_logcube(files[0]).flux[keep])
    direct = moment_maps_from_cube(read_manga_logcube(files[0]), REDSHIFTS["9001-1901"])
    np.testing.assert_array_equal(release.galaxy(0).velocity, direct.velocity)
    row = release.galaxies.iloc[1]
    assert row["message"].startswith(files[1]) and "do not cover" in row["message"]


def test_a_logcube_only_release_runs_through_the_ifu_pipeline(cube_store, tmp_path, client):
    """run-catalog manga-dr17 on the store as it is: the same disc at five redshifts (H-alpha in five different
    wavelength chunks) gets the same kinematics."""
    from survey_ml.dask.runner import run_catalog

    report = run_catalog("manga-dr17", store=cube_store[0], out=tmp_path / "run", client=client, progress=False)
    catalog = pd.read_parquet(report.catalog_dir).set_index("id")
    assert len(catalog) == 7
    ok = catalog.loc[list(REDSHIFTS)]
    assert (ok["status"] == "ok").all() and (ok["kin_flag"] == 0).all(), ok["status"]
    for name, tolerance in (("vmax_kms", 0.02), ("v22_kms", 0.02)):
        assert np.ptp(ok[name]) < tolerance * ok[name].mean(), ok[name]
    assert (np.abs((ok["pa_deg"] - 270 + 180) % 360 - 180) < 3).all(), ok["pa_deg"]     # receding side at +x


def test_chunk_rows_too_heavy_for_cubes_warns(tmp_path):
    missing = tmp_path / "manga-9100-1901-LOGCUBE.fits"
    with pytest.warns(UserWarning, match=r"chunk_rows=64 makes each ingest task hold 1\.9 GiB"):
        report = ingest_ifu([missing], tmp_path / "s", "m", "manga", client=False, chunk_rows=64, map_size=MAP_SIZE)
    assert report.status_counts == {"missing": 1}


def test_uncommitted_cube_rows_are_cleared(cube_files, cube_store, tmp_path):
    """An ingest interrupted before its commit left planes in rows 3-6; the next ingest (no LOGCUBE read) clears them."""
    _, good, bad, _ = cube_files
    store = tmp_path / "store"
    shutil.copytree(cube_store[0], store)
    galaxies = pd.read_parquet(store / "galaxies.parquet")
    galaxies.iloc[:3].to_parquet(store / "galaxies.parquet", index=False)     # rows 3-6 never committed
    truncated = next(p for p, s in bad.items() if s == "truncated")
    report = ingest_ifu([truncated], store, "manga-cubes", "manga", client=False)
    release = open_ifu_release(store)
    assert report.status_counts == {"truncated": 1} and release.n_rows == 4
    assert release.cube("flux").shape[0] == 4 and (release.cube("ivar")[3].compute() == 0).all()
    np.testing.assert_array_equal(release.galaxy_cube(2).flux, read_manga_logcube(sorted(good.values())[2]).flux)
