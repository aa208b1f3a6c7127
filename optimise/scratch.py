"""Folders a build writes aside, named after the process that owns them.

A build killed with SIGKILL (out of memory, a deleted pod, a user) runs no
cleanup, so its temporary and staging folders stay behind. Each folder made
here carries its owner in its name (`<kind>-<pid>-<start>@<host>.<random>`:
the process id, the process's start time, so that a reused pid does not pass
for the owner, and the host, since a shared store sees several machines), and
`clean_stale` removes the folders whose owner is gone. A folder of another host
cannot be checked; it is removed only once it is older than `FOREIGN_STALE_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

FOREIGN_STALE_S = 24 * 3600.0
_HOST_CHARS = re.compile(r"[^A-Za-z0-9-]")


@dataclass(frozen=True)
class Owner:
    """The process that owns a folder: its pid, its start time (0 when unknown) and its host."""

    pid: int
    start: int
    host: str

    def label(self) -> str:
        return f"{self.pid}-{self.start}@{self.host}"


def this_process() -> Owner:
    pid = os.getpid()
    return Owner(pid, _start_time(pid) or 0, _host())


def _host() -> str:
    return _HOST_CHARS.sub("-", socket.gethostname())[:40]


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (Linux), None when unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot; None where /proc cannot tell."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def is_alive(owner: Owner) -> bool:
    """Whether the owner still runs here. A pid now held by another process, or a zombie, is gone."""
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _proc_stat(owner.pid)
    if fields is None:
        return True  # no /proc: the pid is all we can check
    if fields[0] == "Z":
        return False
    return owner.start == 0 or len(fields) <= 19 or int(fields[19]) == owner.start


def parse_owner(folder_name: str, kind: str) -> Owner | None:
    """The owner written in a folder name made by `owned_dir(kind)`; None for any other name."""
    match = re.fullmatch(rf"{re.escape(kind)}-(\d+)-(\d+)@([A-Za-z0-9-]*)\..+", folder_name)
    if match is None:
        return None
    return Owner(int(match[1]), int(match[2]), match[3])


def make_owned_dir(kind: str, parent: Path | None = None) -> Path:
    """A new empty folder `<kind>-<owner>.<random>` in `parent` (default: the system temp dir).

    Raises OSError when `parent` cannot be written.
    """
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{this_process().label()}.", dir=parent))


@contextlib.contextmanager
def owned_dir(kind: str, parent: Path | None = None) -> Iterator[Path]:
    """`make_owned_dir`, removed with everything in it when the block ends, however it ends."""
    path = make_owned_dir(kind, parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def is_stale(folder: Path, kind: str) -> bool:
    """Whether `folder` was made by `owned_dir(kind)` for a process that is gone."""
    owner = parse_owner(folder.name, kind)
    if owner is None:
        return False
    if owner.host != _host():
        try:
            return time.time() - folder.stat().st_mtime > FOREIGN_STALE_S
        except OSError:
            return False
    return not is_alive(owner)


def clean_stale(parent: Path, kind: str) -> list[Path]:
    """Remove the folders of `kind` in `parent` whose owner is gone; returns those removed.

    Never raises: a folder that cannot be removed now is tried again by the next run.
    """
    try:
        candidates = [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []
    removed = []
    for folder in candidates:
        if is_stale(folder, kind):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                logger.info("removed %s, left by a process that is gone", folder)
                removed.append(folder)
    return removed
