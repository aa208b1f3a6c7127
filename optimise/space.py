"""The search space: which pipelines and settings a search may try.

A trial's parameters map to one `Recipe`. The space is a value so that a demo,
a user or a test can narrow it; the profile decides which precisions exist.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from optimise.pipeline import Recipe
from optimise.source import ModelBundle
from optimise.types import HardwareProfile, PassSpec, Precision

# "Operators kept in FP32": which operator types int8 may touch.
QUANTISE_OP_SETS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "matmul": ("MatMul",),  # transformers: embeddings (Gather) and attention stay FP32
    "conv": ("Conv",),  # CNNs: the classifier head stays FP32
}


class Suggester(Protocol):
    """The part of `optuna.Trial` a space needs (a fixed dict can stand in for it)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """Choices for every decision of a pipeline. Every field is a tuple of options."""

    prune: tuple[str, ...] = ("none",)
    """'none', 'structured' (Torch-Pruning, then recovery fine-tune) or 'unstructured'."""
    prune_ratios: tuple[float, ...] = (0.25,)
    graph_optimise: tuple[bool, ...] = (False, True)
    precisions: tuple[Precision, ...] | None = None
    """None: every precision the profile allows."""
    per_channel: tuple[bool, ...] = (True, False)
    calibration: tuple[str, ...] = ("minmax", "entropy")
    quantise_ops: tuple[str, ...] = ("all",)
    threads: tuple[int, ...] | None = None
    """None: the profile's thread count."""
    fine_tune_steps: int = 200

    def __post_init__(self) -> None:
        unknown = set(self.quantise_ops) - set(QUANTISE_OP_SETS)
        if unknown:
            raise ValueError(f"unknown quantise_ops {sorted(unknown)}; known: {sorted(QUANTISE_OP_SETS)}")
        if set(self.prune) - {"none", "structured", "unstructured"}:
            raise ValueError(f"prune choices must be none/structured/unstructured, got {self.prune}")
        if any(not 0 < r < 1 for r in self.prune_ratios):
            raise ValueError(f"prune ratios must lie in (0, 1), got {self.prune_ratios}")

    def for_profile(self, profile: HardwareProfile) -> SearchSpace:
        precisions = tuple(p for p in (self.precisions or profile.precisions) if p in profile.precisions)
        return replace(self, precisions=precisions, threads=self.threads or (profile.intra_op_threads,))

    def size(self) -> int:
        """How many distinct recipes the space holds (conditional choices counted exactly)."""
        precisions = self.precisions or ()
        per_precision = {
            Precision.FP32: 1,
            Precision.FP16: 1,
            Precision.INT8_DYNAMIC: len(self.per_channel) * len(self.quantise_ops),
            Precision.INT8_STATIC: len(self.per_channel) * len(self.quantise_ops) * len(self.calibration),
        }
        graph = {p: 1 if p is Precision.INT8_STATIC else len(self.graph_optimise) for p in precisions}
        prune = sum(1 if p == "none" else len(self.prune_ratios) for p in self.prune)
        threads = len(self.threads or (1,))
        return prune * threads * sum(per_precision[p] * graph[p] for p in precisions)


def default_space(bundle: ModelBundle) -> SearchSpace:
    if bundle.transformer_type is not None:
        # Static QDQ int8 on a transformer ran slower than FP32 here, or lost fidelity; pruning
        # without labelled recovery data lost fidelity too (cosine 0.6-0.9). Both stay searchable.
        return SearchSpace(
            prune=("none",),
            graph_optimise=(True, False),
            precisions=(Precision.FP32, Precision.INT8_DYNAMIC, Precision.FP16),
            per_channel=(True,),  # per-tensor int8 kept only ~0.95 mean cosine on MiniLM
            quantise_ops=("all", "matmul"),
        )
    return SearchSpace(
        prune=("none", "structured", "unstructured"),
        prune_ratios=(0.25, 0.5),
        graph_optimise=(True, False),
        per_channel=(True, False),
        quantise_ops=("all", "conv"),
        calibration=("minmax", "entropy", "percentile"),
    )


def suggest_recipe(trial: Suggester, space: SearchSpace, bundle: ModelBundle) -> Recipe:
    """Draw one recipe from a profile-bound space (see `SearchSpace.for_profile`)."""
    torch_passes: tuple[PassSpec, ...] = ()
    prune = trial.suggest_categorical("prune", list(space.prune))
    if prune != "none":
        ratio = trial.suggest_categorical("prune_ratio", list(space.prune_ratios))
        torch_passes = (_prune_pass(prune, ratio, space, bundle),)
    onnx_passes: list[PassSpec] = []
    precision = Precision(trial.suggest_categorical("precision", [p.value for p in space.precisions or ()]))
    # Static quantisation pre-processes the graph itself and cannot read ORT's fused contrib ops.
    if precision is not Precision.INT8_STATIC and trial.suggest_categorical(
        "graph_optimise", list(space.graph_optimise)
    ):
        onnx_passes.append(PassSpec("graph_optimise"))
    if precision in (Precision.INT8_DYNAMIC, Precision.INT8_STATIC):
        onnx_passes.append(_quantise_pass(trial, space, precision))
    elif precision is Precision.FP16:
        onnx_passes.append(PassSpec("fp16"))
    threads = trial.suggest_categorical("threads", list(space.threads or (1,)))
    return Recipe(torch_passes, PassSpec("export_onnx"), tuple(onnx_passes), threads)


def _prune_pass(kind: str, ratio: float, space: SearchSpace, bundle: ModelBundle) -> PassSpec:
    steps = space.fine_tune_steps if bundle.fine_tune is not None else 0
    if kind == "structured":
        return PassSpec("prune_structured", {"ratio": ratio, "fine_tune_steps": steps})
    return PassSpec("prune_unstructured", {"amount": ratio, "fine_tune_steps": steps})


def _quantise_pass(trial: Suggester, space: SearchSpace, precision: Precision) -> PassSpec:
    settings: dict[str, Any] = {
        "per_channel": trial.suggest_categorical("per_channel", list(space.per_channel))
    }
    ops = QUANTISE_OP_SETS[trial.suggest_categorical("quantise_ops", list(space.quantise_ops))]
    if ops is not None:
        settings["op_types_to_quantize"] = ops
    if precision is Precision.INT8_STATIC:
        settings["calibration_method"] = trial.suggest_categorical("calibration", list(space.calibration))
        return PassSpec("quantise_static", settings)
    return PassSpec("quantise_dynamic", settings)


def reference_recipe(space: SearchSpace) -> Recipe:
    """The plain FP32 export: built first, so a search never ends empty-handed."""
    return Recipe((), PassSpec("export_onnx"), (), (space.threads or (1,))[0])
