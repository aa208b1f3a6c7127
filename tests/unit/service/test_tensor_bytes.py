"""One framing of tensor bytes for OIP v2 REST (binary extension) and gRPC (raw contents)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from service.errors import InvalidInput
from service.tensor_bytes import decode_tensor, encode_tensor, fit_integers
from service.types import NUMPY_DTYPES


@pytest.mark.parametrize("datatype", sorted(NUMPY_DTYPES))
def test_every_datatype_round_trips(datatype: str) -> None:
    dtype = NUMPY_DTYPES[datatype]
    if datatype == "BYTES":
        data = np.array([b"a", b"", b"\xff\x00", "text"], dtype=object).reshape(2, 2)
        expected = np.array([b"a", b"", b"\xff\x00", b"text"], dtype=object).reshape(2, 2)
    else:
        data = expected = np.array([0, 1, 1, 0]).reshape(2, 2).astype(dtype)
    decoded = decode_tensor(encode_tensor(data), "x", dtype, (2, 2))
    np.testing.assert_array_equal(decoded, expected)
    assert decoded.dtype == dtype and decoded.flags.writeable


def test_the_wire_is_little_endian() -> None:
    assert encode_tensor(np.array([1], dtype=np.dtype(">u2"))) == b"\x01\x00"
    assert encode_tensor(np.array(["ab"], dtype=object)) == struct.pack("<I", 2) + b"ab"


@pytest.mark.parametrize(
    ("raw", "dtype", "shape", "message"),
    [
        (b"\0" * 7, np.dtype(np.float32), (2,), "7 bytes of raw data; shape [2] of FP32 needs 8"),
        (b"\2\0", np.dtype(object), (1,), "ends inside a length prefix"),
        (struct.pack("<I", 9) + b"ab", np.dtype(object), (1,), "element 0 of 9 bytes runs past the end"),
        (struct.pack("<I", 1) + b"a", np.dtype(object), (2,), "holds 1 element; its shape needs 2"),
    ],
)
def test_malformed_bytes_name_the_input(
    raw: bytes, dtype: np.dtype[Any], shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(InvalidInput, match="input 'x'") as raised:
        decode_tensor(raw, "x", dtype, shape)
    assert message in str(raised.value)


def test_integers_must_fit_their_datatype() -> None:
    np.testing.assert_array_equal(fit_integers("x", np.array([-128, 127]), np.dtype(np.int8)), [-128, 127])
    for values, dtype in (([300], np.uint8), ([-1], np.uint16), ([2**40], np.int32)):
        with pytest.raises(InvalidInput, match="out of range for"):
            fit_integers("x", np.array(values, dtype=np.int64), np.dtype(dtype))
