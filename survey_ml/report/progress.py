"""A run's progress on disk: the driver's journal (``progress.json``) and the parts already written.

Two sources, read together by :func:`run_status` (``survey-ml status <run>``):

``<out>/progress.json``
    Written by the driver (the process holding the Dask client) through :class:`RunJournal`,
    replaced atomically: the stage, how many parts the stage has and how many were already
    done before it started (resume), per-part rows and seconds, failures with their error
    text, and a heartbeat refreshed every few seconds by a daemon thread while the driver lives.
``<out>/catalog/part-NNNNNN.parquet``
    The parts themselves (:mod:`survey_ml.catalog`): a part exists whole or not at all, so
    the parts present and their modification times give what is done and how fast, even
    when the journal lags (it is written at most once a second) or the driver died.

A driver killed with SIGKILL leaves a journal that still says ``running``: its heartbeat
stops, so the status says ``killed`` when the driver's process is visibly gone (same host),
else ``stalled`` once the heartbeat is older than ``stall_after`` seconds.
"""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..catalog.parts import PROVENANCE_KEY

__all__ = ["RunJournal", "RunStatus", "run_status", "JOURNAL_NAME"]

#: The journal's file name inside a run's output folder.
JOURNAL_NAME = "progress.json"


def _write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, path)


class RunJournal:
    """The driver's record of a run, kept in ``<out>/progress.json``.

    Parameters
    ----------
    out : path
        The run's output folder (created if needed).
    release : str
        Release name, for the status line.
    catalog_dir : path, optional
        Where the run writes its parts (default ``<out>/catalog``).
    heartbeat_s : float
        How often a daemon thread refreshes ``heartbeat`` while the run is open.
    min_interval_s : float
        Least time between two writes caused by finished parts (stage changes, failures and
        the end are written at once).

    Examples
    --------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> journal = RunJournal(out, "dr10", heartbeat_s=60)
    >>> journal.stage("inference", total=3, kept=1)
    >>> journal.part_done(1, rows=2048, seconds=4.2)
    >>> journal.finish()
    >>> json.loads((Path(out) / "progress.json").read_text())["state"]
    'finished'
    """

    def __init__(self, out: str | os.PathLike, release: str, catalog_dir: str | os.PathLike | None = None,
                 heartbeat_s: float = 5.0, min_interval_s: float = 1.0) -> None:
        self.path = Path(out) / JOURNAL_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.record: dict[str, Any] = {
            "release": release, "state": "running", "stage": None, "pid": os.getpid(), "host": socket.gethostname(),
            "catalog_dir": str(catalog_dir if catalog_dir is not None else Path(out) / "catalog"),
            "started": now, "updated": now, "heartbeat": now, "heartbeat_s": heartbeat_s,
            "parts_total": None, "parts_kept": 0, "parts": {}, "failures": [], "stages": [], "error": None}
        self._min_interval = min_interval_s
        self._last_write = 0.0
        self._warned = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._write()
        self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), daemon=True,
                                      name="survey_ml-journal")
        self._beat.start()

    # ----------------------------------------------------------------- the driver's calls
    def set_catalog_dir(self, catalog_dir: str | os.PathLike) -> None:
        """Where the parts go (known only once the release spec is read)."""
        with self._lock:
            self.record["catalog_dir"] = str(catalog_dir)
        self._write()

    def stage(self, name: str, total: int | None = None, kept: Collection[int] | int = ()) -> None:
        """Start stage ``name`` (closing the previous one).

        ``total``: the parts this stage makes; ``kept``: those already done before it started
        (their chunk indices, or just how many): parts on disk that are neither kept nor
        written during the stage are stale (other weights or spec) and will be redone.
        """
        now = time.time()
        chunks = None if isinstance(kept, int) else sorted(int(k) for k in kept)
        n_kept = kept if chunks is None else len(chunks)
        with self._lock:
            self._close_stage(now)
            self.record["stages"].append({"name": name, "started": now, "finished": None, "total": total,
                                          "kept": n_kept})
            self.record["stage"] = name
            if total is not None:
                self.record.update(parts_total=int(total), parts_kept=int(n_kept), kept_chunks=chunks, parts={})
        self._write()

    def part_done(self, chunk: int, rows: int, seconds: float) -> None:
        """Part ``chunk`` was written: ``rows`` catalog rows in ``seconds`` of task time."""
        with self._lock:
            self.record["parts"][str(int(chunk))] = {"rows": int(rows), "seconds": round(float(seconds), 3),
                                                     "at": time.time()}
        if time.time() - self._last_write >= self._min_interval:
            self._write()

    def part_failed(self, chunk: int, error: BaseException | str) -> None:
        """Part ``chunk`` raised ``error`` (kept with its type and message)."""
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        with self._lock:
            self.record["failures"].append({"chunk": int(chunk), "error": text, "at": time.time()})
        self._write()

    def block_callback(self, chunks: Sequence[int]) -> Callable[[int, Any], None]:
        """An ``on_result`` for :func:`survey_ml.cluster.client.run_blocks`: block ``k`` is part ``chunks[k]``.

        A result is a dict with ``rows`` and ``seconds`` (what the catalog tasks return); an
        exception marks the part failed.
        """
        def on_result(k: int, result: Any) -> None:
            if isinstance(result, BaseException):
                self.part_failed(chunks[k], result)
            else:
                self.part_done(chunks[k], int(result.get("rows", 0)), float(result.get("seconds", math.nan)))

        return on_result

    def finish(self, outputs: dict[str, str] | None = None) -> None:
        """The run ended well; ``outputs`` (name -> path) are recorded."""
        self._end("finished", outputs=outputs or {})

    def fail(self, error: BaseException | str) -> None:
        """The run stopped on ``error``."""
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        self._end("failed", error=text)

    # ----------------------------------------------------------------- internals
    def _end(self, state: str, **fields: Any) -> None:
        self._stop.set()
        now = time.time()
        with self._lock:
            self._close_stage(now)
            self.record.update(state=state, finished=now, **fields)
        self._write()

    def _close_stage(self, now: float) -> None:
        if self.record["stages"] and self.record["stages"][-1]["finished"] is None:
            self.record["stages"][-1]["finished"] = now

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            self._write()

    def _write(self) -> None:
        with self._lock:
            now = time.time()
            self.record["updated"] = self.record["heartbeat"] = now
            try:
                _write_json_atomic(self.path, self.record)
            except OSError as err:  # monitoring never stops the run (disk full, folder gone): say so once
                if not self._warned:
                    warnings.warn(f"survey_ml: cannot write the run journal {self.path}: {err}", stacklevel=2)
                    self._warned = True
            self._last_write = now


# --------------------------------------------------------------------------- reading
@dataclass
class RunStatus:
    """Where a run stands, from its journal and the parts on disk (see :func:`run_status`)."""

    run_dir: Path
    state: str
    release: str | None = None
    stage: str | None = None
    catalog_dir: Path | None = None
    parts_total: int | None = None
    parts_done: int = 0
    parts_kept: int = 0
    parts_failed: int = 0
    rows_done: int = 0
    started: float | None = None
    last_activity: float | None = None
    finished: float | None = None
    rate_parts_per_s: float | None = None
    rate_rows_per_s: float | None = None
    eta_s: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def is_finished(self) -> bool:
        return self.state == "finished"

    def summary(self) -> str:
        """Human lines: state, stage, parts done/total, rows, rates, ETA, failures."""
        head = f"run {self.run_dir}" + (f" ({self.release})" if self.release else "") + f": {self.state}"
        if self.stage and self.state != "finished":
            head += f", stage {self.stage}"
        lines = [head]
        if self.note:
            lines.append(f"  {self.note}")
        alive, now = self.state == "running", time.time()
        if self.started is not None:
            line = f"  started {_clock(self.started)}"
            if self.finished is not None:
                line += f", finished {_clock(self.finished)} after {_duration(self.finished - self.started)}"
            elif alive:
                line += f", running for {_duration(now - self.started)}"
            elif self.last_activity is not None:  # killed or stalled: how long it ran
                line += f", ran {_duration(self.last_activity - self.started)}"
            if self.last_activity is not None and self.finished is None:
                line += f", last activity {_duration(now - self.last_activity)} ago"
            lines.append(line)
        total = "?" if self.parts_total is None else str(self.parts_total)
        share = f" ({self.parts_done / self.parts_total:.0%})" if self.parts_total else ""
        lines.append(f"  parts {self.parts_done}/{total} done{share}"
                     + (f", {self.parts_kept} kept from an earlier run" if self.parts_kept else "")
                     + (f", {self.parts_failed} failed" if self.parts_failed else "")
                     + f"; {self.rows_done} rows")
        if self.rate_parts_per_s:
            lines.append(f"  rate {self.rate_parts_per_s:.3g} parts/s, {self.rate_rows_per_s:.4g} rows/s"
                         + (f"; ETA {_duration(self.eta_s)}" if self.eta_s is not None and alive else ""))
        for stage in self.stages:
            if stage.get("started") is not None:
                end = stage.get("finished") or self.finished or (now if alive else self.last_activity)
                took = _duration(end - stage["started"]) if end else "?"
                lines.append(f"  stage {stage['name']:<12s} {took}" + ("" if stage.get("finished") else " (open)"))
        for failure in self.failures:
            lines.append(f"  FAILED part {failure['chunk']}: {failure['error']}")
        if self.error:
            lines.append(f"  error: {self.error}")
        for name, path in self.outputs.items():
            lines.append(f"  {name:<11s} {path}")
        return "\n".join(lines)


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _duration(seconds: float | None) -> str:
    """``3 h 02 min``, ``4 min 05 s``, ``12.0 s``.

    Examples
    --------
    >>> _duration(3725), _duration(245), _duration(12)
    ('1 h 02 min', '4 min 05 s', '12.0 s')
    """
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s"


def _scan_parts(catalog_dir: Path) -> dict[int, tuple[int, float]]:
    """Whole parts in ``catalog_dir``: chunk -> (rows, mtime); torn or foreign files are left out.

    The same test as :func:`survey_ml.catalog.finished_parts` (readable footer, the promised
    row count, the chunk named by the file), reading each footer once.
    """
    parts = {}
    for path in catalog_dir.glob("part-*.parquet"):
        try:
            chunk = int(path.stem.split("-")[1])
            meta = pq.read_metadata(path)
            record = json.loads((meta.metadata or {})[PROVENANCE_KEY])
            mtime = path.stat().st_mtime
        except (OSError, ValueError, KeyError, IndexError, pa.ArrowException):
            continue  # torn or foreign file: not done
        if record.get("chunk") == chunk and record.get("n_rows") == meta.num_rows:
            parts[chunk] = (meta.num_rows, mtime)
    return parts


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _read_journal(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: fall back to the parts alone


def run_status(run_dir: str | os.PathLike, stall_after: float | None = None, now: float | None = None) -> RunStatus:
    """Where the run in ``run_dir`` stands: its journal plus the parts on disk.

    Parameters
    ----------
    run_dir : path
        A run's output folder (with ``progress.json``), or a bare catalog folder of parts.
    stall_after : float, optional
        Seconds without a heartbeat after which a ``running`` journal whose driver cannot be
        checked (another host) counts as ``stalled`` (default: 6 heartbeats, at least 30 s).
    now : float, optional
        The time to judge against (``time.time()``).

    Returns
    -------
    RunStatus
        ``state`` is ``finished``, ``failed``, ``running``, ``killed`` (the driver's
        process is gone), ``stalled`` (no heartbeat), ``parts only`` (no journal, parts
        present) or ``not started``.
    """
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    journal = _read_journal(run_dir / JOURNAL_NAME)
    if journal is not None:
        catalog_dir = Path(journal.get("catalog_dir") or run_dir / "catalog")
    else:
        catalog_dir = run_dir / "catalog" if (run_dir / "catalog").is_dir() else run_dir
    parts = _scan_parts(catalog_dir) if catalog_dir.is_dir() else {}
    status = RunStatus(run_dir=run_dir, state="not started", catalog_dir=catalog_dir)
    if journal is None:
        if parts:
            status.state = "parts only"
            status.note = "no progress.json here: counts from the parts on disk (total unknown)"
            status.parts_done, status.rows_done = len(parts), sum(r for r, _ in parts.values())
            times = sorted(t for _, t in parts.values())
            status.last_activity = times[-1]
            if len(times) > 1 and times[-1] > times[0]:
                status.rate_parts_per_s = (len(times) - 1) / (times[-1] - times[0])
                status.rate_rows_per_s = status.rate_parts_per_s * status.rows_done / len(times)
        return status

    status.release, status.stage = journal.get("release"), journal.get("stage")
    status.started, status.finished = journal.get("started"), journal.get("finished")
    status.stages, status.error = journal.get("stages", []), journal.get("error")
    status.outputs = journal.get("outputs", {}) or {}
    total = journal.get("parts_total")
    status.parts_total = total
    counted = [s for s in status.stages if s.get("total") is not None]
    t0 = counted[-1]["started"] if counted else status.started
    t1 = counted[-1].get("finished") if counted else None
    kept = journal.get("kept_chunks")
    inside = {k: v for k, v in parts.items() if (total is None or k < total)
              and (kept is None or t0 is None or k in kept or v[1] >= t0 - 1.0)}  # else stale: to be redone
    status.parts_done = len(inside)
    status.rows_done = sum(r for r, _ in inside.values())
    status.parts_kept = min(int(journal.get("parts_kept", 0)), len(inside))
    failed_chunks = {f["chunk"] for f in journal.get("failures", [])} - set(inside)
    status.failures = [f for f in journal.get("failures", []) if f["chunk"] in failed_chunks]
    status.parts_failed = len(failed_chunks)

    # rate: the parts this run wrote (modified after its stage with a total began)
    new = [(r, t) for r, t in inside.values() if t0 is not None and t >= t0 - 1.0]
    status.last_activity = max([journal.get("heartbeat") or 0.0] + [t for _, t in parts.values()]) or None

    state = journal.get("state", "running")
    if state == "running":
        heartbeat = journal.get("heartbeat") or journal.get("updated") or 0.0
        silent = now - heartbeat
        limit = stall_after if stall_after is not None else max(30.0, 6 * float(journal.get("heartbeat_s", 5.0)))
        same_host = journal.get("host") == socket.gethostname()
        if same_host and journal.get("pid") and not _pid_alive(int(journal["pid"])):
            state = "killed"
            status.note = (f"the driver (pid {journal['pid']} on {journal['host']}) is gone without closing the "
                           f"journal; last heartbeat {_duration(silent)} ago - re-run the same command to resume")
        elif silent > limit:
            state = "stalled"
            status.note = (f"no heartbeat from the driver (pid {journal.get('pid')} on {journal.get('host')}) for "
                           f"{_duration(silent)}: stalled or killed? Re-run the same command to resume")
        elif new and status.parts_total and status.parts_done < status.parts_total:
            times = [p["seconds"] for p in journal.get("parts", {}).values() if p.get("seconds") is not None]
            idle = now - max([t for _, t in new] + [t0 or now])
            slowest = max(times) if times else None
            if slowest and idle > 5 * slowest + 60:
                status.note = (f"driver alive, but no part finished for {_duration(idle)} "
                               f"(slowest part so far {_duration(slowest)}): workers stuck or lost?")
    status.state = state
    if new and t0 is not None:  # a live run: up to now; else up to its stage end or its last part
        span = (t1 or (now if state == "running" else max(t for _, t in new))) - t0
        if span > 0:
            status.rate_parts_per_s = len(new) / span
            status.rate_rows_per_s = sum(r for r, _ in new) / span
            if total is not None and state == "running":
                status.eta_s = max(total - status.parts_done, 0) / status.rate_parts_per_s
    return status
