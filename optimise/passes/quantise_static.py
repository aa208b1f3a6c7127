"""Static int8 quantisation (QDQ) with ONNX Runtime, calibrated on the bundle's data.

Good for CNNs (weights and activations both int8, ~3x smaller); usually poor for
transformers, where the search should prefer dynamic quantisation. Every file,
ORT's own temporary copies included, is written inside `ctx.workdir`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from optimise.errors import PassFailed
from optimise.passes.base import OnnxPass, PassConfig, PassContext
from optimise.runtimes.ort_session import OnnxSession
from optimise.source import ModelBundle
from optimise.types import Batch

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantiseStaticConfig(PassConfig):
    """Settings of static QDQ quantisation.

    Attributes:
        calibration_method: how activation ranges are chosen: "minmax" (observed range),
            "entropy" (KL-divergence threshold) or "percentile" (clips the top 0.001 %).
        per_channel: one weight scale per output channel; None takes the hardware profile's default.
        reduce_range: 7-bit weights (avoids u8*s8 saturation on AVX2 without VNNI); None takes
            the profile's default.
        calibration_samples: at most this many calibration rows are run through the model.
        calibration_batch_size: rows per calibration batch; every batch has exactly this size
            (the ragged tail is dropped) because histogram calibrators fail on ragged batches.
        op_types_to_quantize: operator types to quantise (e.g. ("Conv", "MatMul")); None = all ORT supports.
        nodes_to_exclude: names of nodes kept in FP32 (e.g. a sensitive classifier head).
        activation_symmetric: symmetric activation ranges (zero point 0); helps some accelerators,
            usually costs a little accuracy on CPU.
    """

    calibration_method: str = "minmax"
    per_channel: bool | None = None
    reduce_range: bool | None = None
    calibration_samples: int = 128
    calibration_batch_size: int = 16
    op_types_to_quantize: tuple[str, ...] | None = None
    nodes_to_exclude: tuple[str, ...] = ()
    activation_symmetric: bool = False

    def __post_init__(self) -> None:
        # Settings arrive from JSON/YAML as lists; store tuples so the config stays hashable.
        for f in fields(self):
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration_method must be one of {CALIBRATION_METHODS}")
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be at least 1")
        if self.calibration_batch_size < 1:
            raise ValueError("calibration_batch_size must be at least 1")
        if self.op_types_to_quantize is not None and not self.op_types_to_quantize:
            raise ValueError("op_types_to_quantize must be None (all) or name at least one op type")
        for name in (*(self.op_types_to_quantize or ()), *self.nodes_to_exclude):
            if not isinstance(name, str) or not name:
                raise ValueError(f"op types and node names must be non-empty strings, got {name!r}")


class QuantiseStatic(OnnxPass[QuantiseStaticConfig]):
    name = "quantise_static"
    config_type = QuantiseStaticConfig

    def run(self, model: Path, ctx: PassContext) -> Path:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        cfg = self.config
        defaults = ctx.profile.quantisation
        target = ctx.workdir / "model.onnx"
        with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="quantise_static.") as scratch_name:
            scratch = Path(scratch_name)
            with _tempdir_inside(scratch):
                proto = onnx.load(str(model))  # also proves the input is a readable model
                source = scratch / "input.onnx"
                onnx.save(proto, str(source))  # ORT writes "<name>-inferred.onnx" beside its input
                reader = _CalibrationReader(_calibration_batches(ctx.bundle, cfg), proto)
                del proto
                prepared = _pre_process(source, scratch, transformer=ctx.bundle.transformer_type is not None)
                quantised = scratch / "quantised.onnx"
                # ORT prints calibration progress to stdout, which belongs to the CLI's table.
                with contextlib.redirect_stdout(io.StringIO()):
                    quantize_static(
                        str(prepared),
                        str(quantised),
                        reader,
                        quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(cfg.op_types_to_quantize or []) or None,
                        per_channel=defaults.per_channel if cfg.per_channel is None else cfg.per_channel,
                        reduce_range=defaults.reduce_range if cfg.reduce_range is None else cfg.reduce_range,
                        # S8S8 QDQ is ORT's recommended first choice: on x86 its graph optimiser
                        # (QDQS8ToU8Transformer) turns s8 activation Q/DQ pairs into u8 for its u8s8
                        # kernels, ARM runs s8s8 natively; U8U8 is only the fallback for accuracy.
                        activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(cfg.nodes_to_exclude),
                        use_external_data_format=False,
                        calibrate_method={
                            "minmax": CalibrationMethod.MinMax,
                            "entropy": CalibrationMethod.Entropy,
                            "percentile": CalibrationMethod.Percentile,
                        }[cfg.calibration_method],
                        extra_options={
                            "ActivationSymmetric": cfg.activation_symmetric,
                            # Fused transformer graphs have contrib-op outputs without a known type.
                            "DefaultTensorType": onnx.TensorProto.FLOAT,
                        },
                    )
                # A model ORT cannot load or run is no candidate.
                OnnxSession(quantised, threads=1).run(ctx.bundle.latency_inputs)
                quantised.replace(target)
        return target


_TEMPDIR_LOCK = threading.Lock()


@contextlib.contextmanager
def _tempdir_inside(path: Path) -> Iterator[None]:
    """Point `tempfile` at `path` while ORT runs: its quantiser takes no temp-dir argument."""
    with _TEMPDIR_LOCK:
        previous = tempfile.tempdir
        tempfile.tempdir = str(path)
        try:
            yield
        finally:
            tempfile.tempdir = previous


def _pre_process(source: Path, scratch: Path, transformer: bool) -> Path:
    """Shape inference + basic graph cleanup ORT recommends before quantising; optional."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = scratch / "prepared.onnx"
    try:
        # Symbolic shape inference chokes on fused transformer contrib ops; ONNX inference suffices.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=transformer)
    except Exception as exc:  # an optional clean-up step: its failure is no reason to drop the candidate
        logger.warning(
            "quant_pre_process failed (%s: %s); quantising the model as is", type(exc).__name__, exc
        )
        return source
    return prepared


def _calibration_batches(bundle: ModelBundle, cfg: QuantiseStaticConfig) -> list[Batch]:
    data = bundle.calibration_inputs
    if data is None:
        logger.warning("bundle %r has no calibration_inputs; calibrating on eval_inputs", bundle.name)
        data = bundle.eval_inputs
    n = min(cfg.calibration_samples, len(next(iter(data.values()))))
    if n == 0:
        raise PassFailed("quantise_static", "no calibration samples")
    # Fixed-size batches only (a single short batch when there are fewer rows than one batch).
    size = min(cfg.calibration_batch_size, n)
    return [{k: v[i : i + size] for k, v in data.items()} for i in range(0, n - size + 1, size)]


class _CalibrationReader:
    """Feeds calibration batches to ORT, cast to the graph's input dtypes, extra names dropped."""

    def __init__(self, batches: list[Batch], proto: Any) -> None:
        from onnx.helper import tensor_dtype_to_np_dtype

        initialisers = {i.name for i in proto.graph.initializer}
        dtypes = {
            i.name: tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            for i in proto.graph.input
            if i.name not in initialisers
        }
        missing = set(dtypes) - set(batches[0])
        if missing:
            raise PassFailed("quantise_static", f"calibration data lacks graph inputs {sorted(missing)}")
        self._batches = [{k: np.ascontiguousarray(b[k], dtype=t) for k, t in dtypes.items()} for b in batches]
        self._next = iter(self._batches)

    def get_next(self) -> Batch | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)
