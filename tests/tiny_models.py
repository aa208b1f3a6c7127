"""Tiny models and factories for tests; importable as `tiny_models:<factory>` by the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from optimise.passes.base import PassContext
from optimise.source import ModelBundle


class TinyClassifier(torch.nn.Module):
    """A two-layer MLP: small enough to build in milliseconds, big enough to quantise."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 4)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def make_tiny_bundle(seed: int = 0) -> ModelBundle:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module = TinyClassifier().eval()
    features = rng.normal(size=(96, 16)).astype(np.float32)
    with torch.no_grad():
        labels = module(torch.from_numpy(features)).argmax(dim=1).numpy()
    return ModelBundle(
        name="tiny",
        module=module,
        input_names=("features",),
        output_names=("logits",),
        dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}},
        latency_inputs={"features": features[:1]},
        eval_inputs={"features": features[:64]},
        eval_labels=labels[:64],
        calibration_inputs={"features": features[64:]},
    )


def build() -> ModelBundle:
    """A factory in the `package.module:function` form users write."""
    return make_tiny_bundle()


def raising() -> ModelBundle:
    raise RuntimeError("weights file is missing")


class _Unexportable(torch.nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.sort(features.numpy(), axis=1))  # leaves the graph: ONNX gets a constant


def unexportable() -> ModelBundle:
    bundle = make_tiny_bundle()
    bundle.module = _Unexportable()
    bundle.forward = None
    bundle.__post_init__()
    return bundle


MASKED_VOCAB, MASKED_WIDTH = 32, 8


class MaskedMeanPooling(torch.nn.Module):
    """Token embeddings and their mean over the unmasked tokens: a sentence transformer's shape."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(MASKED_VOCAB, MASKED_WIDTH)
        self.project = torch.nn.Linear(MASKED_WIDTH, MASKED_WIDTH)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        tokens = torch.tanh(self.project(self.embedding(input_ids))) * mask
        return tokens, tokens.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def export_masked_mean_pooling(path: Path) -> Path:
    """`MaskedMeanPooling` as ONNX at `path` (inputs input_ids and attention_mask, int64 [batch,
    sequence]; outputs token_embeddings and sentence_embedding), with dynamic batch and sequence."""
    example = (torch.ones(1, 3, dtype=torch.int64), torch.ones(1, 3, dtype=torch.int64))
    sequence = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        MaskedMeanPooling().eval(),
        example,
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["token_embeddings", "sentence_embedding"],
        dynamic_axes={
            "input_ids": sequence,
            "attention_mask": sequence,
            "token_embeddings": sequence,
            "sentence_embedding": {0: "batch"},
        },
        dynamo=False,
    )
    return path


def make_tiny_text_bundle(rows: int = 48, width: int = 12) -> ModelBundle:
    """`MaskedMeanPooling` as a text model: int64 ids and attention mask [batch, width], rows of
    random lengths padded with zeros; outputs per-token embeddings and their masked mean."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, width + 1, size=rows)
    lengths[0] = width  # the latency row is the longest, as a text source picks it
    ids = rng.integers(1, MASKED_VOCAB, size=(rows, width)).astype(np.int64)
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    ids *= mask
    sequence = {0: "batch", 1: "sequence"}
    return ModelBundle(
        name="tinytext",
        module=MaskedMeanPooling().eval(),
        input_names=("input_ids", "attention_mask"),
        output_names=("token_embeddings", "sentence_embedding"),
        dynamic_axes={"input_ids": sequence, "attention_mask": sequence, "token_embeddings": sequence},
        latency_inputs={"input_ids": ids[:1], "attention_mask": mask[:1]},
        eval_inputs={"input_ids": ids, "attention_mask": mask},
        calibration_inputs={"input_ids": ids, "attention_mask": mask},
        extra={"max_length": str(width)},
    )


class NormedClassifier(torch.nn.Module):
    """Linear, LayerNorm, Linear (a transformer block's order) on the tiny model's signature: huge
    finite inputs overflow the first layer to infinity, and the norm turns that into NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def normed_int8_torchscript(context: PassContext) -> Path:
    """`NormedClassifier` exported to TorchScript with PyTorch's dynamic int8 Linear layers, through
    the export pass (with the tiny bundle's signature, from `context`)."""
    from optimise.passes.export_torchscript import ExportTorchScript, ExportTorchScriptConfig

    torch.manual_seed(0)
    return ExportTorchScript(ExportTorchScriptConfig(int8_dynamic=True)).apply(
        NormedClassifier().eval(), context
    )
