"""Request metrics for the batched native endpoint (/embed).

BentoML merges concurrent /embed requests into one call, so the handler cannot
time a single request; this ASGI middleware times each HTTP request instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from monitoring.metrics import IN_FLIGHT, RequestRecord, record_request
from service.dataplane import DataPlane

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
PROTOCOL = "rest"


class BatchedRouteMetrics:
    def __init__(self, app: Any, path: str, model: str, get_dataplane: Callable[[], DataPlane]) -> None:
        self.app = app
        self.path = path
        self.model = model
        self.get_dataplane = get_dataplane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        record = RequestRecord(self.model, code=500)

        async def send_and_note_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.code = int(message["status"])
            await send(message)

        IN_FLIGHT.labels(PROTOCOL).inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            IN_FLIGHT.labels(PROTOCOL).dec()
            record.version = self._live_version()
            record_request(record, PROTOCOL, time.perf_counter() - start)

    def _live_version(self) -> str:
        try:
            return self.get_dataplane().model(self.model).version
        except Exception:  # not loaded: the request failed, and its version is unknown
            return ""
