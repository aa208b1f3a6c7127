"""Post-training static int8 quantisation of an OpenVINO model with NNCF, calibrated on the bundle.

Weights and activations become int8 with scales fixed at calibration time, so a row's answer
does not depend on what shares its batch (unlike dynamic int8). For transformers NNCF's
transformer model type keeps the sensitive parts (layer norms, softmax inputs, GELU) in floating
point and smooths activation outliers into the weights (SmoothQuant) before quantising.

Search dimensions: the preset (mixed: asymmetric activations, better on outliers; performance:
symmetric, fewer instructions), fast bias correction (off: the slower full bias correction),
the smooth-quant alpha of MatMuls and a named ignored scope. Reads ONNX or OpenVINO IR, writes IR.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimise.errors import PassFailed
from optimise.evaluate import unpadded_rows
from optimise.passes.base import OnnxPass, PassConfig, PassContext
from optimise.passes.convert_openvino import IR_FILE
from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.runtimes.telemetry import telemetry_off
from optimise.source import ModelBundle
from optimise.types import Batch

PRESETS = ("mixed", "performance")

MIN_CALIBRATION_SAMPLES = 64
"""Fewer calibration rows than this are refused: activation ranges from a handful of rows miss the
outliers real inputs have. MiniLM, NNCF 3.4 defaults, mean cosine to FP32 on the held-out set by
calibration rows (two random draws each): 8: 0.947-0.952, 16: 0.978-0.982, 32: 0.990 (min 0.86),
64: 0.994-0.995, 128: 0.995, all 203: 0.995."""

IGNORED_SCOPES: dict[str, tuple[str, ...]] = {
    "none": (),
    # The FFN down-projection reads GELU outputs, the widest activations of a BERT layer.
    "ffn-down": (r".*layer\.\d+/output/dense/MatMul",),
    # Attention scores and their product with values: activation x activation MatMuls.
    "attention-matmuls": (r".*attention/self/MatMul(_1)?",),
}
"""Named sets of node-name patterns (regular expressions) kept in floating point."""


@dataclass(frozen=True)
class QuantiseNncfConfig(PassConfig):
    """Settings of NNCF post-training quantisation.

    Attributes:
        preset: "mixed" (symmetric weights, asymmetric activations) or "performance" (both symmetric).
        fast_bias_correction: NNCF's fast bias correction (seconds); False runs the full one (minutes).
        smooth_quant_alpha: SmoothQuant strength for MatMuls in (0, 1]; -1 turns it off; None takes
            NNCF's default for the model type (0.95 for transformers).
        ignored_scope: a name from `IGNORED_SCOPES`; its nodes stay in floating point.
        subset_size: at most this many calibration rows are used.
        min_calibration_samples: fewer calibration rows than this fail the pass with the minimum named.
    """

    preset: str = "mixed"
    fast_bias_correction: bool = True
    smooth_quant_alpha: float | None = None
    ignored_scope: str = "none"
    subset_size: int = 300
    min_calibration_samples: int = MIN_CALIBRATION_SAMPLES

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        alpha = self.smooth_quant_alpha
        if alpha is not None and alpha != -1 and not 0 < alpha <= 1:
            raise ValueError(f"smooth_quant_alpha must be in (0, 1] or -1 (off), got {alpha}")
        if self.ignored_scope not in IGNORED_SCOPES:
            raise ValueError(
                f"ignored_scope must be one of {sorted(IGNORED_SCOPES)}, got {self.ignored_scope!r}"
            )
        if self.subset_size < 1 or self.min_calibration_samples < 1:
            raise ValueError("subset_size and min_calibration_samples must be at least 1")


class QuantiseNncf(OnnxPass[QuantiseNncfConfig]):
    name = "quantise_nncf"
    config_type = QuantiseNncfConfig

    def run(self, model: Path, ctx: PassContext) -> Path:
        with telemetry_off():
            return self._quantise(model, ctx)

    def _quantise(self, model: Path, ctx: PassContext) -> Path:
        import nncf
        import openvino as ov

        cfg = self.config
        source = ov.Core().read_model(str(model))
        names = [port.get_any_name() for port in source.inputs]
        rows = _calibration_rows(ctx.bundle, names, cfg)
        target = ctx.workdir / IR_FILE
        with self.failures("NNCF quantisation failed"), _quiet():
            quantised = nncf.quantize(
                source,
                nncf.Dataset(rows),
                preset=nncf.QuantizationPreset(cfg.preset),
                fast_bias_correction=cfg.fast_bias_correction,
                subset_size=min(cfg.subset_size, len(rows)),
                model_type=nncf.ModelType.TRANSFORMER if ctx.bundle.transformer_type else None,
                ignored_scope=_ignored_scope(cfg.ignored_scope),
                advanced_parameters=_advanced(cfg),
            )
            ov.save_model(quantised, str(target), compress_to_fp16=False)
        with self.failures("OpenVINO cannot run the quantised model"):
            OpenVinoSession(target, threads=1).run(ctx.bundle.latency_inputs)
        return target


def _calibration_rows(bundle: ModelBundle, names: list[str], cfg: QuantiseNncfConfig) -> list[Batch]:
    """Calibration samples one by one, unpadded: the shapes the service runs."""
    data = bundle.calibration_inputs if bundle.calibration_inputs is not None else bundle.eval_inputs
    count = len(next(iter(data.values())))
    if count < cfg.min_calibration_samples:
        raise PassFailed(
            "quantise_nncf",
            f"{count} calibration samples; NNCF quantisation needs at least {cfg.min_calibration_samples}",
        )
    missing = [n for n in names if n not in data]
    if missing:
        raise PassFailed("quantise_nncf", f"calibration data lacks model inputs {missing}")
    rows = []
    for row in unpadded_rows(data):
        rows.append({n: row[n] for n in names})
        if len(rows) == cfg.subset_size:
            break
    return rows


def _ignored_scope(name: str) -> Any:
    import nncf

    patterns = IGNORED_SCOPES[name]
    # validate=False: a pattern this model's node names do not match ignores nothing, as documented.
    return nncf.IgnoredScope(patterns=list(patterns), validate=False) if patterns else None


def _advanced(cfg: QuantiseNncfConfig) -> Any:
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    if cfg.smooth_quant_alpha is None:
        return None
    return AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=cfg.smooth_quant_alpha)
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF draws progress bars on stdout and logs at INFO; the CLI's table owns the terminal.

    Only the `nncf` logger's level changes, and only for the block: `nncf.set_log_level` would also
    set the level of every handler attached to that logger, other code's included."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)
