"""Catalog parts: atomic, resumable, provenance kept, readable by pandas, pyarrow, dask and astropy."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from survey_ml.catalog.parts import export_fits, finished_parts, part_path, read_catalog, read_provenance, write_part

PROVENANCE = {"version": "0.1.0", "weights_sha256": "ab" * 32, "release": "dr10", "store": "/data/dr10"}


def _chunk(k: int, n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(k)
    return pd.DataFrame({"row": np.arange(k * n, k * n + n), "obsid": 1000 + np.arange(k * n, k * n + n),
                         "oh12": rng.normal(8.9, 0.1, n).astype("float32"),
                         "status": pd.Series(["ok"] * (n - 1) + ["low_snr"], dtype="string")})


def test_parts_round_trip_through_every_reader(tmp_path):
    for k in range(3):
        write_part(_chunk(k), tmp_path, k, PROVENANCE)
    frame = read_catalog(tmp_path)
    assert frame["row"].tolist() == list(range(15))
    assert read_provenance(part_path(tmp_path, 1)) == {**PROVENANCE, "chunk": 1, "n_rows": 5}
    assert ds.dataset(tmp_path, format="parquet").count_rows() == 15
    import dask.dataframe as dd

    assert len(dd.read_parquet(str(tmp_path / "part-*.parquet"))) == 15
    from astropy.table import Table

    fits_path = export_fits(tmp_path, tmp_path / "dr10.fits")
    table = Table.read(fits_path)
    assert len(table) == 15 and table.meta["SML_WEIG"] == "ab" * 32
    assert np.allclose(table["oh12"], frame["oh12"]) and list(table["status"][:5]) == ["ok"] * 4 + ["low_snr"]


def test_resume_sees_only_whole_matching_parts(tmp_path):
    for k in range(4):
        write_part(_chunk(k), tmp_path, k, PROVENANCE)
    assert finished_parts(tmp_path, 5) == {0, 1, 2, 3}
    part_path(tmp_path, 1).unlink()                                    # deleted: redo
    data = part_path(tmp_path, 2).read_bytes()
    part_path(tmp_path, 2).write_bytes(data[: len(data) // 2])        # torn: redo
    write_part(_chunk(3), tmp_path, 3, {**PROVENANCE, "weights_sha256": "cd" * 32})  # other weights
    assert finished_parts(tmp_path, 5) == {0, 3}
    assert finished_parts(tmp_path, 5, require={"weights_sha256": "ab" * 32}) == {0}
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave nothing behind


def test_tidy_catalog_dir_removes_foreign_parts_and_old_temporaries_only(tmp_path):
    import os
    import time

    from survey_ml.catalog.parts import tidy_catalog_dir

    for name in ("part-000000.parquet", "part-000003.parquet", "part-x.parquet", ".part-000001.parquet.tmp-1-ab",
                 ".part-000002.parquet.tmp-2-cd"):
        (tmp_path / name).write_bytes(b"x")
    old = time.time() - 7200
    os.utime(tmp_path / ".part-000001.parquet.tmp-1-ab", (old, old))
    removed = {p.name for p in tidy_catalog_dir(tmp_path, n_chunks=2)}
    assert removed == {"part-000003.parquet", "part-x.parquet", ".part-000001.parquet.tmp-1-ab"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".part-000002.parquet.tmp-2-cd", "part-000000.parquet"]
