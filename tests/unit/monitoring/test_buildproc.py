"""The rebuild's child process: lowest priority, one-thread pools, own process group, dies with the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import running, wait_until_gone

from monitoring import buildproc

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

REPORT = (
    "import json, os, sys, time\n"
    "print(json.dumps({'pid': os.getpid(), 'nice': os.getpriority(os.PRIO_PROCESS, 0),"
    " 'pgid': os.getpgid(0), 'omp': os.environ.get('OMP_NUM_THREADS'),"
    " 'tokenizers': os.environ.get('TOKENIZERS_PARALLELISM'), 'argv': sys.argv[1:]}), flush=True)\n"
    "time.sleep(float(sys.argv[1]))\n"
)


def test_the_child_is_niced_single_threaded_and_in_its_own_group() -> None:
    child = buildproc.start([sys.executable, "-c", REPORT, "30", "--no-promote"], env={"EXTRA": "1"})
    try:
        assert child.stdout is not None
        seen = json.loads(child.stdout.readline())
        assert seen["pid"] == child.pid  # the wrapper exec'd the command: one process, not two
        assert seen["nice"] == buildproc.NICENESS == 19
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 19  # seen from the server too
        assert seen["omp"] == "1" and seen["tokenizers"] == "false"
        assert seen["pgid"] == child.pid != os.getpgid(0)
        assert seen["argv"] == ["30", "--no-promote"]
    finally:
        status = buildproc.stop(child, grace_s=5)
    assert status == -15 and not running(child.pid)  # SIGTERM was enough


def test_stop_ends_the_whole_group_and_kills_what_ignores_sigterm() -> None:
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(helper.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = buildproc.start([sys.executable, "-c", stubborn])
    assert child.stdout is not None
    helper = int(child.stdout.readline())
    start = time.monotonic()
    assert buildproc.stop(child, grace_s=1) == -9
    assert time.monotonic() - start < 5
    assert not running(child.pid) and wait_until_gone(helper)


def test_the_child_dies_with_a_server_killed_hard() -> None:
    server_code = (
        "import sys, time\n"
        "from monitoring import buildproc\n"
        "child = buildproc.start([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", server_code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        build = int(server.stdout.readline())
        time.sleep(0.5)  # past the wrapper's exec
        assert running(build) and os.getpriority(os.PRIO_PROCESS, build) == 19
    finally:
        server.kill()  # SIGKILL: no shutdown hook runs
        server.wait()
    assert wait_until_gone(build), "the build outlived the server"


def test_the_wrapper_refuses_to_run_for_a_parent_that_is_gone() -> None:
    """If the server died before the death signal was armed, the wrapper dies of it instead of exec'ing."""
    module = [sys.executable, "-m", "monitoring.buildproc"]
    orphan = subprocess.run([*module, "1", "--", "true"], cwd=REPO, capture_output=True, check=False)
    assert orphan.returncode == -signal.SIGKILL
    usage = subprocess.run([*module, "1", "true"], cwd=REPO, capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage" in usage.stderr
