"""Digests of the catalogs of small fixed runs: the redesign must leave every value unchanged.

``python -m tests.catalog_digests`` records them (``tests/data/catalog_digests.json``) from
the code as it is; ``tests/test_catalog_digests.py`` re-runs the same runs and compares
column by column. A digest covers a column's name, dtype and every value (NaNs and missing
strings included), not the Parquet bytes: provenance (paths, versions) may change.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

DIGESTS = Path(__file__).resolve().parent / "data" / "catalog_digests.json"


def column_digest(values: pd.Series) -> str:
    """SHA-256 (16 hex digits) of one column's dtype and values.

    Examples
    --------
    >>> column_digest(pd.Series([1.0, np.nan])) == column_digest(pd.Series([1.0, np.nan]))
    True
    >>> column_digest(pd.Series([1.0, 2.0])) == column_digest(pd.Series([1.0, 2.5]))
    False
    """
    digest = hashlib.sha256(str(values.dtype).encode())
    if values.dtype.kind in "biufc":
        digest.update(np.ascontiguousarray(values.to_numpy()).tobytes())
    else:
        digest.update("\x1f".join("\x00" if pd.isna(v) else str(v) for v in values).encode())
    return digest.hexdigest()[:16]


def catalog_digest(catalog: pd.DataFrame) -> dict[str, str]:
    """``{column: digest}`` in the catalog's column order."""
    return {name: column_digest(catalog[name]) for name in catalog.columns}


def fixed_runs(root: Path, client) -> dict[str, pd.DataFrame]:
    """The catalogs of the three small fixed runs (dr10, sami-dr3, manga-dr17) on ``client``."""
    from survey_ml import run_catalog
    from survey_ml.simulate import DEFECTS, inject_defect, write_mock_release
    from survey_ml.simulate.ifu import simulate_ifu_release

    root = Path(root)
    mock = write_mock_release(root / "dr10_mock", 300, seed=11, client=client)
    for k, defect in enumerate(DEFECTS):
        inject_defect(mock.files[13 * k + 2], defect)
    spec = root / "dr10_small.toml"
    text = (Path(__file__).resolve().parents[1] / "survey_ml" / "catalogs" / "dr10.toml").read_text()
    spec.write_text(text.replace("chunk_rows = 2048", "chunk_rows = 128"))
    catalogs = {}
    report = run_catalog(spec, input=mock.spectra_dir, out=root / "dr10_run", client=client, progress=False)
    catalogs["dr10"] = pd.read_parquet(report.catalog_dir)
    for release, survey in (("sami-dr3", "sami"), ("manga-dr17", "manga")):
        ifu = simulate_ifu_release(root / f"{survey}_mock", 40, survey=survey, seed=7, client=client)
        report = run_catalog(release, input=ifu.root, out=root / f"{survey}_run", client=client, progress=False)
        catalogs[release] = pd.read_parquet(report.catalog_dir)
    for frame in catalogs.values():  # messages name files under the temporary root
        for name in frame.columns[frame.dtypes == "string"]:
            frame[name] = frame[name].str.replace(str(root), "<root>", regex=False)
    return catalogs


if __name__ == "__main__":
    import tempfile

    from survey_ml.cluster.client import connect

    with tempfile.TemporaryDirectory() as tmp:
        client = connect(n_workers=2, dashboard_address="127.0.0.1:0", quiet=True)
        try:
            runs = fixed_runs(Path(tmp), client)
        finally:
            client.close()
    DIGESTS.write_text(json.dumps({k: catalog_digest(v) for k, v in runs.items()}, indent=1) + "\n")
    print({k: len(v) for k, v in runs.items()}, "->", DIGESTS)
