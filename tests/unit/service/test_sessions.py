from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tiny_models import export_masked_mean_pooling

from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.runtimes.ort_session import OnnxSession
from service.sessions import ServingSession


@pytest.fixture
def rows(tiny_onnx: Path) -> list[dict[str, np.ndarray]]:
    generator = np.random.default_rng(0)
    name = OnnxSession(tiny_onnx).input_names[0]
    return [{name: generator.normal(size=(1, 16)).astype(np.float32)} for _ in range(12)]


def _expected(model: Path, rows: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    single = OnnxSession(model, threads=1)
    return [single.run(row)[0] for row in rows]


def test_one_thread_build_has_a_single_session(tiny_onnx: Path) -> None:
    assert not ServingSession(tiny_onnx, 1, ("CPUExecutionProvider",)).parallel


def test_overlapping_runs_all_answer_their_own_rows(
    tiny_onnx: Path, rows: list[dict[str, np.ndarray]]
) -> None:
    session = ServingSession(tiny_onnx, 2, ("CPUExecutionProvider",))
    assert session.parallel
    with ThreadPoolExecutor(6) as callers:
        answers = list(callers.map(lambda row: session.run(row)[0], rows * 20))
    for answer, expected in zip(answers, _expected(tiny_onnx, rows) * 20, strict=True):
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)


def test_a_request_does_not_wait_for_the_busy_multi_thread_session(
    tiny_onnx: Path, rows: list[dict[str, np.ndarray]]
) -> None:
    session = ServingSession(tiny_onnx, 2, ("CPUExecutionProvider",))
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
    session = ServingSession(tiny_onnx, 2, ("CPUExecutionProvider",))
    answers = [outputs[0] for outputs in session.run_many(rows)]
    for answer, expected in zip(answers, _expected(tiny_onnx, rows), strict=True):
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    assert session.run_many([]) == []


def test_a_bucketed_openvino_session_and_its_twin_answer_alike(tmp_path: Path) -> None:
    model = export_masked_mean_pooling(tmp_path / "masked.onnx")
    session = ServingSession(model, 2, ("CPUExecutionProvider",), "openvino", {"sequence_buckets": "4,8"})
    main, twin = session.main, session._single_thread
    assert isinstance(main, OpenVinoSession) and isinstance(twin, OpenVinoSession)
    assert main.buckets == twin.buckets == (4, 8)  # both run what the build measured
    row = {"input_ids": np.array([[3, 5, 7]]), "attention_mask": np.ones((1, 3), np.int64)}
    np.testing.assert_allclose(main.run(row)[1], twin.run(row)[1], rtol=1e-5, atol=1e-6)


def test_a_batching_session_merges_concurrent_runs_and_answers_as_runs_alone(tmp_path: Path) -> None:
    model = export_masked_mean_pooling(tmp_path / "masked.onnx")
    batches: list[int] = []
    session = ServingSession(model, 2, ("CPUExecutionProvider",), batch_max_rows=16, on_batch=batches.append)
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
