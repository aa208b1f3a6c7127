"""Request bodies sent compressed (`Content-Encoding: gzip` or `deflate`, as tritonclient can send
them), inflated with the body limit holding for the inflated size: a small gzip bomb is a 413."""

from __future__ import annotations

import zlib

from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

IDENTITY = "identity"
SUPPORTED = ("gzip", "deflate")


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decoded from `encoding` (gzip, deflate or identity), at most `limit` bytes.

    Raises UnsupportedMediaType (415) for another encoding, PayloadTooLarge (413) when the inflated
    body exceeds `limit`, InvalidInput (400) for a corrupt or truncated stream."""
    encoding = encoding.strip().lower() or IDENTITY
    if encoding == IDENTITY:
        return body
    if encoding not in SUPPORTED:
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: accepts gzip and zlib headers
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the {encoding} request body is corrupt: {exc}") from None
    if len(inflated) > limit:
        raise too_large(limit)
    if not inflater.eof:
        raise InvalidInput(f"the {encoding} request body is truncated")
    return inflated
