"""The drift loop of a live server: calm traffic stays calm, shifted traffic raises the gauges."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from servers import Server, digits_infer_body, start_server, stop_server

from optimise.demos.digits import load_splits
from optimise.demos.minilm import DATA_DIR, read_lines

pytestmark = pytest.mark.integration
FAST_DRIFT = {
    "LEANSERVE_DRIFT_INTERVAL_S": "0.5",
    "LEANSERVE_DRIFT_MIN_SAMPLES": "100",
    "LEANSERVE_DRIFT_WINDOW_SIZE": "200",
    "LEANSERVE_DRIFT_SAMPLE_RATE": "1.0",
}


@pytest.fixture(scope="module")
def drift_server(demo_tags: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("drift") / "bentoml", list(demo_tags.values()), FAST_DRIFT)
    yield server
    stop_server(server)


def _send_pixels(client: httpx.Client, pixels: np.ndarray) -> None:
    for start in range(0, len(pixels), 25):
        batch = pixels[start : start + 25]
        body = digits_infer_body(batch)
        assert client.post("/v2/models/digits/infer", json=body).status_code == 200


def _report_after(client: httpx.Client, model: str, window: int, timeout: float = 60) -> dict[str, object]:
    """The first report judged on a full window of what was just sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/monitoring/drift/{model}")
        if response.status_code == 200 and response.json()["window_size"] >= window:
            return dict(response.json())
        time.sleep(0.5)
    raise AssertionError(f"no report for {model}: {response.text}")


def test_calm_then_shifted_digits_traffic(drift_server: Server) -> None:
    splits = load_splits()
    calm = splits.train.pixels[:200]  # same writers' distribution as the reference (held-out split)
    with drift_server.client() as client:
        assert client.get("/monitoring/drift/digits").status_code == 404  # not enough samples yet
        _send_pixels(client, calm)
        first = _report_after(client, "digits", 200)
        assert first["dataset_drift"] is False
        _send_pixels(client, np.clip(splits.train.pixels[200:400] + 0.4, 0.0, 1.4))
        time.sleep(1.5)
        shifted = _report_after(client, "digits", 200)
        assert shifted["dataset_drift"] is True and float(shifted["share_drifted"]) > 0.5  # type: ignore[arg-type]
        metrics = client.get("/metrics").text
        drift_lines = [
            line
            for line in metrics.splitlines()
            if line.startswith("leanserve_dataset_drift{") and 'model="digits"' in line
        ]
        assert drift_lines and drift_lines[0].endswith(" 1.0")
        page = client.get("/monitoring/drift/digits/html", timeout=120)
        assert page.status_code == 200 and "<html" in page.text.lower()


def test_text_traffic_gets_an_embedding_report(drift_server: Server) -> None:
    texts = read_lines(DATA_DIR / "minilm_calibration.txt")[:120]
    with drift_server.client() as client:
        for start in range(0, len(texts), 20):
            assert client.post("/embed", json={"texts": texts[start : start + 20]}).status_code == 200
        report = _report_after(client, "minilm", 100)
        assert report["embedding_drift"] is not None and report["kind"] == "embedding"
        assert client.get("/monitoring/drift/unknown").status_code == 404
