"""Admin routes (mounted under /admin): list versions, load, promote, roll back.

They exist only when LEANSERVE_ADMIN_TOKEN is set, and every call needs it as a
bearer token, compared in constant time. Loading runs off the event loop: it
reads, hashes and smoke-tests a model, which takes seconds.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from monitoring.policy import Reason
from monitoring.trigger import Trigger
from service import repository
from service.dataplane import DataPlane
from service.errors import AdminDisabled, InvalidInput, RunInProgress, Unauthorised
from service.http_errors import ERROR_HANDLERS
from service.served_model import ServedModel
from service.settings import ServiceSettings

# BentoML's tag rule for versions: letters, digits, '.', '_' and '-', at most 63 characters.
VERSION_PATTERN = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?", re.IGNORECASE)
VERSION_RULE = "letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 63"


def _version(model: ServedModel | None) -> str | None:
    return model.version if model is not None else None


def create_admin_app(
    get_dataplane: Callable[[], DataPlane],
    settings: ServiceSettings,
    get_trigger: Callable[[], Trigger | None] = lambda: None,
) -> Starlette:
    def authorise(request: Request) -> DataPlane:
        if settings.admin_token is None:
            raise AdminDisabled("admin routes are disabled: set LEANSERVE_ADMIN_TOKEN to enable them")
        scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
        supplied = supplied.strip()
        expected = settings.admin_token.get_secret_value().encode()
        # An empty bearer never matches (the settings refuse an empty token; this keeps it so here too).
        if scheme.lower() != "bearer" or not supplied or not hmac.compare_digest(supplied.encode(), expected):
            raise Unauthorised("missing or wrong admin bearer token")
        return get_dataplane()

    def describe(plane: DataPlane, name: str) -> dict[str, Any]:
        slot = plane.slots(name)
        return {
            "name": name,
            "live": _version(slot.live),
            "previous": plane.previous_version(name),
            "staged": _version(slot.staged),
            "stored": repository.versions(name),
            "load_error": slot.load_error,
        }

    async def list_models(request: Request) -> JSONResponse:
        plane = authorise(request)
        return JSONResponse({"models": [describe(plane, n) for n in plane.model_names()]})

    async def versions(request: Request) -> JSONResponse:
        return JSONResponse(describe(authorise(request), request.path_params["name"]))

    async def load(request: Request) -> JSONResponse:
        plane = authorise(request)
        name = request.path_params["name"]
        plane.slots(name)  # an unknown model is 404 whatever the body holds
        try:
            body = await request.json()
            version, promote = body["version"], body.get("promote", True)
        except (ValueError, KeyError, TypeError):
            raise InvalidInput('body must be JSON like {"version": "...", "promote": true}') from None
        if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
            raise InvalidInput(
                f"version must be a stored version string ({VERSION_RULE}), not {version!r:.80}"
            )
        if not isinstance(promote, bool):
            raise InvalidInput(f"promote must be true or false, not {promote!r:.40}")
        await anyio.to_thread.run_sync(plane.stage, name, version)
        if promote:
            plane.promote(name)
        return JSONResponse(describe(plane, name))

    async def promote(request: Request) -> JSONResponse:
        plane = authorise(request)
        plane.promote(request.path_params["name"])
        return JSONResponse(describe(plane, request.path_params["name"]))

    async def rollback(request: Request) -> JSONResponse:
        plane = authorise(request)
        # After a restart the previous version is loaded first: off the event loop.
        await anyio.to_thread.run_sync(plane.rollback, request.path_params["name"])
        return JSONResponse(describe(plane, request.path_params["name"]))

    def trigger_for(request: Request) -> tuple[DataPlane, Trigger]:
        plane = authorise(request)
        trigger = get_trigger()
        if trigger is None:
            raise AdminDisabled(
                "re-optimisation is off (LEANSERVE_REOPTIMISE_ENABLED=false or drift monitoring off)"
            )
        return plane, trigger

    async def reoptimise(request: Request) -> JSONResponse:
        plane, trigger = trigger_for(request)
        name = request.path_params["name"]
        plane.model(name)  # unknown or not loaded: 404 / 503
        if not trigger.request(name, Reason.MANUAL, "requested through the admin API"):
            raise RunInProgress(
                f"a re-optimisation of {name} is already queued or running; its outcome goes to the audit log"
            )
        return JSONResponse({"model": name, "queued": True}, status_code=202)

    async def alertmanager(request: Request) -> JSONResponse:
        """Alertmanager webhook: every firing alert that names a served model starts a run."""
        plane, trigger = trigger_for(request)
        try:
            alerts = (await request.json())["alerts"]
            firing = [
                (a["labels"].get("model"), a["labels"].get("alertname", ""))
                for a in alerts
                if a["status"] == "firing"
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidInput("body is not an Alertmanager webhook payload") from None
        served = set(plane.model_names())
        queued = [m for m, alert in firing if m in served and trigger.request(m, Reason.ALERT, alert)]
        return JSONResponse({"queued": queued}, status_code=202)

    return Starlette(
        routes=[
            Route("/models", list_models),
            Route("/models/{name}/versions", versions),
            Route("/models/{name}/load", load, methods=["POST"]),
            Route("/models/{name}/promote", promote, methods=["POST"]),
            Route("/models/{name}/rollback", rollback, methods=["POST"]),
            Route("/models/{name}/reoptimise", reoptimise, methods=["POST"]),
            Route("/alertmanager", alertmanager, methods=["POST"]),
        ],
        exception_handlers=ERROR_HANDLERS,
    )
