"""Monitoring faults on a live server: one client replaying a request is not drift (no verdict, no
rebuild); a rebuild runs niced, ends with its server whether stopped or killed, and every run the audit
log opens is closed (`interrupted` at a stop, `abandoned` at the start after a kill)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from processes import running
from servers import FAST_CLOSED_LOOP, Server, digits_infer_body, start_server, stop_server

from optimise.demos.digits import load_splits

pytestmark = pytest.mark.integration
FAST_LOOP = {**FAST_CLOSED_LOOP, "LEANSERVE_REOPTIMISE_TIME_BUDGET_S": "60"}  # time to stop or kill mid-build


def _events(audit: Path) -> list[dict[str, Any]]:
    if not audit.is_file():
        return []
    lines = audit.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _build_processes(audit: Path) -> list[int]:
    """Re-optimisation builds (`optimise.cli optimise ... --no-promote`) of the server whose audit log is
    `audit` (the build inherits the server's environment): another server's on this machine is not one."""
    found = []
    marker = f"LEANSERVE_AUDIT_LOG={audit}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                environment = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            # argv[1:3] is "-m optimise.cli" once the wrapper (monitoring.buildproc) has exec'd it
            rebuild = argv[1:3] == [b"-m", b"optimise.cli"] and b"--no-promote" in argv
            if rebuild and marker in environment and running(int(entry.name)):
                found.append(int(entry.name))
    return found


class _Traffic:
    """Shifted, varied digits traffic in a thread until stopped: the drift that starts a rebuild."""

    def __init__(self, server: Server) -> None:
        self.pixels = np.clip(load_splits().train.pixels + 0.35, 0.0, 1.35).astype(np.float32)
        self.server, self.stop = server, threading.Event()
        self.thread = threading.Thread(target=self._send)

    def _send(self) -> None:
        with httpx.Client(base_url=self.server.http, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                try:
                    client.post("/v2/models/digits/infer", json=digits_infer_body(self.pixels[i : i + 10]))
                except httpx.HTTPError:
                    return  # the server went away (the kill test)
                i = (i + 10) % (len(self.pixels) - 10)
                time.sleep(0.02)

    def __enter__(self) -> _Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def loop_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A server home of its own and the loop's settings, with an audit log in the test's folder."""
    return tmp_path / "bentoml", {**FAST_LOOP, "LEANSERVE_AUDIT_LOG": str(tmp_path / "audit.jsonl")}


def test_one_request_replayed_is_not_judged_and_rebuilds_nothing(
    demo_tags: dict[str, str], loop_home: tuple[Path, dict[str, str]]
) -> None:
    home, env = loop_home
    server = start_server(home, [demo_tags["digits"]], env)
    try:
        shifted_image = np.clip(load_splits().train.pixels[:1] + 0.35, 0.0, 1.35).astype(np.float32)
        body = digits_infer_body(shifted_image)  # would drift, were it judged
        with server.client() as client:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # many evaluations of a full window of one input
                assert client.post("/v2/models/digits/infer", json=body).status_code == 200
            report = client.get("/monitoring/drift/digits").json()
            metrics = client.get("/metrics").text
    finally:
        stop_server(server)
    assert report["judged"] is False and report["drifted"] is None and report["distinct_inputs"] == 1
    assert report["not_judged"] == "window has 1 distinct input; at least 50 needed"
    assert 'leanserve_drift_window_distinct_inputs{model="digits"} 1.0' in metrics
    assert _events(Path(env["LEANSERVE_AUDIT_LOG"])) == []


def test_a_server_stopped_during_a_rebuild_ends_it_and_records_it_interrupted(
    demo_tags: dict[str, str], loop_home: tuple[Path, dict[str, str]]
) -> None:
    home, env = loop_home
    audit = Path(env["LEANSERVE_AUDIT_LOG"])
    server = start_server(home, [demo_tags["digits"]], env)
    try:
        with _Traffic(server):
            _wait("a rebuild to start", lambda: any(e["event"] == "started" for e in _events(audit)), 120)
            builds = _wait("the build process", lambda: _build_processes(audit), 30)
        assert all(os.getpriority(os.PRIO_PROCESS, pid) == 19 for pid in builds)
    finally:
        stop_server(server)
    assert not [pid for pid in builds if running(pid)], "the build outlived its stopped server"
    events = _events(audit)
    assert [e["event"] for e in events] == ["started", "interrupted"], events
    assert events[1]["started"] == events[0]["time"]


def test_a_server_killed_during_a_rebuild_takes_the_build_along_and_the_next_closes_the_run(
    demo_tags: dict[str, str], loop_home: tuple[Path, dict[str, str]]
) -> None:
    home, env = loop_home
    audit = Path(env["LEANSERVE_AUDIT_LOG"])
    server = start_server(home, [demo_tags["digits"]], env, new_session=True)
    try:
        with _Traffic(server):
            started = _wait(
                "a rebuild to start", lambda: [e for e in _events(audit) if e["event"] == "started"], 120
            )
            builds = _wait("the build process", lambda: _build_processes(audit), 30)
        # SIGKILL, no shutdown hook: the worker process that runs the trigger (it wrote its pid), then
        # the rest of the server, before its supervisor could start another worker.
        os.kill(int(started[0]["pid"]), signal.SIGKILL)
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    finally:
        if server.process.poll() is None:
            server.process.kill()
    _wait("the build to die with its server", lambda: not [p for p in builds if running(p)], 15)
    assert [e["event"] for e in _events(audit)] == ["started"]

    restarted = start_server(home, [demo_tags["digits"]], env)
    try:
        events = _wait("the open run to be closed", lambda: len(_events(audit)) >= 2 and _events(audit), 30)
    finally:
        stop_server(restarted)
    assert [e["event"] for e in events] == ["started", "abandoned"], events
    assert events[1]["started"] == events[0]["time"] and "killed" in events[1]["detail"]
