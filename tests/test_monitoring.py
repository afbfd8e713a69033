"""Monitoring: the Dask dashboard really served, run progress on disk (``survey-ml status``), the HTML report."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_ml.catalog.parts import part_path, write_part
from survey_ml.cli.main import main
from survey_ml.report.progress import JOURNAL_NAME, RunJournal, run_status


# --------------------------------------------------------------------------- (a) dashboard
def _primary_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_dashboard_serves_the_status_page_and_bokeh(client):
    link = client.dashboard_link
    assert link.startswith("http://127.0.0.1:") and link.endswith("/status")
    with urllib.request.urlopen(link, timeout=30) as response:
        page = response.read().decode()
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "<title>Dask Diagnostic UI</title>" in page and "bokeh" in page
    # the plots of the page come from bokeh's own JavaScript, served by the scheduler
    root = link.rsplit("/status", 1)[0]
    with urllib.request.urlopen(f"{root}/static/js/bokeh.min.js", timeout=30) as response:
        assert response.status == 200 and len(response.read()) > 100_000


def test_dashboard_is_bound_to_localhost_by_default(monkeypatch):
    from survey_ml.cluster.client import connect

    monkeypatch.delenv("SURVEY_ML_SCHEDULER", raising=False)
    local = connect(n_workers=1, processes=False, quiet=True)   # the default dashboard address
    try:
        server = local.cluster.scheduler.http_server
        bound = {sock.getsockname()[0] for sock in server._sockets.values()}
        port = next(iter(server._sockets.values())).getsockname()[1]
        assert bound == {"127.0.0.1"}
        assert local.dashboard_link == f"http://127.0.0.1:{port}/status"
        with urllib.request.urlopen(local.dashboard_link, timeout=30) as response:
            assert response.status == 200
        outside = _primary_address()
        if outside is not None:  # the same port, from this machine's network address: nobody listens
            with pytest.raises(OSError), socket.create_connection((outside, port), timeout=5):
                pass
    finally:
        local.close()


# --------------------------------------------------------------------------- (b) run progress on disk
def _rows(chunk: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"row": np.arange(chunk * n, (chunk + 1) * n), "oh12": np.full(n, 8.7, np.float32),
                         "status": pd.array(["ok"] * n, dtype="string")})


def test_status_follows_a_run_from_its_journal_and_parts(tmp_path, capsys):
    out, catalog = tmp_path / "run", tmp_path / "run" / "catalog"
    write_part(_rows(0, 50), catalog, 0, {"release": "dr10"})    # done by an earlier, interrupted run
    stale = write_part(_rows(2, 50), catalog, 2, {"release": "dr10", "weights": "older"})
    os.utime(stale, (time.time() - 600, time.time() - 600))     # ... and one by older weights: to be redone
    journal = RunJournal(out, "dr10", catalog, heartbeat_s=0.2)
    journal.stage("prepare")
    assert run_status(out).state == "running" and run_status(out).parts_total is None
    journal.stage("inference", total=5, kept=[0])
    assert (run_status(out).parts_done, run_status(out).parts_kept) == (1, 1)
    t0 = time.perf_counter()
    for chunk in (1, 2):
        write_part(_rows(chunk, 50), catalog, chunk, {"release": "dr10"})
        journal.part_done(chunk, 50, time.perf_counter() - t0)
    callback = journal.block_callback([3, 4])
    callback(0, ValueError("flux array has 3908 pixels, expected 3909"))
    part_path(catalog, 4).write_bytes(b"PAR1 torn")            # a torn file is not a done part
    time.sleep(0.5)                                             # a heartbeat lands

    status = run_status(out)
    assert status.state == "running" and status.stage == "inference"
    assert (status.parts_total, status.parts_done, status.parts_kept, status.parts_failed) == (5, 3, 1, 1)
    assert status.rows_done == 150
    assert status.rate_parts_per_s > 0 and status.rate_rows_per_s == pytest.approx(50 * status.rate_parts_per_s)
    assert status.eta_s == pytest.approx(2 / status.rate_parts_per_s)
    assert status.failures[0]["chunk"] == 3 and "3908 pixels" in status.failures[0]["error"]
    text = status.summary()
    assert "parts 3/5 done (60%)" in text and "1 kept from an earlier run" in text and "ETA" in text
    assert "FAILED part 3: ValueError: flux array has 3908 pixels" in text

    # the driver is alive but silent for an hour (suspended, or its host unreachable): stalled
    late = run_status(out, now=time.time() + 3600)
    assert late.state == "stalled" and "no heartbeat" in late.note and late.eta_s is None

    # the CLI reads the same folder
    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "running, stage inference" in printed and "parts 3/5 done" in printed

    # the failed part is redone, the run ends: finished, no failures left, all rows counted
    write_part(_rows(3, 50), catalog, 3, {"release": "dr10"})
    write_part(_rows(4, 20), catalog, 4, {"release": "dr10"})
    journal.stage("outputs")
    journal.finish({"catalog": str(catalog)})
    done = run_status(out)
    assert done.state == "finished" and done.is_finished and done.eta_s is None
    assert (done.parts_done, done.parts_failed, done.rows_done) == (5, 0, 220)
    assert "finished" in done.summary() and "ETA" not in done.summary()


def test_status_of_a_run_whose_driver_was_killed(tmp_path):
    """A real SIGKILL of the driver mid-run: the journal still says running; status says killed."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal, pandas as pd
        from survey_ml.catalog.parts import write_part
        from survey_ml.report.progress import RunJournal
        journal = RunJournal({str(out)!r}, "dr10", heartbeat_s=0.2)
        journal.stage("inference", total=4)
        write_part(pd.DataFrame({{"row": range(10)}}), {str(out / "catalog")!r}, 0, {{}})
        journal.part_done(0, 10, 0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert json.loads((out / JOURNAL_NAME).read_text())["state"] == "running"
    status = run_status(out)
    assert status.state == "killed" and "is gone" in status.note and status.eta_s is None
    assert (status.parts_done, status.parts_total, status.rows_done) == (1, 4, 10)
    assert main(["status", str(out)]) == 1


def test_status_without_a_journal_counts_the_parts(tmp_path):
    catalog = tmp_path / "catalog"
    for chunk in range(3):
        write_part(_rows(chunk, 40), catalog, chunk, {})
    status = run_status(catalog)
    assert status.state == "parts only" and (status.parts_done, status.rows_done) == (3, 120)
    assert run_status(tmp_path / "nothing").state == "not started"


# --------------------------------------------------------------------------- (c) the HTML report of a real run
class _Page(HTMLParser):
    """What a page would load (img/script src, link href) and the cells of its tables, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[tuple[str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.sources.append((tag, attrs[key]))
        if tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def small_run(small_library, tmp_path_factory, client):
    """A real dr10 run of 240 held-out mock spectra with their truth table (masses and truth)."""
    from survey_ml.dask.runner import run_catalog
    from survey_ml.simulate.release import simulate_release

    root = tmp_path_factory.mktemp("monitoring")
    mock = simulate_release(small_library, root / "mock", 240, seed=17, client=client)
    report = run_catalog("dr10", input=mock.catalogue, out=root / "run", client=client, masses=mock.truth,
                         progress=False)
    return report


def test_html_report_of_a_run_is_self_contained_and_counts_match(small_run):
    path = Path(small_run.outputs["html"])
    assert path == small_run.out / "report.html" and path.is_file()
    assert json.loads((small_run.out / "report.json").read_text())["outputs"]["html"] == str(path)
    assert f"html     {path}" in small_run.summary()
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))

    # nothing to fetch: no script, no stylesheet link, every image an embedded PNG
    assert not [s for s in page.sources if s[0] in ("script", "link")]
    images = [src for tag, src in page.sources if tag == "img"]
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http" not in "".join(src for _, src in page.sources)
    import base64

    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for src in images)

    # the counts are the catalog's
    catalog = pd.read_parquet(small_run.catalog_dir)
    counts = {status: int(n) for status, n, _ in page.tables["status-counts"][1:]}
    assert counts == catalog["status"].value_counts().to_dict() and sum(counts.values()) == 240
    flags = {name.split(" ")[0]: int(n) for name, n, _ in page.tables["flags"][1:]}
    assert flags["sf_flag"] == int(catalog["sf_flag"].sum())
    stages = {stage: float(seconds) for stage, seconds, _ in page.tables["timings"][1:]}
    assert set(stages) == {"prepare", "inference", "outputs", "total"}
    assert stages["total"] == pytest.approx(sum(small_run.timings[k] for k in ("prepare", "inference", "outputs")),
                                            abs=0.2)
    provenance = dict(page.tables["provenance"][1:])
    assert provenance["weights_sha256: metallicity"] == small_run.provenance["weights_sha256"]["metallicity"]
    assert provenance["version"] == small_run.provenance["version"]
    # the mock's truth table was given: predicted-vs-truth figure, and the MZR plot embedded
    text = path.read_text(encoding="utf-8")
    assert "Predicted against true values" in text and "Mass-metallicity relation" in text
    assert images.count("data:image/png;base64," + base64.b64encode(Path(small_run.outputs["mzr_plot"])
                                                                    .read_bytes()).decode()) == 1


def test_status_of_the_finished_real_run(small_run, capsys):
    status = run_status(small_run.out)
    assert status.state == "finished" and status.release == "dr10"
    assert status.parts_done == status.parts_total == small_run.parts_total
    assert status.rows_done == small_run.n_rows == 240 and status.parts_failed == 0
    assert [s["name"] for s in status.stages] == ["prepare", "inference", "outputs", "report"]
    assert all(s["finished"] >= s["started"] for s in status.stages)
    assert main(["status", str(small_run.out)]) == 0
    printed = capsys.readouterr().out
    assert "finished" in printed and f"parts {small_run.parts_total}/{small_run.parts_total} done" in printed
    assert str(small_run.outputs["html"]) in printed


def test_html_report_of_an_ifu_run_shows_its_flags_truth_and_tfr(tmp_path, client):
    """A real SAMI run (its own small mock release, with truth): the kinematic report."""
    from survey_ml.tasks.kinematics import FLAG
    from survey_ml.dask.runner import run_catalog

    report = run_catalog("sami-dr3", out=tmp_path / "run", client=client, n_mock=30, progress=False)
    page = _Page()
    text = Path(report.outputs["html"]).read_text(encoding="utf-8")
    page.feed(text)
    assert not [s for s in page.sources if s[0] in ("script", "link")]
    images = [src for tag, src in page.sources if tag == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    counts = {status: int(n) for status, n, _ in page.tables["status-counts"][1:]}
    assert counts == report.status_counts and sum(counts.values()) == 30
    # the flags as the run applied them (the sample-wide POOR_FIT cut is not stored in the parts)
    flags = {name: int(n) for name, n, _ in page.tables["flags"][1:]}
    catalog = pd.read_parquet(report.catalog_dir)
    recon = catalog["recon_error"].to_numpy(float)
    finite = np.isfinite(recon)
    kin_flag = catalog["kin_flag"].to_numpy() | np.where(recon > recon[finite].mean() + recon[finite].std(),
                                                         FLAG["POOR_FIT"], 0)
    assert flags == {"kin_flag == 0 (used by the TFR)": int((kin_flag == 0).sum()),
                     **{f"kin_flag & {bit} ({name})": int(((kin_flag & bit) > 0).sum()) for name, bit in FLAG.items()}}
    assert flags[f"kin_flag & {FLAG['NOT_PREPARED']} (NOT_PREPARED)"] == 30 - counts.get("ok", 0)
    assert flags[f"kin_flag & {FLAG['POOR_FIT']} (POOR_FIT)"] > 0
    # the TFR fits were made, on exactly those kin_flag == 0 galaxies (each fitted or clipped by LtsFit)
    used = flags["kin_flag == 0 (used by the TFR)"]
    assert set(report.tfr) == {"reverse", "forward", "r_band"} and all("slope" in f for f in report.tfr.values())
    for kind in ("reverse", "forward"):
        assert report.tfr[kind]["n"] + report.tfr[kind]["n_clipped"] == used >= 12
    # and the report's table shows each fit as the run made it
    relations = dict(page.tables["relations"][1:])
    assert set(relations) == {"TFR reverse", "TFR forward", "TFR r_band"}
    for kind, fit in report.tfr.items():
        assert relations[f"TFR {kind}"] == (
            f"slope {fit['slope']:.3f} +- {fit['slope_err']:.3f}, intercept {fit['intercept']:.3f} +- "
            f"{fit['intercept_err']:.3f} (pivot {fit['pivot']}), rms {fit['rms']:.3f}, {fit['n']} galaxies")
    assert "matched by catid" in text
    assert len(images) == 2 + sum(k.startswith("tfr_") for k in report.outputs)
    assert run_status(report.out).state == "finished"
