"""Cross-request batching: the rows of concurrent requests run as one call of the runtime.

Only for batch-invariant variants (the build measured that a row answers the same alone and in a
padded batch), so merging changes no answer. On the 2-core CPU profile one 20-token MiniLM row
per call of the OpenVINO int8 variant gives ~400 rows/s however many threads call it, while
32 rows per call give ~1,800 rows/s (`benchmarks/serving_bench.py` measures it end to end).

A thread runs the batches (`runners` threads: as many batches side by side). It takes the first
waiting request, then every request that queued behind it, up to `max_rows` rows, waiting at most
`max_wait_s` for more (0: no wait at all, the batch is what queued while the previous one ran). So
a lone request runs at once, and under load batches grow with the queue: adaptive, with a bounded
wait.

Requests merge when their inputs agree in names, dtypes and every axis but the first; inputs
with a sequence axis (models with an `attention_mask`) are padded with zeros to the longest
request (only requests within a factor of 2 of the first one's length join it), and per-token outputs are cut back to each request's own length. If a merged run fails,
each request runs alone, so an error reaches only the request that caused it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

Run = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    length: int | None  # the sequence length, for models with an attention mask
    key: tuple[object, ...]  # requests with equal keys can run together
    future: Future[list[np.ndarray]] = field(default_factory=Future)


class RowBatcher:
    """Runs `run` on the merged rows of concurrent `submit` calls (see the module docstring).

    `sequence_inputs`: the inputs whose axis 1 is a padded sequence (empty: no padding; requests
    then merge only at equal shapes). `on_batch(rows)` is told the rows of every merged call.
    `run_under_load` runs merged batches and requests that others wait behind (default: `run`): on
    a small CPU a one-thread session there leaves a core to the requests' own Python work.
    `runners`: threads that gather and run batches, so that many batches run at once.
    Raises ValueError for `max_rows` or `runners` < 1, or a negative `max_wait_s`."""

    def __init__(
        self,
        run: Run,
        sequence_inputs: Sequence[str] = (),
        max_rows: int = 32,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        run_under_load: Run | None = None,
        runners: int = 1,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        if runners < 1:
            raise ValueError(f"runners must be at least 1, got {runners}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        self._run_alone_fn = run
        self._run_under_load = run_under_load or run
        self.sequence_inputs = tuple(sequence_inputs)
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        # queue.Queue, not SimpleQueue: with two runners and a batch wait, a runner's timed
        # SimpleQueue.get racing the other runner's get was seen blocked for minutes past its
        # deadline (py-spy: inside PyThread_acquire_lock_timed; Python 3.11), every caller waiting.
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._held: deque[_Pending] = deque()  # taken from the queue, left for a later batch
        self._gathering = threading.Lock()  # one runner at a time takes requests for its batch
        self._closed = False
        # The threads hold the batcher only weakly: a model version that is swapped out and dropped
        # takes its batcher (and its session) with it, and the threads end.
        self._threads = [
            threading.Thread(
                target=RowBatcher._serve,
                args=(weakref.ref(self), self._queue),
                name="row-batcher",
                daemon=True,
            )
            for _ in range(runners)
        ]
        for thread in self._threads:
            thread.start()
        weakref.finalize(self, _stop, self._queue, runners)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for `feeds` ([rows, ...] each), as `run` alone would give them."""
        return self.submit(feeds).result()

    def submit(self, feeds: Mapping[str, np.ndarray]) -> Future[list[np.ndarray]]:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        pending = self._pending(dict(feeds))
        self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        """Stop after the requests already submitted; later submits raise RuntimeError."""
        self._closed = True
        _stop(self._queue, len(self._threads))
        for thread in self._threads:
            thread.join(timeout=30)

    # -- the batching thread ----------------------------------------------------------------
    def _pending(self, feeds: dict[str, np.ndarray]) -> _Pending:
        rows = len(next(iter(feeds.values())))
        padded = self.sequence_inputs and all(n in feeds and feeds[n].ndim == 2 for n in self.sequence_inputs)
        length = int(feeds[self.sequence_inputs[0]].shape[1]) if padded else None
        key = tuple(
            (name, a.dtype.str, a.shape[2:] if padded and name in self.sequence_inputs else a.shape[1:])
            for name, a in sorted(feeds.items())
        )
        return _Pending(feeds, rows, length, key)

    @staticmethod
    def _serve(batcher_ref: weakref.ReferenceType[RowBatcher], waiting: queue.Queue[_Pending | None]) -> None:
        while True:
            first = waiting.get()
            batcher = batcher_ref()
            if first is None or batcher is None:
                return
            batch: list[_Pending] | None = batcher._gather(first)
            while batch:
                batcher._run_batch(batch)
                batch = batcher._gather_held()  # requests taken from the queue but left for later
            del batcher, batch  # only the weak reference while waiting

    def _gather_held(self) -> list[_Pending] | None:
        with self._gathering:
            first = self._held.popleft() if self._held else None
            return self._gather_locked(first) if first is not None else None

    def _gather(self, first: _Pending) -> list[_Pending]:
        with self._gathering:
            return self._gather_locked(first)

    def _gather_locked(self, first: _Pending) -> list[_Pending]:
        """`first` and the requests that can join it: those held back earlier first, then the queue."""
        batch, rows = [first], first.rows
        earlier = list(self._held)
        self._held.clear()
        skipped: list[_Pending] = []
        deadline = time.perf_counter() + self.max_wait_s
        while rows < self.max_rows:
            candidate = earlier.pop(0) if earlier else self._next_waiting(deadline)
            if candidate is None:
                break
            if rows + candidate.rows > self.max_rows:
                skipped.append(candidate)
                break
            if candidate.key != first.key or not _similar_lengths(first, candidate):
                skipped.append(candidate)
                continue
            batch.append(candidate)
            rows += candidate.rows
        # Left for the next batches, in the order they came, before anything newer.
        self._held.extendleft(reversed([*skipped, *earlier]))
        return batch

    def _next_waiting(self, deadline: float) -> _Pending | None:
        try:
            if self.max_wait_s == 0:
                item = self._queue.get_nowait()
            else:
                item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
        except queue.Empty:
            return None
        if item is None:  # closing: finish what is here, then stop
            self._queue.put(None)
            return None
        return item

    def _run_batch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        try:
            merged, width = self._merge(batch)
            outputs = self._run_under_load(merged)
            total = sum(p.rows for p in batch)
            if any(len(o) != total for o in outputs):  # an output without a batch axis: cannot split
                raise ValueError("an output does not have one row per input row")
        except Exception:
            logger.debug("a merged run of %d requests failed; running each alone", len(batch), exc_info=True)
            for pending in batch:
                self._run_alone(pending)
            return
        if self._on_batch is not None:
            self._on_batch(total)
        start = 0
        for pending in batch:
            part = [o[start : start + pending.rows] for o in outputs]
            pending.future.set_result([self._cut(o, pending, width) for o in part])
            start += pending.rows

    def _run_alone(self, pending: _Pending) -> None:
        try:
            run = self._run_under_load if self._loaded() else self._run_alone_fn
            outputs = run(pending.feeds)
        except BaseException as exc:
            pending.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(pending.rows)
        pending.future.set_result(outputs)

    def _loaded(self) -> bool:
        """Whether other requests wait behind this one."""
        return bool(self._held) or not self._queue.empty()

    def _merge(self, batch: list[_Pending]) -> tuple[dict[str, np.ndarray], int | None]:
        lengths = [p.length for p in batch if p.length is not None]
        width = max(lengths) if len(lengths) == len(batch) else None
        merged = {}
        for name in batch[0].feeds:
            parts = [p.feeds[name] for p in batch]
            if width is None or name not in self.sequence_inputs:
                merged[name] = np.concatenate(parts)
                continue
            padded = np.zeros((sum(len(a) for a in parts), width), parts[0].dtype)  # np.pad is slow
            start = 0
            for part in parts:
                padded[start : start + len(part), : part.shape[1]] = part
                start += len(part)
            merged[name] = padded
        return merged, width

    @staticmethod
    def _cut(output: np.ndarray, pending: _Pending, width: int | None) -> np.ndarray:
        """A per-token output ([rows, width, ...]) back at the request's own length."""
        if width is None or pending.length is None or output.ndim < 3 or output.shape[1] != width:
            return output
        return np.ascontiguousarray(output[:, : pending.length])


def _stop(waiting: queue.Queue[_Pending | None], runners: int) -> None:
    for _ in range(runners):  # each runner takes one and ends
        waiting.put(None)


def _similar_lengths(first: _Pending, other: _Pending) -> bool:
    """Within a factor of 2 of the first request's length: padding never more than doubles the work."""
    if first.length is None or other.length is None:
        return True
    return max(first.length, other.length) <= 2 * min(first.length, other.length)
