"""A real `bentoml serve` answering real clients: tritonclient (HTTP and gRPC) and plain HTTP.

Every answer is checked against ONNX Runtime run directly on the same stored artefact.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import Server
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from optimise import store
from optimise.demos.minilm import DATA_DIR, read_lines
from optimise.evaluate import cosine_per_sample
from optimise.runtimes.ort_session import OnnxSession

pytestmark = pytest.mark.integration
TEXTS = ["The cat sat on the mat.", "Où est la gare ?", "def add(a, b): return a + b", "short"]
# The service runs dynamic-int8 models one unpadded text at a time, exactly as computed here.
SAME_TEXT_COSINE = 0.9999


def assert_same_embeddings(actual: np.ndarray, expected: np.ndarray) -> None:
    """Close to the direct answer, and closer to it than to any other text's (no rows swapped)."""
    assert cosine_per_sample(actual, expected).min() > SAME_TEXT_COSINE
    similarity = (actual / np.linalg.norm(actual, axis=1, keepdims=True)) @ (
        expected / np.linalg.norm(expected, axis=1, keepdims=True)
    ).T
    assert (similarity.argmax(axis=1) == np.arange(len(actual))).all()


def _artefact(tag: str) -> Path:
    return Path(store.get_model(tag).path)


def direct_embeddings(tag: str, texts: list[str]) -> np.ndarray:
    root = _artefact(tag)
    tokenizer = Tokenizer.from_file(str(root / "preprocessing" / "tokenizer.json"))
    tokenizer.enable_truncation(128)
    tokenizer.no_padding()  # the stored tokenizer pads to 128; the service runs each text unpadded
    session = OnnxSession(root / "model.onnx")
    rows = []
    for text in texts:  # one at a time: no padding, the plainest possible reference
        e = tokenizer.encode(text)
        feeds = {"input_ids": [e.ids], "attention_mask": [e.attention_mask], "token_type_ids": [e.type_ids]}
        rows.append(session.run({k: np.array(v, dtype=np.int64) for k, v in feeds.items()})[0][0])
    return np.stack(rows)


def direct_logits(tag: str, pixels: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the stored artefact, as the service owes the answer: dynamic int8 models
    (activation scales computed per call) one row per run, others the whole batch."""
    session = OnnxSession(_artefact(tag) / "model.onnx")
    if store.read_manifest(store.get_model(tag)).selected.batch_invariant:
        return session.run({"pixels": pixels})[0]
    return np.concatenate([session.run({"pixels": pixels[i : i + 1]})[0] for i in range(len(pixels))])


def digits_pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def test_ready_and_live(server: Server) -> None:
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/health/live").status_code == 200
    with grpc.insecure_channel(server.grpc) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert status.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_both_demos(server: Server, demo_tags: dict[str, str], binary: bool) -> None:
    client = triton_http.InferenceServerClient(server.http.removeprefix("http://"))
    assert client.is_model_ready("digits") and client.is_model_ready("minilm")
    pixels = digits_pixels(5)
    tensor = triton_http.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    result = client.infer(
        "digits", [tensor], outputs=[triton_http.InferRequestedOutput("logits", binary_data=binary)]
    )
    np.testing.assert_allclose(
        result.as_numpy("logits"), direct_logits(demo_tags["digits"], pixels), atol=1e-4
    )

    texts = np.array([t.encode() for t in TEXTS], dtype=object)
    text = triton_http.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(texts, binary_data=binary)
    embeddings = client.infer("minilm", [text]).as_numpy("sentence_embedding")
    assert_same_embeddings(embeddings, direct_embeddings(demo_tags["minilm"], TEXTS))


def test_tritonclient_grpc_both_demos(server: Server, demo_tags: dict[str, str]) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc)
    assert client.is_server_ready() and client.is_model_ready("minilm")
    metadata = client.get_model_metadata("digits", as_json=True)
    assert metadata["inputs"][0]["name"] == "pixels"
    pixels = digits_pixels(3, seed=1)
    tensor = triton_grpc.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    logits = client.infer("digits", [tensor]).as_numpy("logits")
    np.testing.assert_allclose(logits, direct_logits(demo_tags["digits"], pixels), atol=1e-4)

    text = triton_grpc.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    embeddings = client.infer("minilm", [text]).as_numpy("sentence_embedding")
    assert_same_embeddings(embeddings, direct_embeddings(demo_tags["minilm"], TEXTS))


def test_native_endpoints(server: Server, demo_tags: dict[str, str]) -> None:
    pixels = digits_pixels(2, seed=2)
    with server.client() as client:
        embed = client.post("/embed", json={"texts": TEXTS})
        assert embed.status_code == 200, embed.text
        assert_same_embeddings(np.array(embed.json()), direct_embeddings(demo_tags["minilm"], TEXTS))
        flat = client.post("/classify", json={"images": pixels.reshape(2, 64).tolist()})
        square = client.post("/classify", json={"images": pixels.reshape(2, 8, 8).tolist()})
        assert flat.status_code == square.status_code == 200, flat.text
        assert (
            flat.json()["classes"]
            == square.json()["classes"]
            == direct_logits(demo_tags["digits"], pixels).argmax(1).tolist()
        )
        predicted = client.post("/predict", json={"model": "digits", "inputs": {"pixels": pixels.tolist()}})
        assert predicted.status_code == 200, predicted.text
        np.testing.assert_allclose(
            predicted.json()["outputs"]["logits"], direct_logits(demo_tags["digits"], pixels), atol=1e-4
        )


def test_concurrent_embed_requests_each_get_their_own_answer(
    server: Server, demo_tags: dict[str, str]
) -> None:
    texts = read_lines(DATA_DIR / "minilm_fidelity.txt")[:48]  # varied texts: a swapped row would show
    expected = direct_embeddings(demo_tags["minilm"], texts)

    def call(i: int) -> np.ndarray:
        with server.client() as client:
            response = client.post("/embed", json={"texts": [texts[i]]})
            assert response.status_code == 200, response.text
            return np.array(response.json())[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        answers = np.stack(list(pool.map(call, range(len(texts)))))
    assert_same_embeddings(answers, expected)


PIXELS = {"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}
BAD_V2_REQUESTS = [
    ("/v2/models/nope/infer", {"inputs": [PIXELS]}, 404),
    ("/v2/models/digits/versions/does-not-exist/infer", {"inputs": [PIXELS]}, 404),
    (
        "/v2/models/digits/infer",
        {"inputs": [{"name": "wrong", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]},
        400,
    ),
    (
        "/v2/models/digits/infer",
        {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "INT64", "data": [0] * 64}]},
        400,
    ),
    (
        "/v2/models/digits/infer",
        {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
        400,
    ),
    (
        "/v2/models/digits/infer",
        {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 63}]},
        400,
    ),
    (
        "/v2/models/digits/infer",
        {"inputs": [{"name": "pixels", "shape": [0, 1, 8, 8], "datatype": "FP32", "data": []}]},
        400,
    ),
    (
        "/v2/models/minilm/infer",
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x" * 30000]}]},
        400,
    ),
]


@pytest.mark.parametrize(("path", "body", "status"), BAD_V2_REQUESTS)
def test_bad_v2_requests_get_clear_errors_and_the_server_keeps_serving(
    server: Server, path: str, body: dict[str, object], status: int
) -> None:
    with server.client() as client:
        response = client.post(path, json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"]
        assert client.get("/v2/models/digits/ready").status_code == 200


def test_malformed_json_nan_and_oversized_bodies(server: Server) -> None:
    with server.client() as client:
        assert client.post("/v2/models/digits/infer", content=b"{not json").status_code == 400
        nan = (
            b'{"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [NaN'
            + b", 0.0" * 63
            + b"]}]}"
        )
        assert client.post("/v2/models/digits/infer", content=nan).status_code == 400
        huge = b"0" * (9 * 1024 * 1024)
        assert client.post("/v2/models/digits/infer", content=huge).status_code == 413
        assert client.post("/embed", json={"texts": []}).status_code == 400
        assert client.post("/classify", json={"images": [[0.1, 0.2]]}).status_code == 400
        assert client.post("/predict", json={"model": "nope", "inputs": {}}).status_code == 404
        assert client.get("/readyz").status_code == 200


def test_bad_grpc_requests_map_to_status_codes(server: Server) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc)
    tensor = triton_grpc.InferInput("pixels", [1, 1, 8, 8], "FP32")
    tensor.set_data_from_numpy(np.full((1, 1, 8, 8), np.nan, dtype=np.float32))
    with pytest.raises(InferenceServerException, match="NaN"):
        client.infer("digits", [tensor])
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [tensor])
    assert "NOT_FOUND" in str(unknown.value.status())
    assert client.is_server_ready()


def test_metrics_cover_every_protocol_with_model_and_version(
    server: Server, demo_tags: dict[str, str]
) -> None:
    version = demo_tags["digits"].split(":")[1]
    body = {"inputs": [PIXELS]}
    with server.client() as client:
        assert client.post("/v2/models/digits/infer", json=body).status_code == 200
        assert client.post("/classify", json={"images": [[0.0] * 64]}).status_code == 200
        assert client.post("/embed", json={"texts": ["metrics"]}).status_code == 200
        assert client.post("/v2/models/unknown-model/infer", json=body).status_code == 404
        grpc_client = triton_grpc.InferenceServerClient(server.grpc)
        tensor = triton_grpc.InferInput("pixels", [1, 1, 8, 8], "FP32")
        tensor.set_data_from_numpy(digits_pixels(1))
        grpc_client.infer("digits", [tensor])
        text = client.get("/metrics").text
    for protocol in ("rest-v2", "rest"):
        assert (
            f'leanserve_request_duration_seconds_count{{model="digits",protocol="{protocol}",version="{version}"}}'
            in text
        )
    assert 'leanserve_request_duration_seconds_count{model="minilm",protocol="rest"' in text
    assert 'leanserve_request_duration_seconds_count{model="digits",protocol="grpc"' in text
    assert 'leanserve_requests_total{code="404",model="_unknown",protocol="rest-v2"}' in text
    info = [
        line
        for line in text.splitlines()
        if line.startswith("leanserve_model_info{") and 'model="digits"' in line
    ]
    assert any(f'version="{version}"' in line and line.endswith(" 1.0") for line in info), info
    assert "leanserve_inference_duration_seconds_bucket" in text and "leanserve_batch_size_bucket" in text
