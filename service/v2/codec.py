"""OIP v2 REST bodies <-> protocol-neutral requests and responses, with the binary tensor data extension.

With the extension (what tritonclient.http sends by default), the body is
`Inference-Header-Content-Length` bytes of JSON followed by the raw tensors of
every input that has `parameters.binary_data_size`, in input order: numeric
tensors little-endian and contiguous, BYTES elements each prefixed with a
4-byte little-endian length. Responses use the same layout for the outputs
asked for in binary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput
from service.tensor_bytes import (
    checked_shape,
    decode_tensor,
    elements,
    encode_tensor,
    fit_integers,
    out_of_range,
)
from service.types import DATATYPES, NUMPY_DTYPES, InferenceRequest, InferenceResponse, Tensor

HEADER_LENGTH = "Inference-Header-Content-Length"
# JSON numbers that may fill a tensor of each numpy kind (bool, int, uint, float).
_SOURCE_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_NOT_INTEGERS = "numbers written as decimals (a fraction, an exponent, NaN or infinity)"
_VALUE_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": _NOT_INTEGERS, "U": "strings"}
_KIND_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object", bool: "true or false"}


@dataclass(frozen=True)
class OutputFormat:
    """Which outputs go back as binary: per-output `binary_data`, else the request's `binary_data_output`."""

    binary: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def _field(obj: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    """obj[key] checked to be of `kind` (bools are not integers); absent or null -> default, or an error."""
    value = obj.get(key)
    if value is None:
        if default is None:
            raise InvalidInput(f"{where} needs {key!r}")
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidInput(f"{where}: {key!r} must be {_KIND_NAMES[kind]}, not {value!r:.60}")
    return value


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        size = int(header_length)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer, not {header_length!r:.40}") from None
    if not 0 <= size <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {size} but the body has {len(body)} bytes")
    return body[:size], memoryview(body)[size:]


def _load_json(text: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidInput("the request must be a JSON object")
    return obj


def _flatten(data: list[Any]) -> list[Any]:
    """Nested lists in row-major order; a loop rather than recursion, so deep nesting cannot overflow."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _json_bytes(name: str, data: Any) -> np.ndarray:
    items = _flatten(data) if isinstance(data, list) else [data]
    if not all(isinstance(item, str) for item in items):
        raise InvalidInput(f"input {name!r} is BYTES: its data must be strings")
    try:
        return np.array([item.encode("utf-8") for item in items], dtype=object)
    except UnicodeEncodeError:
        raise InvalidInput(f"input {name!r} holds a string that is not valid Unicode") from None


def _json_numbers(name: str, data: Any, dtype: np.dtype[Any]) -> np.ndarray:
    try:
        array = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"input {name!r}: data is a ragged nested list") from None
    if array.size == 0:
        return array.astype(dtype)
    if array.dtype.kind == "O":
        array = _numbers_beyond_64_bits(name, array, dtype)
    if array.dtype.kind not in _SOURCE_KINDS[dtype.kind]:
        if dtype.kind in "iu" and array.dtype.kind == "f" and all(type(x) is int for x in _flatten([data])):
            # Integers past int64 beside smaller ones: numpy made them float64, none is a decimal.
            raise out_of_range(name, dtype)
        found = _VALUE_NAMES.get(array.dtype.kind, "mixed or non-numeric values")
        raise InvalidInput(f"input {name!r} is {DATATYPES[dtype]}: its data holds {found}")
    # numpy turns true/false among numbers into 1/0 silently; JSON booleans are not numbers.
    if dtype.kind != "b" and array.dtype.kind != "b" and any(type(x) is bool for x in _flatten([data])):
        raise InvalidInput(
            f"input {name!r} is {DATATYPES[dtype]}: its data holds true or false among numbers"
        )
    converted = fit_integers(name, array, dtype)
    if dtype.kind == "f" and (np.isinf(converted) & np.isfinite(array)).any():
        raise InvalidInput(f"input {name!r}: data has values beyond the range of {DATATYPES[dtype]}")
    return converted


def _numbers_beyond_64_bits(name: str, array: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """An object array numpy made of JSON numbers, as float64 for a float `dtype`: JSON integers may
    have any number of digits, and numpy keeps those beyond 64 bits as Python objects (1e23 written
    out is a valid FP32 value). Raises InvalidInput for anything else in it, for such an integer in
    an integer datatype (out of range), and for one beyond float64 (beyond the range of `dtype`)."""
    items = array.ravel().tolist()
    if not all(type(item) in (int, float) for item in items):
        raise InvalidInput(
            f"input {name!r} is {DATATYPES[dtype]}: its data holds mixed or non-numeric values"
        )
    if dtype.kind != "f":
        if any(type(item) is float for item in items):
            raise InvalidInput(f"input {name!r} is {DATATYPES[dtype]}: its data holds {_NOT_INTEGERS}")
        raise out_of_range(name, dtype)
    try:
        return np.array([float(item) for item in items], dtype=np.float64).reshape(array.shape)
    except OverflowError:
        raise InvalidInput(
            f"input {name!r}: data has values beyond the range of {DATATYPES[dtype]}"
        ) from None


def array_from_json(name: str, data: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """A JSON value (nested lists in row-major order, or a scalar) as an array of `dtype`, strictly:
    numbers only for numeric types (no strings, no booleans among numbers, integers in range),
    strings only for BYTES (an object array of UTF-8 `bytes`). Raises `InvalidInput` naming `name`."""
    if dtype == np.dtype(object):
        return _json_bytes(name, data)
    return _json_numbers(name, data, dtype)


def _decode_input(obj: Any, index: int, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    """One input tensor, and the offset of the next input's binary data."""
    if not isinstance(obj, dict):
        raise InvalidInput(f"inputs[{index}] must be an object")
    name = _field(obj, "name", str, f"inputs[{index}]")
    datatype = _field(obj, "datatype", str, f"input {name!r}")
    shape = _field(obj, "shape", list, f"input {name!r}")
    parameters = _field(obj, "parameters", dict, f"input {name!r}", {})
    if datatype not in NUMPY_DTYPES:
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}; known: {sorted(NUMPY_DTYPES)}")
    shape = list(checked_shape(name, shape))
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"input {name!r}: the shared memory extension is not supported")
    dtype, count = NUMPY_DTYPES[datatype], math.prod(shape)
    if "binary_data_size" in parameters:
        size = _field(parameters, "binary_data_size", int, f"input {name!r} parameters")
        if size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must not be negative")
        if offset + size > len(binary):
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} overruns the {len(binary)} bytes of binary data"
            )
        raw = binary[offset : offset + size]
        if datatype != "BYTES" and size != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} does not fit shape {shape} of {datatype}"
                f" ({count * dtype.itemsize} bytes)"
            )
        array = decode_tensor(raw, name, dtype, shape)
        offset += size
    elif "data" not in obj:
        raise InvalidInput(f"input {name!r} needs 'data' or parameters.binary_data_size")
    else:
        data = obj["data"]
        array = array_from_json(name, data, dtype)
    if array.size != count:
        raise InvalidInput(f"input {name!r}: data has {elements(array.size)}; shape {shape} needs {count}")
    return Tensor(name, array.reshape(shape), parameters), offset


def _decode_outputs(request: dict[str, Any]) -> tuple[list[str] | None, dict[str, bool]]:
    outputs = _field(request, "outputs", list, "the request", [])
    names, binary = [], {}
    for index, obj in enumerate(outputs):
        if not isinstance(obj, dict):
            raise InvalidInput(f"outputs[{index}] must be an object")
        name = _field(obj, "name", str, f"outputs[{index}]")
        parameters = _field(obj, "parameters", dict, f"output {name!r}", {})
        if "classification" in parameters or "shared_memory_region" in parameters:
            raise InvalidInput(f"output {name!r}: classification and shared memory are not supported")
        if "binary_data" in parameters:
            binary[name] = _field(parameters, "binary_data", bool, f"output {name!r} parameters")
        names.append(name)
    return names or None, binary


def decode_request(
    body: bytes, header_length: str | None, model: str, version: str | None = None
) -> tuple[InferenceRequest, OutputFormat]:
    """Parse an infer body; `header_length` is the Inference-Header-Content-Length header, if sent."""
    text, binary = _split_body(body, header_length)
    obj = _load_json(text)
    request_id = _field(obj, "id", str, "the request", "") or None
    parameters = _field(obj, "parameters", dict, "the request", {})
    inputs_json = _field(obj, "inputs", list, "the request")
    if not inputs_json:
        raise InvalidInput("the request has no inputs")
    inputs, offset = [], 0
    for index, item in enumerate(inputs_json):
        tensor, offset = _decode_input(item, index, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(f"the body has {len(binary)} bytes of binary data but inputs declare {offset}")
    outputs, binary_outputs = _decode_outputs(obj)
    binary_default = _field(parameters, "binary_data_output", bool, "the request parameters", False)
    request = InferenceRequest(model, inputs, version, outputs, request_id, parameters)
    return request, OutputFormat(binary_outputs, binary_default)


def _json_data(array: np.ndarray) -> list[Any] | np.ndarray:
    if array.dtype.kind in "OSU":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    return array.reshape(-1)  # written by `json_bytes` straight from NumPy


def json_bytes(value: Any) -> bytes:
    """`value` as compact JSON; NumPy arrays and scalars are written directly by orjson (no Python
    float lists: ~10x faster for an embedding), arrays it does not take (strings, non-contiguous,
    unusual dtypes) through `tolist()`."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=_as_list)


def _as_list(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def encode_response(response: InferenceResponse, output_format: OutputFormat) -> tuple[bytes, int | None]:
    """The body, and the JSON header's length when any output is binary (else None: all JSON)."""
    outputs, chunks = [], []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if output_format.is_binary(tensor.name):
            chunks.append(encode_tensor(tensor.data))
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = _json_data(tensor.data)
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.id is not None:
        body["id"] = response.id
    body["outputs"] = outputs
    header = json_bytes(body)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
