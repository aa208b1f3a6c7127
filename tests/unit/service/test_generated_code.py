"""The checked-in gRPC code is what the proto generates, and it speaks tritonclient's wire format."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor

from service._generated import grpc_predict_v2_pb2 as pb
from service.protos import generate


def test_checked_in_code_is_up_to_date(tmp_path: Path) -> None:
    for fresh in generate.generate(tmp_path):
        checked_in = generate.DEFAULT_OUT / fresh.name
        assert fresh.read_bytes() == checked_in.read_bytes(), (
            f"{checked_in} is stale: run `python -m service.protos.generate` and commit the result"
        )


def _fields(message: Descriptor) -> dict[str, tuple[int, int, str]]:
    """Every field, nested messages included, as (number, type, message type) by dotted name."""
    fields = {
        f"{message.name}.{field.name}": (
            field.number,
            field.type,
            field.message_type.full_name if field.message_type else "",
        )
        for field in message.fields
    }
    for nested in message.nested_types:
        fields.update({f"{message.name}.{k}": v for k, v in _fields(nested).items()})
    return fields


@pytest.mark.parametrize("message", sorted(pb.DESCRIPTOR.message_types_by_name))
def test_messages_match_tritonclient(message: str) -> None:
    """Triton's proto is a superset of the protocol: every field we define must agree with it."""
    triton = pytest.importorskip("tritonclient.grpc.service_pb2")
    ours = _fields(pb.DESCRIPTOR.message_types_by_name[message])
    theirs = _fields(triton.DESCRIPTOR.message_types_by_name[message])
    assert {name: theirs.get(name) for name in ours} == ours


def test_service_matches_tritonclient() -> None:
    triton = pytest.importorskip("tritonclient.grpc.service_pb2")
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            other.input_type.full_name,
            other.output_type.full_name,
        )
