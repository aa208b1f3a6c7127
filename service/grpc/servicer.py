"""`inference.GRPCInferenceService` on top of the data plane: translate, call, translate back.

Errors are mapped here, once: a `ServingError` becomes its own gRPC status with
its message; anything else is logged with its traceback and answered INTERNAL
without internals.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from importlib import metadata as package_metadata
from typing import Any, NoReturn, TypeVar

import anyio.to_thread
import grpc
from typing_extensions import override

from monitoring.metrics import track_request
from service._generated import grpc_predict_v2_pb2 as pb
from service._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.admission import InflightBudget
from service.client_errors import log_client_error
from service.dataplane import DataPlane
from service.errors import ModelNotReady, ServingError
from service.grpc import converters

logger = logging.getLogger(__name__)

SERVER_NAME = "leanserve"

_Self = TypeVar("_Self")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Handler = Callable[[_Self, _Request, Any], Awaitable[_Response]]


def _server_version() -> str:
    try:
        return package_metadata.version(SERVER_NAME)
    except package_metadata.PackageNotFoundError:
        return "unknown"


async def _abort(context: Any, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


def _status_from_errors(method: _Handler[_Self, _Request, _Response]) -> _Handler[_Self, _Request, _Response]:
    """Turn exceptions escaping an RPC into gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: _Self, request: _Request, context: Any) -> _Response:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except ServingError as err:
            log_client_error("grpc", method.__name__, err)
            await _abort(context, err.grpc_code, str(err))
        except Exception:
            logger.exception("gRPC %s failed", method.__name__)
            await _abort(context, grpc.StatusCode.INTERNAL, f"{method.__name__} failed; see the server log")

    return wrapper


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, budget: InflightBudget) -> None:
        self.dataplane = dataplane
        self.budget = budget  # shared with the HTTP front door: one bound per worker
        self.version = _server_version()

    @override
    @_status_from_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @override
    @_status_from_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.is_ready())

    @override
    @_status_from_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        # An unknown model is NOT_FOUND (as in REST); a known one still loading is just not ready.
        try:
            self.dataplane.model(request.name, request.version or None)
        except ModelNotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @override
    @_status_from_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return converters.to_server_metadata(SERVER_NAME, self.version)

    @override
    @_status_from_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return converters.to_model_metadata(self.dataplane.metadata(request.name, request.version or None))

    @override
    @_status_from_errors
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        with track_request(self.dataplane.model_label(request.model_name), "grpc") as record:
            # The model first: an unknown one is NOT_FOUND whatever the inputs hold, as in Triton.
            self.dataplane.model(request.model_name, request.model_version or None)
            with self.budget.admitted(request.ByteSize()):

                def run() -> pb.ModelInferResponse:
                    response = self.dataplane.infer(converters.to_inference_request(request))
                    record.version = response.version
                    return converters.to_infer_response(response)

                # Off the event loop, as on REST: decoding and encoding a large request would stall
                # every other RPC; the runtimes release the GIL while the model runs. AnyIO's worker
                # threads (40, shared with HTTP on this loop), not asyncio's default executor (CPUs +
                # 4 threads), which would cap how many requests a batch can merge.
                return await anyio.to_thread.run_sync(run)
