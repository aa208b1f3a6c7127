"""Swapping the live model of a running server under load: no request fails, answers switch version
(from an ONNX Runtime variant to an OpenVINO one, and back)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from builds import OPENVINO_INT8
from servers import ADMIN_TOKEN, Server, build_demo, start_server, stop_server

from optimise.runtimes import OPENVINO

pytestmark = pytest.mark.integration
BODY = {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}]}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def swap_server(
    demo_tags: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str, str]]:
    # A new version of the same model on the other runtime: NNCF int8 OpenVINO IR.
    second = build_demo("digits", OPENVINO_INT8, runtime=OPENVINO)
    server = start_server(tmp_path_factory.mktemp("swap") / "bentoml", [demo_tags["digits"]])
    yield server, demo_tags["digits"].split(":")[1], second.split(":")[1]
    stop_server(server)


def _hammer(server: Server, stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    with httpx.Client(base_url=server.http, timeout=30) as client:
        while not stop.is_set():
            response = client.post("/v2/models/digits/infer", json=BODY)
            seen.append((response.status_code, response.json().get("model_version", response.text)))


def test_swap_under_load_then_roll_back(swap_server: tuple[Server, str, str]) -> None:
    server, first, second = swap_server
    stop = threading.Event()
    sequences: list[list[tuple[int, str]]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=_hammer, args=(server, stop, seq)) for seq in sequences]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        with server.client() as client:
            loaded = client.post("/admin/models/digits/load", json={"version": second}, headers=AUTH)
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["live"] == second
            time.sleep(1.0)
            refused = client.post(
                "/admin/models/digits/load", json={"version": "no-such-version"}, headers=AUTH
            )
            assert refused.status_code == 404  # not in the store: unknown, as the error table says
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    for sequence in sequences:
        assert sequence and all(status == 200 for status, _ in sequence), sequence[:5]
        versions = [version for _, version in sequence]
        assert versions[0] == first and versions[-1] == second
        switch = versions.index(second)
        assert set(versions[switch:]) == {second}, "an answer from the old version after the switch"

    with server.client() as client:
        rolled = client.post("/admin/models/digits/rollback", headers=AUTH)
        assert rolled.status_code == 200 and rolled.json()["live"] == first
        assert client.post("/v2/models/digits/infer", json=BODY).json()["model_version"] == first
        assert client.post("/admin/models/digits/rollback").status_code == 401
