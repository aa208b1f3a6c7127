"""The OIP v2 REST codec on hand-made payloads: JSON and binary tensor data, both ways."""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import numpy as np
import pytest
from tritonclient.http import InferResult

from service.errors import InvalidInput
from service.types import InferenceResponse, Tensor
from service.v2.codec import OutputFormat, decode_request, encode_response


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def _binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, str]:
    text = _json(header)
    return text + b"".join(chunks), str(len(text))


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_json_inputs_flat_or_nested() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    body = _json(
        {
            "id": "r1",
            "parameters": {"custom": 1},
            "inputs": [
                {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": values.reshape(-1).tolist()},
                {"name": "b", "shape": [2, 3], "datatype": "INT64", "data": [[0, 1, 2], [3, 4, 5]]},
                {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["héllo", "world"]},
                {"name": "d", "shape": [1], "datatype": "BOOL", "data": [True]},
            ],
        }
    )
    request, output_format = decode_request(body, None, "m", "3")
    a, b, c, d = request.inputs
    assert (request.model, request.version, request.id) == ("m", "3", "r1")
    assert request.parameters == {"custom": 1} and request.outputs is None
    np.testing.assert_array_equal(a.data, values)
    assert a.data.dtype == np.float32 and b.data.dtype == np.int64 and b.shape == (2, 3)
    assert c.datatype == "BYTES" and c.data.tolist() == ["héllo".encode(), b"world"]
    assert d.data.dtype == np.bool_
    assert not output_format.is_binary("anything")


def test_binary_inputs_follow_the_json_header_in_order() -> None:
    numbers = np.arange(8, dtype=np.float32).reshape(2, 4)
    texts = _bytes_tensor(b"one", b"", "twö".encode())
    header = {
        "inputs": [
            {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}},
            {"name": "j", "shape": [1], "datatype": "INT32", "data": [7]},
            {"name": "t", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(texts)}},
        ]
    }
    body, length = _binary_body(header, numbers.astype("<f4").tobytes(), texts)
    request, _ = decode_request(body, length, "m")
    x, j, t = request.inputs
    np.testing.assert_array_equal(x.data, numbers)
    assert x.data.dtype == np.float32 and j.data.tolist() == [7]
    assert t.data.tolist() == [b"one", b"", "twö".encode()]


def test_requested_outputs_and_binary_choice() -> None:
    inputs = [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]
    outputs = [{"name": "p", "parameters": {"binary_data": False}}, {"name": "q"}]
    body = _json({"inputs": inputs, "outputs": outputs, "parameters": {"binary_data_output": True}})
    request, output_format = decode_request(body, None, "m")
    assert request.outputs == ["p", "q"]
    assert not output_format.is_binary("p") and output_format.is_binary("q")


def _response() -> InferenceResponse:
    return InferenceResponse(
        "m",
        "v1",
        [
            Tensor("logits", np.arange(6, dtype=np.float32).reshape(2, 3)),
            Tensor("labels", np.array([b"cat", "dög".encode()], dtype=object)),
        ],
        id="r9",
    )


def test_json_response_has_flat_data() -> None:
    body, json_size = encode_response(_response(), OutputFormat())
    assert json_size is None
    obj = json.loads(body)
    assert (obj["model_name"], obj["model_version"], obj["id"]) == ("m", "v1", "r9")
    logits, labels = obj["outputs"]
    assert logits == {"name": "logits", "datatype": "FP32", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]}
    assert labels == {"name": "labels", "datatype": "BYTES", "shape": [2], "data": ["cat", "dög"]}


@pytest.mark.parametrize("output_format", [OutputFormat(binary_default=True), OutputFormat({"logits": True})])
def test_binary_response_reads_back_with_tritonclient(output_format: OutputFormat) -> None:
    body, json_size = encode_response(_response(), output_format)
    assert json_size is not None
    header = json.loads(body[:json_size])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert body[json_size : json_size + 24] == np.arange(6, dtype="<f4").tobytes()
    result = InferResult.from_response_body(body, header_length=json_size)
    np.testing.assert_array_equal(result.as_numpy("logits"), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert [bytes(x) if isinstance(x, bytes) else x.encode() for x in result.as_numpy("labels")] == [
        b"cat",
        "dög".encode(),
    ]


FP32_X = {"name": "x", "shape": [2], "datatype": "FP32"}


def _with_number(datatype: str, first: str, number: str) -> bytes:
    """A request whose input holds `first` and `number` written out as JSON (json.dumps cannot write
    an integer of 400 digits as a float would overflow, so the body is spelled by hand)."""
    spec = f'"name": "x", "shape": [2], "datatype": "{datatype}", "data": [{first}, {number}]'
    return ('{"inputs": [{' + spec + "}]}").encode()


BAD_JSON = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    (_json({}), "needs 'inputs'"),
    (_json({"inputs": []}), "no inputs"),
    (_json({"inputs": [5]}), "must be an object"),
    (_json({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}), "needs 'name'"),
    (_json({"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}), "needs 'shape'"),
    (_json({"inputs": [{**FP32_X, "datatype": "FP8", "data": [1, 2]}]}), "unknown datatype 'FP8'"),
    (_json({"inputs": [{**FP32_X, "shape": [-1], "data": [1]}]}), "non-negative integers"),
    (
        _json({"inputs": [{**FP32_X, "shape": [-(10**4000)], "data": [1]}]}),
        "dimension 0 is an integer of 13,288 bits",
    ),
    (
        _json({"inputs": [{**FP32_X, "shape": [0, 10**4000], "data": []}]}),
        "dimension 1 is larger than 2,147,483,648",
    ),
    (_json({"inputs": [{**FP32_X, "shape": [2**40], "data": [1]}]}), "larger than 2,147,483,648"),
    (_json({"inputs": [{**FP32_X, "shape": [2**30] * 3, "data": [1]}]}), "holds more than 2,147,483,648"),
    (_json({"inputs": [{**FP32_X, "shape": [1] * 33, "data": [1]}]}), "33 dimensions; at most 32"),
    (_json({"inputs": [{**FP32_X, "shape": ["x" * 100], "data": [1]}]}), "dimension 0 is 'xxxx"),
    (_json({"inputs": [{**FP32_X, "shape": "2", "data": [1]}]}), "must be a list"),
    (_json({"inputs": [FP32_X]}), "needs 'data'"),
    (_json({"inputs": [{**FP32_X, "data": [1, 2, 3]}]}), "has 3 elements; shape [2] needs 2"),
    (_json({"inputs": [{**FP32_X, "data": [[1], [2, 3]]}]}), "ragged"),
    (_json({"inputs": [{**FP32_X, "data": ["1", "2"]}]}), "holds strings"),
    (_json({"inputs": [{**FP32_X, "data": [1, None]}]}), "non-numeric"),
    (_json({"inputs": [{**FP32_X, "datatype": "UINT8", "data": [1, 300]}]}), "out of range"),
    (
        _json({"inputs": [{**FP32_X, "datatype": "INT32", "data": [1.5, 2]}]}),
        "holds numbers written as decimals",
    ),
    (_json({"inputs": [{**FP32_X, "datatype": "INT32", "data": [1e3, 2]}]}), "(a fraction, an exponent, NaN"),
    # JSON integers of any length: beyond 64 bits numpy keeps them as Python objects.
    (_with_number("FP32", "1", "9" * 400), "beyond the range of FP32"),
    (_with_number("FP32", "1", "1" + "0" * 39), "beyond the range of FP32"),
    (_with_number("INT64", "1", "1" + "0" * 19), "out of range for INT64"),  # numpy: float64
    (_with_number("INT64", "1", "1" + "0" * 20), "out of range for INT64"),  # numpy: objects
    (_with_number("INT64", "1.5", "1" + "0" * 20), "holds numbers written as decimals"),
    (_with_number("INT64", "NaN", "2"), "holds numbers written as decimals"),
    (_with_number("FP32", "null", "1" + "0" * 19), "non-numeric"),
    (_json({"inputs": [{**FP32_X, "datatype": "BYTES", "data": ["a", 2]}]}), "must be strings"),
    (_json({"id": 5, "inputs": [{**FP32_X, "data": [1, 2]}]}), "'id' must be a string"),
    (
        _json(
            {
                "inputs": [{**FP32_X, "data": [1, 2]}],
                "outputs": [{"name": "y", "parameters": {"binary_data": 1}}],
            }
        ),
        "true or false",
    ),
    (
        _json(
            {
                "inputs": [{**FP32_X, "data": [1, 2]}],
                "outputs": [{"name": "y", "parameters": {"classification": 2}}],
            }
        ),
        "not supported",
    ),
    (_json({"inputs": [{**FP32_X, "parameters": {"shared_memory_region": "r"}}]}), "shared memory"),
    (_json({"inputs": [{**FP32_X, "parameters": {"binary_data_size": 8}}]}), "overruns the 0 bytes"),
]


def test_integers_beyond_64_bits_inside_the_float_range_are_numbers() -> None:
    tensor = decode_request(_with_number("FP32", "2", "1" + "0" * 22), None, "m")[0].inputs[0]
    assert tensor.data.dtype == np.float32 and tensor.data.tolist() == [2.0, float(np.float32(1e22))]


@pytest.mark.parametrize(("body", "message"), BAD_JSON)
def test_bad_json_requests_are_invalid_input(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_request(body, None, "m")


def _binary_case(size: int, shape: list[int], datatype: str = "FP32", *chunks: bytes) -> tuple[bytes, str]:
    spec = {"name": "x", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}
    return _binary_body({"inputs": [spec]}, *chunks)


BAD_BINARY = [
    (_binary_case(8, [10**4000, 2], "FP32", b"\0" * 8), "dimension 0 is larger than 2,147,483,648"),
    (_binary_case(8, [2], "FP32", b"\0" * 4), "overruns the 4 bytes"),
    (_binary_case(4, [2], "FP32", b"\0" * 4), "does not fit shape [2] of FP32 (8 bytes)"),
    (_binary_case(8, [2], "FP32", b"\0" * 12), "12 bytes of binary data but inputs declare 8"),
    (_binary_case(-4, [2], "FP32", b"\0" * 8), "must not be negative"),
    (_binary_case(10, [3], "BYTES", _bytes_tensor(b"a", b"b")), "holds 2 elements; its shape needs 3"),
    (_binary_case(6, [1], "BYTES", struct.pack("<I", 9) + b"ab"), "runs past the end of the data"),
    (_binary_case(7, [2], "BYTES", _bytes_tensor(b"a") + b"\0\0"), "inside a length prefix"),
]


@pytest.mark.parametrize(("payload", "message"), BAD_BINARY)
def test_bad_binary_requests_are_invalid_input(payload: tuple[bytes, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_request(*payload, "m")


@pytest.mark.parametrize(("header_length", "message"), [("abc", "must be an integer"), ("9999", "body has")])
def test_bad_header_length_is_invalid_input(header_length: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_request(_json({"inputs": []}), header_length, "m")
