"""The build step end to end: search, measure side by side, select.

Nothing here writes outside `scratch`; storing the winner is the store's job,
so a run that fails at any point leaves the model store as it was.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from optimise.batches import iter_batches, tile_batch
from optimise.errors import ConfigError, OptimiseError, ProfileError
from optimise.evaluate import (
    Quality,
    Timing,
    compressed_size,
    cosine_per_sample,
    measure_interleaved,
    predict_rows,
    reference_outputs,
    size_on_disk,
)
from optimise.pipeline import CandidateBuilder
from optimise.runtimes import LITERT, open_variant
from optimise.runtimes.ort_session import available_providers
from optimise.search import Candidate, Search, SearchSettings
from optimise.select import Selection, select
from optimise.serving_search import ServingTarget, serving_stage
from optimise.source import ModelBundle
from optimise.space import SearchSpace, default_space
from optimise.types import Constraints, HardwareProfile, ServingChoice, Variant, VariantMetrics

logger = logging.getLogger(__name__)

MAX_FINAL_CANDIDATES = 12


@dataclass
class BuildResult:
    bundle: ModelBundle
    profile: HardwareProfile
    constraints: Constraints
    reference: Quality
    variants: list[Variant]
    failures: list[Candidate]
    selection: Selection
    reference_outputs: np.ndarray
    seconds: float
    serving: ServingChoice | None = None
    """The serving stage's trials and the settings chosen for the winner (None: the stage did not run)."""

    @property
    def winner(self) -> Variant:
        return self.selection.winner

    def calibration_fidelity(self) -> float | None:
        """How closely the winner follows the FP32 model on the calibration inputs (recent traffic,
        when recalibrating): argmax agreement for classifiers, mean cosine otherwise."""
        inputs = self.bundle.calibration_inputs
        if inputs is None:
            return None
        reference = np.concatenate([self.bundle.run_torch(b)[0] for b in iter_batches(inputs, 32)])
        actual = predict_rows(open_variant(self.winner, self.profile.execution_providers), inputs)
        if self.bundle.eval_labels is not None:
            return float(np.mean(actual.argmax(axis=-1) == reference.argmax(axis=-1)))
        return float(cosine_per_sample(actual, reference).mean())


def check_profile_runs_here(profile: HardwareProfile) -> None:
    if not set(profile.execution_providers) & set(available_providers()):
        raise ProfileError(
            f"profile {profile.name!r} needs {', '.join(profile.execution_providers)}, which this machine "
            f"lacks (ONNX Runtime offers {', '.join(available_providers())}); its candidates are skipped"
        )


def optimise(
    bundle: ModelBundle,
    profile: HardwareProfile,
    constraints: Constraints,
    settings: SearchSettings,
    scratch: Path,
    space: SearchSpace | None = None,
    on_trial: Callable[[Candidate], None] | None = None,
    rounds: int = 5,
    serving: ServingTarget | None = None,
) -> BuildResult:
    """Search, measure the finalists side by side in `rounds` interleaved rounds, select; then, with
    `serving`, measure serving settings under load for the winner and the next feasible variants
    (`optimise.serving_search`), which may pick the stored variant when `serving.select_variant`."""
    check_profile_runs_here(profile)
    start = time.perf_counter()
    outputs = reference_outputs(bundle)
    builder = CandidateBuilder(bundle, profile, scratch)
    search = Search(bundle, profile, space or default_space(bundle), builder, outputs)
    for student in search.space.student_passes():  # trained on their own budget, before the search's
        failure = builder.prepare((student,))
        if failure is not None:
            logger.warning("student dropped: %s", failure)
    if LITERT in (search.space.runtimes or ()):
        prepare_litert()
    candidates = search.run(settings, on_trial)
    built = [c for c in candidates if c.failure is None]
    failures = [c for c in candidates if c.failure is not None]
    if not built:
        reasons = "; ".join(c.failure or "" for c in failures[:3])
        raise OptimiseError(f"every candidate failed to build: {reasons}")
    variants = measure_final(bundle, profile, _finalists(built), rounds)
    selection = select(variants, search.reference.value, constraints, profile)
    choice = None
    if serving is not None:
        try:
            stored, choice = serving_stage(selection, variants, bundle.eval_inputs, profile, serving)
        except ValueError as exc:  # every setting failed under load: the service's defaults will do
            logger.warning("serving stage skipped: %s", exc)
            stored, choice = selection.winner, None
        if serving.select_variant and choice is not None:
            reason = f"serves the most requests/s within the p99 bound of the finalists ({choice.reason})"
            if stored.id == selection.winner.id:
                reason += f"; also the batch-1 pick: {selection.reason}"
            selection = replace(selection, winner=stored, reason=reason)
    return BuildResult(
        bundle,
        profile,
        constraints,
        search.reference,
        variants,
        failures,
        selection,
        outputs,
        time.perf_counter() - start,
        choice,
    )


def prepare_litert() -> None:
    """Make the LiteRT converter environment now, if it is missing, so that its minute of installing
    is neither charged to a candidate's build time nor to the search's time budget. A failure is
    remembered and drops the TFLite candidates with its reason; the others build."""
    from optimise.litert import environment

    if environment.is_ready():
        return
    logger.info("making the LiteRT converter environment in %s", environment.environment_dir())
    with contextlib.suppress(ConfigError):
        environment.converter_python()


def _finalists(built: list[Candidate]) -> list[Candidate]:
    """The reference, the quickest candidate of each runtime (so the report compares the runtimes
    side by side), then the rest by quick latency, best quality first on ties."""
    ranked = sorted(
        built[1:], key=lambda c: (c.quick_latency_ms or float("inf"), -(c.quality.value if c.quality else 0))
    )
    quickest: dict[str, Candidate] = {}
    for candidate in ranked:
        quickest.setdefault(candidate.recipe.runtime, candidate)
    picked = {id(c) for c in quickest.values()}
    rest = [c for c in ranked if id(c) not in picked]
    kept = {id(c) for c in [*quickest.values(), *rest][: MAX_FINAL_CANDIDATES - 1]}
    return [built[0], *(c for c in ranked if id(c) in kept)]


def measure_final(
    bundle: ModelBundle, profile: HardwareProfile, candidates: list[Candidate], rounds: int
) -> list[Variant]:
    """Measure the finalists side by side (interleaved rounds) and attach their metrics."""
    sessions = {
        c.variant.id: open_variant(c.variant, profile.execution_providers)
        for c in candidates
        if c.variant is not None
    }
    throughput_batch = tile_batch(bundle.latency_inputs, profile.throughput_batch_size)
    timings = measure_interleaved(
        sessions, bundle.latency_inputs, throughput_batch, rounds, throughput_calls=1
    )
    return [_with_metrics(c, timings[c.variant.id]) for c in candidates if c.variant is not None]


def _with_metrics(candidate: Candidate, timing: Timing) -> Variant:
    assert candidate.variant is not None and candidate.quality is not None  # only built candidates get here
    files = candidate.variant.model_files
    metrics = VariantMetrics(
        latency_p50_ms=timing.latency_p50_ms,
        latency_p95_ms=timing.latency_p95_ms,
        throughput_per_s=timing.throughput_per_s,
        size_bytes=sum(size_on_disk(f) for f in files),
        compressed_size_bytes=sum(compressed_size(f) for f in files),
        quality=candidate.quality.value,
        quality_min=candidate.quality.minimum,
        quality_metric=candidate.quality.metric,
        build_seconds=candidate.build_seconds,
        latency_p50_spread_ms=timing.latency_p50_spread_ms,
        latency_p50_rounds_ms=timing.latency_p50_rounds_ms,
        recall_at_10=candidate.quality.recall_at_10,
        length_cosine_min=candidate.quality.length_minimum,
        length_cosine_min_at=candidate.quality.length_minimum_at,
    )
    return replace(candidate.variant, metrics=metrics)
