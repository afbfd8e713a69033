"""Reliability of run-catalog, for real: a killed worker, a killed client and resume, determinism, damaged parts.

Every run here is on a real LocalCluster (worker processes with nannies) or a real ``survey-ml``
process; workers and clients are killed with SIGKILL, parts are damaged on disk, and the catalogs
are compared with an undisturbed run of the same store and weights.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from survey_ml.catalog.parts import finished_parts, part_path, read_provenance, write_part
from survey_ml.dask.runner import run_catalog

REPO = Path(__file__).resolve().parents[1]
#: The small release: 384 mock spectra in 12 Zarr chunks of 32 rows, so a run lasts a few seconds
#: and is still mid-way when the first part appears.
N_ROWS, CHUNK_ROWS = 384, 32
N_PARTS = N_ROWS // CHUNK_ROWS


def _wait_for(condition, timeout: float, what: str, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(poll)


def _parts(catalog_dir: Path) -> list[Path]:
    return sorted(catalog_dir.glob("part-*.parquet"))


def _stats(catalog_dir: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of every part: a part rewritten (even identically) changes both."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _parts(catalog_dir)}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, client) -> Path:
    """384 parametric mock LAMOST spectra ingested in 12 chunks of 32 rows."""
    from survey_ml.simulate import write_mock_release
    from survey_ml.store import ingest

    root = tmp_path_factory.mktemp("reliability")
    mock = write_mock_release(root / "mock", N_ROWS, seed=4, client=client)
    ingest(mock.spectra_dir, root / "store", "dr10", client=client, chunk_rows=CHUNK_ROWS)
    return root / "store"


@pytest.fixture(scope="module")
def reference_dir(small_store, tmp_path_factory, client) -> Path:
    """The catalog folder of an undisturbed run of the small store (shipped weights)."""
    report = run_catalog("dr10", store=small_store, out=tmp_path_factory.mktemp("reference"), client=client,
                         progress=False)
    assert report.parts_total == report.parts_written == N_PARTS
    return report.catalog_dir


@pytest.fixture(scope="module")
def reference(reference_dir) -> pd.DataFrame:
    """The undisturbed catalog: what every other run of the small store must give."""
    catalog = pd.read_parquet(reference_dir)
    assert catalog["row"].tolist() == list(range(N_ROWS))
    # the redshift task ran too, so its columns are part of every comparison below
    assert np.isfinite(catalog["z_cnn"]).sum() > N_ROWS // 2 and np.isfinite(catalog["oh12"]).sum() > N_ROWS // 4
    return catalog


def test_a_killed_worker_costs_no_rows(small_store, reference, tmp_path):
    """SIGKILL one of two nanny-managed workers mid-run: its tasks are rescheduled, the catalog is whole."""
    from distributed import Client, LocalCluster

    out = tmp_path / "run"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                           host="127.0.0.1", protocol="tcp://")
    client = Client(cluster, set_as_default=False)
    try:
        pids = client.run(os.getpid)
        outcome: dict[str, object] = {}

        def run() -> None:
            try:
                outcome["report"] = run_catalog("dr10", store=small_store, out=out, client=client, progress=False)
            except BaseException as err:  # re-raised below, in the test's thread
                outcome["error"] = err

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        _wait_for(lambda: _parts(out / "catalog") or not runner.is_alive(), 120, "the first part")
        if "error" in outcome:
            raise outcome["error"]
        busy: list[str] = []

        def find_busy() -> bool:
            busy[:] = [address for address, keys in client.processing().items() if keys]
            return bool(busy)

        _wait_for(find_busy, 30, "a worker holding a task")
        written_before_kill = len(_parts(out / "catalog"))
        victim = busy[0]
        os.kill(pids[victim], signal.SIGKILL)
        runner.join(180)
        assert not runner.is_alive(), "run_catalog did not finish after a worker was killed"
        if "error" in outcome:
            raise outcome["error"]

        # the kill landed mid-run, on a worker holding tasks, and the scheduler rescheduled them
        assert 1 <= written_before_kill < N_PARTS
        removed = [event for _, event in client.get_events(victim)
                   if isinstance(event, dict) and event.get("action") == "remove-worker"]
        assert removed and removed[0]["processing-tasks"], "the killed worker held no task"
        # the nanny restarted the killed process; the cluster is whole again
        client.wait_for_workers(2, timeout=60)
        assert pids[victim] not in client.run(os.getpid).values()
    finally:
        client.close()
        cluster.close()

    report = outcome["report"]
    assert report.parts_total == N_PARTS
    catalog = pd.read_parquet(out / "catalog")     # what a user opens: no row lost, none twice
    assert catalog["row"].tolist() == list(range(N_ROWS))
    assert sorted(finished_parts(out / "catalog", N_PARTS)) == list(range(N_PARTS))
    pd.testing.assert_frame_equal(catalog, reference, check_exact=True)


def test_a_killed_client_resumes_from_its_finished_parts(small_store, reference, tmp_path, client):
    """SIGKILL a ``survey-ml run-catalog`` process and its LocalCluster; re-running redoes only what is missing."""
    out = tmp_path / "run"
    catalog_dir = out / "catalog"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "survey_ml", "run-catalog", "dr10", "--store", str(small_store),
               "--out", str(out), "--workers", "1", "--dashboard", "127.0.0.1:0"]
    with open(tmp_path / "run.log", "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)   # its own process group: client, nanny, worker
        try:
            _wait_for(lambda: _parts(catalog_dir) or process.poll() is not None, 180, "the first part")
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended by itself: the log below says why
                pass
            process.wait()

    def group_alive() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    _wait_for(lambda: not group_alive(), 30, "the killed run's worker processes to go", poll=0.05)
    assert process.returncode == -signal.SIGKILL, (tmp_path / "run.log").read_text()[-2000:]

    # atomic writes: every part under its final name is whole, whatever instant the kill hit
    finished = finished_parts(catalog_dir, N_PARTS)
    assert {part_path(catalog_dir, k) for k in finished} == set(_parts(catalog_dir))
    assert 1 <= len(finished) < N_PARTS
    before = _stats(catalog_dir)

    again = run_catalog("dr10", store=small_store, out=out, client=client, progress=False)
    assert again.parts_written == N_PARTS - len(finished)
    after = _stats(catalog_dir)
    assert {name: after[name] for name in before} == before     # the killed run's parts were kept as they were
    catalog = pd.read_parquet(catalog_dir)
    assert catalog["row"].tolist() == list(range(N_ROWS))
    pd.testing.assert_frame_equal(catalog, reference, check_exact=True)


def test_the_same_store_and_weights_give_the_same_catalog(small_store, reference_dir, reference, tmp_path, client):
    """A second cluster run agrees with the first part by part (data and provenance), and so does a run here.

    The run in this process uses every core for torch (2 threads here) where the workers use 1:
    the values do not depend on the thread count.
    """
    again = run_catalog("dr10", store=small_store, out=tmp_path / "again", client=client, progress=False)
    for k in range(N_PARTS):
        a, b = part_path(reference_dir, k), part_path(again.catalog_dir, k)
        assert pq.read_table(a).equals(pq.read_table(b)), f"part {k} differs between two runs"
        assert read_provenance(a) == read_provenance(b)
    in_process = run_catalog("dr10", store=small_store, out=tmp_path / "here", client=False, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(in_process.catalog_dir), reference, check_exact=True)


def test_ifu_runs_are_deterministic(tmp_path, client):
    """MC-dropout kinematics: two runs of one SAMI store (3 chunks of 8 galaxies) give the same catalog."""
    from survey_ml.simulate.ifu import simulate_ifu_release
    from survey_ml.config import SPEC_DIR

    mock = simulate_ifu_release(tmp_path / "mock", 24, survey="sami", seed=5, client=client)
    spec = tmp_path / "sami_small.toml"
    text = (SPEC_DIR / "sami-dr3.toml").read_text()
    assert "chunk_rows = 64" in text
    spec.write_text(text.replace("chunk_rows = 64", "chunk_rows = 8"))
    first = run_catalog(spec, input=mock.root, store=tmp_path / "store", out=tmp_path / "first", client=client,
                        progress=False)
    second = run_catalog(spec, store=tmp_path / "store", out=tmp_path / "second", client=client, progress=False)
    assert first.parts_written == second.parts_written == 3
    a, b = pd.read_parquet(first.catalog_dir), pd.read_parquet(second.catalog_dir)
    assert (a["status"] == "ok").sum() >= 5 and np.isfinite(a["vmax_kms_err"]).sum() >= 5
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_damaged_parts_are_detected_and_exactly_those_are_redone(small_store, reference_dir, reference, tmp_path,
                                                                 client):
    """Truncated, overwritten, bit-flipped and other-weights parts are redone; stray temporary files are ignored."""
    out = tmp_path / "run"
    catalog_dir = out / "catalog"
    shutil.copytree(reference_dir, catalog_dir)
    require = {k: read_provenance(part_path(catalog_dir, 0))[k] for k in ("spec_digest", "store", "weights_sha256")}
    rng = np.random.default_rng(0)

    truncated = part_path(catalog_dir, 1)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    overwritten = part_path(catalog_dir, 3)
    overwritten.write_bytes(rng.integers(0, 256, overwritten.stat().st_size, dtype=np.uint8).tobytes())
    flipped = part_path(catalog_dir, 5)       # 64 bytes of a data page: footer and metadata intact
    data = bytearray(flipped.read_bytes())
    data[len(data) // 10: len(data) // 10 + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    flipped.write_bytes(bytes(data))
    assert pq.read_metadata(flipped).num_rows == CHUNK_ROWS       # only the checksums can tell
    stray = catalog_dir / f".{part_path(catalog_dir, 7).name}.tmp-99999-0badf00d"   # a writer killed mid-write
    stray.write_bytes(part_path(catalog_dir, 7).read_bytes()[:1000])
    other = read_provenance(part_path(catalog_dir, 9))
    other["weights_sha256"] = {**other["weights_sha256"], "metallicity": "0" * 64}
    write_part(pd.read_parquet(part_path(catalog_dir, 9)), catalog_dir, 9,
               {k: v for k, v in other.items() if k not in ("chunk", "n_rows")})
    beyond = part_path(catalog_dir, N_PARTS + 3)          # a part of a chunk this store does not have
    shutil.copy(part_path(catalog_dir, 0), beyond)

    damaged = {1, 3, 5, 9}
    assert finished_parts(catalog_dir, N_PARTS, require=require) == set(range(N_PARTS)) - damaged
    before = _stats(catalog_dir)
    report = run_catalog("dr10", store=small_store, out=out, client=client, progress=False)
    assert report.parts_written == len(damaged)
    after = _stats(catalog_dir)
    assert {name for name in after if after[name] != before.get(name)} == {part_path(catalog_dir, k).name
                                                                          for k in damaged}
    assert not beyond.exists()
    # the stray temporary file is invisible to every reader: the catalog is whole, once
    catalog = pd.read_parquet(catalog_dir)
    pd.testing.assert_frame_equal(catalog, reference, check_exact=True)
    assert ds.dataset(catalog_dir, format="parquet").count_rows() == N_ROWS
    assert len(dd.read_parquet(str(catalog_dir))) == N_ROWS
    assert finished_parts(catalog_dir, N_PARTS, require=require) == set(range(N_PARTS))

