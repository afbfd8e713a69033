"""Units and meaning on every column (issue 18): Parquet field metadata and astropy's table meta, FITS
TUNIT/TUCD/TCOMM, a VOTable with UCDs - all from the tasks' column declarations."""
from __future__ import annotations

import warnings

import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.io.votable.ucd import check_ucd
from astropy.table import Table

from survey_ml.config import load_release_spec
from survey_ml.dask.blocks import catalog_columns
from survey_ml.tasks import get_task


@pytest.mark.parametrize("kind, names", [("spectra", ["metallicity", "sfclass", "redshift", "strong_lines"]),
                                         ("maps", ["kinematics"])])
def test_every_shipped_column_has_a_valid_ucd_and_a_description(kind, names):
    for column in catalog_columns(kind, [get_task(n)() for n in names]):
        assert column.description, column.name
        assert column.ucd and check_ucd(column.ucd, check_controlled_vocabulary=True), (column.name, column.ucd)


@pytest.fixture(scope="module")
def run(tmp_path_factory, real_fixtures, client):
    from survey_ml.dask.runner import run_catalog
    from survey_ml.store import ingest

    root = tmp_path_factory.mktemp("units")
    ingest(real_fixtures / "lamost", root / "store", "dr10", client=client)
    spec = load_release_spec("dr10")
    spec["outputs"] = {**spec.get("outputs", {}), "votable": "dr10.vot"}
    report = run_catalog(spec, store=root / "store", out=root / "out", client=client, tasks=["strong_lines"],
                         progress=False)
    columns = {c.name: c for c in catalog_columns("spectra", [get_task("strong_lines")()])}
    return report, columns


def test_parquet_parts_carry_units_descriptions_and_ucds(run):
    report, columns = run
    part = sorted(report.catalog_dir.glob("part-*.parquet"))[0]
    schema = pq.read_schema(part)
    for name, column in columns.items():
        meta = schema.field(name).metadata or {}
        assert meta.get(b"ucd", b"").decode() == column.ucd and meta.get(b"description", b"").decode() == \
            column.description, name
        assert meta.get(b"unit", b"").decode() == column.unit, name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy finds everything it needs: no guessing
        table = Table.read(part)
    assert table["ra"].unit == u.deg and table["oh12_n2"].unit == u.dex
    assert table["hb"].unit == u.Unit("1e-17 erg / (s cm2)") and "Hbeta" in table["hb"].description


def test_fits_and_votable_say_what_each_column_is(run):
    report, columns = run
    with fits.open(report.outputs["fits"]) as hdul:
        header = hdul[1].header
        names = [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)]
        for i, name in enumerate(names, start=1):
            assert header.get(f"TUCD{i}") == columns[name].ucd, name
        assert header[f"TUNIT{names.index('ra') + 1}"] == "deg"
    fields = {f.name: f for f in parse_single_table(report.outputs["votable"]).fields}
    assert set(fields) == set(columns)
    assert fields["dec"].ucd == "pos.eq.dec;meta.main" and str(fields["dec"].unit) == "deg"
    assert fields["oh12_n2"].ucd == "phys.abund.Z" and fields["oh12_n2"].description.startswith("[dex] ")


def test_the_data_model_page_is_what_the_column_declarations_say():
    from pathlib import Path

    from survey_ml.dask.datamodel import datamodel_markdown

    page = Path(__file__).resolve().parents[1] / "docs" / "datamodel.md"
    assert page.read_text() == datamodel_markdown(), "run: python -m survey_ml.dask.datamodel docs/datamodel.md"


def test_fits_provenance_is_whole_and_strings_read_as_str(run):
    import json

    report, _ = run
    header = fits.getheader(report.outputs["fits"], 1)
    weights = json.loads(header["SML_WEIG"])  # no longer cut at 68 characters
    assert all(len(v) == 64 for v in weights.values())
    table = Table.read(report.outputs["fits"], character_as_bytes=False)
    assert isinstance(table["status"][0], str)
