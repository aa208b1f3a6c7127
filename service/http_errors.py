"""The HTTP side of the error hierarchy, shared by the Starlette apps (admin, monitoring)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.client_errors import log_client_error
from service.errors import ServingError


async def serving_error(request: Request, exc: Exception) -> JSONResponse:
    """A `ServingError` as its status code and `{"error": message}`."""
    status = exc.http_status if isinstance(exc, ServingError) else 500
    if isinstance(exc, ServingError):
        log_client_error("rest", getattr(request.scope.get("endpoint"), "__name__", "?"), exc)
    return JSONResponse(
        {"error": str(exc) if isinstance(exc, ServingError) else "internal error"}, status_code=status
    )


ERROR_HANDLERS = {ServingError: serving_error}
