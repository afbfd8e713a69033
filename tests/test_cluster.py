"""connect(): LocalCluster by default, an existing scheduler by address or environment."""
from __future__ import annotations

import subprocess
import sys
import urllib.request

from distributed import LocalCluster

from survey_ml.cluster import SCHEDULER_ENV, connect


def test_default_is_local_cluster_with_localhost_dashboard(client, capsys):
    info = client.scheduler_info()
    assert len(info["workers"]) == 2
    assert all(w["nthreads"] == 1 for w in info["workers"].values())
    link = client.dashboard_link
    assert link.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(link, timeout=30) as response:  # the dashboard is really served
        assert response.status == 200 and b"Dask" in response.read()


def test_prints_dashboard_link(capsys):
    c = connect(n_workers=1, processes=False, dashboard_address="127.0.0.1:0")
    try:
        out = capsys.readouterr().out
        assert "Dask dashboard at http://127.0.0.1:" in out and c.dashboard_link in out
    finally:
        c.close()


def test_existing_scheduler_by_address_and_env(monkeypatch):
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None, protocol="tcp://", host="127.0.0.1") as cluster:
        c = connect(cluster.scheduler_address, quiet=True)
        assert c.scheduler.address == cluster.scheduler_address
        assert c.submit(sum, [1, 2, 3]).result() == 6
        c.close()
        monkeypatch.setenv(SCHEDULER_ENV, cluster.scheduler_address)
        c = connect(quiet=True)
        assert c.scheduler.address == cluster.scheduler_address
        c.close()


def test_cli_uses_scheduler_flag(tmp_path):
    """`survey-ml ingest --scheduler ADDR` runs on that cluster, not a new one."""
    from survey_ml.simulate import write_mock_release

    mock = write_mock_release(tmp_path / "mock", 8, seed=2)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None, protocol="tcp://", host="127.0.0.1") as cluster:
        out = subprocess.run([sys.executable, "-m", "survey_ml.cli", "ingest", str(mock.spectra_dir),
                              "--store", str(tmp_path / "store"), "--scheduler", cluster.scheduler_address],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "8 new rows" in out.stdout and "ok                    8" in out.stdout
