"""The BentoML service: native REST endpoints, OIP v2 REST under /v2, admin under /admin,
and the OIP v2 gRPC server on its own port, all over one DataPlane.

    bentoml serve service.app:LeanServe            # HTTP :3000, gRPC :8001
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from bentoml.validators import ContentType
from pydantic import Field

from monitoring.metrics import UNKNOWN_MODEL, RequestRecord, count_refused, track_request
from monitoring.monitor import DriftMonitor
from monitoring.parent_death import die_with_parent
from monitoring.trigger import Trigger
from service import http_deadline
from service.admin import create_admin_app
from service.admission import InflightBudget
from service.client_errors import configure_worker_logging
from service.control import DataPlaneControl
from service.dataplane import DataPlane
from service.errors import InvalidInput, ModelNotReady, ServingError
from service.front_door import JSON, FrontDoor
from service.http_errors import error_response
from service.monitoring_config import monitor_config, trigger_config
from service.monitoring_routes import create_monitoring_app
from service.settings import ServiceSettings
from service.types import NUMPY_DTYPES, InferenceRequest, Tensor
from service.v2.codec import array_from_json
from service.v2.rest import create_v2_app, create_v2_root_app

if TYPE_CHECKING:
    from service.grpc.server import GrpcServer

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
logger = logging.getLogger("leanserve")
settings = ServiceSettings()
BUDGET = InflightBudget(settings.max_inflight_bytes)  # per worker: HTTP and gRPC requests together
http_deadline.install(settings.request_read_timeout_s)  # before uvicorn starts in this worker


class _Current:
    """The worker's data plane; the ASGI apps are built at import time, before it exists."""

    dataplane: DataPlane | None = None
    trigger: Trigger | None = None

    @classmethod
    def get(cls) -> DataPlane:
        if cls.dataplane is None:
            raise ModelNotReady("the service is starting")
        return cls.dataplane


# OpenTelemetry's ASGI middleware skips these unless LEANSERVE_TRACE_REQUESTS is on.
UNTRACED_ROUTES = ["/embed", "/classify", "/predict", "/v2", "/metrics", "/readyz", "/livez"]
NATIVE_ROUTES = ("/embed", "/classify", "/predict")
OCTET_STREAM = "application/octet-stream"

# Declaring the media type spares BentoML rebuilding a JSON schema on every response (~0.2 ms).
JsonArray = Annotated[np.ndarray, ContentType(JSON)]
Texts = Annotated[
    list[Annotated[str, Field(max_length=settings.max_text_chars)]],
    Field(min_length=1, max_length=settings.max_texts),
]


def accepted_media_types(method: str, path: str) -> tuple[str, ...] | None:
    """The body types each route takes (the front door answers 415 for others); None: any."""
    if method != "POST":
        return None
    if path in NATIVE_ROUTES or path.startswith("/admin/"):
        return (JSON,)
    if path.startswith("/v2/"):
        return (JSON, OCTET_STREAM)  # the binary tensor data extension
    return None


def _count_refused(method: str, path: str, status: int) -> None:
    """Requests the front door refused still count in `leanserve_requests_total`, per model it can tell."""
    if path in NATIVE_ROUTES:
        named = {"/embed": settings.embed_model, "/classify": settings.classify_model}.get(path)
        protocol = "rest"
    elif path.startswith("/v2/models/"):
        named, protocol = path.split("/")[3], "rest-v2"
    else:
        return  # admin and monitoring calls are not model requests
    try:
        model = _Current.get().model_label(named) if named else UNKNOWN_MODEL
    except ModelNotReady:
        model = UNKNOWN_MODEL
    count_refused(model, protocol, status)


def _native(route: str, model: str, handler: Callable[[RequestRecord], Any]) -> Any:
    """Run a native endpoint's handler with request metrics; a `ServingError` becomes its status and
    `{"error": ...}`. BentoML sends a returned Response as is, past its own error path (which would log
    the client's mistake at ERROR with a traceback and wrap the body in a list)."""
    try:
        with track_request(model, "rest") as record:
            return handler(record)
    except ServingError as exc:
        return error_response(exc, "rest", route)


@bentoml.asgi_app(create_v2_root_app(), path="/")  # GET /v2 itself: tritonclient does not follow redirects
@bentoml.asgi_app(create_v2_app(_Current.get), path="/v2")
@bentoml.asgi_app(create_admin_app(_Current.get, settings, lambda: _Current.trigger), path="/admin")
@bentoml.asgi_app(create_monitoring_app(_Current.get), path="/monitoring")
@bentoml.service(
    name="leanserve",
    workers=1,
    traffic={"timeout": 60},
    # Both run Python middleware on every request (a visible share of REST server time when
    # profiled on 2 cores); the leanserve_* metrics already count and time every request.
    logging={"access": {"enabled": settings.access_log}},
    tracing={"excluded_urls": [] if settings.trace_requests else UNTRACED_ROUTES},
)
class LeanServe:
    def __init__(self) -> None:
        die_with_parent()  # BentoML starts workers in their own process group: end with the server
        configure_worker_logging()
        self.monitor = DriftMonitor(monitor_config(settings)) if settings.drift_enabled else None
        self.dataplane = DataPlane(settings, self.monitor)
        self.dataplane.load_configured()
        self.trigger = _trigger(self.dataplane, self.monitor)
        _Current.trigger = self.trigger
        _Current.dataplane = self.dataplane
        self.grpc_server: GrpcServer | None = None

    @bentoml.on_startup
    def start_drift_monitor(self) -> None:
        if self.trigger is not None:
            self.trigger.start()
        if self.monitor is not None:
            self.monitor.start()

    @bentoml.on_shutdown
    def stop_drift_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.trigger is not None:
            self.trigger.stop()

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        if settings.grpc_port:
            from service.grpc.server import start_grpc_server

            self.grpc_server = await start_grpc_server(self.dataplane, settings, BUDGET)

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.server.stop(grace=2)

    def __is_ready__(self) -> bool:
        return self.dataplane.is_ready()

    @bentoml.api
    def embed(self, texts: Texts) -> JsonArray:
        """Sentence embeddings, one row per text; texts over the token limit are truncated (or 400)."""

        def run(record: RequestRecord) -> np.ndarray:
            model, embeddings = self.dataplane.embed(list(texts), settings.embed_model)
            record.version = model.version
            return embeddings

        return _native("/embed", self.dataplane.model_label(settings.embed_model), run)

    @bentoml.api
    def classify(self, images: list[Any]) -> dict[str, Any]:
        """Digits: N images as [N, 8, 8] or [N, 64] pixel values (0-16 scaled to 0-1) -> N classes and
        probabilities; any other shape, or values that are not numbers, is a 400."""

        def run(record: RequestRecord) -> dict[str, Any]:
            pixels = array_from_json("images", images, np.dtype(np.float32))
            model, probabilities = self.dataplane.classify(pixels, settings.classify_model)
            record.version = model.version
            return {
                "model": model.name,
                "version": model.version,
                "classes": probabilities.argmax(axis=1).tolist(),
                "probabilities": probabilities.round(6).tolist(),
            }

        return _native("/classify", self.dataplane.model_label(settings.classify_model), run)

    @bentoml.api
    def predict(self, model: str, inputs: dict[str, list[Any]]) -> dict[str, Any]:
        """Any served model: named tensors as nested lists -> named outputs as nested lists."""

        def run(record: RequestRecord) -> dict[str, Any]:
            served = self.dataplane.model(model)
            record.version = served.version
            dtypes = {spec.name: NUMPY_DTYPES[spec.datatype] for spec in served.inputs}
            unknown = sorted(set(inputs) - set(dtypes))
            if unknown:
                raise InvalidInput(
                    f"model {model!r} has no input {unknown[0]!r}; its inputs are {sorted(dtypes)}"
                )
            tensors = [
                Tensor(name, array_from_json(name, values, dtypes[name])) for name, values in inputs.items()
            ]
            response = self.dataplane.infer(InferenceRequest(model, tensors))
            return {
                "model": response.model,
                "version": response.version,
                "outputs": {t.name: t.data.tolist() for t in response.outputs},
            }

        return _native("/predict", self.dataplane.model_label(model), run)


def _trigger(dataplane: DataPlane, monitor: DriftMonitor | None) -> Trigger | None:
    if monitor is None or not settings.reoptimise_enabled:
        return None
    trigger = Trigger(DataPlaneControl(dataplane, monitor), trigger_config(settings))
    monitor.subscribe(trigger.on_window)
    return trigger


# The decorators turned the class into a bentoml.Service; mypy still sees the class.
LeanServe.add_asgi_middleware(  # type: ignore[attr-defined]
    FrontDoor,
    max_body_bytes=settings.max_request_bytes,
    budget=BUDGET,
    media_types=accepted_media_types,
    on_refused=_count_refused,
)
