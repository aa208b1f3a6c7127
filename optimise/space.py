"""The search space: which pipelines and settings a search may try.

A trial's parameters map to one `Recipe`: first the runtime (ONNX Runtime, or OpenVINO where the
profile searches it), then that runtime's choices. The space is a value so that a demo, a user or
a test can narrow it; the profile decides which runtimes, precisions and precision hints exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Protocol

from optimise.passes.quantise_nncf import IGNORED_SCOPES, PRESETS
from optimise.pipeline import PRECISION_HINT, Recipe
from optimise.runtimes import LITERT, ONNX_RUNTIME, OPENVINO, RUNTIMES, TORCHSCRIPT
from optimise.source import ModelBundle
from optimise.types import HardwareProfile, PassSpec, Precision

# What each runtime's candidates can be (OpenVINO's bf16 is a precision hint on an FP32 file).
ONNX_RUNTIME_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.INT8_DYNAMIC, Precision.INT8_STATIC)
OPENVINO_PRECISIONS = (Precision.FP32, Precision.INT8_STATIC)
TORCHSCRIPT_PRECISIONS = (Precision.FP32, Precision.INT8_DYNAMIC)  # PyTorch's dynamic int8 on Linear
LITERT_PRECISIONS = (Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8_STATIC)  # ai-edge-quantizer
PRECISION_HINTS = ("f32", "bf16")
BUCKETS_KEY = "sequence_buckets"  # see optimise.runtimes.openvino_session

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
    runtimes: tuple[str, ...] | None = None
    """None: every runtime the profile searches (`HardwareProfile.runtimes`)."""
    openvino_precisions: tuple[Precision, ...] = OPENVINO_PRECISIONS
    """OpenVINO candidates: FP32 IR, or NNCF static int8."""
    precision_hints: tuple[str, ...] = PRECISION_HINTS
    torchscript_precisions: tuple[Precision, ...] = TORCHSCRIPT_PRECISIONS
    """TorchScript candidates: the FP32 trace, or the trace of PyTorch's dynamic int8 module."""
    litert_precisions: tuple[Precision, ...] = LITERT_PRECISIONS
    """TFLite candidates: FP32, int8 weights (dynamic), or int8 weights and activations (static)."""
    """OpenVINO inference precision: 'f32', or 'bf16' (kept only where the CPU has bf16)."""
    nncf_presets: tuple[str, ...] = ("mixed",)
    smooth_quant_alphas: tuple[float | None, ...] = (None,)
    """None: NNCF's default for the model type; -1: off."""
    fast_bias_correction: tuple[bool, ...] = (True,)
    ignored_scopes: tuple[str, ...] = ("none",)
    """Names from `optimise.passes.quantise_nncf.IGNORED_SCOPES`."""
    sequence_buckets: tuple[str, ...] = ("",)
    """OpenVINO: '' runs every length on dynamic shapes; '16,32,64,128' also compiles one static
    shape per length for single rows, padded to the next (needs an attention mask)."""
    students: tuple[str, ...] = ("none",)
    """'none' (the model itself) or distilled students by name: 'layers=N' (transformers: N encoder
    layers kept, optionally ',prune_ratio=R' and ',layer_choice=fidelity|spread') or 'width=W'
    (classifiers: share W of the channels kept); see `student_settings`."""
    distil_time_s: float = 600.0
    """Training budget of each student, in seconds (apart from the search's time budget)."""
    distil_steps: int | None = None
    """Train each student exactly this many steps (deterministic under the seed; the budget still caps)."""

    def __post_init__(self) -> None:
        unknown = set(self.quantise_ops) - set(QUANTISE_OP_SETS)
        if unknown:
            raise ValueError(f"unknown quantise_ops {sorted(unknown)}; known: {sorted(QUANTISE_OP_SETS)}")
        checks = (
            (self.runtimes or (), RUNTIMES, "runtimes"),
            (self.precision_hints, PRECISION_HINTS, "precision_hints"),
            (self.nncf_presets, PRESETS, "nncf_presets"),
            (self.ignored_scopes, tuple(IGNORED_SCOPES), "ignored_scopes"),
            (self.openvino_precisions, OPENVINO_PRECISIONS, "openvino_precisions"),
            (self.torchscript_precisions, TORCHSCRIPT_PRECISIONS, "torchscript_precisions"),
            (self.litert_precisions, LITERT_PRECISIONS, "litert_precisions"),
        )
        for chosen, known, what in checks:
            if set(chosen) - set(known):
                raise ValueError(
                    f"unknown {what} {sorted(map(str, set(chosen) - set(known)))}; known: {list(known)}"
                )
        if set(self.prune) - {"none", "structured", "unstructured"}:
            raise ValueError(f"prune choices must be none/structured/unstructured, got {self.prune}")
        if any(not 0 < r < 1 for r in self.prune_ratios):
            raise ValueError(f"prune ratios must lie in (0, 1), got {self.prune_ratios}")
        for name in self.students:
            if name != "none":
                student_settings(name)  # raises ValueError naming the bad student
        if self.distil_time_s <= 0:
            raise ValueError(f"distil_time_s must be positive, got {self.distil_time_s}")

    def for_profile(self, profile: HardwareProfile) -> SearchSpace:
        """The space narrowed to what `profile` offers: its runtimes, precisions, threads, bf16."""
        precisions = tuple(
            p
            for p in (self.precisions or profile.precisions)
            if p in profile.precisions and p in ONNX_RUNTIME_PRECISIONS
        )
        # Without bf16 in the CPU, OpenVINO computes in f32 whatever the space asked for.
        hints = tuple(h for h in self.precision_hints if h != "bf16" or profile.bf16) or ("f32",)
        return replace(
            self,
            precisions=precisions,
            threads=self.threads or (profile.intra_op_threads,),
            runtimes=tuple(r for r in (self.runtimes or profile.runtimes) if r in profile.runtimes),
            openvino_precisions=tuple(p for p in self.openvino_precisions if p in profile.precisions),
            torchscript_precisions=tuple(p for p in self.torchscript_precisions if p in profile.precisions),
            litert_precisions=tuple(p for p in self.litert_precisions if p in profile.precisions),
            precision_hints=hints,
        )

    def size(self) -> int:
        """How many distinct recipes the space holds (conditional choices counted exactly)."""
        runtimes = self.runtimes or (ONNX_RUNTIME,)
        per_runtime = 0
        if ONNX_RUNTIME in runtimes:
            precisions = self.precisions or ()
            per_precision = {
                Precision.FP32: 1,
                Precision.FP16: 1,
                Precision.INT8_DYNAMIC: len(self.per_channel) * len(self.quantise_ops),
                Precision.INT8_STATIC: len(self.per_channel) * len(self.quantise_ops) * len(self.calibration),
            }
            graph = {p: 1 if p is Precision.INT8_STATIC else len(self.graph_optimise) for p in precisions}
            per_runtime += sum(per_precision[p] * graph[p] for p in precisions)
        if OPENVINO in runtimes:
            nncf = (
                len(self.nncf_presets)
                * len(self.smooth_quant_alphas)
                * len(self.fast_bias_correction)
                * len(self.ignored_scopes)
            )
            per_precision = {Precision.FP32: 1, Precision.INT8_STATIC: nncf}
            sessions = len(self.precision_hints) * len(self.sequence_buckets)
            per_runtime += sessions * sum(per_precision[p] for p in self.openvino_precisions)
        if TORCHSCRIPT in runtimes:
            per_runtime += len(self.torchscript_precisions)
        if LITERT in runtimes:
            per_runtime += len(self.litert_precisions)
        prune = sum(1 if p == "none" else len(self.prune_ratios) for p in self.prune)
        models = prune + sum(1 for s in self.students if s != "none")  # a student is not pruned again
        threads = len(self.threads or (1,))
        return models * threads * per_runtime

    def student_passes(self) -> list[PassSpec]:
        """The distil pass of every student the space holds, with the space's training budget."""
        return [student_pass(name, self) for name in self.students if name != "none"]


STUDENT_SETTINGS: dict[str, type] = {"layers": int, "prune_ratio": float, "layer_choice": str, "width": float}
"""What a student's name may set (comma-separated `key=value`), and each setting's type; the `distil`
pass checks the ranges (`optimise.passes.distil.DistilConfig`)."""
STUDENT_FORMS = (
    "'layers=N[,prune_ratio=R][,layer_choice=fidelity|spread]' (transformers) or 'width=W' (classifiers)"
)


def student_settings(name: str) -> dict[str, Any]:
    """The `distil` settings a student's name stands for: 'layers=3' -> {'layers': 3};
    'layers=4,prune_ratio=0.25' -> {'layers': 4, 'prune_ratio': 0.25}; 'width=0.5' -> {'width': 0.5};
    a number may be a fraction ('prune_ratio=1/3': 4 of 12 heads exactly).

    Raises ValueError naming the student and the part that is not a known setting of the right type,
    a setting given twice, or a name with neither (or both) of layers and width."""
    settings: dict[str, Any] = {}
    for part in name.split(","):
        key, sep, value = (piece.strip() for piece in part.partition("="))
        kind = STUDENT_SETTINGS.get(key)
        if key in settings:
            raise ValueError(f"unknown student {name!r}: {key} is given twice")
        if not sep or kind is None or not value:
            where = "" if part.strip() == name.strip() else f" (at {part.strip()!r})"
            raise ValueError(f"unknown student {name!r}{where}: use {STUDENT_FORMS}")
        try:
            settings[key] = float(Fraction(value)) if kind is float else kind(value)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise ValueError(
                f"unknown student {name!r}: {key} takes {'an integer' if kind is int else 'a number'}, "
                f"got {value!r}"
            ) from None
    if ("layers" in settings) == ("width" in settings):
        both = "layers and width together" if "layers" in settings else "neither layers nor width"
        raise ValueError(f"unknown student {name!r}, {both}: use {STUDENT_FORMS}")
    from optimise.passes.distil import DistilConfig

    try:
        DistilConfig(**settings)
    except ValueError as exc:
        raise ValueError(f"student {name!r}: {exc}") from None
    return settings


def student_name(settings: Mapping[str, Any]) -> str:
    """The name of the student a `distil` pass's settings describe, the inverse of `student_settings`
    (settings that are not part of a name, such as the budget, are left out): {'layers': 4,
    'prune_ratio': 0.25, 'time_s': 600} -> 'layers=4,prune_ratio=0.25'. Floats are written exactly
    (`repr`), so the name gives back the same settings. Raises ValueError when they name no student."""
    parts = [
        f"{key}={settings[key] if isinstance(settings[key], str) else repr(settings[key])}"
        for key in STUDENT_SETTINGS
        if key in settings
    ]
    name = ",".join(parts)
    student_settings(name)  # settings that are no student fail here, naming what is wrong
    return name


def student_pass(name: str, space: SearchSpace) -> PassSpec:
    settings: dict[str, Any] = {**student_settings(name), "time_s": space.distil_time_s}
    if space.distil_steps is not None:
        settings["max_steps"] = space.distil_steps
    return PassSpec("distil", settings)


def default_students(bundle: ModelBundle) -> tuple[str, ...]:
    """Students worth distilling for this kind of model, from the larger to the smaller: transformers
    keep 4 or 3 of MiniLM's 6 layers (measured as NNCF int8: 5.3x and 7.0x the speed of PyTorch eager),
    classifiers half their channels."""
    if bundle.transformer_type is not None:
        return ("layers=4", "layers=3")
    return ("width=0.5",)


def length_buckets(max_length: int, smallest: int = 16) -> str:
    """Powers of two from `smallest` up to `max_length` (always included), comma-separated."""
    buckets = []
    size = smallest
    while size < max_length:
        buckets.append(size)
        size *= 2
    return ",".join(str(b) for b in [*buckets, max_length])


def default_space(bundle: ModelBundle) -> SearchSpace:
    if bundle.transformer_type is not None:
        # Static QDQ int8 on a transformer ran slower than FP32 here, or lost fidelity; pruning
        # without labelled recovery data lost fidelity too (cosine 0.6-0.9). Both stay searchable.
        # On OpenVINO, NNCF's static int8 is the fast path: both presets are tried. Length buckets
        # (static shapes for single rows) stay searchable but out of the default: on MiniLM they
        # ran a 128-token row ~15-20 % faster, yet that static kernel answers up to 6 % of the
        # largest value off the dynamic one (so the variant is not batch-invariant and is served
        # row by row: 557 against 963 requests/s at 32 clients) and each bucket costs ~70 MB per
        # session in the server (benchmarks/openvino_levers.py).
        return SearchSpace(
            prune=("none",),
            graph_optimise=(True, False),
            precisions=(Precision.FP32, Precision.INT8_DYNAMIC, Precision.FP16),
            per_channel=(True,),  # per-tensor int8 kept only ~0.95 mean cosine on MiniLM
            quantise_ops=("all", "matmul"),
            nncf_presets=("mixed", "performance"),
            # f32 only: with the bf16 hint, OpenVINO 2026.4.1's NNCF int8 MiniLM answers rows padded
            # to exactly 32 tokens wrong (cosine 0.79 to the f32 hint, every other length 1..128
            # above 0.98), which the fidelity set's batches never hit; int8 ran about as fast with
            # either hint. bf16 stays searchable (`precision_hints`).
            precision_hints=("f32",),
            # Static int8 TFLite kept MiniLM at mean cosine 0.55: not worth its 35 s of calibration.
            litert_precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
            # PyTorch's dynamic int8 in TorchScript kept MiniLM at 0.973, outside the default budget;
            # the FP32 trace stays as the row of what a PyTorch server runs (each trace costs ~10 s).
            torchscript_precisions=(Precision.FP32,),
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
    # Asked only when there is a choice: spaces without students draw as they always did.
    student = (
        trial.suggest_categorical("student", list(space.students)) if space.students != ("none",) else "none"
    )
    prune = "none" if student != "none" else trial.suggest_categorical("prune", list(space.prune))
    if student != "none":
        torch_passes = (student_pass(student, space),)
    elif prune != "none":
        ratio = trial.suggest_categorical("prune_ratio", list(space.prune_ratios))
        torch_passes = (_prune_pass(prune, ratio, space, bundle),)
    runtime = trial.suggest_categorical("runtime", list(space.runtimes or (ONNX_RUNTIME,)))
    if runtime == OPENVINO:
        return _openvino_recipe(trial, space, torch_passes)
    if runtime == TORCHSCRIPT:
        return _torchscript_recipe(trial, space, torch_passes)
    if runtime == LITERT:
        return _litert_recipe(trial, space, torch_passes)
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


def _openvino_recipe(trial: Suggester, space: SearchSpace, torch_passes: tuple[PassSpec, ...]) -> Recipe:
    """ONNX export -> OpenVINO IR [-> NNCF int8], opened with a precision hint and length buckets."""
    passes = [PassSpec("convert_openvino")]
    precision = Precision(
        trial.suggest_categorical("ov_precision", [p.value for p in space.openvino_precisions])
    )
    if precision is Precision.INT8_STATIC:
        settings: dict[str, Any] = {
            "preset": trial.suggest_categorical("nncf_preset", list(space.nncf_presets)),
            "fast_bias_correction": trial.suggest_categorical(
                "fast_bias_correction", list(space.fast_bias_correction)
            ),
            "ignored_scope": trial.suggest_categorical("ignored_scope", list(space.ignored_scopes)),
        }
        alpha = trial.suggest_categorical("smooth_quant_alpha", list(space.smooth_quant_alphas))
        if alpha is not None:
            settings["smooth_quant_alpha"] = alpha
        passes.append(PassSpec("quantise_nncf", settings))
    runtime_settings = {
        PRECISION_HINT: trial.suggest_categorical("precision_hint", list(space.precision_hints))
    }
    buckets = trial.suggest_categorical(BUCKETS_KEY, list(space.sequence_buckets))
    if buckets:
        runtime_settings[BUCKETS_KEY] = buckets
    threads = trial.suggest_categorical("threads", list(space.threads or (1,)))
    return Recipe(
        torch_passes, PassSpec("export_onnx"), tuple(passes), threads, tuple(sorted(runtime_settings.items()))
    )


def _torchscript_recipe(trial: Suggester, space: SearchSpace, torch_passes: tuple[PassSpec, ...]) -> Recipe:
    """A traced TorchScript file, FP32 or with PyTorch's dynamic int8 Linear layers."""
    precision = Precision(
        trial.suggest_categorical("ts_precision", [p.value for p in space.torchscript_precisions])
    )
    settings = {"int8_dynamic": True} if precision is Precision.INT8_DYNAMIC else {}
    threads = trial.suggest_categorical("threads", list(space.threads or (1,)))
    return Recipe(torch_passes, PassSpec("export_torchscript", settings), (), threads)


LITERT_MODES = {Precision.INT8_DYNAMIC: "dynamic", Precision.INT8_STATIC: "static"}


def _litert_recipe(trial: Suggester, space: SearchSpace, torch_passes: tuple[PassSpec, ...]) -> Recipe:
    """A .tflite file from litert-torch, FP32 or quantised by ai-edge-quantizer."""
    precision = Precision(
        trial.suggest_categorical("tflite_precision", [p.value for p in space.litert_precisions])
    )
    passes = (
        (PassSpec("quantise_litert", {"mode": LITERT_MODES[precision]}),) if precision in LITERT_MODES else ()
    )
    threads = trial.suggest_categorical("threads", list(space.threads or (1,)))
    return Recipe(torch_passes, PassSpec("export_tflite"), passes, threads)


def reference_recipe(space: SearchSpace) -> Recipe:
    """The plain FP32 export: built first, so a search never ends empty-handed."""
    return Recipe((), PassSpec("export_onnx"), (), (space.threads or (1,))[0])
