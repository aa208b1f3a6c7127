"""Tensor bytes on the wire, for both protocols: OIP v2 REST's binary extension and gRPC's raw contents.

The Open Inference Protocol frames a tensor's elements row-major and little-endian; a BYTES element
is a 4-byte little-endian length followed by that many bytes. Narrow integers that travel wider
(gRPC's int_contents, JSON numbers) must fit their datatype. Errors are `InvalidInput` naming the input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.types import DATATYPES

_LENGTH = struct.Struct("<I")
MAX_RANK = 32
"""Dimensions a request's tensor may have (numpy takes 64; served models take a handful)."""
MAX_ELEMENTS = 2**31
"""Elements a request's tensor may declare: more than any request body the server admits can carry."""


def checked_shape(name: str, shape: Sequence[object]) -> tuple[int, ...]:
    """A request's declared shape as ints, refused with InvalidInput before anything is computed from
    it: an entry that is not a non-negative integer, more than `MAX_RANK` dimensions, or more than
    `MAX_ELEMENTS` elements. Messages never print a huge entry (Python refuses to format integers
    past 4,300 digits, and multiplying thousands of huge ones took seconds)."""
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_RANK}")
    dimensions: list[int] = []
    for position, dimension in enumerate(shape):
        if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 0:
            raise InvalidInput(
                f"input {name!r}: shape must be a list of non-negative integers; dimension {position} is "
                f"{_short(dimension)}"
            )
        if dimension > MAX_ELEMENTS:
            raise InvalidInput(
                f"input {name!r}: shape dimension {position} is larger than {MAX_ELEMENTS:,} elements"
            )
        dimensions.append(int(dimension))
    if math.prod(dimensions) > MAX_ELEMENTS:  # at most MAX_RANK factors up to 2**31: quick
        raise InvalidInput(f"input {name!r}: shape {dimensions} holds more than {MAX_ELEMENTS:,} elements")
    return tuple(dimensions)


def elements(count: int) -> str:
    """'1 element', '3 elements': a count of tensor elements in an error message."""
    return f"{count:,} element{'' if count == 1 else 's'}"


def _short(value: object) -> str:
    """A client's value in a message, at most ~40 characters (never formatting a huge integer whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length():,} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def object_array(items: Sequence[bytes], shape: Sequence[int]) -> np.ndarray:
    """BYTES elements as an object array of `shape` (np.array on bytes would pick a fixed width)."""
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array.reshape(tuple(shape))


def decode_bytes(raw: bytes | memoryview, name: str, shape: Sequence[int]) -> np.ndarray:
    """Length-prefixed BYTES elements: exactly as many as `shape` holds, nothing left over."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidInput(f"input {name!r}: BYTES data ends inside a length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInput(
                f"input {name!r}: BYTES element {len(items)} of {length} bytes runs past the end of the data"
            )
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    count = math.prod(shape)
    if len(items) != count:
        raise InvalidInput(f"input {name!r}: its data holds {elements(len(items))}; its shape needs {count}")
    return object_array(items, shape)


def decode_fixed(
    raw: bytes | memoryview, name: str, dtype: np.dtype[Any], shape: Sequence[int]
) -> np.ndarray:
    """Little-endian elements of a fixed-width `dtype` as a writable, native-order array of `shape`."""
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input {name!r} has {len(raw)} bytes of raw data; "
            f"shape {list(shape)} of {DATATYPES[dtype]} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(tuple(shape))


def decode_tensor(
    raw: bytes | memoryview, name: str, dtype: np.dtype[Any], shape: Sequence[int]
) -> np.ndarray:
    """A tensor's bytes as framed on the wire, BYTES or fixed-width by `dtype` (object = BYTES)."""
    if dtype == np.dtype(object):
        return decode_bytes(raw, name, shape)
    return decode_fixed(raw, name, dtype, shape)


def encode_tensor(array: np.ndarray) -> bytes:
    """A tensor's elements, flattened row-major, as framed on the wire (str elements as UTF-8)."""
    if array.dtype.kind in "OSU":
        items = [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in array.reshape(-1)]
        return b"".join(_LENGTH.pack(len(item)) + item for item in items)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def out_of_range(name: str, dtype: np.dtype[Any]) -> InvalidInput:
    """The error for integers that do not fit `dtype` (raised, never wrapped around)."""
    return InvalidInput(f"input {name!r}: data has values out of range for {DATATYPES[dtype]}")


def fit_integers(name: str, wide: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """`wide` values as `dtype`; integers that do not fit it are refused, never wrapped around."""
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = wide.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(narrow, wide):
        raise out_of_range(name, dtype)
    return narrow
