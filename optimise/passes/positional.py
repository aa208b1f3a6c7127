"""A bundle's module as a function of positional tensors, for exporters that trace one.

TorchScript tracing and `torch.export` (LiteRT's converter) call a module with positional tensors
and record what it returns; a sentence-transformers model takes a dict and returns a dict, a
Hugging Face model takes keywords. `positional_module` wraps any of them so that it takes the
bundle's inputs in `input_names` order and returns the bundle's outputs as a tuple of tensors.
"""

from __future__ import annotations

import torch

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
