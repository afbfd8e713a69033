"""A user's own torch network as a survey_ml task, from a separately installed package (entry point).

The package (tests/plugin_example, the README's worked example) is pip-installed into a
throw-away folder; a fresh Python with that folder on its path finds the task through the
``survey_ml.tasks`` entry-point group and ``survey-ml run-catalog`` runs it over a release on
a real LocalCluster - nothing in survey_ml names it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLE = Path(__file__).resolve().parent / "plugin_example"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package pip-installed (no deps, no network) into its own site folder."""
    site = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "halpha-window"   # a copy: the build leaves nothing in the repo
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("conftest.py", "__pycache__", "*.egg-info", "build"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, cwd=source.parent)
    assert list(site.glob("halpha_window-*.dist-info/entry_points.txt"))
    return site


def _python(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_readme_shows_the_example_package_as_it_is():
    text = README.read_text()
    for name in ("halpha_window/task.py", "pyproject.toml"):
        source = (EXAMPLE / name).read_text().strip()
        assert source in text, f"README's worked example differs from tests/plugin_example/{name}"
    code = (EXAMPLE / "halpha_window/task.py").read_text()
    assert len([line for line in code.splitlines() if line.strip()]) <= 60


def test_entry_point_task_runs_over_a_release_without_touching_survey_ml(installed, tmp_path, client):
    from survey_ml.simulate import write_mock_release
    from survey_ml.store import ingest
    from survey_ml.tasks import available_tasks

    assert "halpha_window" not in available_tasks()       # not installed in this process
    mock = write_mock_release(tmp_path / "mock", 96, seed=4, client=client)
    ingest(mock.spectra_dir, tmp_path / "store", "dr10", client=client, chunk_rows=32)
    # the user saves their network (here: its seeded initial weights) in survey_ml's weights format
    made = _python(installed, f"""
        import torch
        from halpha_window.task import WindowNet
        from survey_ml.core.inference import save_weights
        from survey_ml.tasks import available_tasks, get_task
        torch.manual_seed(3)
        save_weights(WindowNet(), {str(tmp_path / 'window.pt')!r}, "halpha_window", ["halpha_score"])
        print(available_tasks(), get_task("halpha_window").__module__)
    """, tmp_path)
    assert made.returncode == 0, made.stderr
    assert "'halpha_window'" in made.stdout and "halpha_window.task" in made.stdout
    spec = tmp_path / "my_release.toml"
    spec.write_text(textwrap.dedent(f"""
        [release]
        name = "dr10"
        [cuts]
        z_max = 0.3
        [tasks.sfclass]
        [tasks.halpha_window]
        weights = {str(tmp_path / 'window.pt')!r}
        half_width_a = 30.0
    """))
    run = _python(installed, f"""
        import sys
        from survey_ml.cli.main import main
        sys.exit(main(["run-catalog", {str(spec)!r}, "--store", {str(tmp_path / 'store')!r},
                       "--out", {str(tmp_path / "run")!r}, "--workers", "1"]))
    """, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    catalog = pd.read_parquet(tmp_path / "run" / "catalog")
    assert list(catalog.columns)[-5:] == ["p_starforming", "sf_flag", "halpha_score", "status", "message"]
    predicted = catalog["status"].isin(["ok", "masked_values"]).to_numpy()
    assert predicted.sum() >= 60
    assert np.isfinite(catalog.loc[predicted, "halpha_score"]).all()
    assert catalog.loc[~predicted, "halpha_score"].isna().all()
    # the values are the user's network on the user's inputs, recomputed here outside survey_ml's runner
    check = _python(installed, f"""
        import numpy as np, pandas as pd, torch
        from halpha_window.task import WindowNet, halpha_windows
        from survey_ml.core.inference import load_model
        from survey_ml.store import open_release
        release = open_release({str(tmp_path / 'store')!r})
        rows = np.arange(10)
        block = release.read_block(0, 10)
        x = halpha_windows(release.wavelength(), block["flux"], release.rows["z"].to_numpy(float)[rows], 32, 30.0)
        net, _ = load_model({str(tmp_path / 'window.pt')!r}, "cpu", WindowNet)
        with torch.inference_mode():
            print(" ".join(repr(float(v)) for v in net(torch.from_numpy(x))[:, 0]))
    """, tmp_path)
    assert check.returncode == 0, check.stderr
    expected = np.array([float(v) for v in check.stdout.split()], dtype=np.float32)
    got = catalog["halpha_score"].to_numpy()[:10]
    ok = predicted[:10]
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-5, atol=1e-6)


def test_an_unknown_option_of_a_task_names_the_key_and_the_file(tmp_path):
    from survey_ml.config import SpecError, load_release_spec
    from survey_ml.tasks.registry import tasks_from_spec

    spec = tmp_path / "typo.toml"
    spec.write_text('[release]\nname = "dr10"\n[tasks.metallicity]\nmin_coverge = 0.4\n')
    with pytest.raises(SpecError, match=re.escape(f"{spec} [tasks.metallicity]: unknown key 'min_coverge'")):
        tasks_from_spec(load_release_spec(spec))
    spec.write_text('[release]\nname = "dr10"\n[tasks.metalicity]\n')
    with pytest.raises(SpecError, match="unknown task 'metalicity'"):
        tasks_from_spec(load_release_spec(spec))
    spec.write_text('[release]\nname = "dr10"\n[cut]\nz_max = 0.2\n')
    with pytest.raises(SpecError, match=re.escape(f"{spec}: unknown table [cut]")):
        load_release_spec(spec)
