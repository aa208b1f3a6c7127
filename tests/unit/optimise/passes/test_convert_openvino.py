import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.convert_openvino import ConvertOpenVino, ConvertOpenVinoConfig
from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.runtimes.ort_session import OnnxSession
from optimise.types import PassSpec


def test_conversion_writes_ir_that_answers_like_the_onnx_file(
    tiny_onnx: Path, tiny_context: PassContext
) -> None:
    ir = ConvertOpenVino(ConvertOpenVinoConfig()).apply(tiny_onnx, tiny_context)
    assert ir == tiny_context.workdir / "model.xml"
    assert ir.with_suffix(".bin").stat().st_size > 0
    batch = tiny_context.bundle.eval_inputs
    converted = OpenVinoSession(ir).run(batch)[0]
    expected = OnnxSession(tiny_onnx).run(batch)[0]
    np.testing.assert_allclose(converted, expected, atol=1e-4)


def test_fp16_weights_halve_the_weights_file(
    tiny_onnx: Path, tiny_context: PassContext, tmp_path: Path
) -> None:
    full = ConvertOpenVino(ConvertOpenVinoConfig()).apply(tiny_onnx, tiny_context)
    half_dir = tmp_path / "half"
    half_dir.mkdir()
    half_ctx = PassContext(tiny_context.bundle, tiny_context.profile, half_dir)
    half = ConvertOpenVino(ConvertOpenVinoConfig(compress_to_fp16=True, atol=1e-2)).apply(tiny_onnx, half_ctx)
    assert half.with_suffix(".bin").stat().st_size < 0.6 * full.with_suffix(".bin").stat().st_size


def test_a_file_openvino_cannot_read_drops_the_candidate(tmp_path: Path, tiny_context: PassContext) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(PassFailed, match=r"convert_openvino.*conversion failed"):
        ConvertOpenVino(ConvertOpenVinoConfig()).apply(broken, tiny_context)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="atol"):
        build_pass(PassSpec("convert_openvino", {"atol": 0}))
    with pytest.raises(ConfigError, match="convert_openvino"):
        build_pass(PassSpec("convert_openvino", {"precision": "fp8"}))


def test_the_converter_leaves_the_root_logger_as_it_was(tiny_onnx: Path, tiny_context: PassContext) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.filters), list(root.handlers))
    ConvertOpenVino(ConvertOpenVinoConfig()).apply(tiny_onnx, tiny_context)
    assert (root.level, list(root.filters), list(root.handlers)) == before


class _Determinant(torch.nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.linalg.det(features.reshape(-1, 4, 4)).reshape(-1, 1)


def test_an_operator_openvino_cannot_convert_is_named_in_the_reason(
    tmp_path: Path, tiny_context: PassContext
) -> None:
    model = tmp_path / "det.onnx"
    example = (torch.randn(1, 16),)
    torch.onnx.export(_Determinant(), example, str(model), input_names=["features"], dynamo=False)
    with pytest.raises(PassFailed, match="No conversion rule found for operations: Det"):
        ConvertOpenVino(ConvertOpenVinoConfig()).apply(model, tiny_context)
