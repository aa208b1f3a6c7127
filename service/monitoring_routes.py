"""Drift reports over HTTP (mounted under /monitoring): the latest one as JSON or Evidently HTML."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from monitoring.monitor import DriftMonitor
from service.dataplane import DataPlane
from service.errors import ModelNotFound
from service.http_errors import ERROR_HANDLERS


def create_monitoring_app(get_dataplane: Callable[[], DataPlane]) -> Starlette:
    def monitor_for(request: Request) -> tuple[DriftMonitor, str]:
        plane = get_dataplane()
        name = request.path_params["model"]
        plane.slots(name)  # unknown model -> 404
        if plane.monitor is None:
            raise ModelNotFound("drift monitoring is off (LEANSERVE_DRIFT_ENABLED=false)")
        if plane.monitor.latest(name) is None:
            have, need = plane.monitor.samples(name), plane.monitor.config.min_samples
            raise ModelNotFound(f"no drift report for {name!r} yet: {have} of {need} samples collected")
        return plane.monitor, name

    async def report(request: Request) -> Response:
        monitor, name = monitor_for(request)
        latest = monitor.latest(name)
        assert latest is not None
        return JSONResponse(latest.to_dict())

    async def html(request: Request) -> Response:
        monitor, name = monitor_for(request)
        # Evidently's HTML takes seconds to render: keep it off the event loop.
        page = await anyio.to_thread.run_sync(monitor.html, name)
        return HTMLResponse(page or "")

    return Starlette(
        routes=[Route("/drift/{model}", report), Route("/drift/{model}/html", html)],
        exception_handlers=ERROR_HANDLERS,
    )
