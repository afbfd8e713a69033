"""The benchmark suite runner (``python -m bench``) and the release projection (bench/projection.py)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def _write(folder: Path, name: str, payload: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps(payload))


def synthetic_results(folder: Path) -> None:
    """scaling.json, ingest.json and kinematics.json with round numbers (hand-checkable projections)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder, "scaling", {
        "machine": {"cpu_model": "test CPU", "cpu_count": 2}, "chunk_rows": 1000,
        "configurations": {"1": {"workers": 1, "catalog_bytes_per_spectrum": 100.0},
                           "2": {"workers": 2, "catalog_bytes_per_spectrum": 100.0}},
        "efficiency": {"2": {"wall_best": 0.95}},
        "per_worker_spectra_per_s": 250.0, "per_worker_spectra_per_s_from": "2 workers x 1 thread",
        "stage_profile": {"cpu_ms_per_spectrum_total": 4.0, "cpu_ms_per_spectrum_not_networks": 3.0},
        "network_flops_per_spectrum_total": 40_000_000})
    _write(folder, "ingest", {"n_files": 10_000, "n_workers": 2, "chunk_rows": 1000,
                              "survey_ml_dask_ingest": {"files_per_s": 1000.0, "store_mib": 200.0}})
    _write(folder, "kinematics", {"n": 1000, "torch_threads": 2, "machine": {"cpu_count": 2},
                                  "prepare_galaxies_per_s_2_workers": 200.0,
                                  "results": {"psf_aware": {"mc_seconds_100_passes": 2.0}}})


@pytest.fixture
def projection(monkeypatch):
    """bench/projection.py as a module (the benchmark scripts import ``_common`` from their folder)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import projection as module

    return module


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def test_suite_lists_its_plan_with_the_machine_block():
    heads = {_head()}
    out = subprocess.run([sys.executable, "-m", "bench", "--list", "--scale", "full"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True)
    heads.add(_head())
    plan = json.loads(out.stdout)
    names = [b["name"] for b in plan["benchmarks"]]
    assert names == ["ingest", "run_catalog", "redshift", "kinematics", "scaling", "projection"]
    commands = {b["name"]: b["command"] for b in plan["benchmarks"]}
    assert commands["ingest"][-2:] == ["--n", "10000"] and commands["kinematics"][-2:] == ["--epochs", "120"]
    assert Path(plan["out"]) == BENCH / "results"  # full scale: the published results folder
    machine = plan["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"] and machine["torch"] and machine["dask"]
    assert isinstance(machine["gpus"], list)
    # the tests run in a git clone: the block names its HEAD (read before and after, as a commit may land meanwhile)
    assert machine["git"]["commit"] in heads and re.fullmatch(r"[0-9a-f]{40}", machine["git"]["commit"])
    assert isinstance(machine["git"]["dirty"], bool)


def test_git_commit_is_head_and_dirty_in_a_clone_and_none_outside_git(tmp_path, monkeypatch, projection):
    """bench/_common.git_commit: HEAD and local changes of a real repository; None, None where git finds none."""
    from _common import git_commit  # bench/ is on sys.path (the projection fixture)

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("one\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "a.txt"], ["commit", "-q", "-m", "one"]):
        subprocess.run(git + args, cwd=repo, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    assert git_commit(repo) == {"commit": head, "dirty": False}
    (repo / "untracked.txt").write_text("not tracked\n")     # untracked files do not count
    assert git_commit(repo) == {"commit": head, "dirty": False}
    (repo / "a.txt").write_text("two\n")
    assert git_commit(repo) == {"commit": head, "dirty": True}
    outside = tmp_path / "no-git"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path is looked for
    assert git_commit(outside) == {"commit": None, "dirty": None}


def test_suite_runs_benchmarks_records_a_failure_and_goes_on(tmp_path):
    out = tmp_path / "results"
    synthetic_results(out)
    before = (out / "ingest.json").read_text()
    proc = subprocess.run([sys.executable, "-m", "bench", "--scale", "small", "--only", "ingest,projection",
                           "--out", str(out), "--args", "ingest=--n not-a-number"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one benchmark failed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scale"] == "small" and summary["machine"]["cpu_count"] >= 1
    ingest, proj = summary["benchmarks"]["ingest"], summary["benchmarks"]["projection"]
    assert ingest["status"] == "failed" and ingest["returncode"] == 2 and "invalid int value" in ingest["error"]
    assert (out / "ingest.json").read_text() == before  # a failed run leaves the earlier result alone
    assert proj["status"] == "ok" and proj["figures"] == ["projection.md"] and summary["n_failed"] == 1
    result = json.loads((out / "projection.json").read_text())
    assert result["benchmark"] == "projection" and result["suite"]["scale"] == "small"
    assert result["machine"]["git"]["commit"] == summary["machine"]["git"]["commit"]
    assert result["measured"]["dr10_spectra_per_s_per_core"]["value"] == 250.0
    assert "| 32 cores |" in (out / "projection.md").read_text()
    assert (out / "logs" / "ingest.log").is_file()


def test_projection_arithmetic_by_hand(tmp_path, projection):
    results = tmp_path / "results"
    synthetic_results(results)
    rates = projection.measured_rates(results, real_lamost=tmp_path / "no-real-files")
    values = {k: r["value"] for k, r in rates.items()}
    assert values["ingest_files_per_s_per_core"] == 500.0
    assert values["store_bytes_per_spectrum"] == pytest.approx(200 * 2**20 / 10_000)
    assert values["dr10_cpu_share_not_networks"] == 0.75
    assert values["ifu_prepare_galaxies_per_s_per_core"] == 100.0 and values["ifu_mc_galaxies_per_s_per_core"] == 250.0
    a = projection.Assumptions(cores=(10,), gpus=(2,), cores_per_gpu=4, gpu_tflops=4.0, fs_gbps=1.0,
                               lamost_n=100_000, manga_n=1000, manga_maps_mib=10.0, gunzip_mib_per_s=50.0,
                               lamost_file_bytes=50_000.0)

    lamost = projection.lamost_projection(a.lamost_n, rates, a)
    cpu = lamost["cpu"]["10"]
    # ingest: 100 tasks of 1000 files, 10 waves on 10 cores, 1000 / 500 s each; I/O 1e5 x (50 kB + store) / 1 GB/s
    assert cpu["ingest"]["cpu_s"] == pytest.approx(20.0)
    assert cpu["ingest"]["io_s"] == pytest.approx(1e5 * (50_000 + 20_971.52) / 1e9)
    # inference: 100 tasks, 10 waves of 1000 / 250 s
    assert cpu["inference"]["seconds"] == pytest.approx(40.0) and cpu["total_s"] == pytest.approx(60.0)
    assert lamost["io_volume"]["input_gb"] == pytest.approx(5.0)
    # GPU: networks 4e12 / 4e7 = 1e5 spectra/s; 4 cores feed 4 x 250 / 0.75 = 1333.3 spectra/s: the cores bind
    gpu = lamost["gpu"]["2"]
    assert lamost["gpu_network_spectra_per_s"] == pytest.approx(100_000.0)
    assert gpu["spectra_per_s_per_gpu"] == pytest.approx(4000 / 3) and gpu["bound_by"] == "cpu cores beside the gpu"
    assert gpu["inference"]["seconds"] == pytest.approx(50 * 1000 / (4000 / 3))   # 50 waves on 2 GPU workers
    assert gpu["ingest"]["seconds"] == pytest.approx(13 * 2.0)                     # 100 tasks on 8 cores: 13 waves

    manga = projection.manga_projection(a.manga_n, rates, a, chunk=64)
    # per galaxy: 10 MiB / 50 MiB/s + 1/100 + 1/250 core-seconds; 16 tasks of 64, 2 waves on 10 cores
    assert manga["cpu"]["10"]["total_s"] == pytest.approx(2 * 64 * 0.214)
    assert manga["gpu"]["2"]["total_s"] == pytest.approx(2 * 64 * 0.21)           # MC passes free on the GPU
    assert manga["io_volume"]["input_gb"] == pytest.approx(1000 * 10 * 2**20 / 1e9)

    # a measured GPU rate replaces the FLOP assumption; a CPU "gpu.json" does not
    _write(results, "gpu", {"device_type": "cpu", "dr10_network_spectra_per_s": 100.0})
    assert "gpu_dr10_network_spectra_per_s" not in projection.measured_rates(results, tmp_path / "none")
    _write(results, "gpu", {"device": "test GPU", "device_type": "cuda", "dr10_network_spectra_per_s": 1000.0})
    measured = projection.lamost_projection(a.lamost_n, projection.measured_rates(results, tmp_path / "none"), a)
    assert measured["gpu"]["2"]["bound_by"] == "gpu networks"
    assert measured["gpu"]["2"]["inference"]["seconds"] == pytest.approx(50.0)
    text = projection.markdown(projection.project(rates, a), rates, a)
    assert "| 10 cores |" in text and "gpu_tflops" in text and "scaling.json: per_worker_spectra_per_s" in text


def test_suite_stops_a_benchmark_past_its_timeout(tmp_path):
    out = tmp_path / "results"
    synthetic_results(out)
    proc = subprocess.run([sys.executable, "-m", "bench", "--only", "projection", "--out", str(out),
                           "--timeout", "0.05"], cwd=REPO, capture_output=True, text=True, timeout=120)
    entry = json.loads((out / "summary.json").read_text())["benchmarks"]["projection"]
    assert proc.returncode == 1 and entry["status"] == "timeout" and entry["returncode"] is None
    assert entry["error"].startswith("stopped after --timeout 0.05 s")
    assert not (out / "projection.json").exists()
