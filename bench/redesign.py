"""Old engine against new, in one run: ingest and run-catalog dr10 inference before and after the Task redesign.

The redesign (runner.py, dask/blocks.py, tasks/ plug-ins; pipeline.py and ifu_pipeline.py
removed) must leave the bench figures of run-catalog and ingest unchanged within noise. The
two trees are measured in the same run on the same machine so that the ratio new / old is the
figure to read (absolute seconds move with the machine's other load):

* **old** - a git worktree of the last commit with ``survey_ml/pipeline.py`` (``--old-commit``,
  default bc47300; made with ``git worktree add --detach`` if ``--old`` is missing);
* **new** - this repository's working tree.

Each tree runs in its own subprocess whose ``PYTHONPATH`` is that tree (it reports
``survey_ml.__file__`` from itself and from each Dask worker, kept in the JSON as proof of which
code ran), with a LocalCluster of 2 workers x 1 thread started there by that tree's
``survey_ml.cluster.connect`` and kept for the whole run. Before timing, each cluster is warmed
(untimed: one ingest and two ``run_catalog`` calls of a 64-spectrum release - readers imported,
torch and the three models loaded on every worker, first-call costs paid). Then, on request of
the parent, one measurement at a time:

* **ingest** - ``survey_ml.store.ingest`` of the same mock release (``write_mock_release``,
  ``--n`` spectra, seed 5, written once) into a fresh store, ``--chunk-rows`` rows per chunk;
  timed around the ``ingest`` call;
* **inference** - ``run_catalog("dr10", store=...)`` of that tree (``survey_ml.pipeline`` in the
  old one, ``survey_ml.dask.runner`` in the new one; each reads its own ``catalogs/dr10.toml``) on one
  shared store (the store format did not change; it is written once, by the new code) into a
  fresh output folder, timed as ``report.timings["inference"]`` (first part submitted to last
  part written).

The trees take turns measurement by measurement (old then new, then new then old, ...),
``--repeats`` times each, so that the machine's other load falls on both alike; best and median
seconds per tree are kept, with rates (spectra/s) and the ratios new / old (of rates: > 1 means
the new code is faster). The load average before and after is kept: on a shared 2-core machine
it is what makes the absolute figures noisy, and why the ratio is the headline.

Prints JSON; keeps bench/results/redesign.json.

Usage: python bench/redesign.py [--n 4096] [--chunk-rows 1024] [--repeats 5] [--old /tmp/survey_ml_old]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, emit, git_commit

MARK = "REDESIGN_RESULT "
OLD_COMMIT = "bc47300"


# --------------------------------------------------------------------------- in the subprocess
def _worker_file() -> str:
    import survey_ml

    return survey_ml.__file__


def _reply(result: dict) -> None:
    print(MARK + json.dumps(result), flush=True)


def child(args: argparse.Namespace) -> None:
    """A server of measurements with whatever ``survey_ml`` this process imports.

    Starts its cluster, warms it (untimed: one ingest and two run_catalog calls of a 64-spectrum
    release, so every worker has imported its readers and torch, loaded the three models and
    paid its first-call costs), answers one JSON line, then runs one measurement per JSON line
    read from stdin (``{"stage": "ingest" | "inference", "store": ..., "out": ...}``) and
    answers each with one JSON line, until stdin closes.
    """
    import survey_ml
    from survey_ml.cluster import connect  # a module in the old tree, a package in the new
    from survey_ml.store import ingest

    try:
        from survey_ml.dask.runner import run_catalog
    except ImportError:  # the old tree
        from survey_ml.pipeline import run_catalog

    client = connect(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0", quiet=True)
    try:
        ready = {"survey_ml_file": survey_ml.__file__, "run_catalog": f"{run_catalog.__module__}.run_catalog",
                 "worker_survey_ml_files": sorted(set(client.run(_worker_file).values())),
                 "workers": len(client.scheduler_info()["workers"])}
        scratch = Path.cwd() / f"warm-up-{os.getpid()}"
        t = time.perf_counter()
        ingest(args.warm_source, scratch / "store", "dr10", client=client, chunk_rows=32)
        for _ in range(2):  # twice: the first run's tasks may all land on one worker
            shutil.rmtree(scratch / "run", ignore_errors=True)
            run_catalog(args.spec, store=scratch / "store", out=scratch / "run", client=client, progress=False)
        ready["warm_up_s"] = round(time.perf_counter() - t, 2)
        shutil.rmtree(scratch, ignore_errors=True)
        _reply(ready)
        for line in sys.stdin:
            command = json.loads(line)
            stage, store, out = command["stage"], command["store"], command["out"]
            result = {"stage": stage}
            if stage == "ingest":
                shutil.rmtree(store, ignore_errors=True)
                t = time.perf_counter()
                report = ingest(args.source, store, "dr10", client=client, chunk_rows=args.chunk_rows)
                result["seconds"] = time.perf_counter() - t
                result["n_rows"] = int(report.n_rows)
                shutil.rmtree(store, ignore_errors=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                report = run_catalog(args.spec, store=store, out=out, client=client, progress=False)
                result["run_catalog_s"] = round(time.perf_counter() - t, 3)
                result["seconds"] = report.timings["inference"]
                result["n_rows"] = int(report.n_rows)
                result["parts_written"] = int(report.parts_written)
                result["timings"] = {k: round(v, 3) for k, v in report.timings.items()}
                result["spec"] = str(report.provenance.get("spec"))
                shutil.rmtree(out, ignore_errors=True)
            result["status_counts"] = {str(k): int(v) for k, v in report.status_counts.items()}
            _reply(result)
    finally:
        client.close()


# --------------------------------------------------------------------------- in the parent
def same_weights_spec(new: Path, old: Path, work: Path) -> Path:
    """The new tree's dr10.toml with its metallicity and sfclass weights set to the old tree's files.

    The shipped networks changed after the redesign (they now read fitted emission lines beside
    the spectrum, a line fit per spectrum): with the old files the new engine runs the networks
    the old engine runs, so the ratio measures the engine alone.
    """
    text = (new / "catalogs" / "dr10.toml").read_text()
    for task in ("metallicity", "sfclass"):
        shipped = f'weights = "{task}.pt"'
        if shipped not in text:
            raise RuntimeError(f"{new}/catalogs/dr10.toml: no line {shipped!r} to point at the old weights")
        text = text.replace(shipped, f'weights = "{old / "survey_ml" / "weights" / f"{task}.pt"}"')
    path = work / "dr10_old_weights.toml"
    path.write_text(text)
    return path


def ensure_old_tree(old: Path, commit: str) -> None:
    """A detached git worktree of ``commit`` at ``old`` (left in place; never committed)."""
    if (old / "survey_ml" / "pipeline.py").exists():
        return
    subprocess.run(["git", "worktree", "add", "--detach", str(old), commit], cwd=REPO, check=True)


class Tree:
    """The measurement server (:func:`child`) of one source tree: a subprocess with ``PYTHONPATH=tree``."""

    def __init__(self, name: str, tree: Path, work: Path, args: argparse.Namespace, source: Path,
                 warm_source: Path, spec: str = "dr10") -> None:
        self.name, self.tree = name, tree
        env = os.environ | {"PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(var, None)
        self.log_path = work / f"{name}.log"
        self.log = open(self.log_path, "w")
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "--source", str(source),
                   "--warm-source", str(warm_source), "--chunk-rows", str(args.chunk_rows), "--spec", spec]
        # cwd: a neutral folder, so that nothing but PYTHONPATH decides which survey_ml is imported
        self.proc = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self.ready = self._answer("start-up")
        files = [self.ready["survey_ml_file"], *self.ready["worker_survey_ml_files"]]
        if not all(Path(f).resolve().is_relative_to(tree.resolve()) for f in files):
            raise RuntimeError(f"{name}: expected survey_ml from {tree}, imported {files}")

    def _answer(self, what: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.log.flush()
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{self.name} ({self.tree}) died during {what} (rc {self.proc.wait()}):\n{tail}")

    def measure(self, stage: str, store: Path, out: Path) -> dict:
        self.proc.stdin.write(json.dumps({"stage": stage, "store": str(store), "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        return self._answer(stage)

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def summarise(runs: list[dict], ready: dict) -> dict:
    """Best and median of one tree's runs of one stage, as seconds and spectra/s."""
    seconds = [r["seconds"] for r in runs]
    n_rows = runs[0]["n_rows"]
    out = {"seconds": [round(s, 3) for s in seconds], "seconds_best": round(min(seconds), 3),
           "seconds_median": round(statistics.median(seconds), 3), "n_rows": n_rows,
           "spectra_per_s_best": round(n_rows / min(seconds), 1),
           "spectra_per_s_median": round(n_rows / statistics.median(seconds), 1),
           "status_counts": runs[0]["status_counts"], "survey_ml_file": ready["survey_ml_file"],
           "worker_survey_ml_files": ready["worker_survey_ml_files"]}
    if "timings" in runs[0]:
        out |= {"run_catalog": ready["run_catalog"], "spec": runs[0]["spec"],
                "parts_written": [r["parts_written"] for r in runs], "timings": [r["timings"] for r in runs]}
    return out


def ratios(old: dict, new: dict) -> dict:
    """new / old of rates (> 1: the new code is faster) and of seconds (< 1: the new code is faster)."""
    return {"rate_best": round(new["spectra_per_s_best"] / old["spectra_per_s_best"], 3),
            "rate_median": round(new["spectra_per_s_median"] / old["spectra_per_s_median"], 3),
            "seconds_best": round(new["seconds_best"] / old["seconds_best"], 3),
            "seconds_median": round(new["seconds_median"] / old["seconds_median"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="mock spectra (default 4096)")
    parser.add_argument("--chunk-rows", type=int, default=1024, help="rows per Zarr chunk = per task (default 1024)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per tree and stage (default 5)")
    parser.add_argument("--old", default="/tmp/survey_ml_old", help="git worktree of the old code")
    parser.add_argument("--old-commit", default=OLD_COMMIT, help="commit of the old code (for a new worktree)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed)")
    parser.add_argument("--own-weights", action="store_true",
                        help="the new tree runs its own shipped networks (default: the old tree's metallicity and "
                             "sfclass weights, so both trees do the same arithmetic and only the engine differs)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", default="dr10", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--warm-source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    old, new = Path(args.old).resolve(), REPO.resolve()
    ensure_old_tree(old, args.old_commit)
    paths = {"old": old, "new": new}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="survey_ml_redesign_"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    t_total = time.perf_counter()
    trees: dict[str, Tree] = {}
    try:
        from survey_ml.cluster import connect  # a module in the old tree, a package in the new
        from survey_ml.simulate import write_mock_release
        from survey_ml.store import ingest

        client = connect(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0", quiet=True)
        try:
            mock = write_mock_release(work / "mock", args.n, seed=5, client=client)
            shared = work / "shared-store"  # the inference runs' store, written by the new code
            ingest(mock.catalogue, shared, "dr10", client=client, chunk_rows=args.chunk_rows)
            warm = write_mock_release(work / "warm-mock", 64, seed=6, client=client)  # the servers' warm-up
        finally:
            client.close()
        specs = {"old": "dr10", "new": "dr10" if args.own_weights else str(same_weights_spec(new, old, work))}
        for name, tree in paths.items():
            trees[name] = Tree(name, tree, work, args, mock.catalogue, warm.catalogue, specs[name])
            print(f"[redesign] {name} ready ({trees[name].ready['survey_ml_file']}, warm-up "
                  f"{trees[name].ready['warm_up_s']} s)", file=sys.stderr, flush=True)
        runs: dict[str, dict[str, list]] = {stage: {k: [] for k in paths} for stage in ("ingest", "inference")}
        order = []
        for r in range(args.repeats):
            for stage in ("ingest", "inference"):
                for name in paths if r % 2 == 0 else reversed(paths):  # old first, then new first, ...
                    store = work / f"{name}-ingest" if stage == "ingest" else shared
                    result = trees[name].measure(stage, store, work / f"{name}-run")
                    runs[stage][name].append(result)
                    order.append(f"{name}:{stage}")
                    print(f"[redesign] {r + 1}/{args.repeats} {name:3s} {stage:9s} {result['seconds']:7.2f} s "
                          f"({result['n_rows'] / result['seconds']:.0f} spectra/s)", file=sys.stderr, flush=True)
    finally:
        for tree in trees.values():
            tree.close()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    stages = {stage: {name: summarise(by_tree[name], trees[name].ready) for name in paths}
              for stage, by_tree in runs.items()}
    for by_tree in stages.values():
        by_tree["ratio_new_over_old"] = ratios(by_tree["old"], by_tree["new"])
    result = {
        "n_spectra": args.n, "chunk_rows": args.chunk_rows, "n_tasks": -(-args.n // args.chunk_rows),
        "repeats": args.repeats,
        "cluster": "LocalCluster of 2 workers x 1 thread per tree, in that tree's subprocess, warmed, kept for the run",
        "weights": ("each tree its own shipped networks" if args.own_weights else
                    "the old tree's metallicity.pt and sfclass.pt in both trees (the new tree's dr10.toml pointed at "
                    "them): the same arithmetic, only the engine differs"),
        "old": {"tree": str(old), **git_commit(old), "warm_up_s": trees["old"].ready["warm_up_s"]},
        "new": {"tree": str(new), **git_commit(new), "warm_up_s": trees["new"].ready["warm_up_s"]},
        "order": order,
        "headline": {f"{stage}_rate_ratio_new_over_old_{k}": stages[stage]["ratio_new_over_old"][f"rate_{k}"]
                     for stage in stages for k in ("best", "median")},
        "ingest": stages["ingest"], "inference": stages["inference"],
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "total_s": round(time.perf_counter() - t_total, 1),
        "notes": "ratios are of rates (spectra/s): > 1 means the new code is faster. Each tree's cluster is "
                 "warmed before timing (one ingest and two run_catalog calls of a 64-spectrum release, "
                 "untimed); the trees take turns run by run, so the machine's other load falls on both alike."}
    emit("redesign", result)


if __name__ == "__main__":
    main()
