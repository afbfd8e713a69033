"""The independent cross-check generator (simulate/crosscheck.py): priors, files, labels, a run on it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_ml.simulate.crosscheck import (CrosscheckConfig, bpt_label, curti_oh12, draw_galaxies,
                                           draw_observations, write_crosscheck_release)


def test_priors_differ_from_the_training_simulator_where_they_should():
    g = draw_galaxies(5000, 3)
    sf = g[g["starforming_host"]]
    assert abs(np.corrcoef(sf["oh12"], sf["logu"])[0, 1]) < 0.05       # logU independent of metallicity
    resid = sf["oh12"] - np.clip(curti_oh12(sf["log_mstar"]), 7.99, 9.09)
    assert 0.07 < resid[sf["oh12"].between(8.1, 9.0)].std() < 0.13         # on the Curti MZR with 0.1 dex scatter
    assert set(g["dust_law"]) == {"Cardelli", "SMC"}
    assert set(sf["sfh"]) == {"exponential", "lognormal", "constant_burst"}
    assert g["starforming_host"].mean() == pytest.approx(0.7, abs=0.02)


def test_observations_have_wrong_catalogue_redshifts_and_the_snr_range():
    obs = draw_observations(CrosscheckConfig(n=20000, seed=1))
    assert obs["z_catalogue_wrong"].mean() == pytest.approx(0.01, abs=0.003)
    right = ~obs["z_catalogue_wrong"]
    dz = (obs["z_catalogue"] - obs["z"])[right] / (1 + obs["z"][right])
    assert np.abs(dz).max() < 5e-4
    assert obs["snr_r_target"].between(3.0, 40.0).all() and obs["z"].between(0.01, 0.3).all()


def test_bpt_label_follows_kauffmann_and_kewley():
    assert bpt_label(-0.5, -0.3, 30.0) == "sf"
    assert bpt_label(-0.2, 0.0, 30.0) == "composite"
    assert bpt_label(0.1, 0.8, 30.0) == "agn"
    assert bpt_label(-0.5, -0.3, 2.0) == "passive"


@pytest.fixture(scope="module")
def crosscheck_release(tmp_path_factory):
    pytest.importorskip("bagpipes")
    root = tmp_path_factory.mktemp("crosscheck")
    return write_crosscheck_release(root, CrosscheckConfig(n=12, seed=5, block_size=12))


def test_release_round_trips_through_the_lamost_reader(crosscheck_release):
    from survey_ml.io.lamost import read_lamost_catalogue, read_lamost_spectrum

    truth = pd.read_parquet(crosscheck_release / "truth.parquet")
    catalogue = read_lamost_catalogue(crosscheck_release / "catalogue.csv")
    assert truth["ok"].all() and len(catalogue) == len(truth) == 12
    for row in truth.itertuples():
        spec = read_lamost_spectrum(crosscheck_release / row.file)
        assert spec.meta["obsid"] == row.obsid and spec.flux.shape == (3909,)
        assert spec.meta["z"] == pytest.approx(row.z_catalogue, abs=1e-7)
        assert row.snr_r == pytest.approx(row.snr_r_target, rel=0.15)     # measured as a pipeline would
    assert set(truth["bpt_class"]) <= {"sf", "composite", "agn", "passive"}
    assert (truth["starforming"] == (truth["bpt_class"] == "sf")).all()
    assert (truth.loc[~truth["starforming_host"], "bpt_class"] == "passive").all()


def test_run_catalog_reads_the_crosscheck_release(crosscheck_release, tmp_path, client):
    from survey_ml.dask.runner import run_catalog

    report = run_catalog("dr10", input=crosscheck_release, out=tmp_path / "run", client=client, progress=False,
                         tasks=["metallicity", "sfclass"])
    catalog = pd.read_parquet(report.catalog_dir)
    truth = pd.read_parquet(crosscheck_release / "truth.parquet").set_index("obsid").loc[catalog["obsid"]]
    assert len(catalog) == 12
    inside = (catalog["status"] == "ok").to_numpy()
    assert inside.sum() >= 8
    assert np.isfinite(catalog.loc[inside, "oh12"]).all() and (catalog.loc[inside, "oh12_err"] > 0).all()
    assert np.abs(catalog.loc[inside, "oh12"].to_numpy() - truth["oh12"].to_numpy()[inside]).max() < 1.5
    # the truth.parquet beside the input feeds the report's predicted-vs-true and coverage figures
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Predicted against true values" in html and "Coverage of the quoted errors" in html
    assert "agrees with the truth label" in html
