"""The HTML run report rendered by headless Chromium, offline: a screenshot kept in bench/results/.

Checks that ``report.html`` is self-contained the way a user meets it: opened from disk by a
real browser with networking switched off (no sandbox, since CI runs as root; no GPU, QUIC,
background or component networking, first-run or sync), every figure drawn from its
embedded ``data:`` URI. Installs nothing: it uses ``/usr/bin/chromium`` (Debian's
``chromium`` package: ``apt-get install -y chromium``) or ``$CHROMIUM``.

With no report given, a small dr10 run is made first (``run_catalog("dr10", n_mock=...)``:
a mock release with truth, so the report has every figure, predicted against true values
and the MZR included).

Prints JSON; keeps bench/results/report_screenshot.json and report_screenshot.png.

Usage: python bench/report_screenshot.py [REPORT_HTML_OR_RUN_DIR] [--n-mock 2000] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import RESULTS, emit

#: Flags for a headless, offline, root-safe render.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio")


def find_chromium() -> str:
    """The Chromium binary: ``$CHROMIUM``, else /usr/bin/chromium, else one on PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("no chromium found: apt-get install -y chromium (Debian), or set $CHROMIUM")


def screenshot(report: Path, png: Path, window: tuple[int, int] = (1280, 2400), timeout: float = 120.0) -> float:
    """Render ``report`` headless into ``png``; returns the seconds Chromium took."""
    chromium = find_chromium()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={window[0]},{window[1]}", report.resolve().as_uri()]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - t0
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def self_contained(page: str) -> dict:
    """What the page would fetch from elsewhere (all should be empty) and how many images it embeds."""
    return {"remote_src": re.findall(r'src="(?!data:)[^"]*"', page),
            "link_tags": re.findall(r"<link\b[^>]*>", page, flags=re.I),
            "scripts": re.findall(r"<script\b[^>]*>", page, flags=re.I),
            "css_url_imports": re.findall(r"@import|url\(", page),
            "images_embedded": len(re.findall(r'<img [^>]*src="data:image/png;base64,', page))}


def small_run(n_mock: int, out: Path) -> Path:
    """A small dr10 run (mock release with truth) on a LocalCluster; returns its report.html."""
    from survey_ml.cluster.client import connect
    from survey_ml.dask.runner import run_catalog

    client = connect(dashboard_address="127.0.0.1:0")
    try:
        report = run_catalog("dr10", out=out, client=client, n_mock=n_mock, progress=True)
    finally:
        client.close()
    print(report.summary(), flush=True)
    return Path(report.outputs["html"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", default=None, help="report.html or a run folder holding one")
    parser.add_argument("--n-mock", type=int, default=2000, help="mock spectra of the run made when none is given")
    parser.add_argument("--out", default=None, help="folder of that run (default: a temporary folder)")
    parser.add_argument("--png", default=str(RESULTS / "report_screenshot.png"))
    args = parser.parse_args()

    t0 = time.perf_counter()
    run_seconds = None
    if args.report is None:
        out = Path(args.out or tempfile.mkdtemp(prefix="report-run-"))
        report = small_run(args.n_mock, out)
        run_seconds = time.perf_counter() - t0
    else:
        report = Path(args.report)
        report = report / "report.html" if report.is_dir() else report
    page = report.read_text(encoding="utf-8")
    checks = self_contained(page)
    png = Path(args.png)
    seconds = screenshot(report, png)
    from PIL import Image

    with Image.open(png) as image:
        size = image.size
    run_json = report.with_name("report.json")
    run = json.loads(run_json.read_text()) if run_json.is_file() else {}
    emit("report_screenshot", {
        "report": str(report), "report_bytes": len(page.encode()), "n_mock": args.n_mock if run_seconds else None,
        "run": {k: run.get(k) for k in ("release", "n_rows", "parts_total", "status_counts", "timings")},
        "run_seconds": run_seconds, "chromium_seconds": seconds, "screenshot": str(png), "screenshot_px": size,
        "offline_checks": {**checks, "ok": not (checks["remote_src"] or checks["link_tags"] or checks["scripts"]
                                               or checks["css_url_imports"]) and checks["images_embedded"] > 0}})


if __name__ == "__main__":
    main()
