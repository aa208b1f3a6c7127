from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent(
    """
    import time
    from monitoring.parent_death import die_with_parent
    assert die_with_parent()
    print("armed", flush=True)
    time.sleep(60)
    """
)
# The parent starts the child in a session of its own (as BentoML's arbiter starts workers in their
# own process group), prints its pid, then waits.
PARENT = textwrap.dedent(
    f"""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdout=subprocess.PIPE, start_new_session=True)
    assert child.stdout.readline().strip() == b"armed"
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_in_its_own_session_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _gone(child_pid, timeout=10)
    finally:
        if not _gone(child_pid, 0):  # pragma: no cover - only when the test fails
            os.kill(child_pid, signal.SIGKILL)
