"""The search over pipelines: Optuna, multi-objective, bounded by trials or time.

Objectives (all minimised): p50 latency at batch 1, quality loss against the
FP32 reference, size on disk, build time. The FP32 export and the profile's
known-good presets are enqueued first, so a search cut short by its time budget
has still tried them. Small spaces are enumerated (brute force); larger ones
use TPE. With an RDB storage URL several workers share one study.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from optimise.errors import ConfigError, OptimiseError, PassFailed, one_line
from optimise.evaluate import (
    Quality,
    batch_invariant,
    length_probes,
    measure_interleaved,
    predict_rows,
    reference_quality,
    score,
    size_on_disk,
    unpadded_rows,
)
from optimise.pipeline import CandidateBuilder, Recipe
from optimise.runtimes import LITERT, ONNX_RUNTIME, OPENVINO, TORCHSCRIPT, RuntimeUnavailable, open_variant
from optimise.source import ModelBundle
from optimise.space import BUCKETS_KEY, SearchSpace, reference_recipe, suggest_recipe
from optimise.types import Batch, HardwareProfile, Precision, Variant

logger = logging.getLogger(__name__)

GRID_LIMIT = 48
DEFAULT_TRIALS = 40
BruteForce = optuna.samplers.BruteForceSampler


@dataclass(frozen=True)
class SearchSettings:
    """How long and where to search.

    Attributes:
        n_trials: stop after this many trials (None: when the time budget is spent or the
            enumerated space exhausted; a sampled search with neither stops at DEFAULT_TRIALS).
        time_budget_s: stop starting new trials after this many seconds.
        storage: Optuna storage URL; None keeps the study in memory (a SQLite file or an
            RDB URL lets several workers share one study).
        study_name: name of the study in the storage (needed to share one).
        sampler: 'auto' (enumerate small spaces, TPE otherwise), 'grid', 'tpe' or 'nsga2'.
        seed: sampler seed, for repeatable searches.
    """

    n_trials: int | None = None
    time_budget_s: float | None = None
    storage: str | None = None
    study_name: str | None = None
    sampler: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in {"auto", "grid", "tpe", "nsga2"}:
            raise ConfigError(f"unknown sampler {self.sampler!r}; use auto, grid, tpe or nsga2")
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError("n_trials must be at least 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError("the time budget must be positive")


@dataclass
class Candidate:
    """One tried recipe: the built variant and its first measurements, or why it failed."""

    recipe: Recipe
    variant: Variant | None = None
    quality: Quality | None = None
    quick_latency_ms: float | None = None
    build_seconds: float = 0.0
    failure: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


TrialCallback = Callable[[Candidate], None]


def _sampler(settings: SearchSettings, space_size: int) -> optuna.samplers.BaseSampler:
    kind = settings.sampler
    if kind == "auto":
        kind = "grid" if space_size <= GRID_LIMIT else "tpe"
    if kind == "grid":
        return BruteForce(seed=settings.seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=settings.seed)
    return optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=8)


class Search:
    """Runs trials: build the recipe, score its quality, time it briefly."""

    def __init__(
        self,
        bundle: ModelBundle,
        profile: HardwareProfile,
        space: SearchSpace,
        builder: CandidateBuilder,
        reference_outputs: np.ndarray,
    ) -> None:
        self.bundle = bundle
        self.profile = profile
        self.space = space.for_profile(profile)
        self.builder = builder
        self.reference_outputs = reference_outputs
        self.reference = reference_quality(bundle, reference_outputs)
        self.reference_quality = self.reference.value
        self.length_probes, self.length_reference = _length_reference(bundle)
        self.candidates: dict[str, Candidate] = {}

    def run(self, settings: SearchSettings, on_trial: TrialCallback | None = None) -> list[Candidate]:
        if not logger.isEnabledFor(logging.INFO):
            optuna.logging.set_verbosity(optuna.logging.ERROR)  # dropped candidates are reported by us
        sampler = _sampler(settings, self.space.size())
        n_trials = settings.n_trials
        if n_trials is None and settings.time_budget_s is None and not isinstance(sampler, BruteForce):
            n_trials = DEFAULT_TRIALS  # only enumeration ends by itself
        study = optuna.create_study(
            directions=["minimize"] * 4,
            sampler=sampler,
            storage=settings.storage,
            study_name=settings.study_name,
            load_if_exists=settings.study_name is not None,
        )
        # The plain FP32 export is always a candidate, whatever the space holds.
        reference = self.try_recipe(reference_recipe(self.space))
        if on_trial is not None:
            on_trial(reference)
        for params in self._presets():
            study.enqueue_trial(params, skip_if_exists=True)

        def objective(trial: optuna.Trial) -> tuple[float, float, float, float]:
            candidate = self.try_recipe(suggest_recipe(trial, self.space, self.bundle), trial.params)
            if on_trial is not None:
                on_trial(candidate)
            if candidate.failure is not None:
                trial.set_user_attr("failure", candidate.failure)
                raise PassFailed("trial", candidate.failure)
            return self._objectives(candidate)

        # Brute force ends the study by itself once the space is exhausted.
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=settings.time_budget_s,
            catch=(PassFailed,),
            gc_after_trial=True,
        )
        return list(self.candidates.values())

    def try_recipe(self, recipe: Recipe, params: dict[str, Any] | None = None) -> Candidate:
        """Build and score one recipe; a failing pass becomes the candidate's failure reason."""
        key = repr(recipe)
        if key in self.candidates:
            return self.candidates[key]
        candidate = Candidate(recipe=recipe, params=dict(params or {}))
        try:
            candidate.variant, candidate.build_seconds = self.builder.build(recipe)
            variant = candidate.variant
            session = open_variant(variant, self.profile.execution_providers)
            outputs = predict_rows(session, self.bundle.eval_inputs)
            probes = None
            if self.length_probes is not None and self.length_reference is not None:
                probes = (predict_rows(session, self.length_probes), self.length_reference)
            candidate.quality = score(outputs, self.bundle, self.reference_outputs, probes)
            candidate.variant = replace(
                variant, batch_invariant=batch_invariant(session, self.bundle.eval_inputs)
            )
            timing = measure_interleaved(
                {"candidate": session}, self.bundle.latency_inputs, self.bundle.latency_inputs, rounds=1
            )
            candidate.quick_latency_ms = timing["candidate"].latency_p50_ms
        except PassFailed as exc:
            candidate.failure = str(exc)
        except OptimiseError:
            raise  # a bad setting in the space is the user's to fix, not a candidate to drop
        except RuntimeUnavailable as exc:  # a missing execution provider or runtime package
            candidate.failure = f"profile {self.profile.name}: {exc}"
        except Exception as exc:  # the runtime refusing to load or run a built model drops that candidate
            candidate.failure = f"runtime: {one_line(exc)}"
        if candidate.failure:
            logger.warning("candidate dropped: %s", candidate.failure)
        self.candidates[key] = candidate
        return candidate

    def _objectives(self, candidate: Candidate) -> tuple[float, float, float, float]:
        assert candidate.variant is not None and candidate.quality is not None  # failures raised above
        loss = self.reference_quality - candidate.quality.value
        size_mb = sum(size_on_disk(f) for f in candidate.variant.model_files) / 1e6
        return (candidate.quick_latency_ms or float("inf"), loss, size_mb, candidate.build_seconds)

    def _presets(self) -> list[dict[str, Any]]:
        """The settings known to be fast on this profile's ISA, tried before any sampling."""
        space = self.space
        if "none" not in space.prune:
            return []

        def pick(preferred: Any, choices: tuple[Any, ...]) -> Any:
            return preferred if preferred in choices else choices[0]

        presets = []
        runtimes = space.runtimes or ()
        threads = pick(self.profile.intra_op_threads, space.threads or (1,))
        if OPENVINO in runtimes and Precision.INT8_STATIC in space.openvino_precisions:
            # NNCF static int8 with the profile's best precision hint: the fastest kind measured here.
            presets.append(
                {
                    "prune": "none",
                    "runtime": OPENVINO,
                    "ov_precision": Precision.INT8_STATIC.value,
                    "nncf_preset": space.nncf_presets[0],
                    "fast_bias_correction": space.fast_bias_correction[0],
                    "ignored_scope": space.ignored_scopes[0],
                    "smooth_quant_alpha": space.smooth_quant_alphas[0],
                    "precision_hint": pick("bf16", space.precision_hints),
                    BUCKETS_KEY: space.sequence_buckets[0],
                    "threads": threads,
                }
            )
        for precision in (Precision.INT8_DYNAMIC, Precision.FP16, Precision.INT8_STATIC):
            if ONNX_RUNTIME not in runtimes or precision not in (space.precisions or ()):
                continue
            params: dict[str, Any] = {"prune": "none", "runtime": ONNX_RUNTIME, "precision": precision.value}
            if precision is not Precision.INT8_STATIC:
                params["graph_optimise"] = pick(True, space.graph_optimise)
            if precision is not Precision.FP16:
                params["per_channel"] = pick(self.profile.quantisation.per_channel, space.per_channel)
                params["quantise_ops"] = space.quantise_ops[0]
            if precision is Precision.INT8_STATIC:
                params["calibration"] = space.calibration[0]
            params["threads"] = threads
            presets.append(params)
        # TorchScript: what a PyTorch server would run, for the comparison; LiteRT: the edge format.
        for runtime, key, precisions in (
            (TORCHSCRIPT, "ts_precision", space.torchscript_precisions),
            (LITERT, "tflite_precision", space.litert_precisions),
        ):
            if runtime in runtimes:
                presets += [
                    {"prune": "none", "runtime": runtime, key: p.value, "threads": threads}
                    for p in precisions
                ]
        students = [s for s in space.students if s != "none"]
        if not students or not presets:
            return presets
        # Each student in the fastest kind measured for the model itself (the first preset), next.
        own = [{**p, "student": "none"} for p in presets]
        with_students = [{k: v for k, v in own[0].items() if k != "prune"} | {"student": s} for s in students]
        return [own[0], *with_students, *own[1:]]


def _length_reference(bundle: ModelBundle) -> tuple[Batch | None, np.ndarray | None]:
    """`length_probes` of the evaluation inputs and FP32's answers on each alone at its own length
    (as `predict_rows` runs a candidate); (None, None) for labelled data, inputs without a mask, or a
    first output that is per token (its rows differ in shape, so no cosine per row)."""
    probes = length_probes(bundle.eval_inputs) if bundle.eval_labels is None else None
    if probes is None:
        return None, None
    answers = [bundle.run_torch(row)[0] for row in unpadded_rows(probes)]
    if len({a.shape[1:] for a in answers}) > 1:
        return None, None
    return probes, np.concatenate(answers)


def default_storage(cache_dir: Path) -> str:
    cache_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{cache_dir / 'optuna.sqlite3'}"
