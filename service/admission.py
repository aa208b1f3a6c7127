"""Admission: a worker works on at most LEANSERVE_MAX_INFLIGHT_REQUESTS requests and
LEANSERVE_MAX_INFLIGHT_BYTES of request bodies at once.

Every HTTP request with a body and every gRPC inference counts as one request, and its body or
message reserves its size, for as long as it runs (waiting for a thread or the model included);
both are released when the answer is sent. A request past either bound is refused at once with
`ServerBusy` (503 with Retry-After / RESOURCE_EXHAUSTED), never queued: the request bound is the
queue depth, so a burst is shed instead of growing the wait (and the memory) without bound.
Requests without a body (probes, metadata, metrics) count for nothing and always pass.

A request's working memory is a small multiple of its size: decoding a JSON body into
arrays takes several times the body (Python numbers), binary tensors about twice, and text
is truncated to the model's token limit before it is tokenised. So the byte budget, with the
body limit, the per-run row limit and the text truncation, bounds what a worker holds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import ServerBusy


class InflightBudget:
    """Thread-safe request and byte counters shared by the HTTP front door and the gRPC servicer of
    one worker. `limit_requests` None: no bound on the number of requests."""

    def __init__(self, limit_bytes: int, limit_requests: int | None = None) -> None:
        if limit_bytes < 1:
            raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
        if limit_requests is not None and limit_requests < 1:
            raise ValueError(f"limit_requests must be positive, got {limit_requests}")
        self.limit_bytes = limit_bytes
        self.limit_requests = limit_requests
        self._used = 0
        self._requests = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def requests(self) -> int:
        return self._requests

    def try_admit(self) -> bool:
        """Count one more request if the bound allows it; returns whether it did."""
        with self._lock:
            if self.limit_requests is not None and self._requests >= self.limit_requests:
                return False
            self._requests += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._requests = max(0, self._requests - 1)

    def busy(self) -> ServerBusy:
        return ServerBusy(
            f"the server is busy: it is already working on {self.limit_requests} requests "
            "(LEANSERVE_MAX_INFLIGHT_REQUESTS); retry shortly"
        )

    @contextmanager
    def admitted(self, size: int) -> Iterator[None]:
        """One request of `size` bytes for the block; raises `ServerBusy` at once past either bound."""
        if not self.try_admit():
            raise self.busy()
        try:
            with self.reserved(size):
                yield
        finally:
            self.leave()

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
