"""Admission by request bytes: a worker works on at most LEANSERVE_MAX_INFLIGHT_BYTES at once.

Every HTTP body and gRPC message reserves its size for as long as its request runs and
releases it when the answer is sent. A request that does not fit is refused at once with
`ServerBusy` (503 / RESOURCE_EXHAUSTED): queuing it would hold its bytes anyway, so a
queue would not bound memory. Requests without a body (probes, metadata, metrics) reserve
nothing and always pass.

A request's working memory is a small multiple of its size: decoding a JSON body into
arrays takes several times the body (Python numbers), binary tensors about twice, and text
is truncated to the model's token limit before it is tokenised. So this budget, with the
body limit, the per-run row limit and the text truncation, bounds what a worker holds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import ServerBusy


class InflightBudget:
    """A thread-safe byte counter shared by the HTTP front door and the gRPC servicer of one worker."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._used

    def try_reserve(self, size: int) -> bool:
        """Reserve `size` bytes if they fit; returns whether they did (nothing is reserved otherwise)."""
        if size <= 0:
            return True
        with self._lock:
            if self._used + size > self.limit_bytes:
                return False
            self._used += size
            return True

    def release(self, size: int) -> None:
        if size <= 0:
            return
        with self._lock:
            self._used = max(0, self._used - size)

    def refusal(self, size: int) -> ServerBusy:
        return ServerBusy(
            f"the server is busy: a request of {size} bytes does not fit in the "
            f"{self.limit_bytes} bytes this worker works on at once; retry shortly"
        )

    @contextmanager
    def reserved(self, size: int) -> Iterator[None]:
        """Hold `size` bytes for the block; raises `ServerBusy` at once when they do not fit."""
        if not self.try_reserve(size):
            raise self.refusal(size)
        try:
            yield
        finally:
            self.release(size)
