"""The trigger's steps with a real build process and a recording stand-in for the server.

The server side (`service.control.DataPlaneControl`) is exercised for real by the
closed-loop integration test; here it is replaced so each failure path can be forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from monitoring.drift import DriftReport
from monitoring.policy import Action, PolicyConfig, Reason, WindowState
from monitoring.trigger import Trigger, TriggerConfig, read_audit_log
from optimise import store

TESTS = Path(__file__).resolve().parents[2]


@dataclass
class Shadow:
    compared_rows: int
    agreement: float
    metric: str = "argmax agreement"


@dataclass
class RecordingControl:
    source: str = "tiny_models:build"
    shadow_result: Shadow = field(default_factory=lambda: Shadow(50, 1.0))
    fail_stage: bool = False
    calls: list[str] = field(default_factory=list)
    staged_manifest: dict[str, Any] = field(default_factory=dict)

    def live_version(self, model: str) -> str:
        return "v-live"

    def live_manifest(self, model: str) -> dict[str, Any]:
        return {"source": {"spec": self.source}}

    def recent_inputs(self, model: str) -> dict[str, np.ndarray] | None:
        return {"features": np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32)}

    def stage(self, model: str, version: str) -> dict[str, Any]:
        self.calls.append(f"stage {version}")
        if self.fail_stage:
            raise RuntimeError("smoke inference failed")
        self.staged_manifest = store.read_manifest(store.get_model(f"tiny:{version}"))
        return self.staged_manifest

    def shadow(self, model: str, rows: int, timeout_s: float) -> Shadow:
        self.calls.append("shadow")
        return self.shadow_result

    def promote(self, model: str) -> None:
        self.calls.append("promote")

    def discard(self, model: str) -> None:
        self.calls.append("discard")


@pytest.fixture
def make_trigger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the build process imports tiny_models

    def make(control: RecordingControl, **kwargs: Any) -> Trigger:
        config = TriggerConfig(audit_log=tmp_path / "audit.jsonl", build_time_budget_s=5, **kwargs)
        return Trigger(control, config)

    return make


def _outcomes(reason: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "leanserve_reoptimisations_total", {"model": "tiny", "reason": reason, "outcome": outcome}
        )
        or 0.0
    )


def test_a_good_candidate_is_built_gated_shadowed_and_promoted(make_trigger: Any) -> None:
    control = RecordingControl()
    trigger = make_trigger(control)
    before = _outcomes("manual", "promoted")
    assert trigger.run("tiny", Reason.MANUAL, "test") == "promoted"
    assert control.calls[0].startswith("stage ") and control.calls[1:] == ["shadow", "promote"]
    assert control.staged_manifest["calibration_fidelity"] is not None  # gated on the recent inputs
    events = [e["event"] for e in read_audit_log(trigger.config.audit_log, "tiny")]
    assert events == ["started", "promoted"]
    assert _outcomes("manual", "promoted") == before + 1


def test_a_shadow_that_disagrees_keeps_the_live_model(make_trigger: Any) -> None:
    control = RecordingControl(shadow_result=Shadow(50, 0.80))
    assert make_trigger(control).run("tiny", Reason.DATA_DRIFT) == "refused"
    assert "promote" not in control.calls and control.calls[-1] == "discard"


def test_a_broken_build_or_stage_fails_without_touching_the_live_model(make_trigger: Any) -> None:
    broken_source = RecordingControl(source="tiny_models:raising")
    trigger = make_trigger(broken_source)
    assert trigger.run("tiny", Reason.DATA_DRIFT) == "failed"
    assert broken_source.calls == ["discard"]
    entry = read_audit_log(trigger.config.audit_log, "tiny")[-1]
    assert entry["event"] == "failed" and "weights file is missing" in entry["detail"]

    bad_stage = RecordingControl(fail_stage=True)
    assert make_trigger(bad_stage).run("tiny", Reason.DATA_DRIFT) == "failed"
    assert "promote" not in bad_stage.calls


def test_windows_go_through_the_policy(make_trigger: Any) -> None:
    policy = PolicyConfig(drift_windows=2, cooldown_s=0)
    trigger = make_trigger(RecordingControl(), policy=policy)
    report: DriftReport = None  # type: ignore[assignment]  # the trigger only forwards it
    drifted = WindowState(drift_share=0.9)
    assert trigger.on_window("tiny", drifted, report).action is Action.NONE
    assert trigger.on_window("tiny", drifted, report).action is Action.REOPTIMISE
    assert trigger.busy("tiny")  # queued (the worker thread is not started here)
    assert not trigger.request("tiny", Reason.MANUAL)  # one run per model at a time
    concept = WindowState(prediction_drift=True)
    other = make_trigger(RecordingControl(), policy=policy)
    other.on_window("tiny", concept, report)
    assert other.on_window("tiny", concept, report).action is Action.NEEDS_RETRAINING
    assert read_audit_log(other.config.audit_log)[-1]["event"] == "needs-retraining"
