"""Cross-request batching: merging, padding, limits, errors and the thread's lifetime.

The model is a NumPy function with what a masked text model has: a pooled output (one value per
row, ignoring padding) and a per-token output, so a wrong merge, pad or cut shows in the answers.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from optimise.runtimes.batching import RowBatcher

SEQUENCE = ("input_ids", "attention_mask")


def masked_model(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    if (ids < 0).any():
        raise ValueError("negative token id")
    pooled = (ids * mask).sum(axis=1, keepdims=True) / mask.sum(axis=1, keepdims=True)
    return [pooled.astype(np.float32), (ids * 2)[:, :, None].astype(np.float32)]


def text_rows(lengths: list[int], start: int = 1) -> dict[str, np.ndarray]:
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(start + row, start + row + length)
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


class Gate:
    """Wraps a model: the first call waits until `open()`, so later requests queue behind it."""

    def __init__(self) -> None:
        self.first_call = threading.Event()
        self._open = threading.Event()
        self.batches: list[int] = []

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if not self.first_call.is_set():
            self.first_call.set()
            assert self._open.wait(10)
        return masked_model(feeds)

    def open(self) -> None:
        self._open.set()


def _queued_behind_a_running_batch(
    batcher: RowBatcher, gate: Gate, requests: list[dict[str, np.ndarray]]
) -> list[Future[list[np.ndarray]]]:
    futures = [batcher.submit(requests[0])]
    assert gate.first_call.wait(10)
    futures += [batcher.submit(r) for r in requests[1:]]
    gate.open()
    return futures


def _assert_alone_answers(
    futures: list[Future[list[np.ndarray]]], requests: list[dict[str, np.ndarray]]
) -> None:
    for future, request in zip(futures, requests, strict=True):
        answers, alone = future.result(10), masked_model(request)
        assert [a.shape for a in answers] == [a.shape for a in alone]
        for answer, expected in zip(answers, alone, strict=True):
            np.testing.assert_array_equal(answer, expected)


def test_requests_queued_behind_a_batch_run_as_one_and_each_gets_its_own_rows() -> None:
    gate = Gate()
    batcher = RowBatcher(gate, SEQUENCE, max_rows=32, on_batch=gate.batches.append)
    requests = [
        text_rows([5]),
        text_rows([3, 6], start=10),
        text_rows([4], start=20),
        text_rows([7], start=30),
    ]
    futures = _queued_behind_a_running_batch(batcher, gate, requests)
    _assert_alone_answers(futures, requests)  # padded to 7 and cut back: per-token outputs at own length
    assert gate.batches == [1, 4]


def test_a_batch_holds_at_most_max_rows_and_the_rest_runs_next_in_order() -> None:
    gate = Gate()
    batcher = RowBatcher(gate, SEQUENCE, max_rows=3, on_batch=gate.batches.append)
    requests = [
        text_rows([4]),
        text_rows([4, 4], start=3),
        text_rows([4, 4], start=6),
        text_rows([4], start=9),
    ]
    futures = _queued_behind_a_running_batch(batcher, gate, requests)
    _assert_alone_answers(futures, requests)
    assert gate.batches == [1, 2, 3]  # 2 + 2 rows do not fit in 3: the second pair waits, then takes the last


def test_requests_that_cannot_share_a_batch_run_apart() -> None:
    gate = Gate()
    batcher = RowBatcher(gate, SEQUENCE, max_rows=32, on_batch=gate.batches.append)
    short, long_ = text_rows([3], start=1), text_rows([30], start=5)  # 10x the length: not merged
    other_dtype = {k: v.astype(np.int32) for k, v in text_rows([3], start=7).items()}
    requests = [text_rows([3]), long_, other_dtype, short]
    futures = _queued_behind_a_running_batch(batcher, gate, requests)
    _assert_alone_answers(futures, requests)
    assert sorted(gate.batches) == [1, 1, 1, 1]


def test_without_sequence_inputs_only_equal_row_shapes_merge() -> None:
    gate = Gate()
    batcher = RowBatcher(gate, (), max_rows=32, on_batch=gate.batches.append)
    requests = [text_rows([4]), text_rows([4], start=3), text_rows([5]), text_rows([4], start=8)]
    futures = _queued_behind_a_running_batch(batcher, gate, requests)
    _assert_alone_answers(futures, requests)
    assert sorted(gate.batches) == [1, 1, 2]


def test_a_failing_merged_run_is_retried_alone_so_only_the_culprit_fails() -> None:
    gate = Gate()
    batcher = RowBatcher(gate, SEQUENCE, max_rows=32, on_batch=gate.batches.append)
    bad = text_rows([4])
    bad["input_ids"][0, 0] = -1
    requests = [text_rows([4]), text_rows([4], start=3), bad, text_rows([4], start=8)]
    futures = _queued_behind_a_running_batch(batcher, gate, requests)
    with pytest.raises(ValueError, match="negative"):
        futures[2].result(10)
    _assert_alone_answers([futures[i] for i in (0, 1, 3)], [requests[i] for i in (0, 1, 3)])


def test_a_lone_request_runs_at_once_and_a_wait_gathers_requests_that_arrive_in_it() -> None:
    seen: list[int] = []
    eager = RowBatcher(masked_model, SEQUENCE, max_rows=8, on_batch=seen.append)
    _assert_alone_answers([eager.submit(text_rows([4]))], [text_rows([4])])
    assert seen == [1]
    waited: list[int] = []
    patient = RowBatcher(masked_model, SEQUENCE, max_rows=8, max_wait_s=0.5, on_batch=waited.append)
    requests = [text_rows([4], start=s) for s in range(1, 4)]
    start = time.perf_counter()
    futures = [patient.submit(r) for r in requests]
    _assert_alone_answers(futures, requests)
    assert waited == [3] and time.perf_counter() - start < 5


def test_a_dropped_batcher_ends_its_threads_and_a_closed_one_refuses_work() -> None:
    batcher = RowBatcher(masked_model, SEQUENCE, runners=2)
    batcher.run(text_rows([3]))
    threads = batcher._threads
    del batcher
    gc.collect()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()
    closed = RowBatcher(masked_model, SEQUENCE)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.submit(text_rows([3]))


def test_two_runners_run_two_batches_at_once() -> None:
    first_inside = threading.Event()
    both_inside = threading.Barrier(2, timeout=10)  # broken (an error) unless two runs overlap

    def meeting_model(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        first_inside.set()
        both_inside.wait()
        return masked_model(feeds)

    batcher = RowBatcher(meeting_model, SEQUENCE, max_rows=8, runners=2)
    requests = [text_rows([4]), text_rows([4], start=3)]
    futures = [batcher.submit(requests[0])]
    assert first_inside.wait(10)  # the first batch runs (and waits): the second runner takes the next
    futures.append(batcher.submit(requests[1]))
    _assert_alone_answers(futures, requests)


@pytest.mark.parametrize("wait", [0.0, 0.002])
def test_many_runners_under_many_callers_give_every_request_its_own_answer(wait: float) -> None:
    # With a wait, runners race each other for the queue with timed reads.
    def slow_model(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        time.sleep(0.001)  # as a runtime does: the GIL is free while it runs, requests pile up
        return masked_model(feeds)

    seen: list[int] = []
    batcher = RowBatcher(slow_model, SEQUENCE, max_rows=4, max_wait_s=wait, runners=3, on_batch=seen.append)
    generator = np.random.default_rng(2)
    requests = [text_rows([int(n)], start=i) for i, n in enumerate(generator.integers(2, 8, size=400))]
    done = threading.Event()

    def hold_the_gil() -> None:  # as request threads do in a server: runners wait for the GIL
        while not done.is_set():
            sum(range(10_000))

    spinners = [threading.Thread(target=hold_the_gil) for _ in range(2)]
    for spinner in spinners:
        spinner.start()
    try:
        with ThreadPoolExecutor(32) as callers:
            calls = [callers.submit(lambda r: batcher.submit(r).result(timeout=30), r) for r in requests]
            answers = [call.result(timeout=60) for call in calls]
    finally:
        done.set()
    for answer, request in zip(answers, requests, strict=True):
        for got, expected in zip(answer, masked_model(request), strict=True):
            np.testing.assert_array_equal(got, expected)
    assert sum(seen) == 400 and max(seen) <= 4
    batcher.close()


@pytest.mark.parametrize(("rows", "wait", "runners"), [(0, 0.0, 1), (4, -1.0, 1), (4, 0.0, 0)])
def test_bad_settings_are_refused(rows: int, wait: float, runners: int) -> None:
    with pytest.raises(ValueError):
        RowBatcher(masked_model, SEQUENCE, max_rows=rows, max_wait_s=wait, runners=runners)
