"""One live-version path: a server that started without its model becomes ready on every signal
(HTTP readiness, gRPC health overall and per service, leanserve_model_ready, leanserve_model_info,
the load error) as soon as a good version is promoted through the admin API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from servers import ADMIN_TOKEN, Server, start_server, stop_server

from service.grpc.server import SERVICE_NAME

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Signals:
    http_ready: bool
    grpc_health: tuple[int, int]  # overall (""), the inference service
    model_ready: float | None
    live_info_versions: tuple[str, ...]  # versions whose leanserve_model_info is 1
    load_error: str | None


def read_signals(server: Server, client: httpx.Client) -> Signals:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        health = tuple(
            int(stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5).status)
            for s in ("", SERVICE_NAME)
        )
    ready: float | None = None
    live: list[str] = []
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.labels.get("model") != "digits":
                continue
            if sample.name == "leanserve_model_ready":
                ready = sample.value
            elif sample.name == "leanserve_model_info" and sample.value == 1:
                live.append(sample.labels["version"])
    described = client.get("/admin/models/digits/versions", headers=AUTH).json()
    return Signals(
        client.get("/readyz").status_code == 200,
        (health[0], health[1]),
        ready,
        tuple(live),
        described["load_error"],
    )


@pytest.fixture(scope="module")
def unready_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("readiness") / "bentoml"
    server = start_server(home, ["digits:missing0version"], wait_for="/livez")
    yield server
    stop_server(server)


def test_every_readiness_signal_follows_a_promotion(
    unready_server: Server, demo_tags: dict[str, str]
) -> None:
    good = demo_tags["digits"].split(":")[1]
    with unready_server.client() as client:
        before = read_signals(unready_server, client)
        assert before.http_ready is False
        assert before.grpc_health == (NOT_SERVING, NOT_SERVING)
        assert before.model_ready == 0
        assert before.live_info_versions == ()
        assert before.load_error and "missing0version" in before.load_error

        loaded = client.post("/admin/models/digits/load", json={"version": good}, headers=AUTH)
        assert loaded.status_code == 200, loaded.text
        promoted_at = time.monotonic()
        expected = Signals(True, (SERVING, SERVING), 1.0, (good,), None)
        after = read_signals(unready_server, client)
        while after != expected and time.monotonic() - promoted_at < 1.0:
            time.sleep(0.05)
            after = read_signals(unready_server, client)
        assert after == expected
