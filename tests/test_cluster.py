"""connect(): LocalCluster by default, an existing scheduler by address or environment."""
from __future__ import annotations

import subprocess
import sys
import urllib.request

from distributed import LocalCluster

from survey_ml.cluster.client import SCHEDULER_ENV, connect


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
        out = subprocess.run([sys.executable, "-m", "survey_ml.cli.main", "ingest", str(mock.spectra_dir),
                              "--store", str(tmp_path / "store"), "--scheduler", cluster.scheduler_address],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "8 new rows" in out.stdout and "ok                    8" in out.stdout


def test_cuda_cluster_falls_back_to_cpu_workers_with_a_reason(capsys):
    """--cluster cuda on a machine without a GPU (or dask-cuda): CPU workers, and it says why."""
    import warnings

    import pytest

    from survey_ml.cluster.client import gpu_count

    n_gpus, reason = gpu_count()
    if n_gpus:
        pytest.skip("this machine has a GPU: the fallback is not taken (see the gpu-marked tests)")
    assert reason and ("dask-cuda" in reason or "GPU" in reason)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = connect(cluster="cuda", n_workers=1, dashboard_address="127.0.0.1:0")
    try:
        out = capsys.readouterr().out
        assert "falling back to CPU workers" in out and reason in out
        assert any(issubclass(w.category, RuntimeWarning) and reason in str(w.message) for w in caught)
        assert c.survey_ml_kind.startswith("local (cuda fallback")
        assert len(c.scheduler_info()["workers"]) == 1
        assert c.submit(sum, [1, 2]).result() == 3
    finally:
        c.close()


def test_fallback_reason_when_dask_cuda_lacks_its_cuda_runtime(tmp_path, monkeypatch):
    """An importable-but-broken dask-cuda (no CUDA bindings) is named as such, not as 'not installed'."""
    fake = tmp_path / "dask_cuda"
    (fake / "utils").mkdir(parents=True)
    (fake / "__init__.py").write_text("from cuda import bindings  # what dask-cuda 26 does on import\n")
    (fake / "utils" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "dask_cuda" or m.startswith("dask_cuda.")]:
        monkeypatch.delitem(sys.modules, name)
    from survey_ml.cluster.client import gpu_count

    n, reason = gpu_count()
    assert n == 0 and reason.startswith("dask-cuda cannot be imported")


def test_unknown_cluster_kind_is_refused():
    import pytest

    with pytest.raises(ValueError, match="cluster must be one of"):
        connect(cluster="kubernetes", quiet=True)


@__import__("pytest").mark.gpu
def test_cuda_cluster_puts_one_worker_on_each_gpu():
    """On a GPU machine with dask-cuda: one worker per GPU, each sees CUDA and its model lands there."""
    c = connect(cluster="cuda", dashboard_address="127.0.0.1:0", quiet=True)
    try:
        assert c.survey_ml_kind == "cuda"

        def device_of_model():
            from survey_ml.core.inference import load_model, shipped_weights

            model, _ = load_model(shipped_weights("metallicity"))
            return str(next(model.parameters()).device)

        devices = c.run(device_of_model)
        assert devices and all(d.startswith("cuda") for d in devices.values())
    finally:
        c.close()


def test_cli_says_plainly_when_a_cluster_cannot_start(tmp_path):
    """--cluster slurm where there is no sbatch / --cluster mpi outside mpirun: one clear line, exit 1, no traceback."""
    import os
    import shutil

    import pytest

    if shutil.which("sbatch"):
        pytest.skip("this machine can submit SLURM jobs")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"}
    env.pop(SCHEDULER_ENV, None)
    for kind, words in (("slurm", "`sbatch` is not on PATH"), ("mpi", "mpirun")):
        out = subprocess.run([sys.executable, "-m", "survey_ml", "run-catalog", "dr10", "--cluster", kind,
                              "--out", str(tmp_path / kind)], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 1
        assert f"survey-ml: cannot start the {kind} cluster" in out.stderr and words in out.stderr
        assert "Traceback" not in out.stderr
