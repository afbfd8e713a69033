"""The Task contract on a real LocalCluster: the lazy catalog equals run-catalog's parts, the strong-line
task through run-catalog, the registry's guards, and every network task trains through one entry."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import survey_ml
from survey_ml.tasks import Column, Task, get_task, register
from survey_ml.tasks.base import Batch


@pytest.fixture(scope="module")
def spectra_store(tmp_path_factory, client):
    from survey_ml.simulate import write_mock_release
    from survey_ml.store import ingest

    root = tmp_path_factory.mktemp("tasks")
    mock = write_mock_release(root / "mock", 120, seed=21, client=client)
    ingest(mock.spectra_dir, root / "store", "dr10", client=client, chunk_rows=48)
    return root / "store", mock


def test_lazy_catalog_is_lazy_typed_and_equals_the_run_catalog_parts(spectra_store, tmp_path, client):
    from survey_ml.core.inference import cached_models

    store, _ = spectra_store
    release = survey_ml.open_release(store)
    assert (release.kind, release.npartitions) == ("spectra", 3)
    before = set(cached_models())
    catalog = release.catalog(tasks=["metallicity", "sfclass", "redshift"])
    assert set(cached_models()) == before                   # building the graph loaded no model here
    assert catalog.npartitions == 3 and catalog.known_divisions
    frame = catalog.compute()                                # on the cluster: one task per chunk
    assert frame.dtypes.astype(str).to_dict() == catalog._meta.dtypes.astype(str).to_dict()
    assert list(frame.index) == list(range(120))
    report = survey_ml.run_catalog("dr10", store=store, out=tmp_path / "run", client=client, progress=False)
    parts = pd.read_parquet(report.catalog_dir)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), parts)
    # one task, lazily: head columns, its own, status
    one = release.map_blocks("redshift").compute()
    assert list(one.columns) == ["row", "obsid", "ra", "dec", "z", "snr_r", "z_cnn", "z_cnn_err", "z_cnn_flag",
                                 "z_cnn_dchi2", "z_cnn_pmax", "status", "message"]
    np.testing.assert_array_equal(one["z_cnn"].to_numpy(), parts["z_cnn"].to_numpy())
    # filtering and aggregating stay lazy Dask operations
    sf = catalog[catalog.sf_flag].oh12.mean().compute()
    assert sf == pytest.approx(parts.loc[parts.sf_flag, "oh12"].mean(), rel=1e-6)


def test_strong_line_task_runs_from_run_catalog_beside_the_networks(spectra_store, tmp_path, client):
    from survey_ml.core.strong_lines import strong_line_metallicity
    from survey_ml.store import open_release

    store, mock = spectra_store
    report = survey_ml.run_catalog("dr10", store=store, out=tmp_path / "run", client=client, progress=False,
                                   tasks=["metallicity", "strong_lines"])
    catalog = pd.read_parquet(report.catalog_dir)
    assert report.tasks == ["metallicity", "strong_lines"]
    assert "oh12" in catalog and "oh12_o3n2" in catalog and "z_cnn" not in catalog
    selected = catalog["status"].isin(["ok", "masked_values", "low_coverage"]).to_numpy()
    assert (catalog.loc[~selected, "baseline_status"] == "not_fitted").all()
    # the task's values are the block function's on the same rows
    data = open_release(store)
    rows = np.flatnonzero(selected)[:20]
    block = data.read_block(0, 120)
    direct = strong_line_metallicity(data.wavelength(), block["flux"][rows], block["ivar"][rows],
                                     block["mask"][rows], data.rows["z"].to_numpy(float)[rows])
    np.testing.assert_array_equal(catalog["oh12_o3n2"].to_numpy()[rows], direct["oh12_o3n2"].to_numpy())
    # and they measure something: O3N2 follows the mock's true metallicity
    truth = pd.read_parquet(mock.truth).set_index("obsid").loc[catalog["obsid"], "oh12"].to_numpy()
    good = np.isfinite(catalog["oh12_o3n2"].to_numpy())
    assert good.sum() >= 30
    assert np.corrcoef(truth[good], catalog["oh12_o3n2"].to_numpy()[good])[0, 1] > 0.7
    # the task's own figure is in the HTML report, and no metallicity-classifier figure without sfclass
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Strong-line baseline: O3N2 against N2" in html and "P(star-forming)" not in html
    # the FITS catalog documents each column
    with fits.open(report.outputs["fits"]) as hdul:
        header = hdul[1].header
        names = [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)]
        ha = names.index("ha") + 1
        assert header[f"TUNIT{ha}"] == "10**-17 erg s-1 cm-2" and "Halpha" in header[f"TCOMM{ha}"]
        oh12 = names.index("oh12") + 1
        assert header[f"TCOMM{oh12}"].startswith("[dex]")


def test_registry_refuses_a_taken_name_and_a_non_task():
    class Impostor(Task):
        name, input_kind, columns = "metallicity", "spectra", (Column("x", "float32"),)

        def prepare(self, block, rows):
            return Batch(rows)

        def predict(self, model, batch):
            return {}

    with pytest.raises(ValueError, match="task name 'metallicity' is taken"):
        register(Impostor)
    with pytest.raises(TypeError, match="not a survey_ml.tasks.Task subclass"):
        register(dict)


def test_a_task_that_writes_a_head_column_twice_is_refused(spectra_store):
    class Twice(Task):
        name, input_kind, columns = "test_twice", "spectra", (Column("ra", "float64"),)
        needs_weights = False

        def prepare(self, block, rows):
            return Batch(rows)

        def predict(self, model, batch):
            return {}

    with pytest.raises(ValueError, match=r"write the same columns twice: \['ra'\]"):
        survey_ml.open_release(spectra_store[0]).catalog(tasks=[Twice()])


def test_every_network_task_trains_through_task_train_and_the_baseline_has_none():
    from survey_ml.tasks.registry import builtin_tasks

    assert set(builtin_tasks()) == {"metallicity", "sfclass", "redshift", "strong_lines", "kinematics", "stellar"}
    for name in builtin_tasks():
        task = get_task(name)
        if task.needs_weights:
            assert task.train.__func__ is not Task.train.__func__, name
    with pytest.raises(NotImplementedError, match="strong_lines"):
        get_task("strong_lines").train("any")
