"""Shadow runs: a staged version answers copies of live requests; only the live answer is returned.

The request path only offers (inputs, live outputs) to a bounded queue and never
waits; when the queue is full the copy is dropped. A worker thread runs the
candidate and compares: argmax agreement for classifiers, cosine otherwise.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from optimise.artefact import ModelKind
from optimise.evaluate import cosine_per_sample
from service.served_model import ServedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowResult:
    compared_rows: int
    agreement: float  # argmax agreement or mean cosine, over every compared row
    metric: str
    dropped: int


class ShadowRun:
    def __init__(self, candidate: ServedModel, capacity: int = 256) -> None:
        self.candidate = candidate
        self._queue: queue.Queue[tuple[dict[str, np.ndarray], np.ndarray] | None] = queue.Queue(capacity)
        self._scores: list[float] = []
        output = candidate.outputs[0].shape
        self.classifier = candidate.kind is ModelKind.TENSOR and len(output) == 2 and output[1] > 1
        self._lock = threading.Lock()
        self.dropped = 0
        self._thread = threading.Thread(target=self._work, name=f"shadow-{candidate.name}", daemon=True)
        self._thread.start()

    def offer(self, inputs: dict[str, np.ndarray], live_output: np.ndarray) -> None:
        try:
            self._queue.put_nowait((inputs, live_output))
        except queue.Full:
            self.dropped += 1

    def wait(self, rows: int, timeout_s: float) -> ShadowResult:
        """Block until `rows` rows were compared or the timeout passed; the result says how many."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._compared() < rows:
            time.sleep(0.05)
        with self._lock:
            scores = list(self._scores)
        metric = "argmax agreement" if self.classifier else "cosine"
        return ShadowResult(len(scores), float(np.mean(scores)) if scores else 0.0, metric, self.dropped)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _compared(self) -> int:
        with self._lock:
            return len(self._scores)

    def _agreement(self, shadow: np.ndarray, live: np.ndarray) -> np.ndarray:
        """Per row: 1.0 where the argmax matches (classifiers), else the cosine; non-finite rows score 0."""
        finite = np.isfinite(shadow).all(axis=tuple(range(1, shadow.ndim)))
        if self.classifier:
            scores = (live.argmax(axis=1) == shadow.argmax(axis=1)).astype(float)
        else:
            scores = np.nan_to_num(cosine_per_sample(shadow, live), nan=0.0)
        return np.where(finite, scores, 0.0)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            inputs, live = item
            try:
                shadow = next(iter(self.candidate.predict(inputs).values()))
            except Exception as exc:
                # A candidate's error may quote the request: warning level, never error (the live answer
                # was already sent; the failure counts as a disagreement and the gate sees it).
                logger.warning(
                    "shadow %s failed on a mirrored request (%s), counted as a disagreement",
                    self.candidate.version,
                    type(exc).__name__,
                    exc_info=True,
                )
                scores = np.zeros(len(live))  # not NaN outputs: argmax would match every class-0 row
            else:
                scores = self._agreement(shadow, live)
            with self._lock:
                self._scores.extend(scores.tolist())
