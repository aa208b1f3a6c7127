"""One model, two sessions of its runtime: the build's thread count for a lone request, one
thread each for requests that overlap.

On the 2-core CPU profile a lone 20-token MiniLM row takes ~2.0 ms on the build's 2-thread
session and ~3.0 ms on one thread; but two callers sharing the 2-thread session queue on
its thread pool (420-490 rows/s), while one-thread runs proceed side by side on the callers'
own threads (650-750 rows/s; `benchmarks/serving_bench.py` shows the effect end to end).
So a request takes the multi-thread session when it is free and the one-thread session
otherwise; every runtime's session is safe to run from several threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from optimise.runtimes import ONNX_RUNTIME, InferenceSession, TensorInfo, open_session


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
    ) -> None:
        self.main: InferenceSession = open_session(runtime, model, threads, providers, settings)
        self.runtime = runtime
        self.threads = threads
        # Threads only matter on the CPU; elsewhere, or where the runtime has one thread count for
        # the whole process (PyTorch), one session does everything.
        self.parallel = threads > 1 and self.main.on_cpu_only and self.main.threads_per_session
        self._single_thread = open_session(runtime, model, 1, providers, settings) if self.parallel else None
        self._multi_thread_free = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="row") if self.parallel else None

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.main.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.main.outputs

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.main.input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.main.output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One run: on the multi-thread session if no other request holds it, else on one thread."""
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
        if self._pool is None or self._single_thread is None or len(feeds) < 2:
            return [self.run(f) for f in feeds]
        return list(self._pool.map(self._single_thread.run, feeds))
