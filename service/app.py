"""The BentoML service: native REST endpoints, OIP v2 REST under /v2, admin under /admin,
and the OIP v2 gRPC server on its own port, all over one DataPlane.

    bentoml serve service.app:LeanServe            # HTTP :3000, gRPC :8001
"""

from __future__ import annotations

import gc
import logging
import os
from typing import TYPE_CHECKING

import anyio.to_thread
import bentoml

from monitoring.metrics import count_refused
from monitoring.monitor import DriftMonitor
from monitoring.parent_death import die_with_parent
from monitoring.trigger import Trigger
from service import http_deadline, native
from service.admin import create_admin_app
from service.admission import InflightBudget
from service.client_errors import configure_worker_logging
from service.control import DataPlaneControl
from service.dataplane import DataPlane
from service.errors import ModelNotReady
from service.front_door import JSON, FrontDoor
from service.monitoring_config import monitor_config, trigger_config
from service.monitoring_routes import create_monitoring_app
from service.native import create_native_app
from service.settings import ServiceSettings
from service.v2.rest import create_v2_app, v2_root_routes

if TYPE_CHECKING:
    from service.grpc.server import GrpcServer

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
logger = logging.getLogger("leanserve")
settings = ServiceSettings()
BUDGET = InflightBudget(
    settings.max_inflight_bytes, settings.max_inflight_requests
)  # per worker: HTTP and gRPC requests together
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
PROBE_THREADS = 8  # worker threads beyond the admitted requests, for requests without a body
UNTRACED_ROUTES = ["/embed", "/classify", "/predict", "/v2", "/metrics", "/readyz", "/livez"]
NATIVE_ROUTES = native.ROUTES
OCTET_STREAM = "application/octet-stream"


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
        named, protocol = native.route_model(path, settings), "rest"
    elif path.startswith("/v2/models/"):
        named, protocol = path.split("/")[3], "rest-v2"
    else:
        return  # admin and monitoring calls are not model requests
    count_refused(native.model_label(_Current.get, named), protocol, status)


# Native routes and GET /v2 (tritonclient does not follow the redirect a mount at /v2 would answer).
@bentoml.asgi_app(create_native_app(_Current.get, settings, v2_root_routes()), path="/")
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
            self.monitor.start()  # imports the drift engine (Evidently, pandas): many objects
        freeze_startup_heap()

    @bentoml.on_shutdown
    def stop_drift_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.trigger is not None:
            self.trigger.stop()

    @bentoml.on_startup
    async def size_worker_threads(self) -> None:
        # Requests wait for the model on AnyIO's worker threads (HTTP and gRPC); one thread per request
        # the worker admits, so none waits in AnyIO's limiter (40 by default) on top of the batcher,
        # and a few more, so probes and /metrics never wait behind inference. The limiter belongs
        # to the running event loop, hence a startup hook.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = settings.max_inflight_requests + PROBE_THREADS

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


def freeze_startup_heap() -> None:
    """Take what startup allocated (imports, models, the drift engine) out of the garbage collector's
    reach. Python's full collections walk every tracked object; with Evidently and pandas loaded that
    walk stalled requests under load: at 32 concurrent clients (wrk, MiniLM) p99 fell from ~165 ms to
    ~50-60 ms and throughput rose ~15 % once frozen. Garbage is collected first so none is kept."""
    gc.collect()
    gc.freeze()


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
