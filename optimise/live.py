"""The live choice of each model, recorded in the model store so that it survives a restart.

One small JSON file at the top of the store, beside the model folders
(`leanserve-live.json`: `{name: {"version": ..., "previous": ..., "recorded_at": ...}}`,
`previous` being the version live before it, what a rollback after a restart goes back to); BentoML
lists folders only, so it ignores the file, and the record travels with the
store (a Bento's models, a shared volume). A write holds an exclusive lock
(several server worker processes may promote at once), writes a temporary file
and moves it over the record with `os.replace`; a reader needs no lock, since it
sees either the old record or the new one, whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optimise.atomic import replacing

logger = logging.getLogger(__name__)

LIVE_FILE = "leanserve-live.json"
LOCK_FILE = ".leanserve-live.lock"
# flock excludes other processes; the threads of one process queue here first.
_thread_lock = threading.Lock()


def _read_entries(store: Path) -> dict[str, Any]:
    """The record as stored; empty when absent, unreadable (logged) or not a JSON object."""
    path = store / LIVE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring the unreadable live record %s: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        logger.warning("ignoring the live record %s: not a JSON object", path)
        return {}
    return data


def read_entries(store: Path) -> dict[str, tuple[str, str | None]]:
    """(live version, version live before it or None) of each model, by name; entries without a
    version are left out."""
    entries = {}
    for name, entry in _read_entries(store).items():
        if isinstance(entry, dict) and isinstance(entry.get("version"), str):
            previous = entry.get("previous")
            entries[name] = (entry["version"], previous if isinstance(previous, str) else None)
    return entries


def read_record(store: Path) -> dict[str, str]:
    """The recorded live version of each model, by name; entries without a version are left out."""
    return {name: version for name, (version, _) in read_entries(store).items()}


def read_previous(store: Path) -> dict[str, str]:
    """The version recorded as live before the current one, by name; models without one are left out."""
    return {name: previous for name, (_, previous) in read_entries(store).items() if previous is not None}


@contextlib.contextmanager
def _locked(store: Path) -> Iterator[None]:
    with _thread_lock, (store / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_live(store: Path, name: str, version: str, previous: str | None = None) -> None:
    """Record `version` as the live version of `name`, and `previous` as the one live before it (None,
    or `version` itself: none), keeping the other models' entries.

    Raises OSError when the store cannot be written (a read-only store, a full disk).
    """
    with _locked(store):
        entries = _read_entries(store)
        entry = {"version": version, "recorded_at": datetime.now(UTC).isoformat()}
        if previous is not None and previous != version:
            entry["previous"] = previous
        entries[name] = entry
        with replacing(store / LIVE_FILE) as out:
            json.dump(entries, out, indent=2, sort_keys=True)
