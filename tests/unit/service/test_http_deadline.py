"""A real uvicorn server with the read deadline: idle and half-sent connections are closed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service import http_deadline

DEADLINE_S = 0.5


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    http_deadline.install(DEADLINE_S)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        Starlette(routes=[Route("/", echo, methods=["POST"])]), log_level="warning", timeout_keep_alive=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    assert isinstance(config.http_protocol_class, type)
    assert issubclass(config.http_protocol_class, http_deadline.DeadlineHttpProtocol)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(timeout=5)


def _read_until_closed(conn: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (seconds from now)."""
    start = time.monotonic()
    conn.settimeout(timeout)
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    return data, time.monotonic() - start


def test_a_connection_that_sends_nothing_is_closed(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as conn:
        data, waited = _read_until_closed(conn, timeout=10)
    assert data == b"" and DEADLINE_S * 0.8 < waited < DEADLINE_S + 2


def test_half_sent_headers_get_a_json_408_then_close(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-len")
        data, waited = _read_until_closed(conn, timeout=10)
    assert data.startswith(b"HTTP/1.1 408") and b'{"error":' in data and waited < DEADLINE_S + 2


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_a_malformed_request_gets_a_json_400_then_close(address: tuple[str, int], head: bytes) -> None:
    with socket.create_connection(address) as conn:
        conn.sendall(head)
        data, _ = _read_until_closed(conn, timeout=10)
    status, _, body = data.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in status
    assert json.loads(body)["error"].startswith("malformed HTTP request")


def test_a_half_sent_body_is_cut_off(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
        data, waited = _read_until_closed(conn, timeout=10)
    assert data.startswith(b"HTTP/1.1 408") and waited < DEADLINE_S + 2


def test_a_whole_request_is_answered_and_the_idle_connection_closed_later(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        data, _ = _read_until_closed(conn, timeout=10)  # keep-alive: closed after 1 s of idle
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b'{"size":3}')


def test_two_requests_on_one_connection_each_get_their_deadline(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as conn:
        for _ in range(2):
            conn.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab")
            time.sleep(DEADLINE_S * 0.6)  # together longer than one deadline, each well within
        data, _ = _read_until_closed(conn, timeout=10)
    assert data.count(b"HTTP/1.1 200") == 2
