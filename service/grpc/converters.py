"""Translate OIP v2 gRPC messages to and from the data plane's protocol-neutral types.

Only translation lives here: decoding checks that the bytes fit the declared
datatype and shape, and everything about the model (names, datatypes, shapes,
values) is the data plane's to check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service._generated import grpc_predict_v2_pb2 as pb
from service.errors import InvalidInput
from service.tensor_bytes import checked_shape, decode_tensor, encode_tensor, fit_integers, object_array
from service.types import (
    NUMPY_DTYPES,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    TensorSpec,
)

# Which InferTensorContents field carries each datatype; FP16 has none (raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_WIDE = {"i": np.dtype(np.int64), "u": np.dtype(np.uint64)}


# -- requests ------------------------------------------------------------------------------
def parameters_from_proto(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(param, choice)
    return values


def _shape(tensor: pb.ModelInferRequest.InferInputTensor) -> tuple[int, ...]:
    return checked_shape(tensor.name, list(tensor.shape))


def _from_contents(tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...]) -> np.ndarray:
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidInput(
            f"input {tensor.name!r} is {tensor.datatype}, which can only be sent as raw contents"
        )
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        others = [f.name for f, v in tensor.contents.ListFields() if f.name != field and len(v)]
        hint = f" (data was sent in {others[0]})" if others else ""
        raise InvalidInput(
            f"input {tensor.name!r} holds {len(values)} values in {field}; "
            f"shape {list(shape)} needs {count}{hint}"
        )
    if tensor.datatype == "BYTES":
        return object_array(list(values), shape)
    dtype = NUMPY_DTYPES[tensor.datatype]
    # Narrow integers travel as 32-bit ones: decode wide, then refuse values that do not fit.
    wide = np.array(list(values), dtype=_WIDE.get(dtype.kind, dtype))
    return fit_integers(tensor.name, wide, dtype).reshape(shape)


def to_inference_request(request: pb.ModelInferRequest) -> InferenceRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"the request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents entries"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        if tensor.datatype not in NUMPY_DTYPES:
            raise InvalidInput(
                f"input {tensor.name!r} has unknown datatype {tensor.datatype!r}; "
                f"known: {', '.join(NUMPY_DTYPES)}"
            )
        if raw and tensor.HasField("contents"):
            raise InvalidInput(
                f"input {tensor.name!r} sets contents while the request uses raw_input_contents"
            )
        shape = _shape(tensor)
        data = (
            decode_tensor(raw[index], tensor.name, NUMPY_DTYPES[tensor.datatype], shape)
            if raw
            else _from_contents(tensor, shape)
        )
        tensors.append(Tensor(tensor.name, data, parameters_from_proto(tensor.parameters)))
    return InferenceRequest(
        model=request.model_name,
        inputs=tensors,
        version=request.model_version or None,
        outputs=[output.name for output in request.outputs] or None,
        id=request.id or None,
        parameters=parameters_from_proto(request.parameters),
    )


# -- responses -----------------------------------------------------------------------------
def to_infer_response(response: InferenceResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model, model_version=response.version, id=response.id or ""
    )
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_output_contents.append(encode_tensor(tensor.data))
    return message


# -- metadata ------------------------------------------------------------------------------
def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def to_model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[_tensor_metadata(spec) for spec in metadata.inputs],
        outputs=[_tensor_metadata(spec) for spec in metadata.outputs],
    )


def to_server_metadata(name: str, version: str, extensions: Sequence[str] = ()) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=name, version=version, extensions=list(extensions))
