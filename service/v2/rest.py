"""The Open Inference Protocol v2 REST routes as a Starlette app.

The BentoML service mounts it under /v2, so routes here are relative to that.
Routes only translate: the data plane decides readiness, validates and runs
models, and `service.v2.codec` reads and writes the bodies.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from monitoring.metrics import track_request
from service.dataplane import DataPlane
from service.errors import ModelNotReady, ServingError
from service.front_door import received_at
from service.http_errors import error_response
from service.v2.codec import HEADER_LENGTH, decode_request, encode_response

logger = logging.getLogger(__name__)

SERVER_NAME = "leanserve"
EXTENSIONS = ("binary_tensor_data",)

Endpoint = Callable[[Request], Awaitable[Response]]


def _package_version() -> str:
    try:
        return version("leanserve")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _guarded(endpoint: Endpoint) -> Endpoint:
    """The one place errors become responses: a ServingError with its status, anything else a logged 500."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ServingError as exc:
            return error_response(exc, "rest-v2", endpoint.__name__)
        except Exception:
            logger.exception("OIP v2 %s %s failed", request.method, request.url.path)
            return _error(500, "internal error")

    return guarded


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own 404 (no such route) and 405, in the protocol's error shape.
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, exc.headers)


def _target(request: Request) -> tuple[str, str | None]:
    return request.path_params["model"], request.path_params.get("version")


async def _server_metadata(request: Request) -> Response:
    return JSONResponse({"name": SERVER_NAME, "version": _package_version(), "extensions": list(EXTENSIONS)})


def v2_root_routes() -> list[Route]:
    """`GET /v2` (server metadata, what tritonclient asks) for an app the service mounts at "/".

    A mount at /v2 only sees /v2/...; BentoML would answer /v2 with a redirect, which tritonclient does not follow.
    """
    return [Route("/v2", _server_metadata, methods=["GET"])]


def create_v2_app(get_dataplane: Callable[[], DataPlane]) -> Starlette:
    """`get_dataplane` is called per request: the service builds its data plane after this app exists."""

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        try:
            is_ready = get_dataplane().is_ready()
        except ServingError:  # no data plane yet
            is_ready = False
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    async def model_metadata(request: Request) -> Response:
        meta = get_dataplane().metadata(*_target(request))
        body: dict[str, Any] = {
            "name": meta.name,
            "versions": list(meta.versions),
            "platform": meta.platform,
            "inputs": [spec.to_dict() for spec in meta.inputs],
            "outputs": [spec.to_dict() for spec in meta.outputs],
        }
        return JSONResponse(body)

    async def model_ready(request: Request) -> Response:
        name, model_version = _target(request)
        try:
            get_dataplane().model(name, model_version)
        except ModelNotReady:  # unknown models and versions stay 404
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        return JSONResponse({"name": name, "ready": True})

    async def infer(request: Request) -> Response:
        name, model_version = _target(request)
        dataplane = get_dataplane()
        with track_request(dataplane.model_label(name), "rest-v2", received_at(request.scope)) as record:
            dataplane.model(
                name, model_version
            )  # an unknown model is 404 whatever the body holds, as in Triton
            body = await request.body()  # limited, and inflated when compressed, by the front door
            header_length = request.headers.get(HEADER_LENGTH)

            def run() -> tuple[bytes, int | None]:
                # Decoding and encoding too: large bodies would otherwise stall the event loop.
                inference, output_format = decode_request(body, header_length, name, model_version)
                response = dataplane.infer(inference)
                record.version = response.version
                return encode_response(response, output_format)

            content, json_size = await anyio.to_thread.run_sync(run)
        if json_size is None:
            return Response(content, media_type="application/json")
        return Response(
            content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_size)}
        )

    get, post = ["GET"], ["POST"]
    routes = [
        Route("/health/live", _guarded(live), methods=get),
        Route("/health/ready", _guarded(ready), methods=get),
        Route("/", _guarded(_server_metadata), methods=get),
        Route("/models/{model}", _guarded(model_metadata), methods=get),
        Route("/models/{model}/versions/{version}", _guarded(model_metadata), methods=get),
        Route("/models/{model}/ready", _guarded(model_ready), methods=get),
        Route("/models/{model}/versions/{version}/ready", _guarded(model_ready), methods=get),
        Route("/models/{model}/infer", _guarded(infer), methods=post),
        Route("/models/{model}/versions/{version}/infer", _guarded(infer), methods=post),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
