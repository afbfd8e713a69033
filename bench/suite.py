"""The benchmark suite: every benchmark script at one scale, each in its own process, one JSON each.

``python -m bench [--scale small|medium|full] [--only ingest,run_catalog,...] [--out DIR]``

Each benchmark is a script of this folder (with the ``__main__`` guard: they start Dask
workers) run as a subprocess with the sizes of the chosen scale, its results redirected to a
scratch folder (``$SURVEY_ML_BENCH_RESULTS``, read by ``_common.emit``). What it wrote is
moved into ``--out`` once it succeeded: ``<name>.json`` - given a ``suite`` block (scale,
arguments, wall time) and the machine block - and its figures. A benchmark that fails or
runs past ``--timeout`` is recorded (return code, the tail of its log) and the suite goes
on; an earlier ``<name>.json`` in ``--out`` is then left as it was. ``summary.json``
indexes the run. The projection (``bench/projection.py``) runs last, on what ``--out``
then holds.

Scales: ``full`` - the sizes the published figures in bench/results/ were measured at
(hours on 2 cores: redrock, two kinematic trainings of 120 epochs); ``medium``; ``small`` -
a smoke run of minutes on 2 cores. Results of ``small`` and ``medium`` go to
``bench/results/<scale>/`` by default, so a smoke run never replaces the full-scale figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ._common import RESULTS_ENV, machine

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SCALES = ("small", "medium", "full")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script and its command-line sizes per scale.

    ``{out}`` in an argument is replaced by the suite's output folder.
    """

    name: str
    script: str
    sizes: dict[str, tuple[str, ...]]
    default: bool = True
    about: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def command(self, scale: str, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
        args = [a.replace("{out}", str(out)) for a in self.sizes[scale]]
        return [sys.executable, str(BENCH_DIR / self.script), *args, *extra]


#: Every benchmark the suite knows, in the order it runs them (projection last: it reads the others).
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("ingest", "ingest.py", {
        "small": ("--n", "1000"), "medium": ("--n", "4000"), "full": ("--n", "10000")},
        about="survey_ml's Dask ingest against a plain astropy loop (files/s)"),
    Benchmark("run_catalog", "run_catalog.py", {
        "small": ("--n", "3000"), "medium": ("--n", "12000"), "full": ("--n", "50000")},
        about="run-catalog dr10 end to end, a plain torch loop, the matmul peak (spectra/s)"),
    Benchmark("redshift", "redshift.py", {
        "small": ("--n", "200", "--n-deimos", "200", "--redrock-n", "20", "--redrock-n-deimos", "0"),
        "medium": ("--n", "1000", "--n-deimos", "1000", "--redrock-n", "300", "--redrock-n-deimos", "20"),
        "full": ("--n", "5000", "--n-deimos", "5000", "--redrock-n", "5000", "--redrock-n-deimos", "150")},
        about="redshift accuracy and speed: survey_ml, the published CNN, redrock"),
    Benchmark("kinematics", "kinematics.py", {
        "small": ("--n", "150", "--epochs", "2"), "medium": ("--n", "600", "--epochs", "30"),
        "full": ("--n", "1500", "--epochs", "120")},
        about="kinematic model on a mock SAMI release: accuracy, TFR closure, preparation and MC speed"),
    Benchmark("scaling", "scaling.py", {
        "small": ("--n", "4096", "--chunk-rows", "1024", "--repeats", "1", "--profile-rows", "512"),
        "medium": ("--n", "8192", "--repeats", "3"), "full": ("--n", "16384", "--repeats", "3")},
        about="strong scaling of run-catalog inference, 1 vs 2 workers; per-worker rates; stage profile"),
    Benchmark("metallicity", "metallicity.py", {
        "small": ("--n", "600"), "medium": ("--n", "3000"), "full": ("--n", "6000")}, default=False,
        about="metallicity / sfclass accuracy on a held-out release, against strong-line fits"),
    Benchmark("baseline", "baseline.py", {
        "small": ("--n", "500"), "medium": ("--n", "2000"), "full": ("--n", "5000")}, default=False,
        about="the strong-line baseline: accuracy per S/N_r and throughput"),
    Benchmark("simulate", "simulate.py", {
        "small": ("--library-size", "100", "--n", "200"), "medium": ("--library-size", "500", "--n", "1000"),
        "full": ("--library-size", "2000", "--n", "5000")}, default=False,
        about="simulator: library build time, release throughput, mock spectra plot"),
    Benchmark("redesign", "redesign.py", {
        "small": ("--n", "1024", "--chunk-rows", "256", "--repeats", "3"),
        "medium": ("--n", "4096", "--chunk-rows", "1024", "--repeats", "5"),
        "full": ("--n", "8192", "--chunk-rows", "1024", "--repeats", "5")}, default=False,
        about="ingest and run-catalog inference, the code before the Task redesign (git worktree) against now"),
    Benchmark("fuzz", "fuzz.py", {
        "small": ("--n", "200", "--copies", "3", "--big-bombs", "1", "--big-bomb-gb", "1"),
        "medium": ("--n", "1000", "--copies", "10", "--big-bombs", "2"),
        "full": ("--n", "2000", "--copies", "25")}, default=False,
        about="~40 kinds of damaged files beside good ones: flagged right, good rows lost, peak worker memory"),
    Benchmark("projection", "projection.py", {s: ("--results", "{out}") for s in SCALES},
              about="wall time of LAMOST DR10 LRS and MaNGA DR17 on M cores / N GPUs, from the measured rates"),
)}


def default_out(scale: str) -> Path:
    """bench/results for ``full``; bench/results/<scale> otherwise."""
    results = BENCH_DIR / "results"
    return results if scale == "full" else results / scale


def select(only: str | None) -> list[Benchmark]:
    """The benchmarks named in ``only`` (comma-separated), in suite order; the default set without it."""
    if not only:
        return [b for b in BENCHMARKS.values() if b.default]
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return [b for b in BENCHMARKS.values() if b.name in names]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_one(bench: Benchmark, scale: str, out: Path, timeout: float | None = None,
            extra: tuple[str, ...] = ()) -> dict:
    """Run one benchmark in its own process group; move its JSON and figures into ``out``.

    Returns
    -------
    dict
        The summary entry: ``status`` (``ok``, ``failed``, ``timeout``), ``seconds``, the
        command, the log file and, on failure, the log's tail.
    """
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{bench.name}.log"
    command = bench.command(scale, out, extra)
    entry: dict = {"script": bench.script, "args": command[2:], "log": str(log.relative_to(out))}
    with tempfile.TemporaryDirectory(prefix=f"bench-{bench.name}-") as scratch, open(log, "w") as stream:
        env = os.environ | {RESULTS_ENV: scratch, "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        # its own session: on a timeout the whole group goes (the Dask nannies and workers it started too)
        proc = subprocess.Popen(command, cwd=BENCH_DIR, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        produced = Path(scratch) / f"{bench.name}.json"
        if rc == 0 and produced.is_file():
            result = json.loads(produced.read_text())
            result["machine"] = result.get("machine") or machine()
            result["suite"] = {"scale": scale, "args": command[2:], "seconds": entry["seconds"]}
            (out / f"{bench.name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
            others = [p for p in Path(scratch).iterdir() if p.name != produced.name and p.is_file()]
            for p in others:
                shutil.move(str(p), out / p.name)
            entry |= {"status": "ok", "json": f"{bench.name}.json", "figures": sorted(p.name for p in others)}
        else:
            if rc is None:
                error = f"stopped after --timeout {timeout:g} s\n{_tail(log)}"
            else:
                error = f"no {bench.name}.json written" if rc == 0 else _tail(log)
            entry |= {"status": "timeout" if rc is None else "failed", "returncode": rc, "error": error.strip()}
    return entry


def run_suite(scale: str, benchmarks: list[Benchmark], out: Path, timeout: float | None = None,
              extra: dict[str, tuple[str, ...]] | None = None, echo: bool = True) -> dict:
    """Run ``benchmarks`` in order at ``scale``; write and return ``out/summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {"suite": "survey_ml benchmarks", "scale": scale, "out": str(out),
               "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               "benchmarks": {}}
    for bench in benchmarks:
        if echo:
            print(f"[bench] {bench.name} ({scale}) ...", flush=True)
        entry = run_one(bench, scale, out, timeout, (extra or {}).get(bench.name, ()))
        summary["benchmarks"][bench.name] = entry
        if echo:
            print(f"[bench] {bench.name}: {entry['status']} in {entry['seconds']:.1f} s", flush=True)
    summary["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    statuses = [e["status"] for e in summary["benchmarks"].values()]
    summary["n_ok"], summary["n_failed"] = statuses.count("ok"), len(statuses) - statuses.count("ok")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _parse_extra(items: list[str]) -> dict[str, tuple[str, ...]]:
    extra = {}
    for item in items:
        name, _, args = item.partition("=")
        if name not in BENCHMARKS or not args:
            raise SystemExit(f"--args {item!r}: expected NAME='--flag value ...', "
                             f"NAME one of {', '.join(BENCHMARKS)}")
        extra[name] = tuple(shlex.split(args))
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, default="small", help="benchmark sizes (default small)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of {','.join(BENCHMARKS)} "
                             f"(default: {','.join(b.name for b in BENCHMARKS.values() if b.default)})")
    parser.add_argument("--out", default=None, help="results folder (default bench/results, or bench/results/<scale> "
                                                    "below full)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark before it is stopped")
    parser.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                        help="extra arguments for one benchmark, after the scale's (e.g. --args \"ingest=--n 300\")")
    parser.add_argument("--list", action="store_true", help="print the plan and the machine block as JSON; run nothing")
    args = parser.parse_args(argv)
    benchmarks = select(args.only)
    out = Path(args.out) if args.out else default_out(args.scale)
    extra = _parse_extra(args.args)
    if args.list:
        plan = {"scale": args.scale, "out": str(out), "machine": machine(),
                "benchmarks": [{"name": b.name, "about": b.about, "default": b.default,
                                "command": b.command(args.scale, out, extra.get(b.name, ()))[1:]}
                               for b in benchmarks]}
        print(json.dumps(plan, indent=2))
        return 0
    summary = run_suite(args.scale, benchmarks, out, args.timeout, extra)
    print(json.dumps({k: v["status"] for k, v in summary["benchmarks"].items()}))
    return 0 if summary["n_failed"] == 0 else 1
