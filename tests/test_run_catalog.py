"""run-catalog end to end on a real LocalCluster: rows, statuses, resume, formats, accuracy."""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_ml.catalog.parts import part_path, read_provenance
from survey_ml.core.inference import shipped_weights, weights_sha256
from survey_ml.dask.blocks import catalog_columns
from survey_ml.dask.runner import run_catalog
from survey_ml.config import load_release_spec
from survey_ml.tasks.registry import tasks_from_spec
from survey_ml.simulate import DEFECTS, inject_defect, write_mock_release
from survey_ml.config import SPEC_DIR
from survey_ml.store import ingest, open_release


def _spec_with(tmp_path: Path, cuts: dict, chunk_rows: int) -> Path:
    """dr10.toml with other cuts and chunk size, written as a user's own spec file."""
    text = (SPEC_DIR / "dr10.toml").read_text()
    spec = tomllib.loads(text)
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        if key in cuts:
            line = f"{key} = {cuts[key]}"
        if key == "chunk_rows":
            line = f"chunk_rows = {chunk_rows}"
        lines.append(line)
    path = tmp_path / "my_dr10.toml"
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(path.read_text())["cuts"] == {**spec["cuts"], **cuts}
    return path


@pytest.fixture(scope="module")
def damaged_release(tmp_path_factory, client):
    """600 parametric mock spectra, every kind of damaged file, a duplicate, ingested in 128-row chunks."""
    root = tmp_path_factory.mktemp("release")
    mock = write_mock_release(root / "mock", 600, seed=3, client=client)
    expected = {}
    for k, defect in enumerate(DEFECTS):
        expected[mock.files[11 * k + 5]] = inject_defect(mock.files[11 * k + 5], defect)
    duplicate = Path(mock.spectra_dir) / ("zz-copy-" + Path(mock.files[100]).name)
    shutil.copy(mock.files[100], duplicate)
    expected[str(duplicate)] = "duplicate"
    ingest(mock.spectra_dir, root / "store", "dr10", client=client, chunk_rows=128)
    return root, mock, expected


def test_catalog_has_every_row_with_the_right_status_and_resumes_only_missing_parts(damaged_release, tmp_path,
                                                                                     client):
    root, mock, expected = damaged_release
    spec = _spec_with(tmp_path, {"snr_r_min": 5.0, "z_max": 0.2}, chunk_rows=128)
    out = tmp_path / "run"
    report = run_catalog(spec, store=root / "store", out=out, client=client, progress=False)
    objects = open_release(root / "store").objects
    catalog = pd.read_parquet(out / "catalog")

    # one catalog row per store row, in order, typed as documented
    assert len(catalog) == len(objects) == 601 and report.n_rows == 601
    assert catalog["row"].tolist() == list(range(601))
    assert (catalog["obsid"].to_numpy() == objects["obsid"].fillna(-1).to_numpy()).all()
    assert list(catalog.columns) == [c.name for c in catalog_columns("spectra", tasks_from_spec(load_release_spec("dr10")))]
    assert catalog["oh12"].dtype == np.float32 and catalog["sf_flag"].dtype == bool
    assert report.parts_total == report.parts_written == 5

    # statuses: damaged files keep their ingest status and message naming the file
    by_file = catalog.assign(file=objects["file"].astype(str).to_numpy()).set_index("file")
    for path, status in expected.items():
        row = by_file.loc[path]
        usable = status == "masked_values"
        if usable and not 0.002 <= row["z"] <= 0.2:      # a usable damaged file can still fall to a cut
            status = "cut_z"
        elif usable and not row["snr_r"] >= 5.0:
            status = "cut_snr"
        assert row["status"] == status, (path, row["status"])
        if not usable:
            # the message names the file (a duplicate: the copy, and the file its obsid was ingested from)
            assert row["message"].startswith(str(path)), (path, row["message"])
            if status == "duplicate":
                assert row["message"].endswith(f"already ingested from {mock.files[100]}")
            assert np.isnan(row["oh12"]) and np.isnan(row["p_starforming"]) and not row["sf_flag"]
    assert (catalog["status"] == "masked_values").sum() >= 1   # the masked_values file was predicted, not only cut
    # cuts come from the catalogue z and S/N_r, for exactly the usable rows outside them
    usable = objects["status"].isin(["ok", "masked_values"]).to_numpy()
    z, snr = objects["z"].to_numpy(float), objects["snrr"].to_numpy(float)
    assert ((catalog["status"] == "cut_z").to_numpy() == (usable & ((z < 0.002) | (z > 0.2)))).all()
    assert ((catalog["status"] == "cut_snr").to_numpy() == (usable & (z >= 0.002) & (z <= 0.2) & (snr < 5))).all()
    predicted = catalog["status"].isin(["ok", "masked_values"]).to_numpy()
    assert predicted.sum() > 250
    assert np.isfinite(catalog.loc[predicted, ["oh12", "oh12_err", "p_starforming"]].to_numpy()).all()
    assert (catalog.loc[predicted, "oh12_err"] > 0).all()
    assert catalog.loc[predicted, "p_starforming"].between(0, 1).all()
    assert (catalog["sf_flag"] == (catalog["p_starforming"].fillna(0) >= 0.85)).all()
    assert np.isnan(catalog.loc[~predicted, "oh12"]).all()

    # provenance names the weights that made each part
    record = read_provenance(part_path(out / "catalog", 0))
    assert record["weights_sha256"]["metallicity"] == weights_sha256(shipped_weights("metallicity"))
    assert record["chunk"] == 0 and record["n_rows"] == 128

    # resume: delete one part, re-run: only that part is rewritten, nothing else changes
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "catalog").glob("part-*.parquet")}
    part_path(out / "catalog", 2).unlink()
    again = run_catalog(spec, store=root / "store", out=out, client=client, progress=False)
    assert again.parts_written == 1
    after = {p.name: p.stat().st_mtime_ns for p in (out / "catalog").glob("part-*.parquet")}
    assert {k for k in after if after[k] != mtimes[k]} == {"part-000002.parquet"}
    pd.testing.assert_frame_equal(pd.read_parquet(out / "catalog"), catalog)

    # a torn part (not a Parquet file) is detected and redone
    part_path(out / "catalog", 4).write_bytes(b"PAR1 torn")
    assert run_catalog(spec, store=root / "store", out=out, client=client, progress=False).parts_written == 1
    pd.testing.assert_frame_equal(pd.read_parquet(out / "catalog"), catalog)


def test_catalog_opens_with_pyarrow_dask_and_astropy(damaged_release, tmp_path, client):
    import dask.dataframe as dd
    import pyarrow.dataset as ds
    from astropy.table import Table

    root, _, _ = damaged_release
    report = run_catalog(_spec_with(tmp_path, {}, 128), store=root / "store", out=tmp_path / "run", client=client,
                         progress=False)
    frame = pd.read_parquet(report.catalog_dir)
    assert ds.dataset(report.catalog_dir, format="parquet").count_rows() == len(frame) == 601
    assert len(dd.read_parquet(str(report.catalog_dir)).compute()) == 601
    table = Table.read(report.outputs["fits"])
    assert len(table) == 601 and np.allclose(np.asarray(table["oh12"]), frame["oh12"].to_numpy(), equal_nan=True)
    assert (tmp_path / "run" / "report.json").is_file()


def test_shipped_weights_recover_metallicity_and_class_of_unseen_galaxies(small_library, tmp_path, client):
    """A real accuracy assertion: 500 held-out mock spectra (library seed 0; training used seed 1)."""
    from survey_ml.simulate.release import simulate_release

    mock = simulate_release(small_library, tmp_path / "mock", 500, seed=7, client=client)
    # the folder survey-ml simulate writes: its truth table gives the MZR its masses, no --masses needed
    report = run_catalog("dr10", input=Path(mock.catalogue).parent, out=tmp_path / "run", client=client,
                         progress=False)
    assert f"stellar masses for the MZR from the mock release's truth table {mock.truth}" in report.summary()
    catalog = pd.read_parquet(report.catalog_dir)
    truth = pd.read_parquet(mock.truth).set_index("obsid").loc[catalog["obsid"]]
    predicted = catalog["status"].isin(["ok", "masked_values"]).to_numpy()
    sf = truth["starforming"].to_numpy(bool) & predicted
    resid = catalog["oh12"].to_numpy(float)[sf] - truth["oh12"].to_numpy(float)[sf]
    assert sf.sum() > 150
    # measured on this set with the broad-prior, line-feature weights of issue 15: bias -0.023, sigma 0.083,
    # 68% / 96% within 1 / 2 sigma, classifier 97.9% (the narrow-prior weights they replaced, trained on this
    # generator's own priors: +0.007, 0.039, 70%, 97.0% - and 0.147 dex, 26% on an independent mock)
    assert abs(resid.mean()) < 0.05
    assert resid.std() < 0.11
    pull = np.abs(resid) / catalog["oh12_err"].to_numpy(float)[sf]
    assert 0.6 < np.mean(pull < 1) < 0.8 and np.mean(pull < 2) > 0.9
    guess = catalog["p_starforming"].to_numpy(float)[predicted] >= 0.5
    assert np.mean(guess == truth["starforming"].to_numpy(bool)[predicted]) > 0.93
    assert report.mzr is not None and report.mzr["n"] > 50 and Path(report.outputs["mzr_plot"]).is_file()


def test_masses_are_matched_by_obsid_or_within_one_arcsecond(tmp_path):
    from astropy.table import Table

    from survey_ml.relations.catalog import attach_masses

    catalog = pd.DataFrame({"obsid": [1, 2, 3, 4], "ra": [10.0, 20.0, 30.0, 40.0], "dec": [0.0, 10.0, -5.0, 60.0]})
    by_obsid = tmp_path / "truth.parquet"
    pd.DataFrame({"obsid": [3, 1, 9], "log_mstar": [10.5, 9.2, 11.0]}).to_parquet(by_obsid)
    np.testing.assert_array_equal(attach_masses(catalog, by_obsid), [9.2, np.nan, 10.5, np.nan])
    # MPA-JHU style: positions, lgm_fib_p50, -9999 for missing; 0.5" matches, 3" does not
    arcsec = 1 / 3600
    mpa = Table({"RA": [10.0 + 0.5 * arcsec, 20.0, 30.0, 40.0 + 3 * arcsec / np.cos(np.radians(60))],
                 "DEC": [0.0, 10.0 + 0.2 * arcsec, -5.0, 60.0], "LGM_FIB_P50": [9.8, -9999.0, 10.1, 10.9]})
    mpa.write(tmp_path / "galspec.fits")
    got = attach_masses(catalog, tmp_path / "galspec.fits", radius_arcsec=1.0)
    np.testing.assert_allclose(got, [9.8, np.nan, 10.1, np.nan])
    with pytest.raises(ValueError, match="no stellar-mass column"):
        pd.DataFrame({"obsid": [1], "mass": [10.0]}).to_csv(tmp_path / "bad.csv", index=False)
        attach_masses(catalog, tmp_path / "bad.csv")


def test_real_lamost_files_run_through_and_stars_are_cut_by_redshift(real_fixtures, tmp_path, client):
    """The two real LRS files (stars, z ~ 0) from a folder: read, kept, and cut - not predicted."""
    report = run_catalog("dr10", input=real_fixtures / "lamost", out=tmp_path / "run", client=client, progress=False)
    catalog = pd.read_parquet(report.catalog_dir).set_index("obsid")
    assert sorted(catalog.index) == [101001, 101013]
    assert catalog.loc[101001, "snr_r"] == pytest.approx(27.16, abs=0.01)
    assert (catalog["status"] == "cut_z").all() and catalog["oh12"].isna().all()
    assert "0.002" in catalog.loc[101013, "message"]
    assert "part written" in report.summary()
