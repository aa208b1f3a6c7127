"""Structured pruning with Torch-Pruning: remove whole channels, neurons and heads.

Unlike unstructured sparsity this makes the dense layers smaller, so every
runtime runs the pruned model faster without sparse kernels. Torch-Pruning's
dependency graph keeps coupled layers consistent (a removed conv channel also
leaves the next layer's input). The model's inputs and outputs keep their
shapes: input channels of the first layer are never prunable, and the layer that
produces each output is excluded. BERT encoders follow their own recipe (see
`_transformer_pruning`). Accuracy lost to pruning is recovered by the bundle's
`fine_tune` hook when it has one.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch_pruning as tp

from optimise.errors import PassFailed
from optimise.passes._transformer_pruning import prune_bert_encoder
from optimise.passes.base import PassConfig, PassContext, TorchPass
from optimise.source import ModelBundle

logger = logging.getLogger(__name__)

ForwardFn = Callable[[torch.nn.Module, Any], Any]


@dataclass(frozen=True)
class PruneStructuredConfig(PassConfig):
    """Settings of structured pruning.

    Attributes:
        ratio: share of prunable channels / neurons (and attention heads) removed from
            each layer, 0 < ratio < 1. Transformers: share of FFN neurons and of heads.
        importance: how channels are ranked without labels: "l1" or "l2" weight magnitude.
        fine_tune_steps: recovery training steps after pruning through the bundle's
            `fine_tune` hook; skipped (with a log line) when the bundle has none.
        round_to: keep each pruned layer's width a multiple of this (e.g. 8 for SIMD);
            None keeps exactly what the ratio gives. Does not apply to head counts.
        prune_heads: transformers only: also remove whole attention heads.
    """

    ratio: float = 0.25
    importance: str = "l1"
    fine_tune_steps: int = 200
    round_to: int | None = None
    prune_heads: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio < 1:
            raise ValueError(f"ratio must be a number with 0 < ratio < 1, got {self.ratio!r}")
        if self.importance not in ("l1", "l2"):
            raise ValueError(f"importance must be 'l1' or 'l2', got {self.importance!r}")
        if not _is_int(self.fine_tune_steps) or self.fine_tune_steps < 0:
            raise ValueError(f"fine_tune_steps must be an integer >= 0, got {self.fine_tune_steps!r}")
        if self.round_to is not None and (not _is_int(self.round_to) or self.round_to < 1):
            raise ValueError(f"round_to must be None or an integer >= 1, got {self.round_to!r}")
        if not isinstance(self.prune_heads, bool):
            raise ValueError(f"prune_heads must be true or false, got {self.prune_heads!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class PruneStructured(TorchPass[PruneStructuredConfig]):
    name = "prune_structured"
    config_type = PruneStructuredConfig

    def run(self, module: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        bundle = ctx.bundle
        pruned = copy.deepcopy(module).eval()
        before = count_parameters(pruned)
        with self.failures("pruning failed"):
            expected = _output_shapes(pruned, bundle)
            with torch.enable_grad():  # Torch-Pruning traces the autograd graph
                self._prune(pruned, bundle)
            self._check_outputs(pruned, bundle, expected)
        after = count_parameters(pruned)
        if after >= before:
            raise PassFailed(self.name, f"ratio {self.config.ratio} removed nothing ({before:,} parameters)")
        logger.info("pruned %s: %s -> %s parameters (%.1f%% removed)",
                    bundle.name, f"{before:,}", f"{after:,}", 100 * (1 - after / before))  # fmt: skip
        self._recover(pruned, bundle)
        return pruned.eval()

    def _prune(self, module: torch.nn.Module, bundle: ModelBundle) -> None:
        example, forward_fn = example_inputs(module, bundle)
        common: dict[str, Any] = {
            "example_inputs": example,
            "forward_fn": forward_fn,
            "importance": tp.importance.MagnitudeImportance(p=1 if self.config.importance == "l1" else 2),
            "round_to": self.config.round_to,
        }
        if bundle.transformer_type == "bert":
            prune_bert_encoder(module, ratio=self.config.ratio, prune_heads=self.config.prune_heads, **common)
        elif bundle.transformer_type is not None:
            raise PassFailed(self.name, f"no pruning recipe for transformer type {bundle.transformer_type!r}")
        else:
            ignored = output_layers(module, bundle)
            pruner = tp.pruner.BasePruner(
                module, pruning_ratio=self.config.ratio, ignored_layers=ignored, **common
            )
            pruner.step()

    def _check_outputs(
        self, module: torch.nn.Module, bundle: ModelBundle, expected: list[tuple[int, ...]]
    ) -> None:
        actual = _output_shapes(module, bundle)
        if actual != expected:
            raise PassFailed(self.name, f"pruning changed the output shapes {expected} -> {actual}")

    def _recover(self, module: torch.nn.Module, bundle: ModelBundle) -> None:
        steps = self.config.fine_tune_steps
        if steps == 0:
            return
        if bundle.fine_tune is None:
            logger.info("%s has no fine_tune hook: skipping %d recovery steps", bundle.name, steps)
            return
        logger.info("fine-tuning the pruned %s for %d steps", bundle.name, steps)
        with self.failures("fine-tuning failed"):
            bundle.fine_tune(module, steps)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def example_inputs(module: torch.nn.Module, bundle: ModelBundle) -> tuple[Any, ForwardFn | None]:
    """The batch-1 latency inputs as tensors, shaped for how `module` is called.

    Keyword call when the forward names every input (HF models), one feature dict
    for a SentenceTransformer, positional otherwise (as the bundle's default forward).
    """
    tensors = {
        name: torch.from_numpy(np.ascontiguousarray(bundle.latency_inputs[name]))
        for name in bundle.input_names
    }
    if set(bundle.input_names) <= _parameter_names(module):
        return tensors, None  # Torch-Pruning calls module(**tensors)
    if bundle.hf_library == "sentence_transformers":
        return tensors, _call_with_features
    return tuple(tensors.values()), None


def _call_with_features(module: torch.nn.Module, features: dict[str, torch.Tensor]) -> Any:
    return module(dict(features))


def _parameter_names(module: torch.nn.Module) -> set[str]:
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):  # e.g. scripted modules
        return set()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in named}


def output_layers(module: torch.nn.Module, bundle: ModelBundle) -> list[torch.nn.Module]:
    """The last Linear / Conv whose width matches each output: they keep their output size."""
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    found: list[torch.nn.Module] = []
    for shape in _output_shapes(module, bundle):
        widths = set(shape[1:])
        match = next((m for m in reversed(layers) if _width(m) in widths), None)
        if match is None:
            logger.warning(
                "no layer of %s matches output shape %s; relying on the shape check", bundle.name, shape
            )
        elif match not in found:
            found.append(match)
    return found


def _width(layer: torch.nn.Module) -> int:
    return int(layer.out_features if isinstance(layer, torch.nn.Linear) else layer.out_channels)  # type: ignore[arg-type]


def _output_shapes(module: torch.nn.Module, bundle: ModelBundle) -> list[tuple[int, ...]]:
    assert bundle.forward is not None  # set in ModelBundle.__post_init__
    return [tuple(out.shape) for out in bundle.forward(module, bundle.latency_inputs)]
