"""The OIP v2 gRPC endpoint, served for real on 127.0.0.1 and called by tritonclient and raw stubs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from builds import served_answer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from tritonclient.utils import InferenceServerException

from service._generated import grpc_predict_v2_pb2 as pb
from service._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.admission import InflightBudget
from service.dataplane import DataPlane
from service.errors import InvalidInput
from service.grpc import converters
from service.grpc.server import SERVICE_NAME, GrpcServer, start_grpc_server
from service.settings import ServiceSettings
from service.tensor_bytes import encode_tensor
from service.types import NUMPY_DTYPES, InferenceRequest

TINY = "tiny-served"
TEXT = "minilm-served"
MAX_REQUEST_BYTES = 256 * 1024  # small, so the oversized test stays cheap

T = TypeVar("T")


class Served:
    """A gRPC server running on an event loop in a background thread, as in a worker process."""

    def __init__(self, dataplane: DataPlane, settings: ServiceSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.budget = InflightBudget(settings.max_inflight_bytes, settings.max_inflight_requests)
        self.grpc: GrpcServer = self.run(start_grpc_server(dataplane, settings, self.budget))
        self.address = f"127.0.0.1:{self.grpc.port}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.run(self.grpc.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def plane(tiny_tags: list[str], text_tag: str) -> DataPlane:
    """Like the `dataplane` fixture, but shared by the module's tests (it loads MiniLM)."""
    dataplane = DataPlane(ServiceSettings(models=[tiny_tags[0], text_tag]))
    dataplane.load_configured()
    assert dataplane.is_ready()
    return dataplane


@pytest.fixture(scope="module")
def served(plane: DataPlane) -> Iterator[Served]:
    settings = ServiceSettings(
        grpc_host="127.0.0.1", grpc_port=0, max_request_bytes=MAX_REQUEST_BYTES, max_inflight_requests=8
    )
    running = Served(plane, settings)
    yield running
    running.close()


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=served.address) as client:
        yield client


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _features(rows: int = 3) -> np.ndarray:
    return np.random.default_rng(rows).normal(size=(rows, 16)).astype(np.float32)


def _input(name: str, data: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


# -- health, readiness, metadata -----------------------------------------------------------
def test_server_and_models_are_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(TINY)
    assert client.is_model_ready(TEXT)


def test_server_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata.name == "leanserve"
    assert metadata.version


def test_model_metadata(client: triton.InferenceServerClient, plane: DataPlane) -> None:
    tiny = client.get_model_metadata(TINY)
    assert list(tiny.versions) == [plane.model(TINY).version]
    assert tiny.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in tiny.inputs] == [("features", "FP32", [-1, 16])]
    assert [(t.name, t.datatype, list(t.shape)) for t in tiny.outputs] == [("logits", "FP32", [-1, 4])]
    text = client.get_model_metadata(TEXT)
    assert [(t.name, t.datatype, list(t.shape)) for t in text.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in text.outputs] == [
        ("sentence_embedding", "FP32", [-1, 384])
    ]


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)


def test_health_service_answers_serving_for_the_server_and_the_inference_service(served: Served) -> None:
    for service in ("", SERVICE_NAME):
        assert _health(served.address, service) == health_pb2.HealthCheckResponse.SERVING


def test_health_follows_a_promotion_after_a_failed_start(tiny_tags: list[str]) -> None:
    """A server whose configured version is missing is NOT_SERVING until a good version is promoted;
    then every readiness signal follows the one promotion, without a refresh by hand."""
    name, good = tiny_tags[0].split(":")
    plane = DataPlane(ServiceSettings(models=[f"{name}:missing0version"]))
    plane.load_configured()
    assert not plane.is_ready() and plane.slots(name).load_error
    running = Served(plane, ServiceSettings(grpc_host="127.0.0.1", grpc_port=0))
    try:
        for service in ("", SERVICE_NAME):
            assert _health(running.address, service) == health_pb2.HealthCheckResponse.NOT_SERVING
        plane.stage(name, good)
        plane.promote(name)
        deadline = time.monotonic() + 1.0
        statuses: list[int] = []
        while time.monotonic() < deadline:
            statuses = [_health(running.address, service) for service in ("", SERVICE_NAME)]
            if statuses == [health_pb2.HealthCheckResponse.SERVING] * 2:
                break
            time.sleep(0.05)
        assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 2
        assert plane.is_ready() and plane.slots(name).load_error is None
        assert REGISTRY.get_sample_value("leanserve_model_ready", {"model": name}) == 1
        live_info = [
            sample.labels["version"]
            for metric in REGISTRY.collect()
            if metric.name == "leanserve_model_info"
            for sample in metric.samples
            if sample.labels["model"] == name and sample.value == 1
        ]
        assert live_info == [good]
    finally:
        running.close()


# -- inference -----------------------------------------------------------------------------
def test_infer_matches_the_session(client: triton.InferenceServerClient, plane: DataPlane) -> None:
    features = _features()
    result = client.infer(TINY, [_input("features", features, "FP32")], request_id="req-7")
    expected = served_answer(plane.model(TINY), {"features": features})
    np.testing.assert_array_equal(result.as_numpy("logits"), expected)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        TINY,
        plane.model(TINY).version,
        "req-7",
    )


def test_infer_with_requested_outputs(client: triton.InferenceServerClient) -> None:
    wanted = [triton.InferRequestedOutput("logits")]
    result = client.infer(TINY, [_input("features", _features(2), "FP32")], outputs=wanted)
    assert result.as_numpy("logits").shape == (2, 4)


def test_infer_text_returns_the_embeddings(client: triton.InferenceServerClient, plane: DataPlane) -> None:
    texts = ["a short one", "ünïcödé text survives the wire", "a third, somewhat longer sentence to embed"]
    data = np.array([t.encode("utf-8") for t in texts], dtype=object)
    result = client.infer(TEXT, [_input("text", data, "BYTES")])
    embeddings = result.as_numpy("sentence_embedding")
    assert embeddings.shape == (3, 384)
    np.testing.assert_allclose(embeddings, plane.embed(texts, TEXT)[1], atol=1e-6)


def test_typed_contents_give_the_same_answers(
    stub: pb_grpc.GRPCInferenceServiceStub, plane: DataPlane
) -> None:
    features = _features(4)
    request = pb.ModelInferRequest(model_name=TINY)
    request.inputs.add(name="features", datatype="FP32", shape=[4, 16]).contents.fp32_contents.extend(
        features.reshape(-1).tolist()
    )
    reply = stub.ModelInfer(request, timeout=30)
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [("logits", "FP32", [4, 4])]
    logits = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(4, 4)
    np.testing.assert_array_equal(logits, served_answer(plane.model(TINY), {"features": features}))

    texts = [b"first text", b"second text"]
    request = pb.ModelInferRequest(model_name=TEXT)
    request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(texts)
    reply = stub.ModelInfer(request, timeout=30)
    embeddings = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(2, 384)
    np.testing.assert_allclose(embeddings, plane.embed([t.decode() for t in texts], TEXT)[1], atol=1e-6)


# -- errors --------------------------------------------------------------------------------
def _raw_request(datatype: str = "FP32", shape: tuple[int, ...] = (2, 16), raw: bytes | None = None) -> Any:
    request = pb.ModelInferRequest(model_name=TINY)
    request.inputs.add(name="features", datatype=datatype, shape=shape)
    request.raw_input_contents.append(_features(2).tobytes() if raw is None else raw)
    return request


def _raw_and_typed() -> Any:
    request = _raw_request()
    request.inputs[0].contents.fp32_contents.append(1.0)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_raw_and_typed(), "sets contents while the request uses raw_input_contents"),
        (_raw_request(raw=b"\0" * (4 * 31)), "124 bytes of raw data; shape [2, 16] of FP32 needs 128"),
        (_raw_request(datatype="FP8"), "unknown datatype 'FP8'"),
        (_raw_request(shape=(2, -16)), "dimension 1 is -16"),
        # Declared shapes are checked before anything multiplies them: 60,000 dimensions of 2**62 took
        # seconds to multiply (every route waited), and the product was too long to format (a 500).
        (_raw_request(shape=(2**62,) * 400), "shape has 400 dimensions; at most 32"),
        (_raw_request(shape=(2**62, 16)), "shape dimension 0 is larger than 2,147,483,648 elements"),
        (_raw_request(shape=(2**20, 2**20, 16)), "holds more than 2,147,483,648 elements"),
        (_raw_request(datatype="BYTES", shape=(2,), raw=b"\5\0\0\0abc"), "runs past the end"),
    ],
)
def test_malformed_raw_requests_are_invalid_argument(
    stub: pb_grpc.GRPCInferenceServiceStub, request_: Any, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request_, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


@pytest.mark.parametrize(
    ("model", "tensor", "status", "message"),
    [
        ("nope", _input("features", _features(), "FP32"), "NOT_FOUND", "no model 'nope'"),
        (TINY, _input("pixels", _features(), "FP32"), "INVALID_ARGUMENT", "no input 'pixels'"),
        (TINY, _input("features", _features().astype(np.float64), "FP64"), "INVALID_ARGUMENT", "FP64"),
        (TINY, _input("features", _features()[:, :8].copy(), "FP32"), "INVALID_ARGUMENT", "shape [3, 8]"),
        (TINY, _input("features", np.full((1, 16), np.nan, np.float32), "FP32"), "INVALID_ARGUMENT", "NaN"),
    ],
)
def test_bad_requests_map_to_status_codes(
    client: triton.InferenceServerClient, model: str, tensor: triton.InferInput, status: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor])
    assert caught.value.status() == f"StatusCode.{status}"
    assert message in caught.value.message()
    assert client.is_server_ready()  # and the server goes on serving


def test_unknown_model_is_not_found_everywhere(client: triton.InferenceServerClient) -> None:
    for call in (client.is_model_ready, client.get_model_metadata):
        with pytest.raises(InferenceServerException) as caught:
            call("nope")
        assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_oversized_message_is_resource_exhausted(client: triton.InferenceServerClient) -> None:
    too_big = np.zeros((MAX_REQUEST_BYTES // 64 + 1, 16), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(TINY, [_input("features", too_big, "FP32")])
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert client.infer(TINY, [_input("features", _features(), "FP32")]).as_numpy("logits").shape == (3, 4)


def test_past_the_request_bound_an_inference_is_shed_as_resource_exhausted(
    client: triton.InferenceServerClient, served: Served
) -> None:
    held = [served.budget.try_admit() for _ in range(served.budget.limit_requests or 0)]
    assert all(held) and held  # every slot taken by requests in flight
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(TINY, [_input("features", _features(), "FP32")])
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "LEANSERVE_MAX_INFLIGHT_REQUESTS" in caught.value.message()
        assert client.is_server_ready()  # reads are not requests with a body: they pass
    finally:
        for _ in held:
            served.budget.leave()
    assert client.infer(TINY, [_input("features", _features(), "FP32")]).as_numpy("logits").shape == (3, 4)


def test_unexpected_errors_are_internal_without_details(
    client: triton.InferenceServerClient, plane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: InferenceRequest) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(plane, "infer", broken)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(TINY, [_input("features", _features(), "FP32")])
    assert caught.value.status() == "StatusCode.INTERNAL"
    assert "secret" not in caught.value.message()


# -- converters: raw and typed contents agree for every datatype ----------------------------
@pytest.mark.parametrize("datatype", [d for d in NUMPY_DTYPES if d != "FP16"])
def test_raw_and_typed_contents_decode_alike(datatype: str) -> None:
    dtype = NUMPY_DTYPES[datatype]
    if datatype == "BYTES":
        data = np.array([b"a", b"", b"\xff\x00", b"longer"], dtype=object).reshape(2, 2)
    else:
        data = np.array([0, 1, 1, 0], dtype=np.int64).reshape(2, 2).astype(dtype)
    typed = pb.ModelInferRequest(model_name="m")
    field = converters.CONTENTS_FIELDS[datatype]
    getattr(typed.inputs.add(name="x", datatype=datatype, shape=[2, 2]).contents, field).extend(
        data.reshape(-1).tolist()
    )
    raw = pb.ModelInferRequest(model_name="m", raw_input_contents=[encode_tensor(data)])
    raw.inputs.add(name="x", datatype=datatype, shape=[2, 2])
    for message in (typed, raw):
        decoded = converters.to_inference_request(message).inputs[0]
        assert decoded.datatype == datatype
        np.testing.assert_array_equal(decoded.data, data)


def test_typed_integers_out_of_range_are_invalid() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(InvalidInput, match="out of range for INT8"):
        converters.to_inference_request(request)


def test_request_fields_and_parameters_are_carried_over() -> None:
    request = pb.ModelInferRequest(model_name="m", model_version="v2", id="abc")
    request.parameters["priority"].int64_param = 3
    request.inputs.add(name="x", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    request.outputs.add(name="y")
    decoded = converters.to_inference_request(request)
    assert (decoded.model, decoded.version, decoded.id, decoded.outputs) == ("m", "v2", "abc", ["y"])
    assert decoded.parameters == {"priority": 3}
    assert decoded.inputs[0].data.tolist() == [True]
