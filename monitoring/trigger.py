"""Carry a decision out: re-optimise, gate, shadow, then promote or keep the live model.

Runs in one background worker, one job at a time, so the request path never
waits on it. The build runs as a separate `leanserve optimise` process on the
recent traffic (it recalibrates static quantisation on it and re-runs the
selection), with the live version's source, profile, quality budget and
distilled student (`monitoring.rebuild`); a crash there cannot take the server down. The new
version must pass, in order: the load checks (hashes, smoke inference), the
gate (its build met the constraints on the labelled evaluation data, and it
follows the FP32 model on the recent traffic), and a shadow run on live
requests against the live model. Only then is it promoted; otherwise the live
model stays and the reason is recorded. Every step is counted and written to
an append-only JSON-lines audit log.

The build yields to serving: it runs at the lowest CPU priority with one-thread
pools, in its own process group, and dies with the server
(`monitoring.buildproc`). It is called with `--no-promote`: the new version is
stored without becoming the store's live choice, so a restart in the middle of
the loop serves the version that was live, not an unchecked candidate.

Every run the log opens is closed (`monitoring.audit`): `stop()` terminates a
running build, waits for it and records the run as `interrupted`; `start()`
closes runs a killed server left open as `abandoned`, and takes their start
times into the cooldown and hourly cap, so a server that restarts does not
rebuild sooner than one that did not. Outcomes are counted in
`leanserve_reoptimisations_total`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Protocol

import numpy as np

from monitoring import buildproc, metrics
from monitoring.audit import (
    STARTED,
    RunLock,
    append_entry,
    audit_log_path,
    describe_time,
    open_runs,
    read_audit_log,
)
from monitoring.config import TriggerConfig
from monitoring.drift import DriftReport
from monitoring.policy import Action, Decision, Reason, WindowState, decide
from monitoring.rebuild import build_options, fidelity_floor, live_student
from optimise import store
from optimise.artefact import Manifest
from optimise.distillation.data import MIN_LIVE_ROWS
from optimise.errors import OptimiseError

__all__ = ["ServingControl", "Trigger", "TriggerConfig", "audit_log_path", "read_audit_log"]

logger = logging.getLogger(__name__)

MIN_RECENT_ROWS = MIN_LIVE_ROWS
"""Recent inputs below this are too few to recalibrate or judge a candidate on (one request's rows would
decide the gate); the rebuild then uses the build's own calibration set. A drift-triggered run has the
drift window's 200 at least; a manual or alert-triggered one may come sooner."""


class ShadowOutcome(Protocol):
    @property
    def compared_rows(self) -> int: ...
    @property
    def agreement(self) -> float: ...
    @property
    def metric(self) -> str: ...


class ServingControl(Protocol):
    """What the trigger needs from the server (the service implements it over its data plane)."""

    def live_version(self, model: str) -> str: ...
    def live_manifest(self, model: str) -> Manifest:
        """The live version's manifest: what a rebuild builds again, and how (`monitoring.rebuild`)."""
        ...

    def recent_inputs(self, model: str) -> dict[str, np.ndarray] | None: ...
    def stage(self, model: str, version: str) -> Manifest: ...
    def shadow(self, model: str, rows: int, timeout_s: float) -> ShadowOutcome: ...
    def promote(self, model: str) -> None: ...
    def discard(self, model: str) -> None: ...


def _keep_live_on_restart(model: str, live: str) -> None:
    """Record the live version as live when the store records none: the run is about to store a newer
    version, which a bare NAME would otherwise serve after a restart, before (or without) any gate."""
    if not live:
        return
    try:
        if store.live_version(model) is None:
            store.record_live(model, live)
    except OptimiseError as exc:  # a read-only store: the run goes on, the restart risk is logged
        logger.warning("could not record %s:%s as live before re-optimising it: %s", model, live, exc)


def _mark_not_promoted(model: str, candidate: str | None, outcome: str, detail: str) -> None:
    """Mark a stored candidate the run did not promote, so that it is listed as such and never served
    as the newest version (`optimise.store.mark_refused`)."""
    if candidate is None:
        return
    try:
        store.mark_refused(model, candidate, f"{outcome} by the closed loop: {detail}")
    except OptimiseError as exc:
        logger.warning("could not mark %s:%s as not promoted: %s", model, candidate, exc)


class StepFailed(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


@dataclass
class _Run:
    """One run the audit log opened: its `started` entry's time, and the outcome once closed."""

    model: str
    reason: str
    started: float
    live: str
    outcome: str | None = None


class Trigger:
    def __init__(self, control: ServingControl, config: TriggerConfig) -> None:
        self.control = control
        self.config = config
        self._windows: dict[str, list[WindowState]] = {}
        self._runs: dict[str, list[float]] = {}
        self._jobs: queue.Queue[tuple[str, Reason, str] | None] = queue.Queue()
        self._busy: set[str] = set()
        self._promoted: set[str] = set()  # models a run re-optimised: drift that outlives it needs retraining
        self._thread = threading.Thread(target=self._work, name="leanserve-trigger", daemon=True)
        self._lock = threading.Lock()  # guards _current, _child and the closing of a run
        self._stopping = threading.Event()
        self._current: _Run | None = None
        self._child: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Close the runs a killed server left open, then start the worker."""
        self.close_abandoned()
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker; a running build is terminated and waited for, its run recorded 'interrupted'."""
        self._stopping.set()
        self._jobs.put(None)
        with self._lock:
            child = self._child
        if child is not None:
            buildproc.stop(child, self.config.stop_grace_s)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        run = self._current
        if run is not None:  # the worker is still in a step that does not end with the build (shadow)
            self._close(run, "interrupted", "the server stopped during the run")

    def close_abandoned(self) -> list[str]:
        """Close each `started` entry without an outcome whose run lock is free (its server is gone) as
        'abandoned'; returns the abandoned entries' start times as text. Past start times (last hour)
        count for the cooldown and hourly cap."""
        entries = read_audit_log(self.config.audit_log)
        for entry in entries:
            if entry.get("event") == STARTED and time.time() - float(entry["time"]) < 3600:
                self._runs.setdefault(str(entry["model"]), []).append(float(entry["time"]))
        closed = []
        for model in dict.fromkeys(str(entry["model"]) for entry in open_runs(entries)):
            lock = RunLock(self.config.audit_log, model)
            if not lock.acquire():
                logger.info("a re-optimisation of %s is still going on in another server", model)
                continue
            try:  # read again under the lock: another server starting now may have closed them
                for entry in open_runs(read_audit_log(self.config.audit_log, model)):
                    started = float(entry["time"])
                    run = _Run(model, str(entry.get("reason", "")), started, str(entry.get("live", "")))
                    detail = f"the run started {describe_time(started)} has no outcome: its server was killed"
                    self._close(run, "abandoned", detail)
                    closed.append(describe_time(started))
            finally:
                lock.release()
        return closed

    # -- decisions --------------------------------------------------------------------------
    def on_window(self, model: str, state: WindowState, report: DriftReport) -> Decision:
        """Called by the drift monitor after each evaluated window."""
        windows = self._windows.setdefault(model, [])
        windows.append(state)
        del windows[: -self.config.history]
        reoptimised = model in self._promoted
        decision = decide(windows, self._runs.get(model, []), time.time(), self.config.policy, reoptimised)
        if decision.action is Action.REOPTIMISE:
            self.request(model, decision.reason, decision.detail)
        elif decision.action is Action.NEEDS_RETRAINING:
            self._audit(
                model, "needs-retraining", decision.reason.value, decision.detail, {"live": self._live(model)}
            )
            metrics.REOPTIMISATIONS.labels(model, decision.reason.value, "needs-retraining").inc()
            windows.clear()  # report once per streak, not on every window
        return decision

    def request(self, model: str, reason: Reason, detail: str = "") -> bool:
        """Queue one run for `model`, unless one is queued or running; returns whether it was queued."""
        if model in self._busy:
            return False
        self._busy.add(model)
        self._runs.setdefault(model, []).append(time.time())
        self._jobs.put((model, reason, detail))
        return True

    # -- the run ----------------------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._jobs.get()) is not None and not self._stopping.is_set():
            model, reason, detail = job
            try:
                self.run(model, reason, detail)
            finally:
                self._windows.pop(model, None)  # judge the traffic after the run afresh
                self._busy.discard(model)

    def _live(self, model: str) -> str:
        """The live version's name, or "" when the model is not loaded (the entry is still written)."""
        try:
            return self.control.live_version(model)
        except Exception:  # an unloaded model: the entry matters more than its version
            return ""

    def run(self, model: str, reason: Reason, detail: str = "") -> str:
        """Build, gate, shadow, promote; returns the outcome ('promoted', 'refused', 'failed',
        'interrupted'), or 'skipped' (nothing logged) when another server runs this model's rebuild."""
        lock = RunLock(self.config.audit_log, model)
        if not lock.acquire():
            logger.warning("re-optimisation of %s skipped: another server is running one", model)
            return "skipped"
        try:
            return self._run(self._open(model, reason, detail))
        finally:
            lock.release()

    def _run(self, run: _Run) -> str:
        model = run.model
        candidate: str | None = None  # the audit entry names the built version whatever the outcome
        try:
            _keep_live_on_restart(model, run.live)
            candidate, judged_on = self._build(model)
            self._check_stopping()
            manifest = self.control.stage(model, candidate)
            gate = self._gate(manifest, judged_on)
            self._check_stopping()
            shadow = self.control.shadow(model, self.config.shadow_rows, self.config.shadow_timeout_s)
            if shadow.compared_rows == 0:
                raise StepFailed(
                    "refused",
                    f"{gate}; shadow: no live request to compare within {self.config.shadow_timeout_s:g} s",
                )
            details = f"{gate}; shadow {shadow.metric} {shadow.agreement:.4f} on {shadow.compared_rows} rows"
            if shadow.agreement < self.config.min_shadow_agreement:
                raise StepFailed("refused", f"{details} < {self.config.min_shadow_agreement:g}")
            self._check_stopping()
            self.control.promote(model)
        except StepFailed as exc:
            self.control.discard(model)
            outcome = "interrupted" if self._stopping.is_set() else exc.outcome
            _mark_not_promoted(model, candidate, outcome, str(exc))
            return self._close(run, outcome, str(exc), candidate=candidate)
        except Exception as exc:  # a crash in any step keeps the live model serving
            logger.exception("re-optimisation of %s failed", model)
            self.control.discard(model)
            outcome = "interrupted" if self._stopping.is_set() else "failed"
            detail = f"{type(exc).__name__}: {exc}"
            _mark_not_promoted(model, candidate, outcome, detail)
            return self._close(run, outcome, detail, candidate=candidate)
        return self._close(run, "promoted", details, candidate=candidate)

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise StepFailed("interrupted", "the server stopped during the run")

    def _build(self, model: str) -> tuple[str, str]:
        """Run the build process (see the module doc) with the live version's source, profile, quality
        budget and student (`monitoring.rebuild`); returns the stored version and what it was
        calibrated and judged on (recent traffic, or the build's own calibration set when the server
        has fewer than `MIN_RECENT_ROWS` recent inputs to give)."""
        live = self.control.live_manifest(model)
        student = live_student(live)
        with tempfile.TemporaryDirectory(prefix="leanserve-reoptimise-") as scratch:
            tag_file = Path(scratch) / "tag"
            options = {
                "--tag-file": str(tag_file),
                "--time-budget": str(self.config.build_time_budget_s),
                "--rounds": "3",
                "--serve-seconds": str(self.config.serve_seconds),
            }
            command = [
                *(self.config.build_command or _OPTIMISE),
                *build_options(live),
                *chain(*options.items()),
                "--no-promote",
            ]
            recent = self.control.recent_inputs(model)
            count = 0 if recent is None else len(next(iter(recent.values())))
            distilling = False
            if recent is not None and count >= MIN_RECENT_ROWS:
                recent_options, distilling = self._recent_input_options(recent, count, Path(scratch))
                command += recent_options
                judged_on = f"recent traffic ({count} rows)"
            elif recent is None:  # a text model's window keeps embeddings, not its inputs
                judged_on = "the build's own calibration set (no recent inputs kept for this model)"
            else:  # a manual run may come before the window holds enough to calibrate or judge on
                judged_on = (
                    f"the build's own calibration set ({count} recent rows, fewer than {MIN_RECENT_ROWS})"
                )
            training_s = self.config.distil_time_s if distilling else 0.0
            if student is not None:
                command += ["--student", student.name]
                if not distilling:  # the live student again: from the cache, or trained as long again
                    command += student.budget_options()
                    training_s = student.seconds or 0.0
            elif not distilling:
                command.append("--no-distil")  # a budget that admits students must not start training here
            code, stderr = self._run_child(command, self.config.build_timeout_s + training_s)
            if self._stopping.is_set() or code == -signal.SIGTERM:
                # A server that stops terminates its children; BentoML's supervisor does so before
                # the shutdown hook that calls stop() runs.
                raise StepFailed("interrupted", f"the build was stopped ({_status(code)})")
            if code != 0 or not tag_file.is_file():
                raise StepFailed("failed", f"build {_status(code)}: {stderr.strip()[-300:]}")
            return tag_file.read_text(encoding="utf-8").split(":")[1], judged_on

    def _recent_input_options(
        self, recent: dict[str, np.ndarray], count: int, scratch: Path
    ) -> tuple[list[str], bool]:
        """Recalibrate on what the model sees now (`recent`, `count` rows); when rebuilds distil, students
        learn half the recent rows (every second one) and the other half calibrates and judges: a student
        is never graded on the rows it learnt. Returns the options and whether they distil."""
        calibration = recent
        options: list[str] = []
        if self.config.distil_time_s > 0 and count // 2 < MIN_LIVE_ROWS:
            logger.info("re-optimisation without distillation: %d recent rows, half of them too few", count)
        elif self.config.distil_time_s > 0:
            calibration = {name: rows[0::2] for name, rows in recent.items()}
            np.savez(scratch / "live.npz", **{name: rows[1::2] for name, rows in recent.items()})  # type: ignore[arg-type]  # numpy stub quirk
            options += [
                "--distil-live",
                str(scratch / "live.npz"),
                "--distil-time",
                f"{self.config.distil_time_s:g}",
            ]
        np.savez(scratch / "recent.npz", **calibration)  # type: ignore[arg-type]  # numpy stub quirk
        return ["--calibration-inputs", str(scratch / "recent.npz"), *options], bool(options)

    def _run_child(self, command: list[str], timeout: float) -> tuple[int, str]:
        """Run the build as a child `stop()` can end, for at most `timeout` seconds (the build's own, and
        its students' training, which is apart from the search); returns its exit status and stderr."""
        with self._lock:
            if self._stopping.is_set():
                raise StepFailed("interrupted", "the server stopped before the build started")
            child = self._child = buildproc.start(command)
        try:
            _, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            buildproc.stop(child, self.config.stop_grace_s)
            raise StepFailed("failed", f"build still running after {timeout:g} s") from None
        finally:
            with self._lock:
                self._child = None
        return child.returncode, stderr

    def _gate(self, manifest: Manifest, judged_on: str) -> str:
        """Raise StepFailed("refused") for a candidate outside its budget or below the fidelity floor
        on `judged_on` (what the build calibrated and judged on); returns what the gate saw, for the
        audit log."""
        selected = manifest.selected
        if not selected.feasible:
            raise StepFailed("refused", f"the build's winner failed {list(selected.failed_constraints)}")
        fidelity = manifest.calibration_fidelity
        floor = fidelity_floor(manifest.source.quality_metric, manifest.constraints, self.config.min_fidelity)
        if fidelity is None:
            return f"no fidelity to FP32 on {judged_on} recorded (floor {floor:g})"
        if fidelity < floor:
            raise StepFailed("refused", f"fidelity to FP32 on {judged_on} {fidelity:.4f} < {floor:g}")
        return f"fidelity to FP32 on {judged_on} {fidelity:.4f} >= {floor:g}"

    def _open(self, model: str, reason: Reason, detail: str) -> _Run:
        run = _Run(model, reason.value, time.time(), self.control.live_version(model))
        with self._lock:
            self._current = run
        self._audit(model, STARTED, reason.value, detail, {"live": run.live, **_owner()}, at=run.started)
        return run

    def _close(self, run: _Run, outcome: str, detail: str, candidate: str | None = None) -> str:
        """Record the run's outcome once (the worker and `stop()` may both try); returns the outcome kept."""
        with self._lock:
            if run.outcome is not None:
                return run.outcome
            run.outcome = outcome
            if self._current is run:
                self._current = None
            if outcome == "promoted":  # a refused or failed run changed nothing that drift could outlive
                self._promoted.add(run.model)
        metrics.REOPTIMISATIONS.labels(run.model, run.reason, outcome).inc()
        extra: dict[str, object] = {"live": run.live, "started": run.started}
        if candidate is not None:
            extra["candidate"] = candidate
        self._audit(run.model, outcome, run.reason, detail, extra=extra)
        return outcome

    def _audit(
        self,
        model: str,
        event: str,
        reason: str,
        detail: str,
        extra: dict[str, object] | None = None,
        at: float | None = None,
    ) -> None:
        """Append an entry at time `at` (default now) with `extra` fields."""
        entry = {
            "time": time.time() if at is None else at,
            "model": model,
            "event": event,
            "reason": reason,
            "detail": detail,
            **(extra or {}),
        }
        # One JSON object per line, as in the audit log: a log collector parses either the same way.
        logger.info("re-optimisation %s", json.dumps(entry, default=str))
        append_entry(self.config.audit_log, entry)


def _status(code: int) -> str:
    """'exited 2' or 'killed by SIGKILL'."""
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"


def _owner() -> dict[str, object]:
    """Who started a run, for people reading the log (the run lock, not these, tells if it still runs)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


_OPTIMISE = (sys.executable, "-m", "optimise.cli", "optimise")
