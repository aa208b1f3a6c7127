"""Process checks shared by the build-process and trigger tests (Linux /proc)."""

from __future__ import annotations

import time
from pathlib import Path


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (an orphan's zombie may wait for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.05)
    return False
