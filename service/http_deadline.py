"""A read deadline for HTTP connections: a request must arrive whole within a time limit.

BentoML serves HTTP with uvicorn, which closes a keep-alive connection that stays idle after
a response (5 s by default) but waits forever on a connection that never sends a request, or
sends half of one: a few hundred such connections hold sockets and memory indefinitely.
`DeadlineHttpProtocol` is uvicorn's httptools protocol with one timer: armed when the
connection opens and when a request begins, cancelled when the request has arrived whole
(headers and body). When it fires, the connection is closed: with a JSON 408 if a request had
begun, silently if nothing was sent. uvicorn picks its HTTP protocol from its `HTTP_PROTOCOLS`
table when the worker starts, so `install` registers this class there ("auto" and
"httptools"); the uvicorn version is pinned because this relies on its protocol's callbacks.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http_errors import error_body

_PROTOCOL_PATH = "service.http_deadline:DeadlineHttpProtocol"


def _json_response(status: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with the one error body."""
    body = error_body(message)
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _timeout_response() -> bytes:
    return _json_response("408 Request Timeout", "the request did not arrive whole in time")


class DeadlineHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request does not arrive in time."""

    read_timeout_s: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._request_begun = False
        self._previous_cycle: Any = None

    def send_400_response(self, msg: str) -> None:
        """The parser's refusal (a bad Content-Length, chunk size or request line) in the one error shape."""
        self.transport.write(_json_response("400 Bad Request", f"malformed HTTP request: {msg}"))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._previous_cycle = self.cycle  # the new request's cycle starts with its headers
        self._arm_read_deadline()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._request_begun = False
        self._cancel_read_deadline()

    def _arm_read_deadline(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_deadline_passed)

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_deadline_passed(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        # A request whose handler already answered (e.g. 413 before the body) is not a stalled one.
        cycle = self.cycle if self.cycle is not self._previous_cycle else None
        answered = cycle is not None and cycle.response_started
        if self._request_begun and not answered:
            self.transport.write(_timeout_response())
        self.transport.close()


def install(read_timeout_s: float) -> None:
    """Make uvicorn (in this process) serve HTTP/1.1 with the read deadline, `read_timeout_s` seconds."""
    from uvicorn import config

    DeadlineHttpProtocol.read_timeout_s = read_timeout_s
    config.HTTP_PROTOCOLS["auto"] = _PROTOCOL_PATH
    config.HTTP_PROTOCOLS["httptools"] = _PROTOCOL_PATH
