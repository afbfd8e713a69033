"""One CLI grammar (issue 18): RELEASE, --input, --store, --out and the cluster flags the same on every subcommand;
the old spellings still work, with a note; `survey-ml export` writes a finished run in other formats."""
from __future__ import annotations

import pandas as pd
import pytest

from survey_ml.cli.main import build_parser, main


@pytest.mark.parametrize("argv, expected", [
    (["ingest", "--input", "d", "--store", "s"], {"release": "dr10", "input": "d", "store": "s"}),
    (["ingest", "dr10", "--input", "d", "--store", "s"], {"release": "dr10", "input": "d", "store": "s"}),
    (["run-catalog", "--release", "sami-dr3", "--input", "d"], {"release": "sami-dr3", "input": "d"}),
    (["run-catalog", "sami-dr3", "--input", "d", "--out", "o"], {"release": "sami-dr3", "out": "o"}),
    (["simulate", "--release", "dr10", "--out", "m"], {"release": "dr10", "out": "m"}),
    (["info", "--store", "s"], {"store": "s"}),
    (["info", "s"], {"store": "s"}),
    (["status", "--out", "o"], {"out": "o"}),
    (["status", "o"], {"out": "o"}),
    (["export", "o", "--hats"], {"out": "o", "hats": "hats"}),
])
def test_every_subcommand_takes_the_same_options(argv, expected):
    from survey_ml.cli.main import _resolve

    args = _resolve(build_parser().parse_args(argv))
    for key, value in expected.items():
        assert getattr(args, key) == value, key


def test_the_old_ingest_spelling_still_works_and_says_the_new_one(tmp_path, capsys):
    from survey_ml.cli.main import _resolve

    args = _resolve(build_parser().parse_args(["ingest", str(tmp_path), "--store", "s", "--release", "dr10"]))
    assert (args.input, args.release, args.store) == (str(tmp_path), "dr10", "s")
    assert "use `survey-ml ingest [RELEASE] --input" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["ingest", "--store", "s"], "give the survey files with --input"),
    (["run-catalog", "dr10", "--release", "sami-dr3"], "two releases given"),
    (["info"], "give the store with --store"),
    (["export", "nowhere", "--hats"], "holds no catalog parts"),
])
def test_a_wrong_command_line_is_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_version_and_descriptions(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("survey_ml ")
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert sub.description, name          # `survey-ml <command> --help` says what it does


def test_two_catalogues_matching_the_spec_are_named_before_anything_starts(tmp_path, capsys):
    for name in ("sami_InputCatGAMADR3.csv", "old/InputCatGAMADR3_v2.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("catid\n1\n")
    assert main(["run-catalog", "sami-dr3", "--input", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "2 files match the release's catalogue" in err and "--catalogue" in err


def test_export_writes_hats_votable_and_fits_from_a_finished_run(tmp_path, real_fixtures, client, capsys):
    import lsdb
    from astropy.table import Table

    from survey_ml.dask.runner import run_catalog

    report = run_catalog("dr10", input=real_fixtures / "lamost", out=tmp_path / "run", client=client,
                         tasks=["strong_lines"], progress=False)
    argv = ["export", "--out", str(report.out), "--hats", "h", "--votable", "--fits", "again.fits",
            "--scheduler", client.scheduler.address]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "HATS collection" in printed
    catalog = pd.read_parquet(report.catalog_dir)
    assert len(lsdb.open_catalog(report.out / "h").compute()) == catalog[["ra", "dec"]].notna().all(axis=1).sum()
    assert len(Table.read(report.out / "catalog.vot")) == len(Table.read(report.out / "again.fits")) == len(catalog)


def test_readme_stands_alone_and_ci_runs_its_test_command():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme[:3000])
    assert len(commands) == 2 and "venv" in commands[0] and commands[0].endswith("survey-ml run-catalog dr10")
    assert commands[1] in (root / ".ci" / "run").read_text()          # CI runs exactly the README's test command
    for outside in ("SCIENCE.md", "ARCHITECTURE.md", "DATAMODELS.md"):
        assert outside not in readme, outside
    assert not re.search(r"\bissue \d+", readme)                     # issue numbers live in the tracker, not here
    for link in re.findall(r"\]\(([^)#:]+)\)", readme):              # every relative link is in the repository
        assert (root / link).exists(), link


def test_ingest_makes_the_chunks_run_catalog_makes(tmp_path, real_fixtures, client):
    from survey_ml.config import load_release_spec
    from survey_ml.store import open_release

    argv = ["ingest", "dr10", "--input", str(real_fixtures / "lamost"), "--store", str(tmp_path / "s"),
            "--scheduler", client.scheduler.address]
    assert main(argv) == 0
    assert open_release(tmp_path / "s").chunk_rows == load_release_spec("dr10")["ingest"]["chunk_rows"] == 2048
