"""The trigger's steps with a real build process and a recording stand-in for the server.

The server side (`service.control.DataPlaneControl`) is exercised for real by the
closed-loop integration test; here it is replaced so each failure path can be forced.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from manifests import small_manifest
from processes import running
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from monitoring.audit import RunLock, describe_time
from monitoring.cli import history
from monitoring.drift import DriftReport
from monitoring.policy import Action, PolicyConfig, Reason, WindowState
from monitoring.trigger import Trigger, TriggerConfig, read_audit_log
from optimise import store
from optimise.artefact import Manifest, PassRecord, SourceRecord, VariantRecord
from optimise.live import LIVE_FILE
from optimise.types import Constraints, Precision, QualityMetric, StudentTraining

TESTS = Path(__file__).resolve().parents[2]


@dataclass
class Shadow:
    compared_rows: int
    agreement: float
    metric: str = "argmax agreement"


def live_manifest(
    source: str = "tiny_models:build",
    constraints: Constraints | None = None,
    student: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of a live version built from `source` under `constraints`; with `student` (the
    `distil` settings), its selected variant is that student, trained 40 steps in 2.5 s."""
    manifest = small_manifest("tiny", {})
    passes = (PassRecord("export_onnx"),)
    training = None
    if student is not None:
        passes = (PassRecord("distil", {**student, "time_s": 600.0}), *passes)
        training = StudentTraining(steps=40, seconds=2.5)
    selected = VariantRecord("v0", None, passes, Precision.FP32, 1, None, True, training=training)
    return replace(
        manifest,
        source=SourceRecord(source, "tiny", QualityMetric.ACCURACY),
        constraints=constraints or Constraints(),
        selected=selected,
        candidates=(selected,),
    )


@dataclass
class RecordingControl:
    source: str = "tiny_models:build"
    live: Manifest | None = None
    shadow_result: Shadow = field(default_factory=lambda: Shadow(50, 1.0))
    fail_stage: bool = False
    calls: list[str] = field(default_factory=list)
    staged_manifest: Manifest | None = None
    staged: Manifest | None = None  # what stage() returns, instead of the stored version

    live_tag: str = "v-live"

    def live_version(self, model: str) -> str:
        return self.live_tag

    def live_manifest(self, model: str) -> Manifest:
        return self.live or live_manifest(self.source)

    recent_rows: int | None = 60
    """None: the server keeps no inputs of this model (a text model's window keeps embeddings)."""

    def recent_inputs(self, model: str) -> dict[str, np.ndarray] | None:
        if self.recent_rows is None:
            return None
        return {"features": np.random.default_rng(1).normal(size=(self.recent_rows, 16)).astype(np.float32)}

    def stage(self, model: str, version: str) -> Manifest:
        self.calls.append(f"stage {version}")
        if self.fail_stage:
            raise RuntimeError("smoke inference failed")
        if self.staged is not None:
            return self.staged
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
        config = TriggerConfig(
            audit_log=tmp_path / "audit.jsonl", build_time_budget_s=5, serve_seconds=0.1, **kwargs
        )
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
    assert control.staged_manifest is not None
    assert control.staged_manifest.calibration_fidelity is not None  # gated on the recent inputs
    events = [e["event"] for e in read_audit_log(trigger.config.audit_log, "tiny")]
    assert events == ["started", "promoted"]
    assert _outcomes("manual", "promoted") == before + 1


def test_a_distilling_rebuild_trains_students_on_half_the_recent_inputs(make_trigger: Any) -> None:
    control = RecordingControl(recent_rows=600)  # 300 learnt (>= 256: enough alone), 300 calibrate
    trigger = make_trigger(control, distil_time_s=3)
    assert trigger.run("tiny", Reason.MANUAL, "test") in {"promoted", "refused"}
    manifest = control.staged_manifest
    assert manifest is not None and manifest.calibration_fidelity is not None
    students = [c.training for c in manifest.candidates if c.training is not None]
    assert students, "no distilled candidate in the rebuild"
    assert all(0 < training.seconds <= 3.5 for training in students)  # the rebuild's distil budget


def test_a_window_too_small_to_halve_rebuilds_without_distillation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, record = _fake_build(tmp_path, monkeypatch, seconds=0)
    control = RecordingControl(fail_stage=True, recent_rows=80)  # 40 rows to learn from: fewer than 50
    config = TriggerConfig(audit_log=tmp_path / "audit.jsonl", build_command=command, distil_time_s=60)
    Trigger(control, config).run("tiny", Reason.MANUAL)
    argv = _wait_for(record)["argv"]
    assert "--calibration-inputs" in argv and "--distil-live" not in argv


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        (3, "(3 recent rows, fewer than 50)"),  # a manual run right after one request
        (None, "(no recent inputs kept for this model)"),
    ],
)
def test_too_few_recent_inputs_leave_calibration_and_the_gate_to_the_build(
    make_trigger: Any, rows: int | None, said: str
) -> None:
    trigger = make_trigger(RecordingControl(recent_rows=rows))
    trigger.run("tiny", Reason.MANUAL)
    entry = read_audit_log(trigger.config.audit_log, "tiny")[-1]
    assert f"fidelity to FP32 on the build's own calibration set {said}" in entry["detail"]
    assert "recent traffic" not in entry["detail"]


@pytest.mark.parametrize(
    ("shadow", "said"),
    [
        (Shadow(50, 0.80), "agreement 0.8000 on 50 rows < 0.98"),
        (Shadow(0, 0.0), "no live request to compare"),
    ],
)
def test_a_shadow_that_disagrees_or_saw_nothing_keeps_the_live_model(
    make_trigger: Any, shadow: Shadow, said: str
) -> None:
    control = RecordingControl(shadow_result=shadow)
    trigger = make_trigger(control)
    assert trigger.run("tiny", Reason.DATA_DRIFT) == "refused"
    assert "promote" not in control.calls and control.calls[-1] == "discard"
    entry = read_audit_log(trigger.config.audit_log, "tiny")[-1]
    # the refusal names the version it built and what the gate saw before the shadow run
    assert entry["candidate"] and "fidelity to FP32 on recent traffic (60 rows)" in entry["detail"]
    assert said in entry["detail"]


def test_a_refused_candidate_is_marked_and_a_restart_keeps_serving_the_live_version(
    make_trigger: Any,
) -> None:
    live = store.versions("tiny")[-1].version if store.versions("tiny") else None
    if live is None:  # a stored version to stand for the live one
        assert make_trigger(RecordingControl()).run("tiny", Reason.MANUAL) == "promoted"
        live = store.versions("tiny")[-1].version
    _forget_live("tiny")  # a store without a live record: a bare name would serve the newest version
    control = RecordingControl(live_tag=live, shadow_result=Shadow(50, 0.5))
    trigger = make_trigger(control)
    assert trigger.run("tiny", Reason.DATA_DRIFT) == "refused"
    candidate = read_audit_log(trigger.config.audit_log, "tiny")[-1]["candidate"]
    built = {v.version: v for v in store.versions("tiny")}[candidate]
    assert built.ok and built.refused is not None
    assert built.refused.startswith("refused by the closed loop: ") and "agreement 0.5000" in built.refused
    assert store.live_version("tiny") == live and store.resolve("tiny") == f"tiny:{live}"


def _forget_live(name: str) -> None:
    """Remove `name`'s entry from the store's live record (the other models' entries stay)."""
    path = store.store_dir() / LIVE_FILE
    entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    entries.pop(name, None)
    path.write_text(json.dumps(entries), encoding="utf-8")
    assert store.live_version(name) is None


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
    drifted = WindowState(share_drifted=0.9)
    assert trigger.on_window("tiny", drifted, report).action is Action.NONE
    assert trigger.on_window("tiny", drifted, report).action is Action.REOPTIMISE
    # queued (the worker thread is not started here): one run per model at a time
    assert not trigger.request("tiny", Reason.MANUAL)
    concept = WindowState(prediction_drift=True)
    other = make_trigger(RecordingControl(), policy=policy)
    other.on_window("tiny", concept, report)
    assert other.on_window("tiny", concept, report).action is Action.NEEDS_RETRAINING
    assert read_audit_log(other.config.audit_log)[-1]["event"] == "needs-retraining"


def test_drift_that_outlives_a_promoted_run_needs_retraining_and_after_a_refused_one_rebuilds_again(
    make_trigger: Any,
) -> None:
    policy = PolicyConfig(drift_windows=1, cooldown_s=0, max_runs_per_hour=10)
    report: DriftReport = None  # type: ignore[assignment]  # the trigger only forwards it
    drifted = WindowState(share_drifted=0.9)
    refusing = make_trigger(RecordingControl(shadow_result=Shadow(50, 0.5)), policy=policy)
    assert refusing.run("tiny", Reason.DATA_DRIFT) == "refused"
    assert refusing.on_window("tiny", drifted, report).action is Action.REOPTIMISE  # nothing changed yet
    promoting = make_trigger(RecordingControl(), policy=policy)
    assert promoting.run("tiny", Reason.DATA_DRIFT) == "promoted"
    assert promoting.on_window("tiny", drifted, report).action is Action.NEEDS_RETRAINING
    entry = read_audit_log(promoting.config.audit_log, "tiny")[-1]
    assert entry["event"] == "needs-retraining" and entry["live"] == "v-live"


# -- the build yields to serving and every run the audit log opens is closed -----------------------
FAKE_BUILD = (
    "import json, os, sys, time\n"
    "args = sys.argv[1:]\n"
    "record = {'pid': os.getpid(), 'nice': os.getpriority(os.PRIO_PROCESS, 0), 'pgid': os.getpgid(0),\n"
    "          'omp': os.environ.get('OMP_NUM_THREADS'), 'argv': args}\n"
    "path = os.environ['FAKE_BUILD_RECORD']\n"
    "with open(path + '.tmp', 'w') as f: json.dump(record, f)\n"
    "os.replace(path + '.tmp', path)\n"
    "time.sleep(float(os.environ['FAKE_BUILD_SECONDS']))\n"
    "open(args[args.index('--tag-file') + 1], 'w').write('tiny:v-fake')\n"
)


def _fake_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> tuple[tuple[str, ...], Path]:
    record = tmp_path / "build.json"
    monkeypatch.setenv("FAKE_BUILD_RECORD", str(record))
    monkeypatch.setenv("FAKE_BUILD_SECONDS", str(seconds))
    return (sys.executable, "-c", FAKE_BUILD), record


def _wait_for(path: Path, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return dict(json.loads(path.read_text()))


def test_a_running_build_is_reniced_and_stopped_with_the_trigger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, record = _fake_build(tmp_path, monkeypatch, seconds=120)
    control = RecordingControl()
    config = TriggerConfig(audit_log=tmp_path / "audit.jsonl", build_command=command, stop_grace_s=5)
    trigger = Trigger(control, config)
    before = _outcomes("manual", "interrupted")
    trigger.start()
    assert trigger.request("tiny", Reason.MANUAL, "test")
    build = _wait_for(record)
    assert build["nice"] == 19 and os.getpriority(os.PRIO_PROCESS, build["pid"]) == 19
    assert build["omp"] == "1" and build["pgid"] == build["pid"]  # one thread, its own process group
    assert "--no-promote" in build["argv"] and "--calibration-inputs" in build["argv"]

    start = time.monotonic()
    trigger.stop()
    assert time.monotonic() - start < 10
    assert not running(build["pid"]), "the build outlived the trigger"
    entries = read_audit_log(config.audit_log, "tiny")
    assert [e["event"] for e in entries] == ["started", "interrupted"]
    assert entries[1]["started"] == entries[0]["time"] and entries[0]["pid"] == os.getpid()
    assert control.calls == ["discard"]
    assert _outcomes("manual", "interrupted") == before + 1


def test_a_build_that_finishes_is_staged_with_the_version_it_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, _ = _fake_build(tmp_path, monkeypatch, seconds=0)
    control = RecordingControl(fail_stage=True)  # the fake version is not in the store
    trigger = Trigger(control, TriggerConfig(audit_log=tmp_path / "audit.jsonl", build_command=command))
    assert trigger.run("tiny", Reason.MANUAL) == "failed"
    assert control.calls[0] == "stage v-fake"
    entries = read_audit_log(trigger.config.audit_log)
    assert [e["event"] for e in entries] == ["started", "failed"]
    assert entries[1]["started"] == entries[0]["time"]


def test_a_run_left_open_by_a_killed_server_is_closed_as_abandoned_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "audit.jsonl"
    started = time.time() - 120
    lines = [
        {"time": started - 50, "model": "other", "event": "started", "reason": "manual", "detail": ""},
        {"time": started - 40, "model": "other", "event": "refused", "reason": "manual", "detail": "shadow"},
        {
            "time": started,
            "model": "tiny",
            "event": "started",
            "reason": "data-drift",
            "detail": "",
            "live": "v1",
        },
    ]
    # The killed server was writing its next line when it died.
    log.write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"time": 17', encoding="utf-8")
    before = _outcomes("data-drift", "abandoned")

    trigger = Trigger(RecordingControl(), TriggerConfig(audit_log=log))
    with caplog.at_level(logging.INFO, logger="monitoring.trigger"):
        trigger.start()
    trigger.stop()
    entries = read_audit_log(log, "tiny")
    assert [e["event"] for e in entries] == ["started", "abandoned"]
    # The server's log line is the audit entry as JSON (it was a Python dict: quotes, epoch floats).
    logged = [r.getMessage().removeprefix("re-optimisation ") for r in caplog.records]
    assert json.loads(next(m for m in logged if '"abandoned"' in m))["started"] == started
    assert entries[1]["started"] == started and entries[1]["live"] == "v1"
    assert describe_time(started) in entries[1]["detail"]
    assert _outcomes("data-drift", "abandoned") == before + 1
    assert [e["event"] for e in read_audit_log(log, "other")] == ["started", "refused"]
    assert Trigger(RecordingControl(), TriggerConfig(audit_log=log)).close_abandoned() == []  # once

    history_app = typer.Typer()
    history_app.command()(history)
    shown = CliRunner().invoke(history_app, ["tiny", "--audit-log", str(log)], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and "abandoned" in shown.output and describe_time(started) in shown.output


def test_a_run_of_a_live_server_sharing_the_log_is_left_open(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    entry = {"time": time.time(), "model": "tiny", "event": "started", "reason": "manual", "detail": ""}
    log.write_text(json.dumps(entry) + "\n", encoding="utf-8")
    other_server = RunLock(log, "tiny")
    assert other_server.acquire()
    try:
        trigger = Trigger(RecordingControl(), TriggerConfig(audit_log=log))
        assert trigger.close_abandoned() == []
        assert trigger.run("tiny", Reason.MANUAL) == "skipped"  # one rebuild of a model at a time
    finally:
        other_server.release()
    assert [e["event"] for e in read_audit_log(log)] == ["started"]


def test_runs_before_a_restart_count_for_the_cooldown(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    entries = [
        {
            "time": time.time() - 300,
            "model": "tiny",
            "event": "started",
            "reason": "data-drift",
            "detail": "",
        },
        {
            "time": time.time() - 200,
            "model": "tiny",
            "event": "refused",
            "reason": "data-drift",
            "detail": "",
        },
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    policy = PolicyConfig(drift_windows=1, cooldown_s=600)
    trigger = Trigger(RecordingControl(), TriggerConfig(audit_log=log, policy=policy))
    trigger.close_abandoned()
    report: DriftReport = None  # type: ignore[assignment]  # the trigger only forwards it
    assert trigger.on_window("tiny", WindowState(share_drifted=0.9), report).reason is Reason.COOLDOWN


@pytest.mark.parametrize(("sig", "outcome"), [(signal.SIGTERM, "interrupted"), (signal.SIGKILL, "failed")])
def test_a_build_ended_from_outside_is_interrupted_by_sigterm_and_failed_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals, outcome: str
) -> None:
    """BentoML's supervisor terminates a stopping server's children before its shutdown hooks run."""
    command, record = _fake_build(tmp_path, monkeypatch, seconds=120)
    trigger = Trigger(
        RecordingControl(), TriggerConfig(audit_log=tmp_path / "audit.jsonl", build_command=command)
    )
    outcomes: list[str] = []
    worker = threading.Thread(target=lambda: outcomes.append(trigger.run("tiny", Reason.DATA_DRIFT)))
    worker.start()
    os.kill(_wait_for(record)["pid"], sig)
    worker.join(timeout=30)
    entry = read_audit_log(trigger.config.audit_log)[-1]
    assert outcomes == [outcome] and entry["event"] == outcome and sig.name in entry["detail"]


# -- a rebuild keeps the live version's choices ---------------------------------------------------
def _options(argv: list[str]) -> dict[str, str]:
    """Each `--name` of a command line with the word after it."""
    return {word: argv[i + 1] for i, word in enumerate(argv[:-1]) if word.startswith("--")}


def test_a_rebuild_keeps_the_live_profile_and_quality_budget_and_does_not_start_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, record = _fake_build(tmp_path, monkeypatch, seconds=0)
    budget = Constraints(max_accuracy_drop=0.02, min_cosine=0.93, max_size_bytes=3_500_000)
    control = RecordingControl(live=live_manifest(constraints=budget), fail_stage=True)
    Trigger(control, TriggerConfig(audit_log=tmp_path / "audit.jsonl", build_command=command)).run(
        "tiny", Reason.MANUAL
    )
    argv = _wait_for(record)["argv"]
    options = _options(argv)
    assert options["--model"] == "tiny_models:build" and options["--profile"] == "cpu"
    assert float(options["--max-accuracy-drop"]) == pytest.approx(2.0)  # percentage points
    assert float(options["--min-cosine"]) == 0.93 and float(options["--max-size-mb"]) == 3.5
    assert "--no-distil" in argv and "--student" not in argv  # a budget admitting students trains none here


def test_a_live_student_is_rebuilt_as_that_student_with_the_training_it_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, record = _fake_build(tmp_path, monkeypatch, seconds=0)
    live = live_manifest(student={"layers": 4, "prune_ratio": 1 / 3})
    control = RecordingControl(live=live, fail_stage=True)
    Trigger(control, TriggerConfig(audit_log=tmp_path / "audit.jsonl", build_command=command)).run(
        "tiny", Reason.MANUAL
    )
    argv = _wait_for(record)["argv"]
    options = _options(argv)
    assert options["--student"] == "layers=4,prune_ratio=0.3333333333333333"
    assert options["--distil-time"] == "3" and options["--distil-steps"] == "40"  # 2.5 s, 40 steps
    assert "--no-distil" not in argv and "--distil-live" not in argv


def test_a_live_student_is_distilled_again_for_real_under_its_own_budget(make_trigger: Any) -> None:
    budget = Constraints(max_accuracy_drop=0.02)
    live = live_manifest(constraints=budget, student={"width": 0.5})
    control = RecordingControl(live=live, recent_rows=600)  # 300 rows to learn from: enough alone
    assert make_trigger(control, distil_time_s=3).run("tiny", Reason.MANUAL, "test") in {
        "promoted",
        "refused",
    }
    manifest = control.staged_manifest
    assert manifest is not None and manifest.constraints.max_accuracy_drop == pytest.approx(0.02)
    students = [c for c in manifest.candidates if c.training is not None]
    assert students, "the live student was not distilled again"
    for candidate in students:  # the live student only, for the rebuild's budget
        assert candidate.training is not None and 0 < candidate.training.seconds <= 3.5
        assert [p.settings.get("width") for p in candidate.passes if p.name == "distil"] == [0.5]


def test_a_live_student_without_data_to_learn_from_fails_the_rebuild_and_stays_live(
    make_trigger: Any,
) -> None:
    # the tiny model has no distillation data of its own, and this trigger passes it no recorded rows
    control = RecordingControl(live=live_manifest(student={"width": 0.5}))
    trigger = make_trigger(control)
    assert trigger.run("tiny", Reason.MANUAL, "test") == "failed"
    assert "promote" not in control.calls
    assert "needs unlabelled inputs" in read_audit_log(trigger.config.audit_log, "tiny")[-1]["detail"]


@pytest.mark.parametrize(("drop", "outcome"), [(0.02, "promoted"), (0.005, "refused")])
def test_the_gate_holds_a_rebuild_to_the_fidelity_its_budget_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop: float, outcome: str
) -> None:
    # 98.5 % argmax agreement with FP32 on recent traffic: inside a 2-point budget, not a 0.5-point one
    command, _ = _fake_build(tmp_path, monkeypatch, seconds=0)
    staged = replace(
        live_manifest(constraints=Constraints(max_accuracy_drop=drop)), calibration_fidelity=0.985
    )
    control = RecordingControl(staged=staged)
    trigger = Trigger(control, TriggerConfig(audit_log=tmp_path / "audit.jsonl", build_command=command))
    assert trigger.run("tiny", Reason.MANUAL) == outcome
    detail = read_audit_log(trigger.config.audit_log, "tiny")[-1]["detail"]
    assert ("0.9850 < 0.99" if outcome == "refused" else "0.9850 >= 0.98") in detail
