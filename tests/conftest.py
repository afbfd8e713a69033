"""Shared fixtures: the real survey files (read in place) and one real Dask LocalCluster."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Real survey files live beside the repository (../shared/fixtures/real); never copied in.
REAL_FIXTURES = Path(os.environ.get(
    "SURVEY_ML_REAL_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"))


def pytest_collection_modifyitems(config, items):
    """``gpu``-marked tests run only where dask-cuda finds a GPU (they are skipped, with why, elsewhere)."""
    if not any("gpu" in item.keywords for item in items):
        return
    from survey_ml.cluster.client import gpu_count

    n_gpus, reason = gpu_count()
    if n_gpus:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU and dask-cuda: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """Folder of real survey files; tests skip with a reason where it is absent."""
    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real survey fixtures not found at {REAL_FIXTURES} (set SURVEY_ML_REAL_FIXTURES)")
    return REAL_FIXTURES


@pytest.fixture(scope="session")
def client():
    """A real distributed LocalCluster: 2 worker processes, 1 thread each, localhost dashboard."""
    from survey_ml.cluster.client import connect

    c = connect(n_workers=2, dashboard_address="127.0.0.1:0", quiet=True)
    yield c
    c.close()


@pytest.fixture(scope="session")
def small_library(tmp_path_factory, client):
    """A 160-galaxy bagpipes library (seed 0: galaxies the shipped weights never saw), built once."""
    from survey_ml.simulate.library import LibraryConfig, build_library

    return build_library(LibraryConfig(n=160, seed=0, block_size=40), cache_dir=tmp_path_factory.mktemp("library"),
                         client=client)
