"""Check a request's tensors against a model's signature before anything runs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from service.errors import InvalidInput
from service.settings import ServiceSettings
from service.types import InferenceRequest, TensorSpec


def _check_shape(name: str, shape: tuple[int, ...], spec: TensorSpec) -> None:
    if len(shape) != len(spec.shape):
        raise InvalidInput(
            f"input {name!r} has shape {list(shape)}; the model expects rank {len(spec.shape)} {list(spec.shape)}"
        )
    for actual, expected in zip(shape, spec.shape, strict=True):
        if expected != -1 and actual != expected:
            raise InvalidInput(
                f"input {name!r} has shape {list(shape)}; the model expects {list(spec.shape)}"
            )
    if shape[0] == 0:
        raise InvalidInput(f"input {name!r} is an empty batch")


def _check_values(name: str, data: np.ndarray, settings: ServiceSettings) -> None:
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InvalidInput(f"input {name!r} contains NaN or infinity")
    if data.dtype.kind == "O":
        if data.size > settings.max_texts:
            raise InvalidInput(f"input {name!r} has {data.size} texts; the limit is {settings.max_texts}")
        for item in data.reshape(-1):
            if not isinstance(item, bytes | str):
                raise InvalidInput(f"input {name!r} must hold text")
            try:
                text = item.decode("utf-8") if isinstance(item, bytes) else item
            except UnicodeDecodeError:
                raise InvalidInput(f"input {name!r} holds bytes that are not UTF-8 text") from None
            if len(text) > settings.max_text_chars:
                raise InvalidInput(
                    f"input {name!r} holds a text of {len(text)} characters; the limit is {settings.max_text_chars}"
                )


def validate(
    request: InferenceRequest,
    specs: tuple[TensorSpec, ...],
    settings: ServiceSettings,
    shown_as: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """The request's inputs by name, checked for names, datatypes, shapes and values. Errors name an
    input as `shown_as` maps it (the field a native route's body gave it, e.g. 'images' for the model's
    'pixels'), else by its own name. Raises InvalidInput."""
    names = [t.name for t in request.inputs]
    if len(set(names)) != len(names):
        raise InvalidInput(f"duplicate input names in {names}")
    expected = {s.name: s for s in specs}
    unknown = sorted(set(names) - set(expected))
    if unknown:
        raise InvalidInput(
            f"model {request.model!r} has no input {unknown[0]!r}; its inputs are {sorted(expected)}"
        )
    missing = sorted(set(expected) - set(names))
    if missing:
        raise InvalidInput(f"model {request.model!r} needs input {missing[0]!r}")
    inputs = {}
    for tensor in request.inputs:
        spec = expected[tensor.name]
        shown = (shown_as or {}).get(tensor.name, tensor.name)
        if tensor.datatype != spec.datatype:
            raise InvalidInput(f"input {shown!r} is {tensor.datatype}; the model expects {spec.datatype}")
        _check_shape(shown, tensor.shape, spec)
        _check_values(shown, tensor.data, settings)
        inputs[tensor.name] = tensor.data
    batches = {data.shape[0] for data in inputs.values()}
    if len(batches) > 1:
        raise InvalidInput(f"inputs disagree on the batch size: {sorted(batches)}")
    return inputs
