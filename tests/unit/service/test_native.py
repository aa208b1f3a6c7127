"""The native REST routes behind the front door, on real stored models (tiny classifier, MiniLM)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.admission import InflightBudget
from service.dataplane import DataPlane
from service.front_door import JSON, FrontDoor, received_at
from service.native import ROUTES, create_native_app
from service.settings import ServiceSettings
from service.v2.codec import json_bytes

TINY, TEXT = "tiny-served", "minilm-served"
LIMIT = 256 * 1024


def _settings(**extra: Any) -> ServiceSettings:
    return ServiceSettings(models=[], grpc_port=0, embed_model=TEXT, classify_model=TINY, **extra)


def _client(dataplane: DataPlane, settings: ServiceSettings | None = None) -> TestClient:
    app = create_native_app(lambda: dataplane, settings or _settings())
    media = {(m, r): (JSON,) for m in ("POST",) for r in ROUTES}
    return TestClient(FrontDoor(app, LIMIT, InflightBudget(64 * LIMIT), lambda m, p: media.get((m, p))))


def _error(response: Any, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    message = json.loads(response.text)["error"]
    assert all(w in message for w in words), message
    return str(message)


def test_embed_answers_one_row_per_text_as_the_data_plane_computes_it(dataplane: DataPlane) -> None:
    texts = ["a short one", "a somewhat longer sentence about serving models quickly"]
    response = _client(dataplane).post("/embed", json={"texts": texts})
    assert response.status_code == 200 and response.headers["content-type"] == JSON
    answered = np.array(response.json(), dtype=np.float32)
    _, expected = dataplane.embed(texts, TEXT)
    assert answered.shape == expected.shape
    np.testing.assert_array_equal(answered, expected.astype(np.float32))  # float32 written exactly


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", ["Invalid JSON"]),
        (b'{"texts": "one string"}', ["texts", "array"]),
        (b'{"texts": [1, 2]}', ["texts.0", "string"]),
        (b'{"texts": [null]}', ["texts.0"]),
        (b'{"texts": []}', ["texts", "at least 1"]),
        (b'{"other": ["x"]}', ["texts", "Field required"]),
        (b"[1, 2]", ["Input should be"]),
    ],
)
def test_bad_embed_bodies_are_a_400_naming_the_field(
    dataplane: DataPlane, body: bytes, words: list[str]
) -> None:
    response = _client(dataplane).post("/embed", content=body, headers={"content-type": JSON})
    _error(response, 400, *words)


def test_embed_limits_come_from_the_settings_and_the_texts_are_not_echoed(dataplane: DataPlane) -> None:
    client = _client(dataplane, _settings(max_texts=2, max_text_chars=20))
    _error(client.post("/embed", json={"texts": ["a", "b", "c"]}), 400, "texts", "at most 2")
    message = _error(client.post("/embed", json={"texts": ["SECRET" * 10]}), 400, "texts.0", "at most 20")
    assert "SECRET" not in message


def test_classify_answers_classes_and_probabilities(dataplane: DataPlane) -> None:
    features = np.random.default_rng(3).normal(size=(3, 16)).astype(np.float32)
    body = _client(dataplane).post("/classify", json={"images": features.tolist()}).json()
    _, probabilities = dataplane.classify(features, TINY)
    assert body["model"] == TINY and body["version"] == dataplane.model(TINY).version
    assert body["classes"] == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose(body["probabilities"], probabilities, atol=1e-6)


def test_classify_refuses_a_shape_the_model_cannot_take(dataplane: DataPlane) -> None:
    _error(_client(dataplane).post("/classify", json={"images": [[0.0] * 15]}), 400, "do not fit")
    _error(_client(dataplane).post("/classify", json={"images": "abc"}), 400, "images")


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e39"])
def test_classify_names_the_body_field_for_values_the_model_cannot_take(
    dataplane: DataPlane, value: bytes
) -> None:
    body = b'{"images": [[' + b", ".join([value] + [b"0.5"] * 15) + b"]]}"
    response = _client(dataplane).post("/classify", content=body, headers={"content-type": JSON})
    message = _error(response, 400, "'images'")
    assert "features" not in message  # the model's own name for the input is not the client's


def test_predict_runs_any_served_model_and_names_what_it_cannot(dataplane: DataPlane) -> None:
    client = _client(dataplane)
    features = np.ones((2, 16), dtype=np.float32)
    body = client.post("/predict", json={"model": TINY, "inputs": {"features": features.tolist()}}).json()
    assert body["model"] == TINY and np.array(next(iter(body["outputs"].values()))).shape[0] == 2
    _error(client.post("/predict", json={"model": "nope", "inputs": {}}), 404, "nope")
    _error(client.post("/predict", json={"model": TINY, "inputs": {"pixels": [1]}}), 400, "no input 'pixels'")
    _error(client.post("/predict", json={"model": 5, "inputs": {}}), 400, "model")


def test_other_methods_and_paths_are_json_405_and_404(dataplane: DataPlane) -> None:
    client = _client(dataplane)
    _error(client.get("/embed"), 405, "Method Not Allowed")
    _error(client.post("/no/such/route", json={}), 404, "Not Found")


def test_not_ready_is_503_and_the_app_keeps_answering(dataplane: DataPlane) -> None:
    unloaded = DataPlane(ServiceSettings(models=[TINY], grpc_port=0))
    client = TestClient(create_native_app(lambda: unloaded, _settings()))
    _error(client.post("/classify", json={"images": [[0.0] * 16]}), 503, "not loaded")


def test_the_front_door_stamps_when_a_request_arrived() -> None:
    import time

    seen: list[float | None] = []

    async def route(request: Request) -> JSONResponse:
        seen.append(received_at(request.scope))
        return JSONResponse({})

    before = time.perf_counter()
    app = FrontDoor(Starlette(routes=[Route("/", route)]), LIMIT, InflightBudget(LIMIT), lambda m, p: None)
    TestClient(app).get("/")
    assert seen[0] is not None and before <= seen[0] <= time.perf_counter()
    assert received_at({}) is None


def test_json_bytes_writes_arrays_of_every_kind() -> None:
    floats = np.array([[0.1, 1 / 3]], dtype=np.float32)
    assert np.array_equal(np.array(json.loads(json_bytes(floats)), dtype=np.float32), floats)
    assert json.loads(json_bytes(np.array(["a", "b"], dtype=object))) == ["a", "b"]
    assert json.loads(json_bytes(np.arange(6).reshape(2, 3)[:, ::2])) == [[0, 2], [3, 5]]  # not contiguous
    assert json.loads(json_bytes({"n": np.int64(3)})) == {"n": 3}
