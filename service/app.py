"""The BentoML service: native REST endpoints, OIP v2 REST under /v2, admin under /admin,
and the OIP v2 gRPC server on its own port, all over one DataPlane.

    bentoml serve service.app:LeanServe            # HTTP :3000, gRPC :8001
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import Field

from monitoring.metrics import track_request
from monitoring.monitor import DriftMonitor, MonitorConfig
from monitoring.policy import PolicyConfig
from monitoring.trigger import Trigger, TriggerConfig, audit_log_path
from service.admin import create_admin_app
from service.control import DataPlaneControl
from service.dataplane import DataPlane
from service.errors import ModelNotReady, ServingError
from service.monitoring_routes import create_monitoring_app
from service.native_metrics import BatchedRouteMetrics
from service.settings import ServiceSettings
from service.types import NUMPY_DTYPES, InferenceRequest, Tensor
from service.v2.rest import create_v2_app, create_v2_root_app

if TYPE_CHECKING:
    from service.grpc.server import GrpcServer

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
logger = logging.getLogger("leanserve")
settings = ServiceSettings()


class _Current:
    """The worker's data plane; the ASGI apps are built at import time, before it exists."""

    dataplane: DataPlane | None = None
    trigger: Trigger | None = None

    @classmethod
    def get(cls) -> DataPlane:
        if cls.dataplane is None:
            raise ModelNotReady("the service is starting")
        return cls.dataplane


@contextlib.contextmanager
def _http_errors() -> Iterator[None]:
    """Native endpoints: the one error hierarchy, as BentoML's HTTP errors."""
    try:
        yield
    except ServingError as exc:
        raise BentoMLException(str(exc), error_code=HTTPStatus(exc.http_status)) from exc


# OpenTelemetry's ASGI middleware skips these unless LEANSERVE_TRACE_REQUESTS is on.
UNTRACED_ROUTES = ["/embed", "/classify", "/predict", "/v2", "/metrics", "/readyz", "/livez"]

# Declaring the media type spares BentoML rebuilding a JSON schema on every response (~0.2 ms).
JsonArray = Annotated[np.ndarray, ContentType("application/json")]
Texts = Annotated[
    list[Annotated[str, Field(max_length=settings.max_text_chars)]],
    Field(min_length=1, max_length=settings.max_texts),
]


@bentoml.asgi_app(create_v2_root_app(), path="/")  # GET /v2 itself: tritonclient does not follow redirects
@bentoml.asgi_app(create_v2_app(_Current.get, settings), path="/v2")
@bentoml.asgi_app(create_admin_app(_Current.get, settings, lambda: _Current.trigger), path="/admin")
@bentoml.asgi_app(create_monitoring_app(_Current.get), path="/monitoring")
@bentoml.service(
    name="leanserve",
    workers=1,
    traffic={"timeout": 60},
    http={"max_request_size": settings.max_request_bytes},
    # Both run Python middleware on every request (a visible share of REST server time when
    # profiled on 2 cores); the leanserve_* metrics already count and time every request.
    logging={"access": {"enabled": settings.access_log}},
    tracing={"excluded_urls": [] if settings.trace_requests else UNTRACED_ROUTES},
)
class LeanServe:
    def __init__(self) -> None:
        self.monitor = DriftMonitor(_monitor_config(settings)) if settings.drift_enabled else None
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

            self.grpc_server = await start_grpc_server(self.dataplane, settings)

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.server.stop(grace=2)

    def __is_ready__(self) -> bool:
        return self.dataplane.is_ready()

    @bentoml.api(
        batchable=True, max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms
    )
    def embed(self, texts: Texts) -> JsonArray:
        """Sentence embeddings, one row per text; texts over the token limit are truncated (or 400)."""
        with _http_errors():
            return self.dataplane.embed(list(texts), settings.embed_model)[1]

    @bentoml.api
    def classify(self, images: list[Any]) -> dict[str, Any]:
        """Digits: images as [N, 8, 8] or [N, 64] pixel values (0-16 scaled to 0-1) -> class and probabilities."""
        label = self.dataplane.model_label(settings.classify_model)
        with _http_errors(), track_request(label, "rest") as record:
            model, probabilities = self.dataplane.classify(
                _array(images, "images", np.float32), settings.classify_model
            )
            record.version = model.version
            return {
                "model": model.name,
                "version": model.version,
                "classes": probabilities.argmax(axis=1).tolist(),
                "probabilities": probabilities.round(6).tolist(),
            }

    @bentoml.api
    def predict(self, model: str, inputs: dict[str, list[Any]]) -> dict[str, Any]:
        """Any served model: named tensors as nested lists -> named outputs as nested lists."""
        with _http_errors(), track_request(self.dataplane.model_label(model), "rest") as record:
            served = self.dataplane.model(model)
            record.version = served.version
            dtypes = {spec.name: NUMPY_DTYPES[spec.datatype] for spec in served.inputs}
            tensors = [
                Tensor(name, _array(values, name, dtypes.get(name))) for name, values in inputs.items()
            ]
            response = self.dataplane.infer(InferenceRequest(model, tensors))
            return {
                "model": response.model,
                "version": response.version,
                "outputs": {t.name: t.data.tolist() for t in response.outputs},
            }


def _monitor_config(settings: ServiceSettings) -> MonitorConfig:
    return MonitorConfig(
        sample_rate=settings.drift_sample_rate,
        window_size=settings.drift_window_size,
        min_samples=settings.drift_min_samples,
        interval_s=settings.drift_interval_s,
    )


def _trigger(dataplane: DataPlane, monitor: DriftMonitor | None) -> Trigger | None:
    if monitor is None or not settings.reoptimise_enabled:
        return None
    policy = PolicyConfig(
        drift_share=settings.reoptimise_drift_share,
        drift_windows=settings.reoptimise_windows,
        latency_slo_ms=settings.latency_slo_ms,
        latency_windows=settings.reoptimise_windows,
        cooldown_s=settings.reoptimise_cooldown_s,
        max_runs_per_hour=settings.reoptimise_max_per_hour,
    )
    config = TriggerConfig(
        policy=policy,
        shadow_rows=settings.shadow_rows,
        build_time_budget_s=settings.reoptimise_time_budget_s,
        audit_log=settings.audit_log or audit_log_path(),
    )
    trigger = Trigger(DataPlaneControl(dataplane, monitor), config)
    monitor.subscribe(trigger.on_window)
    return trigger


def _array(values: Any, name: str, dtype: Any) -> np.ndarray:
    from service.errors import InvalidInput

    try:
        array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError):
        raise InvalidInput(f"{name!r} is not a rectangular array of {np.dtype(dtype).name} values") from None
    if array.dtype == object and dtype != np.dtype(object):
        raise InvalidInput(f"{name!r} is ragged")
    return array


# The decorators turned the class into a bentoml.Service; mypy still sees the class.
LeanServe.add_asgi_middleware(  # type: ignore[attr-defined]
    BatchedRouteMetrics, path="/embed", model=settings.embed_model, get_dataplane=_Current.get
)
