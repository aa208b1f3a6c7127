"""Carry a decision out: re-optimise, gate, shadow, then promote or keep the live model.

Runs in one background worker, one job at a time, so the request path never
waits on it. The build runs as a separate `leanserve optimise` process on the
recent traffic (it recalibrates static quantisation on it and re-runs the
selection for the profile); a crash there cannot take the server down. The new
version must pass, in order: the load checks (hashes, smoke inference), the
gate (its build met the constraints on the labelled evaluation data, and it
follows the FP32 model on the recent traffic), and a shadow run on live
requests against the live model. Only then is it promoted; otherwise the live
model stays and the reason is recorded. Every step is counted and written to
an append-only JSON-lines audit log.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from monitoring import metrics
from monitoring.drift import DriftReport
from monitoring.policy import Action, Decision, PolicyConfig, Reason, WindowState, decide

logger = logging.getLogger(__name__)


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
    def live_manifest(self, model: str) -> dict[str, Any]: ...
    def recent_inputs(self, model: str) -> dict[str, np.ndarray] | None: ...
    def stage(self, model: str, version: str) -> dict[str, Any]: ...
    def shadow(self, model: str, rows: int, timeout_s: float) -> ShadowOutcome: ...
    def promote(self, model: str) -> None: ...
    def discard(self, model: str) -> None: ...


@dataclass(frozen=True)
class TriggerConfig:
    """Attributes: policy (when to act), min_fidelity (gate on recent traffic, vs FP32),
    shadow_rows / min_shadow_agreement / shadow_timeout_s (the shadow run), build_time_budget_s and
    build_timeout_s (the build process), audit_log (JSON lines), history (windows kept per model)."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    min_fidelity: float = 0.99
    shadow_rows: int = 50
    min_shadow_agreement: float = 0.98
    shadow_timeout_s: float = 300.0
    build_time_budget_s: float = 60.0
    build_timeout_s: float = 900.0
    audit_log: Path = Path("leanserve-audit.jsonl")
    history: int = 20


class StepFailed(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


class Trigger:
    def __init__(self, control: ServingControl, config: TriggerConfig) -> None:
        self.control = control
        self.config = config
        self._windows: dict[str, list[WindowState]] = {}
        self._runs: dict[str, list[float]] = {}
        self._jobs: queue.Queue[tuple[str, Reason, str] | None] = queue.Queue()
        self._busy: set[str] = set()
        self._finished: set[str] = set()  # models with a finished run: windows restart after it
        self._thread = threading.Thread(target=self._work, name="leanserve-trigger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)

    # -- decisions --------------------------------------------------------------------------
    def on_window(self, model: str, state: WindowState, report: DriftReport) -> Decision:
        """Called by the drift monitor after each evaluated window."""
        windows = self._windows.setdefault(model, [])
        windows.append(state)
        del windows[: -self.config.history]
        reoptimised = model in self._finished
        decision = decide(windows, self._runs.get(model, []), time.time(), self.config.policy, reoptimised)
        if decision.action is Action.REOPTIMISE:
            self.request(model, decision.reason, decision.detail)
        elif decision.action is Action.NEEDS_RETRAINING:
            self._audit(model, "needs-retraining", decision.reason, decision.detail)
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

    def busy(self, model: str) -> bool:
        return model in self._busy

    # -- the run ----------------------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            model, reason, detail = job
            try:
                self.run(model, reason, detail)
            finally:
                self._windows.pop(model, None)  # judge the traffic after the run afresh
                self._finished.add(model)
                self._busy.discard(model)

    def run(self, model: str, reason: Reason, detail: str = "") -> str:
        """Build, gate, shadow, promote; returns the outcome ('promoted', 'refused', 'failed')."""
        live = self.control.live_version(model)
        self._audit(model, "started", reason, detail, live=live)
        try:
            candidate = self._build(model)
            manifest = self.control.stage(model, candidate)
            self._gate(manifest)
            shadow = self.control.shadow(model, self.config.shadow_rows, self.config.shadow_timeout_s)
            if shadow.compared_rows == 0 or shadow.agreement < self.config.min_shadow_agreement:
                raise StepFailed(
                    "refused", f"shadow {shadow.metric} {shadow.agreement:.4f} on {shadow.compared_rows} rows"
                )
            self.control.promote(model)
        except StepFailed as exc:
            self.control.discard(model)
            self._finish(model, reason, exc.outcome, str(exc), live=live)
            return exc.outcome
        except Exception as exc:  # a crash in any step keeps the live model serving
            logger.exception("re-optimisation of %s failed", model)
            self.control.discard(model)
            self._finish(model, reason, "failed", f"{type(exc).__name__}: {exc}", live=live)
            return "failed"
        details = f"shadow {shadow.metric} {shadow.agreement:.4f} on {shadow.compared_rows} rows"
        self._finish(model, reason, "promoted", details, live=live, candidate=candidate)
        return "promoted"

    def _build(self, model: str) -> str:
        source = self.control.live_manifest(model)["source"]["spec"]
        with tempfile.TemporaryDirectory(prefix="leanserve-reoptimise-") as scratch:
            tag_file = Path(scratch) / "tag"
            command = [
                sys.executable,
                "-m",
                "optimise.cli",
                "optimise",
                "--model",
                source,
                "--tag-file",
                str(tag_file),
            ]
            command += ["--time-budget", str(self.config.build_time_budget_s), "--rounds", "3"]
            recent = self.control.recent_inputs(model)
            if recent is not None:  # recalibrate on what the model sees now
                np.savez(Path(scratch) / "recent.npz", **recent)  # type: ignore[arg-type]  # numpy stub quirk
                command += ["--calibration-inputs", str(Path(scratch) / "recent.npz")]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.config.build_timeout_s, check=False
            )
            if done.returncode != 0 or not tag_file.is_file():
                raise StepFailed("failed", f"build exited {done.returncode}: {done.stderr.strip()[-300:]}")
            return tag_file.read_text(encoding="utf-8").split(":")[1]

    def _gate(self, manifest: dict[str, Any]) -> None:
        selected = manifest["selected"]
        if not selected.get("feasible", False):
            raise StepFailed("refused", f"the build's winner failed {selected.get('failed_constraints')}")
        fidelity = manifest.get("calibration_fidelity")
        if fidelity is not None and fidelity < self.config.min_fidelity:
            raise StepFailed(
                "refused", f"fidelity to FP32 on recent traffic {fidelity:.4f} < {self.config.min_fidelity}"
            )

    def _finish(self, model: str, reason: Reason, outcome: str, detail: str, **extra: str) -> None:
        metrics.REOPTIMISATIONS.labels(model, reason.value, outcome).inc()
        self._audit(model, outcome, reason, detail, **extra)

    def _audit(self, model: str, event: str, reason: Reason, detail: str, **extra: str) -> None:
        entry = {
            "time": time.time(),
            "model": model,
            "event": event,
            "reason": reason.value,
            "detail": detail,
            **extra,
        }
        logger.info("re-optimisation %s", entry)
        self.config.audit_log.parent.mkdir(parents=True, exist_ok=True)
        with self.config.audit_log.open("a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")


def audit_log_path() -> Path:
    """The default audit log: beside the model store it describes."""
    from optimise.store import bentoml_home

    return Path(bentoml_home()) / "leanserve-audit.jsonl"


def read_audit_log(path: Path, model: str | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [e for e in entries if model is None or e.get("model") == model]
