"""Shared fixtures: a tiny model bundle that every optimisation test can build on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optimise.passes.base import PassContext
from optimise.profiles import get_profile
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


@pytest.fixture
def tiny_bundle() -> ModelBundle:
    return make_tiny_bundle()


@pytest.fixture
def tiny_context(tiny_bundle: ModelBundle, tmp_path: Path) -> PassContext:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return PassContext(bundle=tiny_bundle, profile=get_profile("cpu"), workdir=workdir)


@pytest.fixture
def tiny_onnx(tiny_bundle: ModelBundle, tmp_path: Path) -> Path:
    """The tiny bundle exported to ONNX (FP32) through the export pass."""
    from optimise.passes.export_onnx import ExportOnnx, ExportOnnxConfig

    workdir = tmp_path / "export"
    workdir.mkdir()
    ctx = PassContext(bundle=tiny_bundle, profile=get_profile("cpu"), workdir=workdir)
    return ExportOnnx(ExportOnnxConfig()).run(tiny_bundle.module, ctx)
