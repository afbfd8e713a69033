"""Ingest on a real LocalCluster: ~2,000 mock LAMOST files with ~1% deliberately broken."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from survey_ml.io.lamost import read_lamost_spectrum
from survey_ml.core.quality import MASK_NODATA, MASK_NONFINITE
from survey_ml.simulate import DEFECTS, inject_defect, write_mock_release
from survey_ml.store import discover_files, ingest, open_release

N_FILES = 2000
CHUNK_ROWS = 256


@pytest.fixture(scope="module")
def broken_release(tmp_path_factory, client):
    """A mock release with 4 files of each defect, plus 4 duplicated obsids (~1.2% bad)."""
    root = tmp_path_factory.mktemp("release")
    mock = write_mock_release(root / "mock", N_FILES, seed=7, client=client)
    rng = np.random.default_rng(0)
    picks = iter(rng.permutation(len(mock.files)))
    expected: dict[str, str] = {}
    for defect in DEFECTS:
        for _ in range(4):
            path = mock.files[next(picks)]
            expected[path] = inject_defect(path, defect)
    duplicates = {}
    for _ in range(4):  # the same observation delivered twice under another name
        src = Path(mock.files[next(picks)])
        while str(src) in expected:
            src = Path(mock.files[next(picks)])
        copy = src.with_name(src.name.replace(".fits.gz", "-copy.fits.gz"))
        shutil.copy(src, copy)
        duplicates[str(copy)] = str(src)
    return mock, expected, duplicates


@pytest.fixture(scope="module")
def ingested(broken_release, tmp_path_factory, client):
    mock, _, _ = broken_release
    store = tmp_path_factory.mktemp("store") / "dr10"
    report = ingest(mock.spectra_dir, store, "dr10", client=client, chunk_rows=CHUNK_ROWS)
    return store, report


def test_every_file_has_a_row(broken_release, ingested):
    mock, expected, duplicates = broken_release
    store, report = ingested
    objects = open_release(store).objects
    assert report.n_new == N_FILES + len(duplicates) == len(objects)
    assert objects["row"].tolist() == list(range(len(objects)))
    assert set(objects["file"]) == set(mock.files) | set(duplicates)
    assert objects["file"].is_unique


def test_bad_files_are_flagged_with_a_message_naming_them(broken_release, ingested):
    _, expected, duplicates = broken_release
    objects = open_release(ingested[0]).objects.set_index("file")
    for path, status in expected.items():
        row = objects.loc[path]
        assert row["status"] == status, (path, row["message"])
        assert row["message"].startswith(path), row["message"]
    assert "gzip" in objects.loc[[p for p, s in expected.items() if s == "truncated"], "message"].iloc[0]
    for copy, original in duplicates.items():
        # The earlier row (sorted path order) wins; the later one names it.
        first, later = sorted([copy, original], key=lambda p: objects.loc[p, "row"])
        assert objects.loc[first, "status"] == "ok"
        assert objects.loc[later, "status"] == "duplicate"
        assert objects.loc[later, "message"].startswith(later) and first in objects.loc[later, "message"]
    n_bad = sum(s != "masked_values" for s in expected.values()) + len(duplicates)
    assert (~objects["status"].isin(["ok", "masked_values"])).sum() == n_bad


def test_good_spectra_are_bit_identical_in_zarr(broken_release, ingested):
    store, _ = ingested
    release = open_release(store)
    objects = release.objects
    group = zarr.open_group(str(release.zarr_path), mode="r")
    flux, ivar = group["spectra/flux"][:], group["spectra/ivar"][:]
    mask, ormask = group["spectra/mask"][:], group["spectra/ormask"][:]
    ok = objects[objects["status"].isin(["ok", "duplicate"])]
    assert len(ok) > 0.98 * N_FILES
    for r in ok.itertuples():
        spec = read_lamost_spectrum(r.file)
        sl = slice(r.pix0, r.pix0 + r.n_pix)
        assert np.array_equal(flux[r.row, sl], spec.flux)
        assert np.array_equal(ivar[r.row, sl], spec.ivar)
        assert np.array_equal(mask[r.row, sl], spec.andmask)
        assert np.array_equal(ormask[r.row, sl], spec.ormask)
        assert (mask[r.row, r.pix0 + r.n_pix:] == MASK_NODATA).all() and (ivar[r.row, r.pix0 + r.n_pix:] == 0).all()
    masked = objects[objects["status"] == "masked_values"]
    for r in masked.itertuples():  # inf pixels cleaned and flagged, the rest intact
        row_mask = mask[r.row, r.pix0: r.pix0 + r.n_pix]
        assert (row_mask & MASK_NONFINITE).sum() > 0
        row_ivar = ivar[r.row, r.pix0: r.pix0 + r.n_pix]
        assert np.isfinite(flux[r.row]).all() and (row_ivar[(row_mask & MASK_NONFINITE) > 0] == 0).all()
    # Unreadable files occupy a row with no information at all.
    for r in objects[objects["status"].isin(["truncated", "unreadable"])].itertuples():
        assert (ivar[r.row] == 0).all() and (mask[r.row] == MASK_NODATA).all()


def test_row_table_fields(broken_release, ingested):
    mock, _, _ = broken_release
    objects = open_release(ingested[0]).objects
    truth = pd.read_parquet(mock.truth)
    merged = objects[objects["status"] == "ok"].merge(truth, on="obsid")
    assert len(merged) > 0.97 * N_FILES
    assert np.allclose(merged["z_x"], merged["z_y"])
    assert set(merged["format"]) == {"lamost-old", "lamost-new"}
    assert (merged["n_pix"] == 3909).all() and (merged["pix0"] == 0).all()
    assert str(objects["obsid"].dtype) == "int64" and str(objects["snrr"].dtype) == "float32"


def test_dask_arrays_follow_zarr_chunks(ingested):
    release = open_release(ingested[0])
    flux = release.array("flux")
    assert flux.shape == (release.n_rows, release.grid.n_pix)
    assert flux.chunks[0][0] == CHUNK_ROWS
    assert np.isfinite(flux.sum().compute())


def test_reingest_is_idempotent(broken_release, ingested, client, tmp_path):
    mock, _, _ = broken_release
    store = tmp_path / "dr10"
    shutil.copytree(ingested[0], store)
    before = open_release(store).objects
    flux_before = zarr.open_array(str(store / "dr10.zarr" / "spectra" / "flux"), mode="r")[:]
    again = ingest(mock.spectra_dir, store, "dr10", client=client)
    assert again.n_new == 0 and again.n_rows == len(before)
    pd.testing.assert_frame_equal(open_release(store).objects, before)
    assert np.array_equal(zarr.open_array(str(store / "dr10.zarr" / "spectra" / "flux"), mode="r")[:], flux_before)


def test_added_files_are_appended_alone(client, tmp_path):
    first = write_mock_release(tmp_path / "mock", 50, seed=11)
    store = tmp_path / "dr10"
    ingest(first.spectra_dir, store, "dr10", client=client, chunk_rows=16)  # 50 rows: chunk 3 half full
    before = open_release(store).objects
    flux_before = zarr.open_array(str(store / "dr10.zarr" / "spectra" / "flux"), mode="r")[:]
    # 30 new files arrive in the same directory (new obsids, new names).
    write_mock_release(tmp_path / "mock", 30, seed=12, first_obsid=2_000_000)
    # A crashed earlier run may have grown the arrays without committing rows.
    for name in ("flux", "ivar", "mask", "ormask"):
        arr = zarr.open_array(str(store / "dr10.zarr" / "spectra" / name), mode="r+")
        arr.resize((len(before) + 100, arr.shape[1]))
    report = ingest(first.spectra_dir, store, "dr10", client=client)
    after = open_release(store).objects
    assert report.n_inputs == 80 and report.n_new == 30 and report.status_counts == {"ok": 30}
    pd.testing.assert_frame_equal(after.iloc[:50], before)
    assert after["row"].tolist() == list(range(80)) and after["obsid"].is_unique
    flux = zarr.open_array(str(store / "dr10.zarr" / "spectra" / "flux"), mode="r")[:]
    assert flux.shape[0] == 80
    assert np.array_equal(flux[:50], flux_before[:50])  # old rows untouched, incl. the shared chunk
    for r in after.iloc[50:].itertuples():
        assert np.array_equal(flux[r.row, :3909], read_lamost_spectrum(r.file).flux)


def test_ingest_from_catalogue_flags_missing_files(client, tmp_path):
    mock = write_mock_release(tmp_path / "mock", 40, seed=3)
    gone = Path(mock.files[5])
    gone.unlink()
    report = ingest(mock.catalogue, tmp_path / "store", "dr10", client=client, chunk_rows=16)
    objects = open_release(tmp_path / "store").objects
    assert report.n_new == 40 and report.status_counts == {"ok": 39, "missing": 1}
    row = objects.set_index("file").loc[str(gone)]
    assert row["status"] == "missing" and "does not exist" in row["message"]
    assert discover_files(mock.catalogue) == sorted(mock.files)


def test_ingest_without_a_cluster_uses_local_scheduler(tmp_path):
    mock = write_mock_release(tmp_path / "mock", 12, seed=5, layout="old")
    report = ingest([*mock.files, str(tmp_path / "absent.fits")], tmp_path / "s", "dr7", client=False)
    assert report.status_counts == {"ok": 12, "missing": 1}


def test_sdss_spectra_ingest_onto_the_sdss_grid(client, tmp_path):
    from survey_ml.io.sdss import read_sdss_spectrum, write_sdss_spectrum
    from survey_ml.io.spectrum import Spectrum

    rng = np.random.default_rng(5)
    for k, (start, n) in enumerate([(3.5523, 4600), (3.5798, 3840), (3.5801, 3850)]):
        loglam = np.float32(start) + np.float32(1e-4) * np.arange(n, dtype=np.float32)
        spec = Spectrum(flux=rng.normal(5, 1, n).astype(np.float32), ivar=np.ones(n, np.float32),
                        wavelength=10.0 ** loglam.astype(np.float64), andmask=np.zeros(n, np.uint32),
                        ormask=np.zeros(n, np.uint32),
                        meta={"plate": 1000 + k, "mjd": 52000, "fiberid": 7, "ra": 10.0, "dec": 1.0,
                              "z": 0.1, "class": "GALAXY"})
        write_sdss_spectrum(tmp_path / f"spec-{1000 + k:04d}-52000-0007.fits", spec)
    report = ingest(tmp_path, tmp_path / "store", "sdss", reader="sdss", client=client)
    release = open_release(tmp_path / "store")
    assert report.status_counts == {"ok": 3} and release.grid.coeff0 == 3.5
    flux = release.array("flux").compute()
    for r in release.objects.itertuples():
        assert r.pix0 == {1000: 523, 1001: 798, 1002: 801}[int(Path(r.file).name[5:9])]
        assert np.array_equal(flux[r.row, r.pix0: r.pix0 + r.n_pix], read_sdss_spectrum(r.file).flux)


# ----------------------------------------------------------------------------- one store, every kind
@pytest.fixture(scope="module")
def stores_of_every_kind(tmp_path_factory):
    """A spectra, a maps (SAMI) and a cube (MaNGA LOGCUBE) store, each of 5 rows in chunks of 2."""
    from survey_ml.io.manga import write_manga_logcube
    from survey_ml.core.moments import halpha_window
    from survey_ml.simulate.ifu import simulate_ifu_release
    from tests.test_ifu_cubes import REDSHIFTS, logcube

    root = tmp_path_factory.mktemp("kinds")
    spectra = write_mock_release(root / "spectra", 5, seed=21)
    ingest(spectra.spectra_dir, root / "spectra_store", "dr10", client=False, chunk_rows=2)
    sami = simulate_ifu_release(root / "sami", 5, "sami", seed=3, client=False)
    ingest(sami.root, root / "maps_store", "sami-x", survey="sami", catalogue=sami.catalogue, client=False,
           chunk_rows=2)
    (root / "cubes").mkdir()
    for k, (plateifu, z) in enumerate(REDSHIFTS.items()):
        write_manga_logcube(root / "cubes" / f"manga-{plateifu}-LOGCUBE.fits", logcube(plateifu, z, k))
    drpall = pd.DataFrame({"plateifu": list(REDSHIFTS), "objra": 10.0, "objdec": 5.0, "z": list(REDSHIFTS.values()),
                           "nsa_elpetro_mass": 4.9e9, "nsa_elpetro_phi": 30.0})
    ingest(root / "cubes", root / "cube_store", "manga-x", kind="maps", survey="manga", catalogue=drpall,
           client=False, chunk_rows=2, map_size=24, cube_window=halpha_window(0.0, 0.15))
    return {"spectra": root / "spectra_store", "maps": root / "maps_store", "cubes": root / "cube_store"}


def test_one_open_release_reads_every_kind_alike(stores_of_every_kind):
    from survey_ml.store import MAP_ARRAYS, MapsRelease, Release, SpectraRelease

    expected = {"spectra": (SpectraRelease, "spectra", False, {"flux", "ivar", "mask"}),
                "maps": (MapsRelease, "maps", False, {*MAP_ARRAYS, "pixel_scale"}),
                "cubes": (MapsRelease, "maps", True, {*MAP_ARRAYS, "pixel_scale"})}
    for name, store in stores_of_every_kind.items():
        cls, kind, has_cubes, arrays = expected[name]
        release = open_release(store)
        assert isinstance(release, cls) and isinstance(release, Release) and release.kind == kind, name
        assert getattr(release, "has_cubes", False) == has_cubes, name
        assert release.path == store and release.zarr_path == store / f"{release.name}.zarr"
        assert release.info == json.loads((store / "release.json").read_text())
        assert release.n_rows == len(release.rows) == 5 and release.chunk_rows == 2
        assert release.rows["row"].tolist() == list(range(5)) and (release.rows["status"] == "ok").all(), name
        assert (release.objects if kind == "spectra" else release.galaxies) is release.rows
        assert release.block_bounds() == [(0, 2), (2, 4), (4, 5)]
        blocks = [release.read_block(a, b) for a, b in release.block_bounds()]
        for (a, b), block in zip(release.block_bounds(), blocks):
            assert set(block) == arrays and all(len(v) == b - a for v in block.values()), name
        group = zarr.open_group(str(release.zarr_path), mode="r")
        for array in arrays - {"pixel_scale"}:
            stored = group[f"{release.GROUP}/{array}"]
            assert stored.chunks[0] == release.chunk_rows
            np.testing.assert_array_equal(np.concatenate([b[array] for b in blocks]), stored[:5], err_msg=name)
        assert release.read_block(4, 99)[next(iter(arrays))].shape[0] == 1       # clipped to the committed rows
    cubes = open_release(stores_of_every_kind["cubes"])
    assert (cubes.galaxies["format"] == "manga_logcube").all() and (cubes.galaxies["n_good"] > 0).all()
    assert cubes.galaxy_cube(0).flux.shape == (cubes.wave.size, 20, 20)


def test_stores_written_before_release_json_named_its_kind_open(stores_of_every_kind, tmp_path):
    from survey_ml.store import open_ifu_release

    for name, store in stores_of_every_kind.items():
        old = tmp_path / name
        shutil.copytree(store, old)
        info = json.loads((old / "release.json").read_text())
        assert info.pop("kind") == ("spectra" if name == "spectra" else "ifu")
        (old / "release.json").write_text(json.dumps(info))
        release = open_release(old)
        assert release.kind == ("spectra" if name == "spectra" else "maps") and release.n_rows == 5
        assert release.read_block(0, 2).keys() == open_release(store).read_block(0, 2).keys()
        if name != "spectra":
            assert open_ifu_release(old).survey == info["survey"]
    with pytest.raises(ValueError, match="not an IFU release store"):
        open_ifu_release(tmp_path / "spectra")
    with pytest.raises(ValueError, match="holds a spectra release"):
        ingest([], tmp_path / "spectra", "dr10", survey="sami", client=False)
