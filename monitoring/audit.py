"""The closed loop's append-only audit log (JSON lines), and which of its runs were never closed.

Every re-optimisation writes a `started` entry and then exactly one outcome (`OUTCOMES`) that names
the started entry's time in `started`. A server stopped during a run writes `interrupted`; a server
killed hard writes nothing, so the next server to start closes that run as `abandoned` (`open_runs`
finds it). To tell a dead server's run from a run still going on in another server that shares the
log, a run holds an exclusive lock on the model's run-lock file beside the log (`<log>.<model>.lock`,
flock) from its `started` entry to its outcome: the kernel releases it when the process ends, however
it ends, so a free lock means nobody is running that model any more. The lock files stay (empty,
one per model): removing a lock file while another process may open it would break the lock.

A line cut short by a kill mid-write is skipped when read (and logged); the next entry starts on a
line of its own.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import time
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

STARTED = "started"
OUTCOMES = frozenset({"promoted", "refused", "failed", "interrupted", "abandoned"})


def audit_log_path() -> Path:
    """The default audit log: beside the model store it describes."""
    from optimise.store import bentoml_home

    return Path(bentoml_home()) / "leanserve-audit.jsonl"


def append_entry(path: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line, after a newline if the last line was cut short."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as log:
        log.seek(0, 2)
        size = log.tell()
        if size:
            log.seek(size - 1)
            cut = log.read(1) != b"\n"
            log.seek(0, 2)
            if cut:
                log.write(b"\n")
        log.write(json.dumps(entry).encode("utf-8") + b"\n")


def read_audit_log(path: Path, model: str | None = None) -> list[dict[str, Any]]:
    """The entries in order (of one model, if given); lines that are not a JSON object are skipped."""
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            logger.warning("%s line %d is not JSON (cut short?): skipped", path, number)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return [e for e in entries if model is None or e.get("model") == model]


def open_runs(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `started` entries without an outcome, oldest first.

    An outcome closes the run whose time it names in `started`, or (entries written before outcomes
    named it) the latest open run of its model."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        model, event = str(entry.get("model")), entry.get("event")
        if event == STARTED:
            runs.setdefault(model, []).append(entry)
        elif event in OUTCOMES and runs.get(model):
            named = [r for r in runs[model] if r.get("time") == entry.get("started")]
            runs[model].remove(named[0] if named else runs[model][-1])
    return sorted((r for open_ in runs.values() for r in open_), key=lambda r: float(r.get("time", 0)))


def describe_time(seconds: float) -> str:
    """A Unix time as local 'YYYY-MM-DD HH:MM:SS'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


class RunLock:
    """The model's run lock beside the audit log, held while one of its runs is open."""

    def __init__(self, log: Path, model: str) -> None:
        self.path = log.with_name(f"{log.name}.{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}.lock")
        self._handle: IO[bytes] | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process (or another `RunLock`) holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the flock
            self._handle = None
