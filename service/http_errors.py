"""The HTTP side of the error hierarchy: one mapping from `ServingError` to a response, one body shape.

Every HTTP route answers an error as its `http_status` with the JSON body `{"error": "..."}` (the
shape OIP v2 gives REST errors), and a refusal for load (`ServerBusy`) with `Retry-After`. The
native endpoints, the OIP v2 routes, the admin and monitoring apps and the front door all answer
through here.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.client_errors import log_client_error
from service.errors import ServerBusy, ServingError

RETRY_AFTER_S = "1"


def error_body(message: str, extra: dict[str, Any] | None = None) -> bytes:
    """`{"error": message, ...extra}` as JSON bytes."""
    return json.dumps({"error": message, **(extra or {})}, allow_nan=False).encode()


def error_headers(error: ServingError) -> dict[str, str]:
    """Headers an error's answer carries besides its body: Retry-After for a refusal under load."""
    return {"retry-after": RETRY_AFTER_S} if isinstance(error, ServerBusy) else {}


def error_response(error: ServingError, protocol: str, route: str) -> JSONResponse:
    """`error` as its status and `{"error": ...}`; logged once as a client error (no payload)."""
    log_client_error(protocol, route, error)
    return JSONResponse({"error": str(error)}, status_code=error.http_status, headers=error_headers(error))


async def _starlette_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServingError)  # registered for ServingError only
    return error_response(exc, "rest", getattr(request.scope.get("endpoint"), "__name__", "?"))


# For Starlette apps (admin, monitoring): exception_handlers=ERROR_HANDLERS.
ERROR_HANDLERS = {ServingError: _starlette_handler}
