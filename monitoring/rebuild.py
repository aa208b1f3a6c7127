"""What a re-optimisation asks of the build: the choices the live version was built with.

A rebuild answers a change in the traffic, not a change of mind. It builds the live
version's source for the same hardware profile, under the same quality budget
(`--min-cosine`, `--max-accuracy-drop`, `--max-size-mb`), with the same serving stage
(clients, p99 bound, the request path's CPU model, `--select-by`; or none), and when the
live variant is a distilled student, with that student again. Under the defaults instead (a 0.99 mean
cosine), a rebuild refused every student a user had accepted at a lower cosine, and
could store a slower variant of the teacher in the student's place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimise.artefact import Manifest
from optimise.space import student_name
from optimise.types import Constraints, QualityMetric


@dataclass(frozen=True)
class LiveStudent:
    """The distilled student a live version serves: its name (`layers=4`, `width=0.5`) and the
    training it had (None where the manifest does not say)."""

    name: str
    steps: int | None
    seconds: float | None

    def budget_options(self) -> list[str]:
        """`--distil-time` (and `--distil-steps`) asking for the training this student had: a cached
        copy is reused as it is, and a machine without one trains it again for as long."""
        if self.seconds is None:
            return []
        options = ["--distil-time", str(max(1, math.ceil(self.seconds)))]
        if self.steps is not None:
            options += ["--distil-steps", str(self.steps)]
        return options


def live_student(manifest: Manifest) -> LiveStudent | None:
    """The student `manifest`'s selected variant was distilled as, or None for a variant of the
    model itself. Raises ValueError when its `distil` settings name no student."""
    selected = manifest.selected
    for record in selected.passes:
        if record.name == "distil":
            training = selected.training
            budget = record.settings.get("time_s")
            return LiveStudent(
                student_name(record.settings),
                training.steps if training else None,
                training.seconds if training else (float(budget) if budget is not None else None),
            )
    return None


def build_options(manifest: Manifest) -> list[str]:
    """`leanserve optimise` options for the live version's source, profile and quality budget."""
    constraints = manifest.constraints
    options = [
        "--model",
        manifest.source.spec,
        "--profile",
        manifest.profile.name,
        "--max-accuracy-drop",
        repr(constraints.max_accuracy_drop * 100),  # the option is in percentage points
        "--min-cosine",
        repr(constraints.min_cosine),
    ]
    if constraints.max_size_bytes is not None:
        options += ["--max-size-mb", repr(constraints.max_size_bytes / 1e6)]
    return options + serving_options(manifest)


def serving_options(manifest: Manifest) -> list[str]:
    """The serving stage as the live version's build ran it: `--serve-concurrency 0` where it skipped
    the stage; else its clients, p99 bound, request-path cores and CPU work, and `--select-by`. How
    long each setting is measured is the trigger's own (`--serve-seconds`)."""
    stage = manifest.serving
    if stage is None:
        return ["--serve-concurrency", "0"]
    options = [
        "--serve-concurrency", str(stage.concurrency),
        "--serve-request-cores", str(stage.request_cores),
        "--serve-request-cpu-ms", repr(stage.request_cpu_ms),
        "--select-by", "throughput" if stage.select_variant else "latency",
    ]  # fmt: skip
    if stage.p99_bound_ms is not None:
        options += ["--serve-p99-ms", repr(stage.p99_bound_ms)]
    return options


def fidelity_floor(metric: QualityMetric, constraints: Constraints, min_fidelity: float) -> float:
    """The least fidelity to the FP32 model on recent traffic a rebuilt version must keep:
    `min_fidelity`, or less where its build's budget allowed less. Fidelity is argmax agreement for
    classifiers (`metric` accuracy: a budget of N points of accuracy admits N % of rows answered
    differently) and mean cosine otherwise (the build's `min_cosine`)."""
    allowed = (
        1 - constraints.max_accuracy_drop if metric is QualityMetric.ACCURACY else constraints.min_cosine
    )
    return min(min_fidelity, allowed)
