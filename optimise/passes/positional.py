"""A bundle's module as a function of positional tensors, for exporters that trace one.

TorchScript tracing and `torch.export` (LiteRT's converter) call a module with positional tensors
and record what it returns; a sentence-transformers model takes a dict and returns a dict, a
Hugging Face model takes keywords. `positional_module` wraps any of them so that it takes the
bundle's inputs in `input_names` order and returns the bundle's outputs as a tuple of tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from optimise.runtimes.base import TensorInfo
from optimise.runtimes.torchscript_session import flatten_outputs
from optimise.source import ModelBundle


class _SentenceTransformerInputs(torch.nn.Module):
    """(input_ids, attention_mask, ...) -> the pooled sentence embedding [batch, dim]."""

    def __init__(self, module: torch.nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.inner = module
        self.input_names = input_names

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor]:
        features = dict(zip(self.input_names, tensors, strict=True))
        return (self.inner(features)["sentence_embedding"],)


class _TransformerInputs(torch.nn.Module):
    """(input_ids, attention_mask, ...) -> the named outputs of a Hugging Face model."""

    def __init__(
        self, module: torch.nn.Module, input_names: tuple[str, ...], outputs: tuple[str, ...]
    ) -> None:
        super().__init__()
        self.inner = module
        self.input_names = input_names
        self.outputs = outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.inner(**dict(zip(self.input_names, tensors, strict=True)))
        return tuple(result[name] for name in self.outputs)


def positional_module(module: torch.nn.Module, bundle: ModelBundle) -> torch.nn.Module:
    """`module` (the bundle's, or one a torch pass changed) callable as `module(*inputs)` in
    `bundle.input_names` order, returning its outputs in `bundle.output_names` order (a tensor or a
    tuple of them). Modules that already take positional tensors are returned unchanged."""
    if bundle.hf_library == "sentence_transformers":
        return _SentenceTransformerInputs(module, bundle.input_names).eval()
    if bundle.hf_library == "transformers":
        return _TransformerInputs(module, bundle.input_names, bundle.output_names).eval()
    return module


def batch_axis_name(bundle: ModelBundle) -> str:
    """What the bundle calls the sample axis: axis 0 of its first input ('batch' if unnamed)."""
    return bundle.dynamic_axes.get(bundle.input_names[0], {}).get(0, "batch")


def named_shape(shape: tuple[int, ...], axes: Mapping[int, str]) -> tuple[int | str | None, ...]:
    """`shape` with its dynamic axes named as `axes` names them (the bundle's `dynamic_axes` form)."""
    return tuple(axes.get(axis, size) for axis, size in enumerate(shape))


def output_infos(module: torch.nn.Module, bundle: ModelBundle) -> list[TensorInfo]:
    """The outputs of positional `module` on the bundle's latency input, by the bundle's output names:
    dtype and shape, with the bundle's dynamic axes, else axis 0 as the sample axis."""
    with torch.inference_mode():
        outputs = flatten_outputs(
            module(*(torch.from_numpy(bundle.latency_inputs[n]) for n in bundle.input_names))
        )
    default = {0: batch_axis_name(bundle)}
    return [
        TensorInfo(name, array.dtype.type, named_shape(array.shape, bundle.dynamic_axes.get(name, default)))
        for name, array in zip(bundle.output_names, outputs, strict=False)
    ]
