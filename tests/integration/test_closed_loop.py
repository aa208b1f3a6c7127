"""The closed loop on a live server: shifted traffic -> drift -> policy -> a rebuilt candidate,
gated and shadowed on live requests -> promoted, or refused with the reason. Serving never stops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from servers import ADMIN_TOKEN, FAST_CLOSED_LOOP, Server, digits_infer_body, start_server, stop_server

from optimise.demos.digits import load_splits

pytestmark = pytest.mark.integration
TERMINAL = {"promoted", "refused", "failed"}


@pytest.fixture(scope="module")
def loop_server(
    demo_tags: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    home = tmp_path_factory.mktemp("loop")
    audit = home / "audit.jsonl"
    env = {
        **FAST_CLOSED_LOOP,
        "LEANSERVE_REOPTIMISE_TIME_BUDGET_S": "15",
        "LEANSERVE_SHADOW_ROWS": "30",
        "LEANSERVE_AUDIT_LOG": str(audit),
    }
    server = start_server(home / "bentoml", [demo_tags["digits"]], env)
    yield server, audit
    stop_server(server)


def _traffic(server: Server, pixels: np.ndarray, stop: threading.Event, statuses: list[int]) -> None:
    with httpx.Client(base_url=server.http, timeout=30) as client:
        i = 0
        while not stop.is_set():
            batch = pixels[i % len(pixels) : i % len(pixels) + 10]
            body = digits_infer_body(batch)
            statuses.append(client.post("/v2/models/digits/infer", json=body).status_code)
            i += 10
            time.sleep(0.02)


def _events(audit: Path) -> list[dict[str, str]]:
    if not audit.is_file():
        return []
    return [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]


def test_shifted_traffic_rebuilds_gates_shadows_and_decides(
    loop_server: tuple[Server, Path], demo_tags: dict[str, str]
) -> None:
    server, audit = loop_server
    shifted = np.clip(load_splits().train.pixels + 0.35, 0.0, 1.35).astype(np.float32)
    stop, statuses = threading.Event(), []
    sender = threading.Thread(target=_traffic, args=(server, shifted, stop, statuses))
    sender.start()
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and not any(e["event"] in TERMINAL for e in _events(audit)):
            time.sleep(2)
    finally:
        stop.set()
        sender.join()
    events = _events(audit)
    assert [e["event"] for e in events][:1] == ["started"], events
    assert events[0]["reason"] == "data-drift"
    final = next(e for e in events if e["event"] in TERMINAL)
    assert statuses and set(statuses) == {200}, "a request failed during the loop"
    with httpx.Client(base_url=server.http, timeout=30) as client:
        listing = client.get(
            "/admin/models/digits/versions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ).json()
        metrics = client.get("/metrics").text
    original = demo_tags["digits"].split(":")[1]
    if final["event"] == "promoted":
        assert listing["live"] != original and listing["previous"] == original
    else:
        assert listing["live"] == original and final["detail"]  # kept, with the reason
    assert f'outcome="{final["event"]}"' in metrics and "leanserve_reoptimisations_total" in metrics
