"""Bad input of the kinds comparable servers were caught out by, sent to a real server on every route
and protocol it applies to: each gets a clear JSON error with the documented status, nothing the
client sent reaches the log at ERROR, and the server serves on."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from servers import ADMIN_TOKEN, Server, digits_infer_body
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

MARKER = "client-secret-marker-7f3a"  # sent inside bad requests; must never reach the log at ERROR
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OVERFLOWING = np.full((1, 1, 8, 8), 3e38, np.float32)  # finite FP32 that the CNN turns into NaN
TEXT_OUTPUT = "sentence_embedding"


def _assert_json_error(response: Any, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = _strict_json(response.text)["error"]
    for word in words:
        assert word in error, error
    return str(error)


def _strict_json(text: str) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _assert_still_serving(server: Server) -> None:
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/classify", json={"images": [[0.0] * 64]}).status_code == 200


# -- 1. outputs that are not finite ------------------------------------------------------------
def test_non_finite_outputs_are_a_422_on_every_rest_route(server: Server) -> None:
    with server.client() as client:
        classify = client.post("/classify", json={"images": OVERFLOWING.reshape(1, 64).tolist()})
        _assert_json_error(classify, 422, "logits", "NaN or infinity")
        predict = client.post(
            "/predict", json={"model": "digits", "inputs": {"pixels": OVERFLOWING.tolist()}}
        )
        _assert_json_error(predict, 422, "logits")
        v2 = client.post("/v2/models/digits/infer", json=digits_infer_body(OVERFLOWING))
        _assert_json_error(v2, 422, "logits")
        for response in (classify, predict, v2):
            _strict_json(response.text)
    _assert_still_serving(server)


@pytest.mark.parametrize("binary", [True, False])
def test_non_finite_outputs_through_tritonclient_http(server: Server, binary: bool) -> None:
    client = triton_http.InferenceServerClient(server.http.removeprefix("http://"))
    tensor = triton_http.InferInput("pixels", list(OVERFLOWING.shape), "FP32")
    tensor.set_data_from_numpy(OVERFLOWING, binary_data=binary)
    output = triton_http.InferRequestedOutput("logits", binary_data=binary)
    with pytest.raises(InferenceServerException, match="NaN or infinity") as raised:
        client.infer("digits", [tensor], outputs=[output])
    assert raised.value.status() == "422"


def test_non_finite_outputs_are_out_of_range_on_grpc(server: Server) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc)
    tensor = triton_grpc.InferInput("pixels", list(OVERFLOWING.shape), "FP32")
    tensor.set_data_from_numpy(OVERFLOWING)
    with pytest.raises(InferenceServerException, match="logits") as raised:
        client.infer("digits", [tensor])
    assert raised.value.status() == str(grpc.StatusCode.OUT_OF_RANGE)


# -- 2. the body limit holds on every HTTP route, declared or chunked -----------------------------
LIMIT = 8 * 1024 * 1024
PADDED_ROUTES = [
    ("/classify", {"images": [[0.0] * 64]}),
    ("/embed", {"texts": ["hello"]}),
    ("/predict", {"model": "digits", "inputs": {"pixels": [[[[0.0] * 8] * 8]]}}),
    ("/v2/models/digits/infer", digits_infer_body(np.zeros((1, 1, 8, 8), np.float32))),
    ("/admin/models/digits/load", {"version": "abc"}),
]


def _padded(body: dict[str, Any], size: int) -> bytes:
    text = json.dumps(body).encode()
    return text[:-1] + b" " * (size - len(text)) + b"}"  # valid JSON, padded with whitespace


@pytest.mark.parametrize(("path", "body"), PADDED_ROUTES)
def test_a_whitespace_padded_body_over_the_limit_is_413(
    server: Server, path: str, body: dict[str, Any]
) -> None:
    padded = _padded(body, LIMIT + 1024)
    with server.client() as client:
        response = client.post(path, content=padded, headers={"content-type": "application/json", **ADMIN})
        _assert_json_error(response, 413, str(LIMIT))

        def chunked() -> Iterator[bytes]:
            for start in range(0, len(padded), 1 << 20):
                yield padded[start : start + (1 << 20)]

        response = client.post(path, content=chunked(), headers={"content-type": "application/json", **ADMIN})
        _assert_json_error(response, 413, str(LIMIT))
    _assert_still_serving(server)


def test_a_padded_body_within_the_limit_is_served(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/classify",
            content=_padded({"images": [[0.0] * 64]}, LIMIT - 1024),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200 and response.json()["classes"]


# -- 3. no user input makes a 500 or a non-JSON error -------------------------------------------
ADMIN_BODIES: list[Any] = [
    {"version": "bad tag!!"},
    {"version": "../../../etc/passwd"},
    {"version": "x" * 500},
    {"version": 12},
    {"version": None},
    {"version": "abc", "promote": "yes"},
    {},
    [],
    "just a string",
    {"version": "\u0000"},
]


@pytest.mark.parametrize("body", ADMIN_BODIES)
def test_admin_load_with_bad_input_is_a_json_4xx(server: Server, body: Any) -> None:
    with server.client() as client:
        response = client.post("/admin/models/digits/load", json=body, headers=ADMIN)
    assert 400 <= response.status_code < 500, response.text
    assert _strict_json(response.text)["error"]


ODD_REQUESTS: list[tuple[str, str, bytes]] = [
    ("POST", "/embed", b"{not json"),
    ("POST", "/embed", b'{"texts": "not a list"}'),
    ("POST", "/embed", b'{"texts": [1, 2]}'),
    ("POST", "/embed", b'{"texts": [null]}'),
    ("POST", "/classify", b'{"images": "abc"}'),
    ("POST", "/classify", b'{"images": [[1, [2]]]}'),
    ("POST", "/classify", b'{"images": []}'),
    ("POST", "/classify", b"[" * 5000 + b"]" * 5000),
    ("POST", "/predict", b'{"model": 5, "inputs": {}}'),
    ("POST", "/predict", b'{"model": "digits", "inputs": {"nope": [1]}}'),
    ("POST", "/predict", b'{"model": "digits", "inputs": {"pixels": [["a"]]}}'),
    ("POST", "/predict", b'{"model": "minilm", "inputs": {"text": [1.5]}}'),
    (
        "POST",
        "/v2/models/digits/infer",
        b'{"inputs": [{"name": "pixels", "shape": [1e400], "datatype": "FP32"}]}',
    ),
    (
        "POST",
        "/v2/models/digits/infer",
        b'{"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [1e400]}]}',
    ),
    (
        "POST",
        "/v2/models/digits/infer",
        b'{"inputs": [{"name": "pixels", "shape": [-1, 64], "datatype": "FP32", "data": []}]}',
    ),
    ("GET", "/v2/models/%00", b""),
    ("GET", "/monitoring/drift/nope", b""),
    ("GET", "/monitoring/drift/digits/html", b""),
    ("POST", "/admin/alertmanager", b'{"alerts": "x"}'),
    ("POST", "/admin/models/nope/promote", b""),
    ("POST", "/admin/models/digits/rollback", b""),
    ("GET", "/no/such/route", b""),
    ("DELETE", "/embed", b""),
]


@pytest.mark.parametrize(("method", "path", "body"), ODD_REQUESTS)
def test_odd_requests_never_get_a_500_or_a_non_json_error(
    server: Server, method: str, path: str, body: bytes
) -> None:
    with server.client() as client:
        response = client.request(
            method, path, content=body, headers={"content-type": "application/json", **ADMIN}
        )
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        assert _strict_json(response.text)["error"], response.text


# -- 5. duplicate tensor names ------------------------------------------------------------------
def test_duplicate_output_names_are_a_400_on_rest_and_invalid_argument_on_grpc(server: Server) -> None:
    body = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}],
        "outputs": [{"name": TEXT_OUTPUT}] * 500,
    }
    with server.client() as client:
        _assert_json_error(client.post("/v2/models/minilm/infer", json=body), 400, "more than once")
        twice_in = {"inputs": [body["inputs"][0], body["inputs"][0]]}
        _assert_json_error(client.post("/v2/models/minilm/infer", json=twice_in), 400, "duplicate")
    client = triton_grpc.InferenceServerClient(server.grpc)
    text = triton_grpc.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"hello"], dtype=object))
    outputs = [triton_grpc.InferRequestedOutput(TEXT_OUTPUT) for _ in range(3)]
    with pytest.raises(InferenceServerException, match="more than once") as raised:
        client.infer("minilm", [text], outputs=outputs)
    assert raised.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)


# -- 6. content types on native REST ------------------------------------------------------------
@pytest.mark.parametrize("path", ["/embed", "/classify", "/predict", "/v2/models/digits/infer"])
@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded", "text/plain"]
)
def test_a_body_of_the_wrong_type_is_a_415_naming_the_type_expected(
    server: Server, path: str, content_type: str
) -> None:
    with server.client() as client:
        response = client.post(path, content=b'{"texts": ["hi"]}', headers={"content-type": content_type})
    _assert_json_error(response, 415, "application/json", content_type.split(";")[0])


def test_curls_default_form_encoding_is_told_to_send_json(server: Server) -> None:
    with server.client() as client:
        response = client.post("/embed", data={"texts": "hello"})  # what `curl -d texts=hello` sends
    _assert_json_error(response, 415, "takes application/json")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/embed", {"texts": ["a compressed request"]}),
        ("/classify", {"images": np.zeros((1, 64)).tolist()}),
        ("/v2/models/digits/infer", digits_infer_body(np.zeros((1, 1, 8, 8), np.float32))),
    ],
)
def test_compressed_bodies_are_inflated_on_every_route_and_other_encodings_refused(
    server: Server, path: str, body: dict[str, Any]
) -> None:
    raw = json.dumps(body).encode()
    with server.client() as client:
        plain = client.post(path, content=raw, headers={"content-type": "application/json"})
        packed = client.post(
            path,
            content=gzip.compress(raw),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        brotli = client.post(
            path, content=raw, headers={"content-type": "application/json", "content-encoding": "br"}
        )
    assert plain.status_code == packed.status_code == 200 and packed.json() == plain.json()
    _assert_json_error(brotli, 415, "unsupported Content-Encoding 'br'")


# -- 7. /classify and /predict are as strict as OIP v2 -------------------------------------------
@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 32)).tolist(),  # two rows that are not images
        np.zeros((1, 128)).tolist(),  # one row that is two images
        np.zeros((3, 4, 16)).tolist(),
        np.zeros((64,)).tolist(),  # one image without its batch axis
        [["0.637"] * 64],  # numbers in strings
        [[True] * 64],  # booleans
        [[0.5] * 63 + [True]],  # one boolean among numbers
        [[0.5] * 63 + [None]],
        [[0.5] * 64, [0.5] * 63],  # ragged
    ],
)
def test_classify_refuses_what_it_would_reshape_or_coerce(server: Server, images: Any) -> None:
    with server.client() as client:
        response = client.post("/classify", json={"images": images})
    _assert_json_error(response, 400, "images")


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("layout", [(8, 8), (64,), (1, 8, 8)])
def test_classify_answers_n_images_with_n_answers(
    server: Server, count: int, layout: tuple[int, ...]
) -> None:
    with server.client() as client:
        response = client.post("/classify", json={"images": np.zeros((count, *layout)).tolist()})
    assert response.status_code == 200, response.text
    assert len(response.json()["classes"]) == len(response.json()["probabilities"]) == count


def test_predict_refuses_strings_and_booleans_as_numbers(server: Server) -> None:
    with server.client() as client:
        for value in ("0.5", True):
            pixels = np.zeros((1, 1, 8, 8)).tolist()
            pixels[0][0][0][0] = value
            response = client.post("/predict", json={"model": "digits", "inputs": {"pixels": pixels}})
            _assert_json_error(response, 400, "pixels")


# -- 9. client errors are not logged at ERROR, and never with what the client sent ----------------
def test_client_errors_leave_no_error_lines_and_no_payload_in_the_log(server: Server) -> None:
    before = server.log.read_text(errors="replace")
    with server.client() as client:
        client.post("/embed", json={"texts": [MARKER * 2000]})  # over the character limit: pydantic
        client.post("/embed", json={"texts": MARKER})
        client.post("/classify", json={"images": [[MARKER] * 64]})
        client.post("/predict", json={"model": "digits", "inputs": {"pixels": [[MARKER]]}})
        client.post("/predict", json={"model": MARKER, "inputs": {}})
        client.post("/v2/models/digits/infer", json={"inputs": [{"name": MARKER}]})
        client.post("/admin/models/digits/load", json={"version": MARKER + " !"}, headers=ADMIN)
    grpc_client = triton_grpc.InferenceServerClient(server.grpc)
    text = triton_grpc.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([MARKER.encode() * 5000], dtype=object))
    with pytest.raises(InferenceServerException):
        grpc_client.infer("minilm", [text])
    new = server.log.read_text(errors="replace")[len(before) :]
    assert MARKER not in new
    assert not [line for line in new.splitlines() if "ERROR" in line or "Traceback" in line], new[-3000:]
    # ...but each is logged once at INFO, naming the protocol, route, status and error class.
    answered = [line for line in new.splitlines() if " answered 4" in line]
    assert len(answered) == 8 and all("INFO" in line for line in answered), new[-3000:]
    assert {line.split(" answered")[0].split()[-2] for line in answered} == {"rest", "rest-v2", "grpc"}


# -- 10. the model is resolved before the body ---------------------------------------------------
@pytest.mark.parametrize("body", [{"inputs": []}, {"inputs": "x"}, {}, {"inputs": [{"name": "a"}]}])
def test_an_unknown_model_is_404_whatever_the_body(server: Server, body: dict[str, Any]) -> None:
    with server.client() as client:
        _assert_json_error(client.post("/v2/models/nope/infer", json=body), 404, "nope")
        _assert_json_error(client.post("/v2/models/nope/infer", content=b"{broken"), 404, "nope")
        _assert_json_error(client.post("/v2/models/digits/versions/zz/infer", json=body), 404, "zz")


def test_an_unknown_model_is_not_found_on_grpc_whatever_the_inputs(server: Server) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc)
    ragged = triton_grpc.InferInput("pixels", [1, 64], "BYTES")  # wrong in every way
    ragged.set_data_from_numpy(np.array([[b"x"] * 64], dtype=object))
    with pytest.raises(InferenceServerException) as raised:
        client.infer("nope", [ragged])
    assert raised.value.status() == str(grpc.StatusCode.NOT_FOUND)
