import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.quantise_static import QuantiseStatic, QuantiseStaticConfig, _calibration_batches
from optimise.runtimes.ort_session import OnnxSession
from optimise.source import ModelBundle
from optimise.types import PassSpec, QuantisationDefaults


def _quantise(model: Path, ctx: PassContext, **settings: object) -> Path:
    return QuantiseStatic(QuantiseStaticConfig(**settings)).apply(model, ctx)  # type: ignore[arg-type]


def _agreement(a: Path, b: Path, ctx: PassContext) -> float:
    batch = ctx.bundle.eval_inputs
    return float(np.mean(OnnxSession(a).run(batch)[0].argmax(1) == OnnxSession(b).run(batch)[0].argmax(1)))


def _initialisers(model: Path) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in onnx.load(str(model)).graph.initializer}


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_quantisation_makes_a_smaller_qdq_int8_model(
    method: str, tiny_onnx: Path, tiny_context: PassContext
) -> None:
    quantised = _quantise(tiny_onnx, tiny_context, calibration_method=method)
    assert quantised.parent == tiny_context.workdir
    ops = {n.op_type for n in onnx.load(str(quantised)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = _initialisers(quantised)
    assert weights["net.0.weight_quantized"].data_type == onnx.TensorProto.INT8  # signed weights
    assert "net.0.weight" not in weights
    assert quantised.stat().st_size < tiny_onnx.stat().st_size
    assert _agreement(quantised, tiny_onnx, tiny_context) >= 0.9


def test_excluded_nodes_stay_in_float(tiny_onnx: Path, tiny_context: PassContext) -> None:
    head = "/net/net.3/Gemm"
    quantised = _quantise(tiny_onnx, tiny_context, nodes_to_exclude=[head])
    weights = _initialisers(quantised)
    node = next(n for n in onnx.load(str(quantised)).graph.node if n.name == head)
    assert node.input[1] == "net.3.weight"  # the float weight, not a DequantizeLinear output
    assert weights["net.3.weight"].data_type == onnx.TensorProto.FLOAT
    assert weights["net.0.weight_quantized"].data_type == onnx.TensorProto.INT8
    assert _agreement(quantised, tiny_onnx, tiny_context) >= 0.9


def test_op_types_limit_what_is_quantised(tiny_onnx: Path, tiny_context: PassContext) -> None:
    quantised = _quantise(tiny_onnx, tiny_context, op_types_to_quantize=("Relu",))
    weights = _initialisers(quantised)
    assert weights["net.0.weight"].data_type == onnx.TensorProto.FLOAT  # Gemm left alone


def test_per_channel_follows_the_profile_unless_set(tiny_onnx: Path, tiny_context: PassContext) -> None:
    per_tensor = dataclasses.replace(
        tiny_context.profile, quantisation=QuantisationDefaults(per_channel=False, reduce_range=False)
    )
    ctx = dataclasses.replace(tiny_context, profile=per_tensor)
    scale = _initialisers(_quantise(tiny_onnx, ctx))["net.0.weight_scale"]
    assert list(scale.dims) == []
    scale = _initialisers(_quantise(tiny_onnx, ctx, per_channel=True))["net.0.weight_scale"]
    assert list(scale.dims) == [64]


def test_calibration_batches_have_one_size(tiny_bundle: ModelBundle) -> None:
    bundle = tiny_bundle  # 32 calibration rows
    batches = _calibration_batches(bundle, QuantiseStaticConfig(calibration_batch_size=10))
    assert [len(b["features"]) for b in batches] == [10, 10, 10]  # ragged tail of 2 dropped
    batches = _calibration_batches(bundle, QuantiseStaticConfig(calibration_samples=5))
    assert [len(b["features"]) for b in batches] == [5]


def test_falls_back_to_eval_inputs_with_a_warning(
    tiny_onnx: Path, tiny_context: PassContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = dataclasses.replace(
        tiny_context, bundle=dataclasses.replace(tiny_context.bundle, calibration_inputs=None)
    )
    with caplog.at_level(logging.WARNING, logger="optimise.passes.quantise_static"):
        quantised = _quantise(tiny_onnx, ctx, calibration_method="entropy")
    assert "no calibration_inputs" in caplog.text
    assert _agreement(quantised, tiny_onnx, ctx) >= 0.9


def test_bad_settings_are_a_user_error() -> None:
    bad: list[dict[str, Any]] = [
        {"calibration_method": "kl"},
        {"calibration_samples": 0},
        {"calibration_batch_size": 0},
        {"op_types_to_quantize": []},
        {"nodes_to_exclude": [""]},
        {"no_such_setting": 1},
    ]
    for settings in bad:
        with pytest.raises(ConfigError, match="quantise_static"):
            build_pass(PassSpec("quantise_static", settings))
    assert isinstance(build_pass(PassSpec("quantise_static", {"nodes_to_exclude": ["a"]})), QuantiseStatic)


def test_corrupt_model_drops_the_candidate(tiny_context: PassContext, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe")
    with pytest.raises(PassFailed, match="quantise_static"):
        _quantise(corrupt, tiny_context)


def test_calibration_data_must_match_the_graph(tiny_onnx: Path, tiny_context: PassContext) -> None:
    bundle = dataclasses.replace(
        tiny_context.bundle, calibration_inputs={"other": np.zeros((4, 16), np.float32)}
    )
    with pytest.raises(PassFailed, match="lacks graph inputs"):
        _quantise(tiny_onnx, dataclasses.replace(tiny_context, bundle=bundle))


@pytest.mark.parametrize("corrupt", [False, True])
def test_writes_only_inside_its_workdir(
    corrupt: bool, tiny_onnx: Path, tiny_context: PassContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy(*args: object, **kwargs: object) -> str:
        path = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        made.append(Path(path))
        return str(path)

    monkeypatch.setattr(tempfile, "mkdtemp", spy)  # ORT's TemporaryDirectory calls it too
    model = tmp_path / "corrupt.onnx" if corrupt else tiny_onnx
    if corrupt:
        model.write_bytes(b"garbage")
    before = set(tmp_path.rglob("*"))
    if corrupt:
        with pytest.raises(PassFailed):
            _quantise(model, tiny_context)
    else:
        _quantise(model, tiny_context, calibration_method="percentile")
    created = set(tmp_path.rglob("*")) - before
    assert all(tiny_context.workdir in p.parents for p in created)
    assert made and all(tiny_context.workdir in p.parents for p in made)  # scratch and ORT's temp dirs
    assert not list(cwd.iterdir())
    # Scratch is cleaned up: only the result is left behind.
    assert sorted(p.name for p in tiny_context.workdir.iterdir()) == ([] if corrupt else ["model.onnx"])
    assert tempfile.tempdir is None or "quantise_static" not in tempfile.tempdir
