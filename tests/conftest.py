"""Shared fixtures: the real survey files (read in place) and one real Dask LocalCluster."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Real survey files live beside the repository (../shared/fixtures/real); never copied in.
REAL_FIXTURES = Path(os.environ.get(
    "SURVEY_ML_REAL_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"))


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """Folder of real survey files; tests skip with a reason where it is absent."""
    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real survey fixtures not found at {REAL_FIXTURES} (set SURVEY_ML_REAL_FIXTURES)")
    return REAL_FIXTURES


@pytest.fixture(scope="session")
def client():
    """A real distributed LocalCluster: 2 worker processes, 1 thread each, localhost dashboard."""
    from survey_ml.cluster import connect

    c = connect(n_workers=2, dashboard_address="127.0.0.1:0", quiet=True)
    yield c
    c.close()
