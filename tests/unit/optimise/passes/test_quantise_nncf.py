from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.convert_openvino import ConvertOpenVino, ConvertOpenVinoConfig
from optimise.passes.quantise_nncf import MIN_CALIBRATION_SAMPLES, QuantiseNncf, QuantiseNncfConfig
from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.types import PassSpec

# The tiny bundle has 32 calibration rows, below the default minimum.
FEW_ROWS = {"min_calibration_samples": 16}


@pytest.fixture
def tiny_ir(tiny_onnx: Path, tiny_context: PassContext, tmp_path: Path) -> Path:
    workdir = tmp_path / "convert"
    workdir.mkdir()
    return ConvertOpenVino(ConvertOpenVinoConfig()).apply(tiny_onnx, replace(tiny_context, workdir=workdir))


def _int8_ops(model: Path) -> int:
    import openvino as ov

    ops = ov.Core().read_model(str(model)).get_ops()
    return sum(op.get_type_name() == "FakeQuantize" for op in ops)


def _agreement(a: Path, b: Path, ctx: PassContext) -> float:
    batch = ctx.bundle.eval_inputs
    return float(
        np.mean(OpenVinoSession(a).run(batch)[0].argmax(1) == OpenVinoSession(b).run(batch)[0].argmax(1))
    )


@pytest.mark.parametrize("preset", ["mixed", "performance"])
def test_nncf_quantises_the_ir_and_keeps_the_answers(
    preset: str, tiny_ir: Path, tiny_context: PassContext
) -> None:
    quantised = QuantiseNncf(QuantiseNncfConfig(preset=preset, **FEW_ROWS)).apply(tiny_ir, tiny_context)  # type: ignore[arg-type]
    assert quantised == tiny_context.workdir / "model.xml"
    assert _int8_ops(quantised) > 0 and _int8_ops(tiny_ir) == 0
    assert _agreement(quantised, tiny_ir, tiny_context) >= 0.9


def test_it_reads_onnx_as_well(tiny_onnx: Path, tiny_context: PassContext) -> None:
    quantised = QuantiseNncf(QuantiseNncfConfig(**FEW_ROWS)).apply(tiny_onnx, tiny_context)  # type: ignore[arg-type]
    assert _int8_ops(quantised) > 0


def test_a_calibration_set_below_the_minimum_names_it(tiny_ir: Path, tiny_context: PassContext) -> None:
    rows = len(tiny_context.bundle.calibration_inputs["features"])  # type: ignore[index]
    assert rows < MIN_CALIBRATION_SAMPLES
    with pytest.raises(PassFailed, match=f"{rows} calibration samples.*at least {MIN_CALIBRATION_SAMPLES}"):
        QuantiseNncf(QuantiseNncfConfig()).apply(tiny_ir, tiny_context)


def test_nncf_writes_nothing_to_the_terminal(
    tiny_ir: Path, tiny_context: PassContext, capfd: pytest.CaptureFixture[str]
) -> None:
    QuantiseNncf(QuantiseNncfConfig(**FEW_ROWS)).apply(tiny_ir, tiny_context)  # type: ignore[arg-type]
    out, err = capfd.readouterr()
    assert "Statistics collection" not in out + err


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"preset": "fastest"}, "preset"),
        ({"smooth_quant_alpha": 1.5}, "smooth_quant_alpha"),
        ({"smooth_quant_alpha": 0}, "smooth_quant_alpha"),
        ({"ignored_scope": "heads"}, "ignored_scope"),
        ({"subset_size": 0}, "subset_size"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_pass(PassSpec("quantise_nncf", settings))


def test_smooth_quant_off_and_an_ignored_scope_are_accepted(tiny_ir: Path, tiny_context: PassContext) -> None:
    config = QuantiseNncfConfig(smooth_quant_alpha=-1, ignored_scope="ffn-down", **FEW_ROWS)  # type: ignore[arg-type]
    assert _int8_ops(QuantiseNncf(config).apply(tiny_ir, tiny_context)) > 0
