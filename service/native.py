"""The native REST routes (/embed, /classify, /predict) as a Starlette app that the service mounts at "/".

They were BentoML API methods; profiled at concurrency 1 (`py-spy`, 20-token MiniLM rows), BentoML's
per-call machinery (signature binding, dependency injection, pydantic I/O models, stdlib JSON of
the response) cost more than the OIP v2 route in front of the same data plane, and made the curl
user's first call the slowest path. Here the body is validated by pydantic's compiled JSON parser
and the answer written by orjson straight from the NumPy array; everything else is as the OIP v2
routes do it: the front door has bounded, inflated and admitted the body, the data plane runs the
model on a worker thread, a `ServingError` becomes its status and `{"error": ...}`.

Bodies:
    POST /embed     {"texts": [str, ...]}                   -> [[float, ...], ...]  (one row per text)
    POST /classify  {"images": [N, 8, 8] or [N, 64]}        -> {"model", "version", "classes", "probabilities"}
    POST /predict   {"model": str, "inputs": {name: list}}  -> {"model", "version", "outputs": {name: list}}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import numpy as np
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from monitoring.metrics import UNKNOWN_MODEL, RequestRecord, track_request
from service.dataplane import DataPlane
from service.errors import InvalidInput, ServingError
from service.front_door import JSON, received_at
from service.http_errors import error_response
from service.settings import ServiceSettings
from service.types import NUMPY_DTYPES, InferenceRequest, Tensor
from service.v2.codec import array_from_json, json_bytes

PROTOCOL = "rest"
ROUTES = ("/embed", "/classify", "/predict")

Body = TypeVar("Body", bound=BaseModel)


class ClassifyBody(BaseModel):
    images: list[Any]


class PredictBody(BaseModel):
    model: str
    inputs: dict[str, list[Any]]


def _embed_body(settings: ServiceSettings) -> type[BaseModel]:
    texts = Annotated[
        list[Annotated[str, Field(max_length=settings.max_text_chars)]],
        Field(min_length=1, max_length=settings.max_texts),
    ]

    class EmbedBody(BaseModel):
        texts: texts

    return EmbedBody


def parse_body(adapter: TypeAdapter[Body], body: bytes) -> Body:
    """The body as `adapter`'s model; InvalidInput naming each failing field (never the values sent)."""
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(describe(exc)) from None


def describe(error: ValidationError, limit: int = 5) -> str:
    """'texts.0: Input should be a valid string; ...' for pydantic's first `limit` errors."""
    parts = []
    for detail in error.errors(include_input=False, include_url=False)[:limit]:
        location = ".".join(str(part) for part in detail["loc"])
        parts.append(f"{location}: {detail['msg']}" if location else detail["msg"])
    return "; ".join(parts)


Handler = Callable[[DataPlane, Any, RequestRecord], bytes]


def route_model(route: str, settings: ServiceSettings) -> str | None:
    """The model a native route serves by configuration; None for /predict (the body names it)."""
    return {"/embed": settings.embed_model, "/classify": settings.classify_model}.get(route)


def model_label(get_dataplane: Callable[[], DataPlane], name: str | None) -> str:
    """`name` as a metric label (`DataPlane.model_label`); UNKNOWN_MODEL without a name or a data plane."""
    if name is None:
        return UNKNOWN_MODEL
    try:
        return get_dataplane().model_label(name)
    except ServingError:  # no data plane yet
        return UNKNOWN_MODEL


def create_native_app(
    get_dataplane: Callable[[], DataPlane], settings: ServiceSettings, extra_routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """The native routes plus `extra_routes`; `get_dataplane` is called per request (the service
    builds its data plane after this app exists). Unknown paths and methods are 404 / 405 as JSON."""
    return Starlette(
        routes=[*native_routes(get_dataplane, settings), *extra_routes],
        exception_handlers={HTTPException: not_found_or_not_allowed},
    )


def native_routes(get_dataplane: Callable[[], DataPlane], settings: ServiceSettings) -> list[BaseRoute]:
    embed_adapter: TypeAdapter[Any] = TypeAdapter(_embed_body(settings))
    classify_adapter = TypeAdapter(ClassifyBody)
    predict_adapter = TypeAdapter(PredictBody)

    def embed(dataplane: DataPlane, body: Any, record: RequestRecord) -> bytes:
        model, embeddings = dataplane.embed(list(body.texts), settings.embed_model)
        record.version = model.version
        return json_bytes(embeddings)

    def classify(dataplane: DataPlane, body: ClassifyBody, record: RequestRecord) -> bytes:
        pixels = array_from_json("images", body.images, np.dtype(np.float32))
        model, probabilities = dataplane.classify(pixels, settings.classify_model)
        record.version = model.version
        return json_bytes(
            {
                "model": model.name,
                "version": model.version,
                "classes": probabilities.argmax(axis=1),
                "probabilities": probabilities.round(6),
            }
        )

    def predict(dataplane: DataPlane, body: PredictBody, record: RequestRecord) -> bytes:
        served = dataplane.model(body.model)
        record.version = served.version
        dtypes = {spec.name: NUMPY_DTYPES[spec.datatype] for spec in served.inputs}
        unknown = sorted(set(body.inputs) - set(dtypes))
        if unknown:
            raise InvalidInput(
                f"model {body.model!r} has no input {unknown[0]!r}; its inputs are {sorted(dtypes)}"
            )
        tensors = [
            Tensor(name, array_from_json(name, values, dtypes[name])) for name, values in body.inputs.items()
        ]
        response = dataplane.infer(InferenceRequest(body.model, tensors))
        return json_bytes(
            {
                "model": response.model,
                "version": response.version,
                "outputs": {t.name: t.data for t in response.outputs},
            }
        )

    def endpoint(
        route: str, adapter: TypeAdapter[Any], model_of: Callable[[Any], str], handler: Handler
    ) -> Callable[[Request], Awaitable[Response]]:
        fixed_model = route_model(route, settings)

        async def answer(request: Request) -> Response:
            # Timed from when the server received the request (the front door's stamp), so that
            # request minus inference is all the server adds.
            started = received_at(request.scope)
            label = model_label(get_dataplane, fixed_model)
            try:
                with track_request(label, PROTOCOL, started) as record:
                    dataplane = get_dataplane()
                    body = await request.body()  # bounded, inflated and admitted by the front door

                    def run() -> bytes:
                        parsed = parse_body(adapter, body)
                        record.model = dataplane.model_label(model_of(parsed))
                        return handler(dataplane, parsed, record)

                    # Parsing, inference and encoding on a worker thread: a large body would stall the loop.
                    content = await anyio.to_thread.run_sync(run)
            except ServingError as exc:
                return error_response(exc, PROTOCOL, route)
            return Response(content, media_type=JSON)

        return answer

    post = ["POST"]
    return [
        Route(
            "/embed", endpoint("/embed", embed_adapter, lambda _: settings.embed_model, embed), methods=post
        ),
        Route(
            "/classify",
            endpoint("/classify", classify_adapter, lambda _: settings.classify_model, classify),
            methods=post,
        ),
        Route("/predict", endpoint("/predict", predict_adapter, lambda b: b.model, predict), methods=post),
    ]


async def not_found_or_not_allowed(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 in the one error shape."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
