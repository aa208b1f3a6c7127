"""One error hierarchy for every protocol.

Each error carries its HTTP status and its gRPC status code; the REST and gRPC
adapters map them once (`service.v2.rest`, `service.grpc.servicer`), so a
validation error reads the same whichever way the request came in.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class ServingError(Exception):
    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL


class InvalidInput(ServingError):
    """The request is malformed or does not match the model's signature."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(ServingError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class ModelNotReady(ServingError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class PayloadTooLarge(ServingError):
    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthorised(ServingError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class AdminDisabled(ServingError):
    """Admin routes exist only when LEANSERVE_ADMIN_TOKEN is set."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class SwapRefused(ServingError):
    """A version failed to load, its hash check or its smoke inference; the live one keeps serving."""

    http_status = 409
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class RunInProgress(ServingError):
    """A re-optimisation of the model is already queued or running: a second request adds nothing."""

    http_status = 409
    grpc_code = grpc.StatusCode.ABORTED


class UnsupportedMediaType(ServingError):
    """A body of a content type the route does not take (gRPC has one encoding, so this is REST only)."""

    http_status = 415
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NonFiniteOutput(ServingError):
    """The model answered NaN or infinity for a valid request (its inputs drove it out of range).

    REST 422 (the request is well formed but cannot be answered), gRPC OUT_OF_RANGE; such an
    output is never sent as a number, arg-maxed or recorded for drift.
    """

    http_status = 422
    grpc_code = grpc.StatusCode.OUT_OF_RANGE


class ServerBusy(ServingError):
    """The worker already works on as many request bytes as LEANSERVE_MAX_INFLIGHT_BYTES allows:
    the request is refused at once (load shedding), never queued."""

    http_status = 503
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
