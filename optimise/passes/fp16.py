"""Convert an ONNX model's weights and compute to float16 with ONNX Runtime's own converter.

ORT's converter (not onnxconverter-common, whose output ORT failed to load here)
knows which ops ORT runs in fp16 and inserts casts around the rest. Half the size;
fast on GPUs, usually slower on CPUs without native fp16 — the measurement decides.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from optimise.passes.base import OnnxPass, PassConfig, PassContext
from optimise.runtimes.ort_session import OnnxSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fp16Config(PassConfig):
    """Settings of the float16 conversion.

    Attributes:
        keep_io_types: keep graph inputs and outputs float32 (casts inside the graph), so
            callers and the evaluator feed and read the same dtypes as the FP32 model.
        op_block_list: operator types kept in float32 in addition to ORT's default block
            list (e.g. ("Softmax",) when it overflows in fp16).
    """

    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.op_block_list, list):  # from JSON/YAML
            object.__setattr__(self, "op_block_list", tuple(self.op_block_list))
        if not isinstance(self.op_block_list, tuple) or not all(
            isinstance(op, str) and op for op in self.op_block_list
        ):
            raise ValueError("op_block_list must be a tuple of operator type names")


class Fp16(OnnxPass[Fp16Config]):
    name = "fp16"
    config_type = Fp16Config

    def run(self, model: Path, ctx: PassContext) -> Path:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        target = ctx.workdir / "model.onnx"
        size_in = model.stat().st_size if model.is_file() else 0
        with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="fp16.") as scratch:
            converted = Path(scratch) / "fp16.onnx"
            proto = onnx.load(str(model))
            # ORT's defaults block ops it has no fp16 kernel for; a user list adds to them.
            block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(self.config.op_block_list))
            proto = convert_float_to_float16(
                proto, keep_io_types=self.config.keep_io_types, op_block_list=block
            )
            onnx.save(proto, str(converted))
            # A model ORT cannot load or run on CPU is no candidate (the evaluator runs it there).
            OnnxSession(converted, threads=1).run(ctx.bundle.latency_inputs)
            converted.replace(target)
        logger.info("fp16: %d -> %d bytes", size_in, target.stat().st_size)
        return target
