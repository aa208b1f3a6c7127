"""One model, two ONNX Runtime sessions: the build's thread count for a lone request, one
thread each for requests that overlap.

On the 2-core CPU profile a lone 20-token MiniLM row takes ~2.0 ms on the build's 2-thread
session and ~3.0 ms on one thread; but two callers sharing the 2-thread session queue on
its thread pool (420-490 rows/s), while one-thread runs proceed side by side on the callers'
own threads (650-750 rows/s; `benchmarks/serving_bench.py` shows the effect end to end).
So a request takes the multi-thread session when it is free and the one-thread session
otherwise; ONNX Runtime sessions are safe to run from several threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from optimise.runtime import OnnxSession

CPU = "CPUExecutionProvider"


class ServingSession(OnnxSession):
    """An `OnnxSession` (the build's threads) that hands overlapping runs to a one-thread twin,
    plus `run_many` for independent runs."""

    def __init__(self, model: Path, threads: int, providers: Sequence[str]) -> None:
        super().__init__(model, threads, providers)
        # Threads only matter on the CPU provider; elsewhere one session does everything.
        self.parallel = threads > 1 and self.providers == (CPU,)
        self._single_thread = OnnxSession(model, 1, providers) if self.parallel else None
        self._multi_thread_free = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ort-row") if self.parallel else None

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One run: on the multi-thread session if no other request holds it, else on one thread."""
        if self._single_thread is None:
            return super().run(feeds)
        if self._multi_thread_free.acquire(blocking=False):
            try:
                return super().run(feeds)
            finally:
                self._multi_thread_free.release()
        return self._single_thread.run(feeds)

    def run_many(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Independent runs (the rows or length buckets of one batch), one thread each, in parallel."""
        if self._pool is None or self._single_thread is None or len(feeds) < 2:
            return [self.run(f) for f in feeds]
        return list(self._pool.map(self._single_thread.run, feeds))
