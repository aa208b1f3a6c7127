"""The C load generators (wrk, h2load) against small real servers: what they send arrives, and what
comes back (rates, latencies, non-2xx answers) is read from their real output."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from asgi_servers import uvicorn_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks import c_load

pytestmark = pytest.mark.skipif(c_load.available() is not None, reason=str(c_load.available()))

SEEN: list[bytes] = []


async def echo(request: Request) -> Response:
    SEEN.append(await request.body())
    return Response(b"{}", media_type="application/json")


async def busy(request: Request) -> Response:
    return Response(b'{"error": "busy"}', status_code=503, media_type="application/json")


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/busy", busy, methods=["POST"])])
    with uvicorn_thread(app) as address:
        yield f"http://{address}"


def test_wrk_posts_the_body_and_reports_rate_and_latencies(http_url: str) -> None:
    SEEN.clear()
    result = c_load.wrk_post(f"{http_url}/echo", b'{"texts": ["a ]] b"]}', concurrency=4, seconds=1)
    assert result.requests > 10 and result.per_s > 10 and result.not_2xx == 0
    assert 0 < result.p50_ms <= result.p99_ms
    assert set(SEEN) == {b'{"texts": ["a ]] b"]}'}


def test_wrk_counts_answers_that_are_not_2xx(http_url: str) -> None:
    result = c_load.wrk_post(f"{http_url}/busy", b"{}", concurrency=2, seconds=1)
    assert result.requests > 0 and result.not_2xx == result.requests


def test_h2load_calls_a_unary_grpc_method_with_the_framed_message() -> None:
    received: list[bytes] = []

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        received.append(request)
        return b"ok"

    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
    )

    async def serve_for(seconds: float) -> c_load.LoadResult:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await asyncio.to_thread(
                c_load.h2load_grpc, f"127.0.0.1:{port}", "/test.Echo/Call", b"\x01\x02hello", 2, seconds
            )
        finally:
            await server.stop(None)

    result = asyncio.run(serve_for(2))
    assert result.requests > 10 and result.per_s > 0 and result.not_2xx == 0
    assert 0 < result.p50_ms <= result.p99_ms
    assert set(received) == {b"\x01\x02hello"}


def test_a_grpc_frame_is_flag_length_message() -> None:
    assert c_load.grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"


def test_wrk_output_without_a_summary_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="requests in"):
        c_load.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused", 1)
