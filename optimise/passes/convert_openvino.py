"""Convert an ONNX file to OpenVINO IR (`model.xml` + `model.bin`), with a parity check.

OpenVINO's model conversion reads the ONNX graph as exported; ONNX Runtime's fused contrib ops
(the `graph_optimise` pass) are not ONNX and cannot be read, so the conversion follows the plain
export. The IR runs on the OpenVINO runtime (`optimise.runtimes.openvino_session`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimise.errors import PassFailed
from optimise.passes.base import OnnxPass, PassConfig, PassContext
from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.runtimes.ort_session import OnnxSession
from optimise.runtimes.telemetry import telemetry_off

IR_FILE = "model.xml"  # its weights go to model.bin beside it


@contextlib.contextmanager
def _root_logger_kept() -> Iterator[None]:
    """The root logger as it was: OpenVINO's converter sets its level to ERROR and adds a handler
    and a filter (openvino/tools/ovc/logger.py `init_logger`), which would silence every warning of
    the process from then on."""
    root = logging.getLogger()
    level, filters, handlers = root.level, list(root.filters), list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.filters[:] = filters
        root.handlers[:] = handlers


@dataclass(frozen=True)
class ConvertOpenVinoConfig(PassConfig):
    """Settings of the ONNX -> OpenVINO IR conversion.

    Attributes:
        compress_to_fp16: store FP32 weights as FP16 in `model.bin` (half the size; the CPU plugin
            expands them when it compiles the model, so inference precision does not change).
        atol: largest absolute difference allowed between ONNX Runtime on the ONNX file and OpenVINO
            (f32 inference precision) on the IR, on the bundle's latency inputs.
    """

    compress_to_fp16: bool = False
    atol: float = 1e-3

    def __post_init__(self) -> None:
        if self.atol <= 0:
            raise ValueError("atol must be positive")


def _conversion_problem(exc: Exception) -> str:
    """The line of a conversion error that names what failed (e.g. "No conversion rule found for
    operations: Det"), else its first line."""
    lines = [line.strip(" -[]") for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "conversion rule" in line or "not supported" in line.lower()]
    return f"{type(exc).__name__}: {(named or lines or [''])[0]}"


class ConvertOpenVino(OnnxPass[ConvertOpenVinoConfig]):
    name = "convert_openvino"
    config_type = ConvertOpenVinoConfig

    def run(self, model: Path, ctx: PassContext) -> Path:
        target = ctx.workdir / IR_FILE
        with self.failures("conversion failed"), _root_logger_kept(), telemetry_off():
            import openvino as ov

            try:
                converted_model = ov.convert_model(str(model))
            except Exception as exc:  # its first line is a source location; the operators come later
                raise PassFailed(self.name, f"conversion failed: {_conversion_problem(exc)}") from exc
            ov.save_model(converted_model, str(target), compress_to_fp16=self.config.compress_to_fp16)
        with self.failures("OpenVINO cannot run the converted model"):
            converted = OpenVinoSession(target, threads=1).run(ctx.bundle.latency_inputs)[0]
        expected = OnnxSession(model, threads=1).run(ctx.bundle.latency_inputs)[0]
        if converted.shape != expected.shape:
            raise PassFailed(self.name, f"output shape {converted.shape} != ONNX {expected.shape}")
        diff = float(np.max(np.abs(converted.astype(np.float64) - expected)))
        if diff > self.config.atol:
            raise PassFailed(
                self.name, f"OpenVINO output differs from ONNX by {diff:.2e} > {self.config.atol}"
            )
        return target
