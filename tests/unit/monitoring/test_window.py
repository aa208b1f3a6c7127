"""The sampled traffic window: bounded memory, deterministic sampling, ring order, thread safety."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from monitoring.window import SampleWindow, Window


def _rows(start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(start, start + count, dtype=np.float32)
    inputs = np.repeat(ids[:, None], 64, axis=1).reshape(count, 1, 8, 8)
    return inputs, np.repeat(2 * ids[:, None], 10, axis=1)


def test_memory_is_bounded_whatever_the_traffic() -> None:
    window = SampleWindow(capacity=100, rate=0.5, seed=1)
    window.add(*_rows(0, 32))
    size = window.nbytes
    assert size == 100 * ((64 + 10) * 4 + 8)  # rows and one 8-byte input digest per row
    tracemalloc.start()
    try:
        window.add(*_rows(0, 32))
        before, _ = tracemalloc.get_traced_memory()
        for i in range(2000):
            inputs, outputs = _rows(i * 32, 32)
            window.add(inputs, outputs)
            del inputs, outputs
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(window) == 100 and window.seen == 2001 * 32 + 32
    assert window.nbytes == size
    assert after - before < 20_000  # nothing accumulates per request


def test_a_huge_request_keeps_only_the_last_rows() -> None:
    window = SampleWindow(capacity=10)
    assert window.add(*_rows(0, 1000)) == 10
    snapshot = window.snapshot()
    assert snapshot.outputs is not None
    assert snapshot.outputs[:, 0].tolist() == [2.0 * i for i in range(990, 1000)]


def test_snapshot_is_oldest_first_after_wrapping() -> None:
    window = SampleWindow(capacity=100)
    for start in range(0, 250, 7):
        window.add(*_rows(start, min(7, 250 - start)))
    snapshot = window.snapshot()
    assert isinstance(snapshot, Window) and len(snapshot) == 100
    assert snapshot.inputs is not None and snapshot.outputs is not None
    assert snapshot.inputs.shape == (100, 1, 8, 8)
    assert snapshot.inputs[:, 0, 0, 0].tolist() == list(range(150, 250))
    assert np.array_equal(snapshot.outputs[:, 0], 2 * snapshot.inputs[:, 0, 0, 0])


def test_snapshot_is_a_copy() -> None:
    window = SampleWindow(capacity=5)
    window.add(*_rows(0, 5))
    snapshot = window.snapshot()
    window.add(*_rows(100, 5))
    assert snapshot.inputs is not None and snapshot.inputs[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]


def test_sampling_rate_is_respected_and_seeded() -> None:
    kept = []
    for _ in range(2):
        window = SampleWindow(capacity=100_000, rate=0.1, seed=7)
        for start in range(0, 50_000, 50):
            window.add(*_rows(start, 50))
        snapshot = window.snapshot()
        assert snapshot.inputs is not None
        kept.append(snapshot.inputs[:, 0, 0, 0])
    assert 4500 < len(kept[0]) < 5500
    assert np.array_equal(kept[0], kept[1])
    assert SampleWindow(10, rate=0.0).add(*_rows(0, 100)) == 0


def test_text_model_rows_keep_embeddings_and_features() -> None:
    window = SampleWindow(capacity=50)
    embeddings = np.random.default_rng(0).normal(size=(8, 384)).astype(np.float32)
    window.add(None, embeddings, {"n_tokens": np.arange(8), "text_chars": np.arange(8) * 5})
    snapshot = window.snapshot()
    assert snapshot.inputs is None and snapshot.kind == "embedding"
    assert snapshot.outputs is not None and np.array_equal(snapshot.outputs, embeddings)
    assert set(snapshot.features) == {"n_tokens", "text_chars"}
    assert snapshot.features["text_chars"].tolist() == [0, 5, 10, 15, 20, 25, 30, 35]


def test_rows_of_another_shape_are_refused() -> None:
    window = SampleWindow(capacity=10)
    window.add(*_rows(0, 2))
    with pytest.raises(ValueError, match="shapes"):
        window.add(np.zeros((2, 1, 4, 4)), np.zeros((2, 10)))
    with pytest.raises(ValueError, match="one row count"):
        window.add(np.zeros((2, 1, 8, 8)), np.zeros((3, 10)))
    with pytest.raises(ValueError):
        SampleWindow(capacity=0)
    with pytest.raises(ValueError, match="empty"):
        SampleWindow(capacity=3).snapshot()


def test_concurrent_adds_never_tear_rows() -> None:
    window = SampleWindow(capacity=500, rate=0.5, seed=3)
    stop = threading.Event()
    torn: list[int] = []

    def writer(base: int) -> None:
        for i in range(300):
            window.add(*_rows(base + i * 4, 4))

    def reader() -> None:
        while not stop.is_set():
            if len(window):
                snap = window.snapshot()
                assert snap.inputs is not None and snap.outputs is not None
                torn.extend(np.flatnonzero(snap.outputs[:, 0] != 2 * snap.inputs[:, 0, 0, 0]).tolist())

    threads = [threading.Thread(target=writer, args=(k * 100_000,)) for k in range(6)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    assert window.seen == 6 * 300 * 4
    assert len(window) == 500 and not torn


def test_distinct_inputs_are_counted_on_the_rows_in_the_window() -> None:
    window = SampleWindow(capacity=20)
    window.add(*_rows(0, 20))
    assert window.snapshot().distinct_inputs == 20
    one_input, one_output = _rows(7, 1)
    for _ in range(20):  # one client replaying one request overwrites the whole ring
        window.add(one_input, one_output)
    assert window.snapshot().distinct_inputs == 1
    window.add(*_rows(100, 3))
    assert window.snapshot().distinct_inputs == 4


def test_text_rows_are_told_apart_by_their_texts_not_their_embeddings() -> None:
    window = SampleWindow(capacity=50)
    noisy = np.random.default_rng(0).normal(size=(30, 384)).astype(np.float32)  # batch-to-batch noise
    window.add(
        None, noisy, {"n_tokens": np.full(30, 5)}, keys=np.array(["the same sentence"] * 30, dtype=object)
    )
    assert window.snapshot().distinct_inputs == 1
    window.add(None, noisy[:3], {"n_tokens": np.full(3, 5)}, keys=["a", "b", "the same sentence"])
    assert window.snapshot().distinct_inputs == 3
    with pytest.raises(ValueError, match="one row per input row"):
        window.add(None, noisy[:3], {"n_tokens": np.full(3, 5)}, keys=["a"])


def test_the_input_digests_of_a_window_without_inputs_come_from_its_outputs() -> None:
    window = SampleWindow(capacity=10)
    window.add(None, np.ones((4, 3)))
    window.add(None, np.zeros((2, 3)))
    assert window.snapshot().distinct_inputs == 2
