from pathlib import Path

import numpy as np
import onnx
import pytest

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.fp16 import Fp16, Fp16Config
from optimise.runtimes.ort_session import OnnxSession
from optimise.types import PassSpec


def _initialiser_types(model: Path) -> dict[str, int]:
    return {i.name: i.data_type for i in onnx.load(str(model)).graph.initializer}


def test_fp16_is_smaller_and_close_to_fp32(tiny_onnx: Path, tiny_context: PassContext) -> None:
    converted = Fp16(Fp16Config()).apply(tiny_onnx, tiny_context)
    assert converted.parent == tiny_context.workdir
    assert converted.stat().st_size < 0.7 * tiny_onnx.stat().st_size
    assert _initialiser_types(converted)["net.0.weight"] == onnx.TensorProto.FLOAT16
    session = OnnxSession(converted)
    assert session.inputs[0].dtype is np.float32  # keep_io_types: callers feed what they fed before
    assert session.outputs[0].dtype is np.float32
    batch = tiny_context.bundle.eval_inputs
    reference = OnnxSession(tiny_onnx).run(batch)[0]
    actual = session.run(batch)[0]
    assert actual.dtype == np.float32
    assert np.max(np.abs(actual - reference)) <= 1e-2 * np.max(np.abs(reference))
    assert np.mean(actual.argmax(1) == reference.argmax(1)) >= 0.95


def test_without_keep_io_types_the_graph_takes_float16(tiny_onnx: Path, tiny_context: PassContext) -> None:
    converted = Fp16(Fp16Config(keep_io_types=False)).apply(tiny_onnx, tiny_context)
    session = OnnxSession(converted)
    assert session.inputs[0].dtype is np.float16
    out = session.run(tiny_context.bundle.eval_inputs)[0]  # OnnxSession casts the float32 feed
    assert out.dtype == np.float16
    assert np.all(np.isfinite(out))


def test_blocked_ops_stay_in_float32(tiny_onnx: Path, tiny_context: PassContext) -> None:
    converted = Fp16(Fp16Config(op_block_list=("Gemm",))).apply(tiny_onnx, tiny_context)
    types = _initialiser_types(converted)
    assert types["net.0.weight"] == onnx.TensorProto.FLOAT
    assert types["net.3.weight"] == onnx.TensorProto.FLOAT


def test_bad_settings_are_a_user_error() -> None:
    with pytest.raises(ConfigError, match="fp16"):
        build_pass(PassSpec("fp16", {"op_block_list": [1]}))
    with pytest.raises(ConfigError, match="fp16"):
        build_pass(PassSpec("fp16", {"keep_io": True}))
    built = build_pass(PassSpec("fp16", {"op_block_list": ["Softmax"]}))
    assert built.config.op_block_list == ("Softmax",)


def test_corrupt_model_drops_the_candidate(tiny_context: PassContext, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    before = set(tmp_path.rglob("*"))
    with pytest.raises(PassFailed, match="fp16"):
        Fp16(Fp16Config()).apply(corrupt, tiny_context)
    assert set(tmp_path.rglob("*")) == before
    assert not list(tiny_context.workdir.iterdir())


def test_writes_only_inside_its_workdir(
    tiny_onnx: Path, tiny_context: PassContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = set(tmp_path.rglob("*"))
    Fp16(Fp16Config()).apply(tiny_onnx, tiny_context)
    created = set(tmp_path.rglob("*")) - before
    assert created == {tiny_context.workdir / "model.onnx"}
