from pathlib import Path

import numpy as np
import pytest
import torch

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimise.runtimes.ort_session import OnnxSession
from optimise.types import PassSpec


def test_export_matches_torch_at_several_batch_sizes(tiny_context: PassContext) -> None:
    model = ExportOnnx(ExportOnnxConfig()).apply(tiny_context.bundle.module, tiny_context)
    session = OnnxSession(model)
    for n in (1, 5, 64):
        batch = {"features": tiny_context.bundle.eval_inputs["features"][:n]}
        expected = tiny_context.bundle.run_torch(batch)[0]
        np.testing.assert_allclose(session.run(batch)[0], expected, atol=1e-5)
    assert session.input_names == ("features",)
    assert session.output_names == ("logits",)


def test_export_is_deterministic_with_dropout(tiny_context: PassContext) -> None:
    model = ExportOnnx(ExportOnnxConfig()).apply(tiny_context.bundle.module, tiny_context)
    session = OnnxSession(model)
    batch = tiny_context.bundle.eval_inputs
    np.testing.assert_array_equal(session.run(batch)[0], session.run(batch)[0])


class _Unexportable(torch.nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(features.numpy() * 2)  # leaves the graph: no export


def test_unexportable_module_drops_the_candidate(tiny_context: PassContext) -> None:
    with pytest.raises(PassFailed, match="export_onnx"):
        ExportOnnx(ExportOnnxConfig()).apply(_Unexportable(), tiny_context)


def test_bad_settings_are_a_user_error() -> None:
    with pytest.raises(ConfigError, match="atol"):
        build_pass(PassSpec("export_onnx", {"atol": -1.0}))
    with pytest.raises(ConfigError, match="unknown pass"):
        build_pass(PassSpec("no_such_pass"))


def test_export_writes_only_inside_its_workdir(tiny_context: PassContext, tmp_path: Path) -> None:
    before = set(tmp_path.rglob("*"))
    model = ExportOnnx(ExportOnnxConfig()).apply(tiny_context.bundle.module, tiny_context)
    created = set(tmp_path.rglob("*")) - before
    assert model.parent == tiny_context.workdir
    assert all(tiny_context.workdir in p.parents for p in created)
