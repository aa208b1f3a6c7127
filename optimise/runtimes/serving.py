"""A stored variant as the service runs it under concurrent requests: `ServingSettings` applied to
sessions of its runtime. The build's serving stage (`optimise.serving_search`) measures these same
objects, so the settings it picks are measured on the code that serves them.

A run with nothing else in flight takes the session with `threads` intra-op threads; under load
runs take a one-thread session that runs `parallel_sessions` of them side by side (OpenVINO: as many
CPU streams). On the 2-core CPU profile a lone 20-token MiniLM row takes ~2.0 ms on 2 threads and
~3.0 ms on one; but two callers sharing a 2-thread session queue on its thread pool, while one-thread
runs proceed side by side. Every runtime's session is safe to call from several threads at once.

A batch-invariant variant can instead merge the rows of concurrent requests into one call
(`batch_max_rows` > 1, `optimise.runtimes.batching`): `parallel_sessions` threads then gather and
run batches; a lone request still runs on the multi-thread session, merged batches (and requests
others wait behind) on one thread, which leaves a core to the requests' own Python work (MiniLM's
OpenVINO int8 variant at 32 concurrent clients, 2 cores: merged batches on 2 threads 807 req/s, on 1
thread 992 req/s).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from optimise.runtimes import ATTENTION_MASK, ONNX_RUNTIME, InferenceSession, TensorInfo, open_session
from optimise.runtimes.batching import RowBatcher
from optimise.types import ServingSettings


class ServingSession:
    """A stored variant on its runtime, run as `serving` says (see the module docstring), plus
    `run_many` for independent runs. Raises RuntimeUnavailable when the runtime, its package or the
    execution provider is missing here."""

    def __init__(
        self,
        opened: Callable[[int, int], InferenceSession],
        serving: ServingSettings,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """`opened(threads, streams)` gives a session of the variant (`for_file` opens the file;
        the build's serving stage reuses sessions across settings); batching is only for
        batch-invariant variants (the caller decides); `on_batch(rows)` sees each runtime call."""
        self.serving = serving
        threads, parallel = serving.threads, serving.parallel_sessions
        self.main: InferenceSession = opened(threads, 1 if threads > 1 else parallel)
        self.runtime = self.main.runtime
        self.input_names = self.main.input_names  # read on every request: worked out once
        self.output_names = self.main.output_names
        # Thread counts only matter on the CPU, and only where each session has its own (PyTorch's is
        # process-wide): elsewhere the one session does everything.
        splits = self.main.on_cpu_only and self.main.threads_per_session
        overlaps = parallel > 1 or self.serving.batching  # else one run at a time: no one-thread twin
        self._single_thread = opened(1, parallel) if splits and threads > 1 and overlaps else None
        self._under_load = self._single_thread or self.main
        self._multi_thread_free = threading.Lock()
        self._in_flight = FifoSlots(parallel)
        self.batcher = (
            RowBatcher(
                self._run_unbounded,
                _sequence_inputs(self.main.inputs),
                self.serving.batch_max_rows,
                self.serving.batch_wait_ms / 1e3,
                on_batch,
                run_under_load=self._under_load.run,
                runners=parallel,
            )
            if self.serving.batching
            else None
        )
        self._pool = (
            ThreadPoolExecutor(parallel, thread_name_prefix="row")
            if parallel > 1 and self.batcher is None
            else None
        )

    @classmethod
    def for_file(
        cls,
        model: Path,
        providers: Sequence[str],
        runtime: str = ONNX_RUNTIME,
        runtime_settings: Mapping[str, str] | None = None,
        serving: ServingSettings | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> ServingSession:
        """The model file `model` on `runtime` (its sessions opened with `runtime_settings`, ONNX
        Runtime on `providers`); `serving` defaults to one thread, one run at a time, no batching."""

        def opened(threads: int, streams: int) -> InferenceSession:
            return open_session(runtime, model, threads, providers, runtime_settings, streams)

        return cls(opened, serving or ServingSettings(threads=1), on_batch)

    @property
    def parallel(self) -> bool:
        """Whether runs can proceed side by side."""
        return self.serving.parallel_sessions > 1

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.main.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.main.outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One run: merged with concurrent runs when batching; else, once fewer than
        `parallel_sessions` runs are in flight, on the multi-thread session if no other run holds it,
        else on one thread."""
        if self.batcher is not None:
            return self.batcher.run(feeds)
        with self._in_flight:
            return self._run_unbounded(feeds)

    def _run_unbounded(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self._single_thread is None:
            return self.main.run(feeds)
        if self._multi_thread_free.acquire(blocking=False):
            try:
                return self.main.run(feeds)
            finally:
                self._multi_thread_free.release()
        return self._single_thread.run(feeds)

    def run_many(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Independent runs (the rows or length buckets of one batch), side by side up to
        `parallel_sessions` at once, answers in order."""
        if self.batcher is not None:
            futures = [self.batcher.submit(f) for f in feeds]  # merged with each other and with others
            return [f.result() for f in futures]
        if self._pool is None or len(feeds) < 2:
            return [self.run(f) for f in feeds]
        return list(self._pool.map(self.run, feeds))

    def close(self) -> None:
        """Stop the batching threads and the pool (runs already submitted finish)."""
        if self.batcher is not None:
            self.batcher.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class FifoSlots:
    """At most `slots` holders at once; waiters get a slot in the order they asked for one.

    `threading.Semaphore` lets the thread that releases a slot take it straight back (it still
    holds the GIL), so under load a few threads cycle while the others starve: measured at 32
    callers and 2 slots, p50 2.5 ms and waits of over half a second. Here a released slot passes
    directly to the oldest waiter."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # released by the holder that hands its slot over

    def __exit__(self, *_: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1


def _sequence_inputs(inputs: Sequence[TensorInfo]) -> tuple[str, ...]:
    """The [batch, sequence] inputs a batch pads, for models that mask padding; else none."""
    if not any(i.name == ATTENTION_MASK for i in inputs):
        return ()
    return tuple(i.name for i in inputs if len(i.shape) == 2)
