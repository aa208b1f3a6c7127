"""The front door: one ASGI middleware in front of every HTTP route (native, /v2, /admin, /monitoring).

It owns what must hold for every route alike, before a route sees the request:
- the body limit (LEANSERVE_MAX_REQUEST_BYTES): a declared Content-Length over it, or a chunked
  body that grows past it, is answered 413 before the body is read whole;
- admission (`InflightBudget`): a request with a body counts against the worker's request bound and
  its bytes are reserved while it runs; one past either bound is answered 503 with Retry-After at
  once, never queued;
- media types: a body of a type the route does not take is answered 415, naming the type it takes;
- content encodings: a gzip or deflate body is inflated here for every route (the limit holds for
  the inflated size), another encoding is answered 415;
- one error shape: every answer with status >= 400 leaves as JSON `{"error": "..."}` (BentoML's and
  Starlette's own plain-text or list-shaped errors included), and an exception that escapes a route is
  logged (without the request) and answered 500 as JSON.
The body is read here once and handed on, so the routes never read an unbounded stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from service.admission import InflightBudget
from service.client_errors import log_client_error
from service.content_encoding import inflate, too_large
from service.errors import InvalidInput, ServingError, UnsupportedMediaType
from service.http_errors import error_body, error_headers

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (method, path) -> the media types a route's body may have; None: any (or no body expected).
MediaTypes = Callable[[str, str], tuple[str, ...] | None]
# Told of each request the front door answers itself: (method, path, status).
OnRefused = Callable[[str, str, int], None]

JSON = "application/json"
# The scope key under which the front door stamps when a request reached the server
# (`time.perf_counter()`): routes time requests from there (`received_at`).
RECEIVED_AT = "leanserve.received_at"
_ERROR_BODY_LIMIT = 64 * 1024  # error bodies are small; a larger one is cut, not buffered whole


class _BodyRefused(Exception):
    def __init__(self, error: ServingError) -> None:
        super().__init__(str(error))
        self.error = error


def received_at(scope: Scope) -> float | None:
    """When the front door received this request (`time.perf_counter()`); None past no front door."""
    stamp = scope.get(RECEIVED_AT)
    return stamp if isinstance(stamp, float) else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _takes(media: str, accepted: tuple[str, ...]) -> bool:
    return media in accepted or (JSON in accepted and media.endswith("+json"))


async def send_json_error(
    send: Send, status: int, message: str, extra_headers: dict[str, str] | None = None
) -> None:
    """An error answer at the ASGI level, in the one shape (`service.http_errors`)."""
    body = error_body(message)
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _as_error_object(status: int, body: bytes, content_type: str | None) -> bytes:
    """An error body in the one shape, `{"error": ...}`, whatever shape the route or framework sent."""
    text = body.decode("utf-8", "replace").strip()
    if _media_type(content_type) == JSON:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and len(parsed) == 1:  # BentoML wraps some errors in a list
            parsed = parsed[0]
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            details = parsed.pop("detail", None)
            if isinstance(details, list) and details:  # pydantic's errors: say which field and why
                parsed["error"] = "; ".join(_describe_validation_error(d) for d in details[:5])
            return json.dumps(parsed, allow_nan=False).encode()
        if isinstance(parsed, dict):  # a route's own answer (e.g. {"ready": false}): kept, error named
            return json.dumps({"error": _status_phrase(status), **parsed}, allow_nan=False).encode()
    if status == 500:
        return error_body("internal error")  # a framework's 500 text may quote a traceback
    return error_body((text[:300] if status < 500 else "") or _status_phrase(status))


def _status_phrase(status: int) -> str:
    """'service unavailable' for 503; 'HTTP 599' for a status without a standard name."""
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return f"HTTP {status}"


def _describe_validation_error(detail: Any) -> str:
    if not isinstance(detail, dict):
        return str(detail)[:200]
    location = ".".join(str(part) for part in detail.get("loc", ()) if part != "body")
    return f"{location}: {detail.get('msg', 'invalid')}" if location else str(detail.get("msg", "invalid"))


class _JsonErrors:
    """Wraps `send`: success answers pass through untouched; error answers are reshaped as JSON."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self._held: Message | None = None
        self._body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if int(message["status"]) >= 400:
                self._held = message
                return
        elif message["type"] == "http.response.body" and self._held is not None:
            self._body += message.get("body", b"")[: _ERROR_BODY_LIMIT - len(self._body)]
            if not message.get("more_body", False):
                await self._send_error()
            return
        await self._send(message)

    async def _send_error(self) -> None:
        assert self._held is not None
        headers = dict(self._held.get("headers", ()))
        content_type = headers.get(b"content-type", b"").decode("latin-1") or None
        body = _as_error_object(int(self._held["status"]), bytes(self._body), content_type)
        kept = [
            (k, v)
            for k, v in self._held.get("headers", ())
            if k.lower() not in (b"content-type", b"content-length")
        ]
        headers_out = [*kept, (b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
        await self._send(
            {"type": "http.response.start", "status": self._held["status"], "headers": headers_out}
        )
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


class FrontDoor:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        budget: InflightBudget,
        media_types: MediaTypes,
        on_refused: OnRefused | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.budget = budget
        self.media_types = media_types
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[RECEIVED_AT] = time.perf_counter()
        responder = _JsonErrors(send)
        try:
            await self._handle(scope, receive, responder.send)
        except Exception:
            # A bug, not the client's doing: the traceback goes to the log, the request does not.
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
        if not responder.started:  # every request gets an answer, even from a route that gave none
            await send_json_error(send, 500, "internal error")

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            declared = self._declared_length(scope) or 0
            self._check_media_type(scope, declared)
        except ServingError as exc:
            await self._refuse(scope, send, exc)
            return
        if not _has_body(scope, declared):
            await self._admitted(scope, receive, send, declared)
            return
        if not self.budget.try_admit():
            await self._refuse(scope, send, self.budget.busy())
            return
        try:
            await self._admitted(scope, receive, send, declared)
        finally:
            self.budget.leave()

    async def _admitted(self, scope: Scope, receive: Receive, send: Send, declared: int) -> None:
        if not self.budget.try_reserve(declared):
            await self._refuse(scope, send, self.budget.refusal(declared))
            return
        try:
            body, reserved = await self._read_body(receive, declared)
        except _BodyRefused as refused:
            await self._refuse(scope, send, refused.error)
            return
        except _ClientGone:
            # Nobody will read it, but something must be sent: BentoML's timeout middleware holds the
            # request (and a server's graceful stop) until a response starts. nginx calls this 499.
            await send_json_error(send, 400, "the client closed the connection before its body arrived")
            return
        try:
            encoding = _header(scope, b"content-encoding")
            if encoding is not None:
                try:
                    body, reserved, scope = self._inflated(scope, body, encoding, reserved)
                except ServingError as exc:
                    await self._refuse(scope, send, exc)
                    return
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.budget.release(reserved)

    def _inflated(self, scope: Scope, body: bytes, encoding: str, reserved: int) -> tuple[bytes, int, Scope]:
        """The inflated body, the bytes now reserved, and a scope whose headers describe the new body."""
        inflated = inflate(body, encoding, self.max_body_bytes)
        if len(inflated) > reserved:
            if not self.budget.try_reserve(len(inflated) - reserved):
                raise self.budget.refusal(len(inflated))
            reserved = len(inflated)
        kept = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in _BODY_HEADERS]
        headers = [*kept, (b"content-length", str(len(inflated)).encode())]
        return inflated, reserved, {**scope, "headers": headers}

    async def _refuse(self, scope: Scope, send: Send, error: ServingError) -> None:
        log_client_error("http", str(scope.get("path", "")), error)
        if self.on_refused is not None:
            self.on_refused(str(scope.get("method", "")), str(scope.get("path", "")), error.http_status)
        await send_json_error(send, error.http_status, str(error), error_headers(error))

    def _declared_length(self, scope: Scope) -> int | None:
        declared = _header(scope, b"content-length")
        if declared is None:
            return None
        if not declared.strip().isdigit():
            raise InvalidInput(f"Content-Length must be an integer, not {declared!r:.40}")
        size = int(declared)
        if size > self.max_body_bytes:
            raise too_large(self.max_body_bytes)
        return size

    def _check_media_type(self, scope: Scope, declared: int | None) -> None:
        has_body = _has_body(scope, declared or 0)
        accepted = self.media_types(str(scope.get("method", "")), str(scope.get("path", "")))
        media = _media_type(_header(scope, b"content-type"))
        if not has_body or accepted is None or media is None or _takes(media, accepted):
            return
        raise UnsupportedMediaType(
            f"{scope.get('method')} {scope.get('path')} takes {' or '.join(accepted)}, not {media}"
        )

    async def _read_body(self, receive: Receive, declared: int) -> tuple[bytes, int]:
        """The whole body and the bytes now reserved for it (`declared` was reserved by the caller).

        A chunked body, or one longer than declared, reserves its bytes as they arrive; on any
        failure everything reserved for this request is released.
        """
        chunks, size, reserved = [], 0, declared
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _BodyRefused(too_large(self.max_body_bytes))
                if size > reserved:
                    if not self.budget.try_reserve(size - reserved):
                        raise _BodyRefused(self.budget.refusal(size))
                    reserved = size
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks), reserved
        except BaseException:
            self.budget.release(reserved)
            raise


def _has_body(scope: Scope, declared: int) -> bool:
    return declared > 0 or _header(scope, b"transfer-encoding") is not None


_BODY_HEADERS = {b"content-encoding", b"content-length", b"transfer-encoding"}


class _ClientGone(Exception):
    pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then waits on the connection (for a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
