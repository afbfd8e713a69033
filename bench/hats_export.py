"""HATS export at catalog scale: hats-import on a Dask cluster against writing the same rows as plain Parquet.

A catalog of ``--rows`` rows in parts of 2,048 (the dr10 columns, positions spread like LAMOST's
footprint: dec -10..+70) is written as survey_ml parts, then exported as a HATS collection
(:func:`survey_ml.catalog.export_hats`: partitioning by HEALPix, sorting, the 10" margin cache)
on a 2-worker LocalCluster. Reported: seconds and rows/s of the export, its ratio to writing the
same rows once as plain Parquet (the floor any export pays), pixels and rows per pixel, and an
LSDB cone search of 1 degree against a brute-force astropy separation on the same rows (rows
equal, seconds of each). Prints JSON; keeps bench/results/hats_export.json.

Usage: python bench/hats_export.py [--rows 200000]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()

    import lsdb
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from survey_ml.catalog import export_hats
    from survey_ml.catalog.parts import write_part
    from survey_ml.cluster.client import connect
    from survey_ml.config import load_release_spec
    from survey_ml.dask.blocks import catalog_columns
    from survey_ml.tasks.registry import tasks_from_spec

    columns = catalog_columns("spectra", tasks_from_spec(load_release_spec("dr10")))
    rng = np.random.default_rng(0)
    n = args.rows
    frame = pd.DataFrame({c.name: (np.zeros(n, dtype=c.dtype) if c.dtype not in ("string", "bool")
                                   else np.full(n, "ok" if c.name == "status" else "") if c.dtype == "string"
                                   else np.zeros(n, bool)) for c in columns})
    frame["row"] = np.arange(n)
    frame["obsid"] = np.arange(n) + 10**8
    frame["ra"] = rng.uniform(0, 360, n)
    frame["dec"] = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-10)), np.sin(np.radians(70)), n)))
    for name in ("z", "oh12", "z_cnn"):
        frame[name] = rng.normal(0.1 if "z" in name else 8.7, 0.05, n).astype(frame[name].dtype)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k, start in enumerate(range(0, n, 2048)):
            write_part(frame.iloc[start:start + 2048], tmp / "catalog", k, {"bench": "hats"}, columns)
        t0 = time.perf_counter()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp / "plain.parquet")
        plain_s = time.perf_counter() - t0
        client = connect(n_workers=2, dashboard_address="127.0.0.1:0", quiet=True)
        try:
            t0 = time.perf_counter()
            export = export_hats(tmp / "catalog", tmp / "hats", client, name="bench")
            export_s = time.perf_counter() - t0
            catalog = lsdb.open_catalog(tmp / "hats")
            t0 = time.perf_counter()
            found = catalog.cone_search(150.0, 20.0, 3600.0).compute()
            cone_s = time.perf_counter() - t0
        finally:
            client.close()
        t0 = time.perf_counter()
        sky = SkyCoord(frame["ra"].to_numpy() * u.deg, frame["dec"].to_numpy() * u.deg)
        inside = sky.separation(SkyCoord(150 * u.deg, 20 * u.deg)) < 1 * u.deg
        brute_s = time.perf_counter() - t0
    emit("hats_export", {
        "rows": n, "workers": 2, "parts": (n + 2047) // 2048,
        "export_s": round(export_s, 2), "export_rows_per_s": round(n / export_s),
        "plain_parquet_s": round(plain_s, 3), "export_over_plain_parquet": round(export_s / plain_s, 1),
        "hats_pixels": export.n_pixels, "rows_per_pixel_mean": round(n / export.n_pixels),
        "cone_search_1deg": {"rows": int(len(found)), "brute_force_rows": int(inside.sum()),
                             "same_rows": sorted(found["row"].tolist()) == sorted(frame.loc[inside, "row"].tolist()),
                             "lsdb_s": round(cone_s, 3), "astropy_brute_force_s": round(brute_s, 3)},
    })


if __name__ == "__main__":
    main()
