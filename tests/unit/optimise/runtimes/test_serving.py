from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tiny_models import export_masked_mean_pooling

from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.runtimes.ort_session import OnnxSession
from optimise.runtimes.serving import FifoSlots, ServingSession
from optimise.types import ServingSettings


@pytest.fixture
def rows(tiny_onnx: Path) -> list[dict[str, np.ndarray]]:
    generator = np.random.default_rng(0)
    name = OnnxSession(tiny_onnx).input_names[0]
    return [{name: generator.normal(size=(1, 16)).astype(np.float32)} for _ in range(12)]


def _expected(model: Path, rows: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    single = OnnxSession(model, threads=1)
    return [single.run(row)[0] for row in rows]


CPU = ("CPUExecutionProvider",)


def serving(model: Path, threads: int, parallel: int = 2, **batching: float) -> ServingSession:
    return ServingSession.for_file(model, CPU, serving=ServingSettings(threads, parallel, **batching))  # type: ignore[arg-type]


def test_one_thread_one_run_at_a_time_is_a_single_session(tiny_onnx: Path) -> None:
    session = serving(tiny_onnx, 1, 1)
    assert not session.parallel and session._single_thread is None
    assert serving(tiny_onnx, 2, 1)._single_thread is None  # no run overlaps another: no one-thread twin


def test_no_more_runs_than_parallel_sessions_are_in_flight(
    tiny_onnx: Path, rows: list[dict[str, np.ndarray]]
) -> None:
    session = serving(tiny_onnx, 1, 2)
    inside, most = [0], [0]
    lock = threading.Lock()
    run = session.main.run

    def counted(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.002)
        try:
            return run(feeds)
        finally:
            with lock:
                inside[0] -= 1

    session.main.run = counted  # type: ignore[method-assign]
    with ThreadPoolExecutor(8) as callers:
        list(callers.map(session.run, rows * 4))
    assert most[0] == 2


def test_overlapping_runs_all_answer_their_own_rows(
    tiny_onnx: Path, rows: list[dict[str, np.ndarray]]
) -> None:
    session = serving(tiny_onnx, 2, 6)
    assert session.parallel
    with ThreadPoolExecutor(6) as callers:
        answers = list(callers.map(lambda row: session.run(row)[0], rows * 20))
    for answer, expected in zip(answers, _expected(tiny_onnx, rows) * 20, strict=True):
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)


def test_a_request_does_not_wait_for_the_busy_multi_thread_session(
    tiny_onnx: Path, rows: list[dict[str, np.ndarray]]
) -> None:
    session = serving(tiny_onnx, 2)
    with session._multi_thread_free:  # another request holds it
        done = threading.Event()

        def request() -> None:
            session.run(rows[0])
            done.set()

        worker = threading.Thread(target=request)
        worker.start()
        assert done.wait(timeout=30), "the request waited for the busy session"
        worker.join()


def test_run_many_keeps_the_order_of_its_runs(tiny_onnx: Path, rows: list[dict[str, np.ndarray]]) -> None:
    session = serving(tiny_onnx, 2)
    answers = [outputs[0] for outputs in session.run_many(rows)]
    for answer, expected in zip(answers, _expected(tiny_onnx, rows), strict=True):
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    assert session.run_many([]) == []


def test_a_bucketed_openvino_session_and_its_twin_answer_alike(tmp_path: Path) -> None:
    model = export_masked_mean_pooling(tmp_path / "masked.onnx")
    session = ServingSession.for_file(
        model, CPU, "openvino", {"sequence_buckets": "4,8"}, ServingSettings(threads=2, parallel_sessions=2)
    )
    main, twin = session.main, session._single_thread
    assert isinstance(main, OpenVinoSession) and isinstance(twin, OpenVinoSession)
    assert main.buckets == twin.buckets == (4, 8)  # both run what the build measured
    row = {"input_ids": np.array([[3, 5, 7]]), "attention_mask": np.ones((1, 3), np.int64)}
    np.testing.assert_allclose(main.run(row)[1], twin.run(row)[1], rtol=1e-5, atol=1e-6)


def test_a_batching_session_merges_concurrent_runs_and_answers_as_runs_alone(tmp_path: Path) -> None:
    model = export_masked_mean_pooling(tmp_path / "masked.onnx")
    batches: list[int] = []
    settings = ServingSettings(threads=2, parallel_sessions=2, batch_max_rows=16)
    session = ServingSession.for_file(model, CPU, serving=settings, on_batch=batches.append)
    assert session.batcher is not None and session._single_thread is not None  # merged batches run there
    assert session.batcher.sequence_inputs == ("input_ids", "attention_mask")
    generator = np.random.default_rng(1)
    rows = []
    for length in generator.integers(3, 6, size=40):
        rows.append(
            {
                "input_ids": generator.integers(1, 30, size=(1, length)),
                "attention_mask": np.ones((1, length), np.int64),
            }
        )
    alone = OnnxSession(model, threads=1)
    with ThreadPoolExecutor(8) as callers:
        answers = list(callers.map(session.run, rows))
    for row, answer in zip(rows, answers, strict=True):
        for got, expected in zip(answer, alone.run(row), strict=True):
            assert got.shape == expected.shape  # per-token output back at the row's length
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert sum(batches) == 40
    many = session.run_many(rows[:5])
    for row, answer in zip(rows[:5], many, strict=True):
        np.testing.assert_allclose(answer[1], alone.run(row)[1], rtol=1e-5, atol=1e-6)


def test_fifo_slots_hand_a_released_slot_to_the_oldest_waiter() -> None:
    slots = FifoSlots(1)
    order: list[int] = []
    waiters = []
    with slots:
        for number in range(5):

            def wait_for_a_slot(number: int = number) -> None:
                with slots:
                    order.append(number)

            waiter = threading.Thread(target=wait_for_a_slot)
            waiter.start()
            waiters.append(waiter)
            deadline = time.monotonic() + 10
            while len(slots._waiters) < number + 1 and time.monotonic() < deadline:
                time.sleep(0.001)  # queued before the next one asks
    for waiter in waiters:
        waiter.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        FifoSlots(0)
