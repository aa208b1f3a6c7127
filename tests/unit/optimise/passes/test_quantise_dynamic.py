from pathlib import Path

import numpy as np
import onnx
import pytest

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.quantise_dynamic import QuantiseDynamic, QuantiseDynamicConfig
from optimise.runtimes.ort_session import OnnxSession
from optimise.types import PassSpec


def _op_types(model: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(model)).graph.node}


def test_weights_become_int8_and_predictions_agree(tiny_onnx: Path, tiny_context: PassContext) -> None:
    quantised = QuantiseDynamic(QuantiseDynamicConfig()).apply(tiny_onnx, tiny_context)
    assert "DynamicQuantizeLinear" in _op_types(quantised) or "MatMulInteger" in _op_types(quantised)
    assert quantised.stat().st_size < tiny_onnx.stat().st_size
    batch = tiny_context.bundle.eval_inputs
    reference = OnnxSession(tiny_onnx).run(batch)[0]
    actual = OnnxSession(quantised).run(batch)[0]
    agreement = float(np.mean(reference.argmax(1) == actual.argmax(1)))
    assert agreement >= 0.9


def _integer_ops(model: Path) -> int:
    return sum(
        n.op_type in {"MatMulInteger", "DynamicQuantizeMatMul"} for n in onnx.load(str(model)).graph.node
    )


def test_operator_types_not_listed_stay_in_float(tiny_onnx: Path, tiny_context: PassContext) -> None:
    assert _integer_ops(QuantiseDynamic(QuantiseDynamicConfig()).apply(tiny_onnx, tiny_context)) == 2
    only_conv = QuantiseDynamic(QuantiseDynamicConfig(op_types_to_quantize=("Conv",)))
    assert _integer_ops(only_conv.apply(tiny_onnx, tiny_context)) == 0


def test_corrupt_model_drops_the_candidate(tiny_context: PassContext, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(PassFailed, match="quantise_dynamic"):
        QuantiseDynamic(QuantiseDynamicConfig()).apply(broken, tiny_context)
    assert not (tiny_context.workdir / "model.onnx").exists()


def test_empty_operator_list_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="op_types_to_quantize"):
        build_pass(PassSpec("quantise_dynamic", {"op_types_to_quantize": ()}))
