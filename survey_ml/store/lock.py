"""One writer per folder: the lock a run holds on its output folder and an ingest on its store.

Two ``run-catalog`` processes writing into one ``--out`` would interleave their parts into one
catalog with nothing to say so; two ingests into one store would race on its row table. The
writer therefore holds ``<folder>/.survey_ml.lock`` while it works: a small JSON file (pid,
host, start time, command, what it does) created with ``O_CREAT | O_EXCL``, which works on
the shared file systems of HPC sites where ``flock`` may not. A second writer refuses with one
line naming the first. A lock left by a killed writer does not block the next one: a lock
whose pid is dead on this host, or that is older than ``stale_after`` seconds (a writer on
another host cannot be asked), is taken over with a message.

Examples
--------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> import subprocess, sys
>>> with FolderLock(folder, "run-catalog"):   # another process tries meanwhile
...     other = subprocess.run([sys.executable, "-c", "import sys; from survey_ml.store.lock import FolderLock; "
...                             f"FolderLock({folder!r}, 'ingest').acquire()"], capture_output=True, text=True)
>>> print(other.stderr.strip().splitlines()[-1])  # doctest: +ELLIPSIS
survey_ml.store.lock.FolderInUseError: ... is in use by run-catalog (pid ...
>>> (Path(folder) / LOCK_NAME).exists()
False
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["FolderLock", "FolderInUseError", "LOCK_NAME", "DEFAULT_STALE_AFTER_S"]

#: The lock file's name inside the locked folder.
LOCK_NAME = ".survey_ml.lock"
#: A lock older than this (seconds) is stale even when its writer's host cannot be asked: 3 days.
DEFAULT_STALE_AFTER_S = 3 * 24 * 3600.0


class FolderInUseError(RuntimeError):
    """Another live writer holds the folder (the message names it and says what to do)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class FolderLock:
    """Hold ``<folder>/.survey_ml.lock`` for the duration of a ``with`` block.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder written into (created if needed).
    purpose : str
        What the holder does (``"run-catalog"``, ``"ingest"``), for the other writer's message.
    stale_after : float
        Seconds after which a lock from another host counts as abandoned.

    A process that holds the lock may take it again (re-entrant); only the outermost holder
    removes it.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str, stale_after: float = DEFAULT_STALE_AFTER_S) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self.stale_after = float(stale_after)
        self.held = False
        self.taken_over: dict[str, Any] | None = None

    def _record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "purpose": self.purpose, "command": " ".join(sys.argv)}

    def holder(self) -> dict[str, Any] | None:
        """The current lock's record (None if the folder is free; ``{}`` if unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict[str, Any]) -> str | None:
        """Why ``holder`` is abandoned, or None while it may still be working."""
        age = time.time() - float(holder.get("started", 0) or 0)
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                and not _pid_alive(holder["pid"]):
            return f"its process {holder['pid']} on this host is gone"
        if age > self.stale_after:
            return f"it is {age / 3600:.1f} h old (stale after {self.stale_after / 3600:g} h)"
        if not holder:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return "it is gone"
            if age > 60:  # unreadable for a minute: not a writer still writing it
                return "it is unreadable"
        return None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise :class:`FolderInUseError` naming the live holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = json.dumps(self._record())
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue  # released meanwhile: try again
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    return self  # this process holds it already (the CLI around run_catalog): the outer one releases
                why = self._stale(holder)
                if why is None:
                    raise FolderInUseError(
                        f"{self.folder} is in use by {holder.get('purpose', 'another survey_ml process')} (pid "
                        f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                        f"{holder.get('started_utc', '?')}: {holder.get('command', '?')!r}); wait for it to "
                        f"finish, or remove {self.path} if that process is gone") from None
                warnings.warn(f"{self.folder}: taking over the lock of {holder.get('purpose', '?')} (pid "
                              f"{holder.get('pid', '?')} on {holder.get('host', '?')}): {why}", stacklevel=2)
                self.taken_over = holder
                tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}")
                tmp.write_text(record)
                os.replace(tmp, self.path)
                if self.holder() == json.loads(record):  # another taker may have replaced it: check
                    self.held = True
                    return self
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(record)
            self.held = True
            return self
        raise FolderInUseError(f"{self.folder}: could not take {self.path} (other writers keep taking it)")

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if not self.held:
            return
        self.held = False
        holder = self.holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
