"""One model, two sessions of its runtime: the build's thread count for a lone request, one
thread each for requests that overlap.

On the 2-core CPU profile a lone 20-token MiniLM row takes ~2.0 ms on the build's 2-thread
session and ~3.0 ms on one thread; but two callers sharing the 2-thread session queue on
its thread pool (420-490 rows/s), while one-thread runs proceed side by side on the callers'
own threads (650-750 rows/s; `benchmarks/serving_bench.py` shows the effect end to end).
So a request takes the multi-thread session when it is free and the one-thread session
otherwise; every runtime's session is safe to run from several threads at once.

A batch-invariant variant can instead merge the rows of concurrent requests into one call
(`service.batching`, `batch_max_rows` > 1): a lone request still runs on the multi-thread session,
merged batches (and requests others wait behind) on the one-thread session. Measured on MiniLM's
OpenVINO int8 variant at 32 concurrent clients (wrk, 2 cores): merged batches on two threads 807
req/s, on one thread 992 req/s; the batches' threads compete with the requests' Python work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from optimise.runtimes import ATTENTION_MASK, ONNX_RUNTIME, InferenceSession, TensorInfo, open_session
from service.batching import RowBatcher


class ServingSession:
    """A stored variant on its runtime: a session with the build's threads that hands overlapping
    runs to a one-thread twin, plus `run_many` for independent runs. Raises RuntimeUnavailable when
    the runtime, its package or the execution provider is missing here."""

    def __init__(
        self,
        model: Path,
        threads: int,
        providers: Sequence[str],
        runtime: str = ONNX_RUNTIME,
        settings: Mapping[str, str] | None = None,
        batch_max_rows: int = 1,
        batch_wait_s: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """`batch_max_rows` > 1 merges concurrent runs (only for batch-invariant variants: the
        caller decides), waiting at most `batch_wait_s` for more; `on_batch(rows)` sees each call."""
        self.main: InferenceSession = open_session(runtime, model, threads, providers, settings)
        self.runtime = runtime
        self.threads = threads
        self.input_names = self.main.input_names  # read on every request: worked out once
        self.output_names = self.main.output_names
        # Threads only matter on the CPU; elsewhere, or where the runtime has one thread count for
        # the whole process (PyTorch), one session does everything.
        self.parallel = threads > 1 and self.main.on_cpu_only and self.main.threads_per_session
        self._single_thread = open_session(runtime, model, 1, providers, settings) if self.parallel else None
        self.batcher = (
            RowBatcher(
                self.main.run,
                _sequence_inputs(self.main.inputs),
                batch_max_rows,
                batch_wait_s,
                on_batch,
                run_under_load=self._single_thread.run if self._single_thread is not None else None,
            )
            if batch_max_rows > 1
            else None
        )
        self._multi_thread_free = threading.Lock()
        self._pool = (
            ThreadPoolExecutor(threads, thread_name_prefix="row")
            if self.parallel and self.batcher is None
            else None
        )

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.main.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.main.outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One run: merged with concurrent runs when batching; else on the multi-thread session if no
        other request holds it, else on one thread."""
        if self.batcher is not None:
            return self.batcher.run(feeds)
        if self._single_thread is None:
            return self.main.run(feeds)
        if self._multi_thread_free.acquire(blocking=False):
            try:
                return self.main.run(feeds)
            finally:
                self._multi_thread_free.release()
        return self._single_thread.run(feeds)

    def run_many(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Independent runs (the rows or length buckets of one batch), one thread each, in parallel."""
        if self.batcher is not None:
            futures = [self.batcher.submit(f) for f in feeds]  # merged with each other and with others
            return [f.result() for f in futures]
        if self._pool is None or self._single_thread is None or len(feeds) < 2:
            return [self.run(f) for f in feeds]
        return list(self._pool.map(self._single_thread.run, feeds))


def _sequence_inputs(inputs: Sequence[TensorInfo]) -> tuple[str, ...]:
    """The [batch, sequence] inputs a batch pads, for models that mask padding; else none."""
    if not any(i.name == ATTENTION_MASK for i in inputs):
        return ()
    return tuple(i.name for i in inputs if len(i.shape) == 2)
