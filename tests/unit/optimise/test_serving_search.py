"""The build's serving stage: requests as clients send them, the choice of settings, and the stage
on real builds (sessions of the real runtimes under concurrent load, recorded in the manifest)."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from builds import OPENVINO_INT8, build, with_more_calibration_rows
from tiny_models import make_tiny_bundle

from optimise import serving_search, store
from optimise.artefact import Manifest
from optimise.report import SERVING_HEADERS, serving_rows, write_report
from optimise.runtimes import ONNX_RUNTIME
from optimise.serving_search import ServingTarget, choose, request_rows
from optimise.space import SearchSpace
from optimise.types import Constraints, Precision, ServingSettings, ServingTrial

QUICK = ServingTarget(concurrency=4, p99_bound_ms=1000.0, seconds=0.1)


def trial(rps: float, p99: float, errors: int = 0, parallel: int = 1) -> ServingTrial:
    return ServingTrial("v", ServingSettings(1, parallel), rps, p99 / 2, p99, errors)


def test_requests_are_single_rows_with_text_cut_to_its_own_length() -> None:
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    inputs = {"input_ids": mask * 7, "attention_mask": mask, "extra": np.arange(3).reshape(3, 1)}
    requests = request_rows(inputs)
    assert [r["input_ids"].shape for r in requests] == [(1, 3), (1, 1), (1, 5)]
    assert [r["attention_mask"].sum() for r in requests] == [3, 1, 5]
    assert [r["extra"].tolist() for r in requests] == [[[0]], [[1]], [[2]]]
    tensors = request_rows({"x": np.ones((100, 4), np.float32)}, limit=10)
    assert len(tensors) == 10 and all(r["x"].shape == (1, 4) for r in tensors)
    with pytest.raises(ValueError, match="no inputs"):
        request_rows({"x": np.ones((0, 4))})


def test_the_most_requests_per_second_within_the_bound_wins() -> None:
    target = ServingTarget(p99_bound_ms=50.0)
    fast_but_slow_tail, good, slower = trial(900, 80), trial(800, 40, parallel=2), trial(500, 20)
    best, reason = choose([fast_but_slow_tail, good, slower], target)
    assert best is good
    assert "p99 <= 50 ms" in reason and "800/s" in reason


def test_settings_within_the_tie_share_go_to_the_lower_p99() -> None:
    best, reason = choose([trial(1000, 45), trial(985, 30, parallel=2)], ServingTarget(p99_bound_ms=50.0))
    assert best.settings.parallel_sessions == 2 and "lowest p99 of 2" in reason


def test_with_nothing_inside_the_bound_the_lowest_p99_wins_and_the_reason_says_so() -> None:
    best, reason = choose([trial(900, 80), trial(700, 60)], ServingTarget(p99_bound_ms=10.0))
    assert best.latency_p99_ms == 60
    assert reason.startswith("no setting kept p99 within 10 ms")


def test_settings_that_raised_are_never_chosen() -> None:
    best, _ = choose([trial(2000, 5, errors=3), trial(100, 50)], ServingTarget())
    assert best.requests_per_s == 100
    with pytest.raises(ValueError, match="every serving setting failed"):
        choose([trial(2000, 5, errors=1)], ServingTarget())


@pytest.mark.parametrize(
    "bad",
    [
        {"concurrency": 0},
        {"p99_bound_ms": 0.0},
        {"seconds": 0.0},
        {"finalists": 0},
        {"request_cores": -1},
        {"request_cpu_ms": -0.5},
    ],
)
def test_a_target_out_of_range_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ServingTarget(**bad)  # type: ignore[arg-type]


def test_a_batch_invariant_variant_gets_batching_tried_and_its_choice_is_stored(tmp_path: Path) -> None:
    # NNCF's int8 of the tiny model answers one of its 64 evaluation rows differently on some CPUs
    # (AVX2 without VNNI: a 1.56-point drop): a wider budget keeps it a finalist everywhere.
    wide = Constraints(max_accuracy_drop=0.05)
    result = build(
        with_more_calibration_rows(make_tiny_bundle()),
        OPENVINO_INT8,
        tmp_path,
        serving=QUICK,
        constraints=wide,
    )
    choice = result.serving
    assert choice is not None and choice.variant_id == result.winner.id
    mine = [t for t in choice.trials if t.variant_id == result.winner.id]
    assert all(t.errors == 0 and t.requests_per_s > 0 for t in mine)
    tried = {t.settings for t in mine}
    assert choice.settings in tried
    cores = result.profile.intra_op_threads
    assert {s.threads for s in tried} == {1, cores}
    assert {s.parallel_sessions for s in tried if not s.batching} == {1, cores}
    batched = {s.parallel_sessions for s in tried if s.batching}
    assert batched == {1, max(1, cores - QUICK.request_cores)}  # a core left to the requests
    assert choice.request_cores == 1 and choice.request_cpu_ms == QUICK.request_cpu_ms
    # Batching is tried exactly for the finalists measured batch-invariant; NNCF's int8 is one.
    invariant = {v.id: v.batch_invariant for v in result.variants}
    for variant_id in {t.variant_id for t in choice.trials}:
        settings = {t.settings for t in choice.trials if t.variant_id == variant_id}
        batched = {(s.batch_max_rows, s.batch_wait_ms) for s in settings if s.batching}
        assert batched == ({(r, w) for r in (8, 32) for w in (0, 2)} if invariant[variant_id] else set())
    assert any(
        invariant[t.variant_id] and v.runtime == "openvino"
        for t in choice.trials
        for v in result.variants
        if v.id == t.variant_id
    )
    rows = serving_rows(result)
    assert all(len(row) == len(SERVING_HEADERS) for row in rows)
    assert [row[-1] for row in rows].count("chosen") == 1
    assert "## Serving settings" in write_report(result, tmp_path / "report").read_text()
    # The manifest carries the stage through JSON and back.
    tag = store.save(result, "tests:text")
    manifest = store.artefact(store.get_model(tag)).manifest
    assert manifest.serving == choice
    assert Manifest.from_json(manifest.to_json()).serving == choice


def test_selecting_by_throughput_stores_the_finalist_that_serves_the_most(tmp_path: Path) -> None:
    space = SearchSpace(
        graph_optimise=(False,),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
        per_channel=(True,),
        runtimes=(ONNX_RUNTIME,),
    )
    target = dataclasses.replace(QUICK, select_variant=True, finalists=2)
    result = build(make_tiny_bundle(), space, tmp_path, serving=target)
    assert result.serving is not None
    finalists = list(dict.fromkeys(t.variant_id for t in result.serving.trials))
    assert len(finalists) == 2 and result.winner.id in finalists
    best_of = {
        v: choose([t for t in result.serving.trials if t.variant_id == v], target)[0] for v in finalists
    }
    assert result.winner.id == max(finalists, key=lambda v: best_of[v].requests_per_s)
    assert result.serving.variant_id == result.winner.id
    assert result.selection.reason.startswith("serves the most requests/s within the p99 bound")


def test_the_server_work_is_half_in_one_event_loop_thread_and_half_in_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done: list[tuple[str, float]] = []
    monkeypatch.setattr(
        serving_search, "_python_work", lambda s: done.append((threading.current_thread().name, s))
    )
    served = serving_search._with_server_work(lambda request: "answer", 0.002)
    with ThreadPoolExecutor(4, thread_name_prefix="caller") as callers:
        assert list(callers.map(served, range(8))) == ["answer"] * 8  # type: ignore[arg-type]
    loop = {name for name, _ in done if not name.startswith("caller")}
    assert len(loop) == 1 and len(done) == 32 and {s for _, s in done} == {0.0005}
    assert sum(1 for name, _ in done if name in loop) == 16  # the serial half: one thread for all
    assert serving_search._with_server_work(print, 0.0) is print  # no work: the call itself
