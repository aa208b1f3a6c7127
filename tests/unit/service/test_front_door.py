"""The front door in front of a small Starlette app: limits, admission, media types, one error shape."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from service.admission import InflightBudget
from service.front_door import JSON, FrontDoor

LIMIT = 1024


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"size": len(body)})


async def plain_error(request: Request) -> Response:
    return PlainTextResponse("it broke in plain text", status_code=409)


async def list_error(request: Request) -> Response:
    return JSONResponse([{"error": "wrapped in a list"}], status_code=400)


async def pydantic_error(request: Request) -> Response:
    detail = [{"loc": ["body", "texts", 0], "msg": "String should have at most 5 characters"}]
    return JSONResponse({"error": "1 validation error for Input", "detail": detail}, status_code=400)


async def crash(request: Request) -> Response:
    raise RuntimeError("a bug with secret request data")


def media_types(method: str, path: str) -> tuple[str, ...] | None:
    return (JSON,) if method == "POST" and path == "/echo" else None


@pytest.fixture
def budget() -> InflightBudget:
    return InflightBudget(4 * LIMIT)


@pytest.fixture
def client(budget: InflightBudget) -> Iterator[TestClient]:
    routes = [
        Route("/echo", echo, methods=["POST"]),
        Route("/any", echo, methods=["POST", "GET"]),
        Route("/plain", plain_error),
        Route("/list", list_error),
        Route("/pydantic", pydantic_error),
        Route("/crash", crash),
    ]
    app = FrontDoor(Starlette(routes=routes), max_body_bytes=LIMIT, budget=budget, media_types=media_types)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_body_within_the_limit_passes_whole(client: TestClient, budget: InflightBudget) -> None:
    response = client.post("/echo", content=b"x" * LIMIT, headers={"content-type": JSON})
    assert response.status_code == 200 and response.json() == {"size": LIMIT}
    assert budget.used_bytes == 0  # released when the answer went out


def test_a_declared_length_over_the_limit_is_413_as_json(client: TestClient) -> None:
    response = client.post("/echo", content=b"x" * (LIMIT + 1), headers={"content-type": JSON})
    assert response.status_code == 413 and str(LIMIT) in response.json()["error"]


def test_a_chunked_body_over_the_limit_is_413(client: TestClient, budget: InflightBudget) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"y" * 200

    response = client.post("/any", content=chunks())
    assert response.status_code == 413 and response.headers["content-type"] == JSON
    assert budget.used_bytes == 0


def test_a_chunked_body_within_the_limit_passes(client: TestClient) -> None:
    response = client.post("/any", content=iter([b"a" * 100, b"b" * 100]))
    assert response.json() == {"size": 200}


def test_a_bad_content_length_is_a_400(client: TestClient) -> None:
    response = client.post("/any", content=b"abc", headers={"content-length": "3x"})
    assert response.status_code == 400 and "Content-Length" in response.json()["error"]


def test_past_the_budget_a_request_is_refused_at_once_with_retry_after(
    client: TestClient, budget: InflightBudget
) -> None:
    assert budget.try_reserve(4 * LIMIT - 10)  # other requests hold nearly all of it
    try:
        response = client.post("/echo", content=b"x" * 100, headers={"content-type": JSON})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "busy" in response.json()["error"]
        assert client.get("/any").status_code == 200  # requests without a body always pass
    finally:
        budget.release(4 * LIMIT - 10)
    assert client.post("/echo", content=b"x" * 100, headers={"content-type": JSON}).status_code == 200


def test_past_the_request_bound_a_request_with_a_body_is_shed_at_once(budget: InflightBudget) -> None:
    bounded = InflightBudget(4 * LIMIT, limit_requests=1)
    app = FrontDoor(
        Starlette(routes=[Route("/any", echo, methods=["POST", "GET"])]), LIMIT, bounded, media_types
    )
    with TestClient(app) as client:
        assert bounded.try_admit()  # another request is being worked on
        try:
            response = client.post("/any", content=b"x" * 10)
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert "LEANSERVE_MAX_INFLIGHT_REQUESTS" in response.json()["error"]
            assert client.get("/any").status_code == 200  # probes and reads count for nothing
        finally:
            bounded.leave()
        assert client.post("/any", content=b"x" * 10).status_code == 200
        assert bounded.requests == 0 and bounded.used_bytes == 0


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded", "text/plain"]
)
def test_a_body_of_a_type_the_route_does_not_take_is_415_naming_the_type(
    client: TestClient, content_type: str
) -> None:
    response = client.post("/echo", content=b'{"a": 1}', headers={"content-type": content_type})
    assert response.status_code == 415
    error = response.json()["error"]
    assert JSON in error and content_type.split(";")[0] in error


@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=utf-8", "application/problem+json"]
)
def test_json_types_and_a_missing_type_are_taken(client: TestClient, content_type: str) -> None:
    assert client.post("/echo", content=b"{}", headers={"content-type": content_type}).status_code == 200
    assert client.post("/echo", content=b"{}").status_code == 200


def test_plain_text_errors_leave_as_json(client: TestClient) -> None:
    response = client.get("/plain")
    assert response.status_code == 409 and response.json() == {"error": "it broke in plain text"}
    assert int(response.headers["content-length"]) == len(response.content)


def test_list_wrapped_errors_are_unwrapped(client: TestClient) -> None:
    assert client.get("/list").json() == {"error": "wrapped in a list"}


def test_validation_errors_name_the_field(client: TestClient) -> None:
    body = client.get("/pydantic").json()
    assert body == {"error": "texts.0: String should have at most 5 characters"}  # one shape, no detail list


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (JSONResponse({"ready": False}, status_code=503), {"error": "service unavailable", "ready": False}),
        (PlainTextResponse("Service Unavailable", status_code=503), {"error": "service unavailable"}),
        (PlainTextResponse("", status_code=599), {"error": "HTTP 599"}),
    ],
)
def test_a_routes_own_5xx_answer_keeps_its_fields_and_names_the_status(
    budget: InflightBudget, route: Response, expected: dict[str, object]
) -> None:
    async def answer(request: Request) -> Response:
        return route

    app = FrontDoor(Starlette(routes=[Route("/r", answer)]), LIMIT, budget, media_types)
    with TestClient(app) as client:
        response = client.get("/r")
    assert response.status_code == route.status_code and response.json() == expected


def test_an_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


def test_a_crash_is_a_json_500_without_internals(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.get("/crash")
    assert response.status_code == 500 and response.json() == {"error": "internal error"}
    assert "secret request data" not in response.text
    assert json.loads(response.text)  # valid JSON


async def silent(scope: object, receive: object, send: object) -> None:
    return None


def test_a_route_that_answers_nothing_still_gets_a_json_500(budget: InflightBudget) -> None:
    app = FrontDoor(silent, max_body_bytes=LIMIT, budget=budget, media_types=media_types)
    response = TestClient(app).get("/")  # no lifespan: the silent app answers nothing at all
    assert response.status_code == 500 and response.json() == {"error": "internal error"}


def test_a_client_gone_mid_body_still_gets_an_answer_sent(budget: InflightBudget) -> None:
    import asyncio

    sent: list[dict[str, object]] = []
    messages = iter([{"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict[str, object]:
        return next(messages)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "headers": [(b"content-length", b"10")]}
    door = FrontDoor(silent, max_body_bytes=LIMIT, budget=budget, media_types=media_types)
    asyncio.run(door(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert budget.used_bytes == 0


async def echo_encoding(request: Request) -> Response:
    body = await request.body()
    headers = {k: request.headers.get(k) for k in ("content-encoding", "content-length")}
    return JSONResponse({"body": body.decode(), **headers})


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZIP"])
def test_a_compressed_body_reaches_the_route_inflated(budget: InflightBudget, encoding: str) -> None:
    app = FrontDoor(
        Starlette(routes=[Route("/e", echo_encoding, methods=["POST"])]), LIMIT, budget, media_types
    )
    text = '{"texts": ["' + "a" * 300 + '"]}'
    packed = gzip.compress(text.encode()) if encoding.lower() == "gzip" else zlib.compress(text.encode())
    with TestClient(app) as client:
        response = client.post("/e", content=packed, headers={"content-encoding": encoding})
    assert response.json() == {"body": text, "content-encoding": None, "content-length": str(len(text))}
    assert budget.used_bytes == 0


@pytest.mark.parametrize(
    ("body", "encoding", "status", "message"),
    [
        (b"{}", "br", 415, "unsupported Content-Encoding 'br'"),
        (gzip.compress(b" " * (LIMIT + 1)), "gzip", 413, "exceeds the limit"),
        (b"\x1f\x8b junk", "gzip", 400, "corrupt"),
        (gzip.compress(b"{}")[:-8], "gzip", 400, "truncated"),
    ],
)
def test_bad_compressed_bodies_are_refused_on_every_route(
    client: TestClient, budget: InflightBudget, body: bytes, encoding: str, status: int, message: str
) -> None:
    for path in ("/echo", "/any"):
        response = client.post(
            path, content=body, headers={"content-encoding": encoding, "content-type": JSON}
        )
        assert response.status_code == status and message in response.json()["error"], response.text
    assert budget.used_bytes == 0
