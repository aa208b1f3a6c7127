"""The audit log: appending after a cut line, reading past it, and pairing runs with their outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitoring.audit import RunLock, append_entry, open_runs, read_audit_log


def _entry(time: float, model: str, event: str, **extra: Any) -> dict[str, Any]:
    return {"time": time, "model": model, "event": event, **extra}


def test_open_runs_pairs_outcomes_with_their_started_entries() -> None:
    entries = [
        _entry(1, "a", "started"),
        _entry(2, "a", "promoted", started=1),
        _entry(3, "a", "started"),  # killed: no outcome
        _entry(4, "b", "started"),
        _entry(5, "b", "failed"),  # written before outcomes named their run: closes b's latest
        _entry(6, "a", "needs-retraining"),  # not an outcome of a run
        _entry(7, "a", "started"),
        _entry(8, "a", "interrupted", started=7),
        _entry(9, "c", "abandoned", started=0),  # an outcome without an open run changes nothing
    ]
    assert [r["time"] for r in open_runs(entries)] == [3]
    assert open_runs([]) == []


def test_a_line_cut_short_is_skipped_and_the_next_entry_starts_on_its_own_line(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "audit.jsonl"
    append_entry(log, _entry(1, "a", "started"))
    with log.open("a", encoding="utf-8") as handle:
        handle.write('{"time": 2, "model": "a", "ev')  # a kill in the middle of a write
    append_entry(log, _entry(3, "a", "abandoned", started=1))
    assert log.read_text(encoding="utf-8").count("\n") == 3
    assert [e["time"] for e in read_audit_log(log)] == [1, 3]
    assert read_audit_log(log, "b") == [] and read_audit_log(tmp_path / "none.jsonl") == []


def test_a_run_lock_is_held_once(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    first, second = RunLock(log, "digits"), RunLock(log, "digits")
    assert first.acquire() and not second.acquire()
    other_model = RunLock(log, "minilm")
    assert other_model.acquire()  # one lock per model
    other_model.release()
    first.release()
    assert second.acquire()
    second.release()
    assert first.path.name == "audit.jsonl.digits.lock"
