"""Faults and limits with real `leanserve serve` processes: the admin token, memory bounds under large
payloads, metrics of two servers on one store, stopping by process group, connections that never finish."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as triton_grpc
from servers import Server, free_port, start_server, stop_server
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration
LEANSERVE = str(Path(sys.executable).parent / "leanserve")


def _descendants(server: Server) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


def _all_gone(processes: list[psutil.Process], timeout: float) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


# -- 1. the admin token ------------------------------------------------------------------------
@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_admin_token_leaves_the_admin_api_off(
    demo_tags: dict[str, str], tmp_path: Path, blank: str
) -> None:
    server = start_server(
        tmp_path / "home", list(demo_tags.values()), {"LEANSERVE_ADMIN_TOKEN": blank}, via_cli=True
    )
    try:
        with server.client() as client:
            for headers in ({"Authorization": "Bearer"}, {}):
                response = client.post("/admin/models/digits/rollback", headers=headers)
                assert response.status_code == 404 and "LEANSERVE_ADMIN_TOKEN" in response.json()["error"]
            assert client.get("/readyz").status_code == 200
    finally:
        stop_server(server)


def test_a_short_admin_token_stops_the_server_before_it_starts(tmp_path: Path) -> None:
    env = dict(os.environ, LEANSERVE_ADMIN_TOKEN="short", BENTOML_HOME=str(tmp_path))
    done = subprocess.run(
        [LEANSERVE, "serve", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "LEANSERVE_ADMIN_TOKEN" in done.stderr and "at least 16 characters" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


# -- 2. memory is bounded per request and per worker ---------------------------------------------
LONG_TEXTS = ["word " * 4000] * 256  # 256 texts of 20,000 characters: ~5 MB of JSON


def _worker_rss_mb(server: Server) -> float:
    return max(p.memory_info().rss for p in _descendants(server)) / 2**20


def test_large_text_requests_are_served_and_memory_returns(demo_tags: dict[str, str], tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", list(demo_tags.values()), via_cli=True)
    try:
        body = {"inputs": [{"name": "text", "shape": [256], "datatype": "BYTES", "data": LONG_TEXTS}]}
        with server.client() as client:
            baseline = _worker_rss_mb(server)
            peak = baseline
            for _ in range(3):  # six requests: growing ~200 MB each, as it did, passes the bound
                v2 = client.post("/v2/models/minilm/infer", json=body)
                embed = client.post("/embed", json={"texts": LONG_TEXTS})
                assert v2.status_code == embed.status_code == 200, (v2.text[:300], embed.text[:300])
                peak = max(peak, _worker_rss_mb(server))
            assert len(embed.json()) == 256
        # Tokenising whole texts cost ~200 MB per such request and grew without bound.
        assert peak - baseline < 600, (baseline, peak)
    finally:
        stop_server(server)
    # The start-up line names the gRPC listener beside the HTTP one, on the interface --host named.
    grpc_port = server.grpc.rsplit(":", 1)[1]
    assert (
        f"on http://127.0.0.1:{server.http.rsplit(':', 1)[1]} (gRPC on 127.0.0.1:{grpc_port})"
        in server.log.read_text()
    )


def test_past_the_inflight_budget_requests_are_refused_at_once(
    demo_tags: dict[str, str], tmp_path: Path
) -> None:
    budget = 6 * 2**20  # one 5 MB text request at a time
    server = start_server(
        tmp_path / "home",
        list(demo_tags.values()),
        {"LEANSERVE_MAX_INFLIGHT_BYTES": str(budget)},
        via_cli=True,
    )
    body = {"inputs": [{"name": "text", "shape": [256], "datatype": "BYTES", "data": LONG_TEXTS}]}

    def call(_: int) -> tuple[int, float, str]:
        start = time.perf_counter()
        with server.client() as client:
            response = client.post("/v2/models/minilm/infer", json=body)
        return response.status_code, time.perf_counter() - start, response.headers.get("retry-after", "")

    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(call, range(6)))
        codes = [code for code, _, _ in results]
        assert 200 in codes and 503 in codes, codes
        refused = [(seconds, retry) for code, seconds, retry in results if code == 503]
        assert all(retry == "1" for _, retry in refused)
        grpc_client = triton_grpc.InferenceServerClient(server.grpc)
        text = triton_grpc.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"fits easily"], dtype=object))
        assert grpc_client.infer("minilm", [text]).as_numpy("sentence_embedding").shape == (1, 384)
        with server.client() as client:
            assert client.get("/readyz").status_code == 200
            metrics = client.get("/metrics").text
        assert re.search(
            r'leanserve_requests_total\{code="503",model="minilm",protocol="rest-v2"\} [1-9]', metrics
        )
    finally:
        stop_server(server)


def test_past_the_request_bound_requests_are_shed_at_once_and_the_rest_answered(
    demo_tags: dict[str, str], tmp_path: Path
) -> None:
    server = start_server(
        tmp_path / "home",
        list(demo_tags.values()),
        {"LEANSERVE_MAX_INFLIGHT_REQUESTS": "2"},
        via_cli=True,
    )
    texts = [f"sentence number {i} about serving models under load" for i in range(64)]

    def call(_: int) -> tuple[int, str, str]:
        with server.client() as client:
            response = client.post("/embed", json={"texts": texts})
        return response.status_code, response.headers.get("retry-after", ""), response.text

    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(32)))
        codes = sorted({code for code, _, _ in results})
        assert codes == [200, 503], codes
        for code, retry, text in results:
            if code == 503:
                assert retry == "1" and "LEANSERVE_MAX_INFLIGHT_REQUESTS" in json.loads(text)["error"]
            else:
                assert len(json.loads(text)) == len(texts)
        with server.client() as client:
            assert client.get("/readyz").status_code == 200  # probes pass; the server goes on
            assert client.post("/embed", json={"texts": ["after the burst"]}).status_code == 200
            metrics = client.get("/metrics").text
        assert re.search(
            r'leanserve_requests_total\{code="503",model="minilm",protocol="rest"\} [1-9]', metrics
        )
    finally:
        stop_server(server)


def test_a_grpc_request_past_the_budget_is_resource_exhausted(
    demo_tags: dict[str, str], tmp_path: Path
) -> None:
    server = start_server(
        tmp_path / "home",
        list(demo_tags.values()),
        {"LEANSERVE_MAX_INFLIGHT_BYTES": str(64 * 1024)},
        via_cli=True,
    )
    try:
        client = triton_grpc.InferenceServerClient(server.grpc)
        pixels = triton_grpc.InferInput("pixels", [300, 1, 8, 8], "FP32")  # ~77 KB of raw contents
        pixels.set_data_from_numpy(np.zeros((300, 1, 8, 8), np.float32))
        with pytest.raises(InferenceServerException, match="busy") as raised:
            client.infer("digits", [pixels])
        assert raised.value.status() == str(grpc.StatusCode.RESOURCE_EXHAUSTED)
        small = triton_grpc.InferInput("pixels", [2, 1, 8, 8], "FP32")
        small.set_data_from_numpy(np.zeros((2, 1, 8, 8), np.float32))
        assert client.infer("digits", [small]).as_numpy("logits").shape == (2, 10)
    finally:
        stop_server(server)


# -- issue 11.4: each server keeps its own metrics ---------------------------------------------------
def _count(server: Server, model: str) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    pattern = rf'leanserve_requests_total\{{code="200",model="{model}",protocol="rest"\}} ([0-9.]+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_a_second_server_on_the_same_store_leaves_the_first_ones_metrics(
    demo_tags: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "shared-home"
    first = start_server(home, list(demo_tags.values()), via_cli=True)
    second: Server | None = None
    try:
        with first.client() as client:
            for _ in range(5):
                assert client.post("/classify", json={"images": [[0.0] * 64]}).status_code == 200
        assert _count(first, "digits") == 5
        second = start_server(home, list(demo_tags.values()), via_cli=True)
        assert _count(first, "digits") == 5  # not wiped by the second start
        assert _count(second, "digits") == 0  # and the second does not show the first's
        metrics_dirs = home / "leanserve-metrics"
        assert {p.name for p in metrics_dirs.iterdir()} == {str(first.process.pid), str(second.process.pid)}
    finally:
        if second is not None:
            stop_server(second)
        stop_server(first)
    assert not list((home / "leanserve-metrics").iterdir())  # each removed its own on exit


# -- 5. stopping the server: workers end with it ----------------------------------------------------
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_process_group_stops_every_worker_and_a_restart_binds(
    demo_tags: dict[str, str], tmp_path: Path, signal_number: int
) -> None:
    ports = (free_port(), free_port())
    home = tmp_path / "home"
    server = start_server(home, list(demo_tags.values()), via_cli=True, new_session=True, ports=ports)
    workers = _descendants(server)
    assert workers
    os.killpg(server.process.pid, signal_number)
    server.process.wait(timeout=30)
    assert _all_gone(workers, timeout=30), [p.pid for p in workers if p.is_running()]
    restarted = start_server(home, list(demo_tags.values()), via_cli=True, ports=ports)
    try:
        with restarted.client() as client:
            assert client.post("/classify", json={"images": [[0.0] * 64]}).status_code == 200
    finally:
        stop_server(restarted)


# -- 7. connections that never finish are closed -----------------------------------------------------
def _closed_within(conn: socket.socket, seconds: float) -> bool:
    conn.settimeout(seconds)
    try:
        while conn.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_idle_and_half_sent_connections_are_closed(demo_tags: dict[str, str], tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "home",
        list(demo_tags.values()),
        {"LEANSERVE_REQUEST_READ_TIMEOUT_S": "2", "LEANSERVE_GRPC_IDLE_TIMEOUT_S": "3"},
        via_cli=True,
    )
    http_address = ("127.0.0.1", int(server.http.rsplit(":", 1)[1]))
    grpc_address = ("127.0.0.1", int(server.grpc.rsplit(":", 1)[1]))
    connections: list[socket.socket] = []
    try:
        idle = [socket.create_connection(http_address) for _ in range(50)]
        half = [socket.create_connection(http_address) for _ in range(10)]
        for conn in half:
            conn.sendall(b'POST /embed HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"texts"')
        silent_grpc = [socket.create_connection(grpc_address) for _ in range(5)]
        connections = idle + half + silent_grpc
        with server.client() as client:  # others are served meanwhile
            assert client.post("/classify", json={"images": [[0.0] * 64]}).status_code == 200
        assert all(_closed_within(conn, 10) for conn in connections)
        with grpc.insecure_channel(server.grpc) as channel:  # a channel left idle is closed too
            grpc.channel_ready_future(channel).result(timeout=10)
            states: list[grpc.ChannelConnectivity] = []
            channel.subscribe(states.append)
            time.sleep(6)
            assert grpc.ChannelConnectivity.IDLE in states[1:], states
        with httpx.Client(base_url=server.http, timeout=10) as client:
            assert client.get("/readyz").status_code == 200
    finally:
        for conn in connections:
            conn.close()
        stop_server(server)
