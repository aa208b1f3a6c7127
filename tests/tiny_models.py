"""Tiny models and factories for tests; importable as `tiny_models:<factory>` by the CLI."""

from __future__ import annotations

import numpy as np
import torch

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
