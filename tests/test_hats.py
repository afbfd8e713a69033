"""HATS collections for LSDB (issue 18): a run writes one with hats-import; lsdb opens it, cone-searches it and
crossmatches it against a second HATS catalog, with the right rows."""
from __future__ import annotations

import lsdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from survey_ml.catalog import export_hats, open_lsdb
from survey_ml.dask.runner import run_catalog
from survey_ml.simulate import write_mock_release


@pytest.fixture(scope="module")
def run(tmp_path_factory, client):
    root = tmp_path_factory.mktemp("hats")
    mock = write_mock_release(root / "mock", 400, seed=11, client=client)
    report = run_catalog("dr10", input=mock.catalogue, out=root / "run", client=client, progress=False)
    return report, pd.read_parquet(report.catalog_dir)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("row").reset_index(drop=True)


def test_run_writes_a_hats_collection_lsdb_opens_with_every_row_and_its_units(run):
    report, catalog = run
    hats = report.lsdb()
    assert isinstance(hats, lsdb.Catalog) and hats.margin is not None  # the margin cache is found with it
    assert hats.hc_structure.catalog_info.total_rows == len(catalog)
    got = _sorted(hats.compute())
    assert got["row"].tolist() == catalog["row"].tolist()
    for name in ("obsid", "ra", "dec", "oh12", "z_cnn", "status"):
        assert got[name].astype(object).equals(catalog[name].astype(object)) or np.allclose(
            got[name].to_numpy(float), catalog[name].to_numpy(float), equal_nan=True), name
    schema = pq.read_schema(next((report.out / "hats" / "dr10" / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet")))
    assert schema.field("oh12").metadata[b"unit"] == b"dex"
    assert schema.field("ra").metadata[b"ucd"] == b"pos.eq.ra;meta.main"
    assert "hats" in report.summary()


def test_cone_search_gives_the_rows_within_the_radius(run):
    report, catalog = run
    centre = catalog.iloc[len(catalog) // 2]
    radius = 25 * u.deg
    found = open_lsdb(report.out).cone_search(centre.ra, centre.dec, radius.to_value(u.arcsec)).compute()
    sky = SkyCoord(catalog["ra"].to_numpy() * u.deg, catalog["dec"].to_numpy() * u.deg)
    inside = sky.separation(SkyCoord(centre.ra * u.deg, centre.dec * u.deg)) < radius
    assert 5 < inside.sum() < len(catalog)  # a real cut through the sky, not everything
    assert sorted(found["row"]) == sorted(catalog.loc[inside, "row"])


def test_crossmatch_against_a_second_hats_catalog_finds_the_right_partners(run, tmp_path):
    report, catalog = run
    rng = np.random.default_rng(5)
    picked = catalog.sample(60, random_state=1)
    offset = SkyCoord(picked["ra"].to_numpy() * u.deg, picked["dec"].to_numpy() * u.deg).directional_offset_by(
        rng.uniform(0, 360, 60) * u.deg, rng.uniform(0.1, 0.8, 60) * u.arcsec)
    others = pd.DataFrame({"ext_id": np.arange(60) + 500, "ra": offset.ra.deg, "dec": offset.dec.deg,
                           "true_obsid": picked["obsid"].to_numpy(), "mag_r": rng.uniform(15, 18, 60)})
    lonely = pd.DataFrame({"ext_id": np.arange(20) + 900, "ra": rng.uniform(0, 360, 20), "dec": -80.0 + rng.uniform(0, 5, 20),
                           "true_obsid": -1, "mag_r": 20.0})  # the mock sky has nothing down there
    lsdb.from_dataframe(pd.concat([others, lonely], ignore_index=True), catalog_name="photometry",
                        ra_column="ra", dec_column="dec").write_catalog(tmp_path / "photometry")
    external = lsdb.open_catalog(tmp_path / "photometry")
    matched = open_lsdb(report.out).crossmatch(external, radius_arcsec=1.0, n_neighbors=1,
                                                suffix_method="all_columns").compute()
    assert len(matched) == 60
    assert (matched["obsid_dr10"] == matched["true_obsid_photometry"]).all()
    assert (matched["_dist_arcsec"] < 0.81).all()


def test_rows_without_a_position_are_counted_and_left_out(tmp_path, client):
    frame = pd.DataFrame({"row": np.arange(5), "obsid": np.arange(5) + 10, "ra": [10.0, 10.1, np.nan, 10.3, 10.4],
                          "dec": [1.0, 1.1, 1.2, np.nan, 1.4], "status": ["ok", "ok", "bad_header", "bad_header", "ok"]})
    export = export_hats(tmp_path / "catalog", tmp_path / "hats", client, name="tiny", frame=frame)
    assert (export.n_rows, export.n_unplaced) == (3, 2) and "2 rows without ra/dec" in export.summary()
    assert sorted(open_lsdb(tmp_path / "hats").compute()["row"]) == [0, 1, 4]
    again = export_hats(tmp_path / "catalog", tmp_path / "hats", client, name="tiny", frame=frame.iloc[:2])
    assert again.n_rows == 2 and len(open_lsdb(tmp_path / "hats").compute()) == 2  # replaced whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
