"""The OIP v2 REST app over a real data plane: Starlette's test client, then tritonclient over uvicorn."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from _bentoml_impl.server.mount import PassiveMount
from asgi_servers import uvicorn_thread
from builds import served_answer
from starlette.applications import Starlette
from starlette.testclient import TestClient

from service.admission import InflightBudget
from service.dataplane import DataPlane
from service.errors import ModelNotReady
from service.front_door import FrontDoor
from service.settings import ServiceSettings
from service.v2.rest import create_v2_app, v2_root_routes

TINY, TEXT = "tiny-served", "minilm-served"
LIMIT = 64 * 1024
HEADER_LENGTH = "Inference-Header-Content-Length"


@pytest.fixture
def client(dataplane: DataPlane) -> TestClient:
    """The routes behind the front door, as served: it holds the body limit and inflates bodies."""
    app = FrontDoor(create_v2_app(lambda: dataplane), LIMIT, InflightBudget(64 * LIMIT), lambda m, p: None)
    return TestClient(app)


def _features(rows: int = 3) -> np.ndarray:
    return np.random.default_rng(rows).normal(size=(rows, 16)).astype(np.float32)


def _tiny_expected(dataplane: DataPlane, features: np.ndarray) -> np.ndarray:
    return served_answer(dataplane.model(TINY), {"features": features})


def _tiny_body(features: np.ndarray, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "features", "shape": list(features.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": features.tolist()}], **extra}


def _split(response: Any) -> tuple[dict[str, Any], bytes]:
    size = int(response.headers[HEADER_LENGTH])
    return json.loads(response.content[:size]), response.content[size:]


def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"live": True}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    server = client.get("/").json()
    assert server["name"] == "leanserve" and server["version"]
    assert "binary_tensor_data" in server["extensions"]


def test_not_ready_is_503() -> None:
    unloaded = DataPlane(ServiceSettings(models=[TINY], grpc_port=0))
    client = TestClient(create_v2_app(lambda: unloaded))
    assert client.get("/health/ready").status_code == 503
    assert client.get("/health/ready").json() == {"ready": False}
    assert client.get(f"/models/{TINY}/ready").json() == {"name": TINY, "ready": False}
    assert client.post(f"/models/{TINY}/infer", json=_tiny_body(_features())).status_code == 503

    def no_plane_yet() -> DataPlane:
        raise ModelNotReady("starting")

    early = TestClient(create_v2_app(no_plane_yet))
    assert early.get("/health/ready").status_code == 503
    assert early.get("/health/live").status_code == 200


def test_model_metadata_and_readiness(client: TestClient, dataplane: DataPlane) -> None:
    version = dataplane.model(TINY).version
    for path in (f"/models/{TINY}", f"/models/{TINY}/versions/{version}"):
        assert client.get(path).json() == {
            "name": TINY,
            "versions": [version],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}],
        }
        assert client.get(f"{path}/ready").json() == {"name": TINY, "ready": True}
    text = client.get(f"/models/{TEXT}").json()
    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {"name": "sentence_embedding", "datatype": "FP32", "shape": [-1, 384]} in text["outputs"]
    for path in ("/models/nope", f"/models/{TINY}/versions/0", "/models/nope/ready", "/no/such/route"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]
    assert client.get(f"/models/{TINY}/infer").status_code == 405


def test_json_infer_matches_the_session(client: TestClient, dataplane: DataPlane) -> None:
    features = _features()
    version = dataplane.model(TINY).version
    for path in (f"/models/{TINY}/infer", f"/models/{TINY}/versions/{version}/infer"):
        response = client.post(path, json=_tiny_body(features, id="req-1"))
        assert response.status_code == 200 and HEADER_LENGTH not in response.headers
        body = response.json()
        assert (body["model_name"], body["model_version"], body["id"]) == (TINY, version, "req-1")
        (logits,) = body["outputs"]
        assert (logits["name"], logits["datatype"], logits["shape"]) == ("logits", "FP32", [3, 4])
        got = np.array(logits["data"], dtype=np.float32).reshape(3, 4)
        np.testing.assert_array_equal(got, _tiny_expected(dataplane, features))


def test_text_infer_matches_embed(client: TestClient, dataplane: DataPlane) -> None:
    texts = ["a short sentence", "héllo wörld, a little longer than the first one", "x"]
    request = {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": texts}]}
    request["outputs"] = [{"name": "sentence_embedding"}]  # requested-output filtering
    response = client.post(f"/models/{TEXT}/infer", json=request)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "sentence_embedding" and output["shape"] == [3, 384]
    expected = dataplane.embed(texts, TEXT)[1]
    np.testing.assert_allclose(np.array(output["data"]).reshape(3, 384), expected, atol=1e-6)


def test_binary_request_and_response(client: TestClient, dataplane: DataPlane) -> None:
    features = _features(2)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [2, 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 128},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = client.post(
        f"/models/{TINY}/infer",
        content=header + features.astype("<f4").tobytes(),
        headers={HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    body, raw = _split(response)
    assert body["outputs"][0]["parameters"] == {"binary_data_size": 32} and len(raw) == 32
    got = np.frombuffer(raw, dtype="<f4").reshape(body["outputs"][0]["shape"])
    np.testing.assert_array_equal(got, _tiny_expected(dataplane, features))

    texts = [b"binary text", "ünïcode".encode()]
    raw_texts = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
    spec = {
        "name": "text",
        "shape": [2],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(raw_texts)},
    }
    header = json.dumps({"inputs": [spec], "parameters": {"binary_data_output": True}}).encode()
    response = client.post(
        f"/models/{TEXT}/infer", content=header + raw_texts, headers={HEADER_LENGTH: str(len(header))}
    )
    body, raw = _split(response)
    offsets, start = {}, 0
    for output in body["outputs"]:  # binary outputs follow the header in the order listed
        offsets[output["name"]] = start
        start += output["parameters"]["binary_data_size"]
    assert start == len(raw)
    offset = offsets["sentence_embedding"]
    embedding = np.frombuffer(raw[offset : offset + 2 * 384 * 4], dtype="<f4").reshape(2, 384)
    expected = dataplane.embed([t.decode() for t in texts], TEXT)[1]
    np.testing.assert_allclose(embedding, expected, atol=1e-6)


def _binary_tiny(features: np.ndarray, size: int | None = None) -> tuple[bytes, dict[str, str]]:
    raw = features.astype("<f4").tobytes()
    spec = {"name": "features", "shape": list(features.shape), "datatype": "FP32"}
    header = json.dumps({"inputs": [{**spec, "parameters": {"binary_data_size": size or len(raw)}}]}).encode()
    return header + raw, {HEADER_LENGTH: str(len(header))}


def _with_nan() -> np.ndarray:
    features = _features(1)
    features[0, 3] = np.nan
    return features


def _bad_requests() -> list[tuple[str, dict[str, Any], int, str]]:
    """(path, httpx arguments, status, message fragment) for each request the app must refuse."""
    ok = _tiny_body(_features(2))
    infer = f"/models/{TINY}/infer"
    nan_json = json.dumps(_tiny_body(_with_nan())).encode()  # Python writes the NaN literal
    assert b"NaN" in nan_json
    data = ok["inputs"][0]["data"]

    def tensor(**changes: Any) -> dict[str, Any]:
        return {"inputs": [{**ok["inputs"][0], **changes}]}

    return [
        (infer, {"content": b'{"inputs": [}'}, 400, "not valid JSON"),
        ("/models/nope/infer", {"json": ok}, 404, "no model 'nope'"),
        (f"/models/{TINY}/versions/0/infer", {"json": ok}, 404, "version '0'"),
        (infer, {"json": tensor(name="feature")}, 400, "no input 'feature'"),
        (infer, {"json": tensor(datatype="FP64")}, 400, "expects FP32"),
        (infer, {"json": tensor(shape=[4, 8])}, 400, "expects [-1, 16]"),
        (infer, {"json": tensor(shape=[2, 17])}, 400, "needs 34"),
        (infer, {"json": tensor(datatype="FP99")}, 400, "unknown datatype"),
        (infer, {"json": tensor(shape=[0, 16], data=[])}, 400, "empty batch"),
        (infer, {"json": tensor(data=[[*row, "x"] for row in data])}, 400, "holds strings"),
        (infer, {"content": nan_json}, 400, "NaN"),
        (infer, dict(zip(("content", "headers"), _binary_tiny(_with_nan()), strict=True)), 400, "NaN"),
        (
            infer,
            dict(zip(("content", "headers"), _binary_tiny(_features(2), 64), strict=True)),
            400,
            "does not fit",
        ),
        (
            infer,
            dict(zip(("content", "headers"), _binary_tiny(_features(2), 200), strict=True)),
            400,
            "overruns",
        ),
        (infer, {"json": {**ok, "outputs": [{"name": "probabilities"}]}}, 400, "no output 'probabilities'"),
        (infer, {"content": b"x" * (LIMIT + 1)}, 413, "exceeds"),
        (infer, {"content": iter([b"x" * LIMIT, b"x"])}, 413, "exceeds"),  # chunked: no Content-Length
        (
            infer,
            {"content": gzip.compress(b" " * (LIMIT + 1)), "headers": {"Content-Encoding": "gzip"}},
            413,
            "exceeds",
        ),
        (infer, {"content": b"\x1f\x8b junk", "headers": {"Content-Encoding": "gzip"}}, 400, "corrupt"),
        (
            infer,
            {"content": b"{}", "headers": {"Content-Encoding": "br"}},
            415,
            "unsupported Content-Encoding",
        ),
    ]


def test_bad_requests_are_refused_and_the_app_keeps_serving(client: TestClient, dataplane: DataPlane) -> None:
    features = _features(2)
    expected = _tiny_expected(dataplane, features)
    for path, arguments, status, message in _bad_requests():
        response = client.post(path, **arguments)
        assert response.status_code == status, (path, message, response.text)
        assert message in response.json()["error"], (message, response.text)
        after = client.post(f"/models/{TINY}/infer", json=_tiny_body(features))
        np.testing.assert_array_equal(
            np.array(after.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 4), expected
        )
    compressed = gzip.compress(json.dumps(_tiny_body(features)).encode())
    response = client.post(f"/models/{TINY}/infer", content=compressed, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text


def test_unexpected_errors_are_a_logged_500(
    client: TestClient,
    dataplane: DataPlane,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(dataplane, "infer", broken)
    with caplog.at_level(logging.ERROR, logger="service.v2.rest"):
        response = client.post(f"/models/{TINY}/infer", json=_tiny_body(_features()))
    assert response.status_code == 500 and response.json() == {"error": "internal error"}
    assert "secret detail" in caplog.text
    assert client.get("/health/live").status_code == 200


@pytest.fixture
def server_url(dataplane: DataPlane) -> Iterator[str]:
    """The app mounted as the BentoML service mounts it, served by uvicorn on a free local port."""
    outer = Starlette(
        routes=[
            PassiveMount("/v2", create_v2_app(lambda: dataplane)),
            PassiveMount("/", Starlette(routes=v2_root_routes())),
        ]
    )
    with uvicorn_thread(outer) as address:
        yield address


def test_tritonclient_against_uvicorn(server_url: str, dataplane: DataPlane) -> None:
    client = triton.InferenceServerClient(server_url)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(TINY)
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        assert client.get_model_metadata(TEXT)["inputs"][0]["datatype"] == "BYTES"
        features = _features(5)
        texts = np.array([b"tritonclient sends this", "ünïcode too".encode()], dtype=object)
        expected_logits = _tiny_expected(dataplane, features)
        expected_embedding = dataplane.embed([t.decode() for t in texts], TEXT)[1]
        for binary in (True, False):
            tiny_input = triton.InferInput("features", list(features.shape), "FP32")
            tiny_input.set_data_from_numpy(features, binary_data=binary)
            outputs = [triton.InferRequestedOutput("logits", binary_data=binary)]
            result = client.infer(TINY, [tiny_input], outputs=outputs)
            np.testing.assert_array_equal(result.as_numpy("logits"), expected_logits)

            text_input = triton.InferInput("text", [len(texts)], "BYTES")
            text_input.set_data_from_numpy(texts, binary_data=binary)
            outputs = [triton.InferRequestedOutput("sentence_embedding", binary_data=binary)]
            for requested in (outputs, None):  # None: every output, in binary (binary_data_output)
                result = client.infer(TEXT, [text_input], outputs=requested)
                np.testing.assert_allclose(
                    result.as_numpy("sentence_embedding"), expected_embedding, atol=1e-6
                )
        with pytest.raises(triton.InferenceServerException, match="no input"):
            client.infer(TINY, [text_input])
    finally:
        client.close()
