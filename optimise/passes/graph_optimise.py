"""ONNX Runtime graph optimisation, saved offline.

Transformers go through ORT's transformer optimiser, which fuses attention,
embedding + LayerNorm, skip LayerNorm and GELU into single kernels. Other
models get ORT's extended graph optimisations (constant folding, Conv+BN/ReLU
fusions) written to a file, so the measured graph is the served graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from optimise.errors import PassFailed
from optimise.passes.base import OnnxPass, PassConfig, PassContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphOptimiseConfig(PassConfig):
    """Settings of the graph optimisation.

    Attributes:
        level: ORT transformer optimiser level (0: fusions only in Python, 1: plus
            ORT's basic optimisations, 2: extended; 99: all, CPU-specific layouts).
            Level 1 keeps the graph portable across execution providers.
        use_gpu: let the optimiser pick fusions that only pay off on CUDA.
    """

    level: int = 1
    use_gpu: bool = False

    def __post_init__(self) -> None:
        if self.level not in (0, 1, 2, 99):
            raise ValueError(f"level must be 0, 1, 2 or 99, got {self.level}")


class GraphOptimise(OnnxPass[GraphOptimiseConfig]):
    name = "graph_optimise"
    config_type = GraphOptimiseConfig

    def run(self, model: Path, ctx: PassContext) -> Path:
        target = ctx.workdir / "model.onnx"
        if ctx.bundle.transformer_type is not None:
            self._fuse_transformer(model, target, ctx.bundle.transformer_type)
        else:
            self._optimise_graph(model, target)
        return target

    def _fuse_transformer(self, model: Path, target: Path, model_type: str) -> None:
        from onnxruntime.transformers import optimizer

        # num_heads=0 / hidden_size=0: read both from the graph.
        optimised = optimizer.optimize_model(
            str(model),
            model_type=model_type,
            num_heads=0,
            hidden_size=0,
            opt_level=self.config.level,
            use_gpu=self.config.use_gpu,
        )
        fused = {op: n for op, n in optimised.get_fused_operator_statistics().items() if n}
        logger.info("fused operators: %s", fused)
        if not fused:
            raise PassFailed(self.name, f"no {model_type} fusion matched this graph")
        optimised.save_model_to_file(str(target))

    def _optimise_graph(self, model: Path, target: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Extended, not ALL: ALL adds layout changes tied to this very CPU.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
