"""The options a rebuild is given from the live version's manifest (the trigger's tests run them)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from manifests import small_manifest

from monitoring.rebuild import LiveStudent, build_options, fidelity_floor, live_student, serving_options
from optimise.artefact import PassRecord
from optimise.profiles import get_profile
from optimise.types import Constraints, QualityMetric, ServingChoice, ServingSettings


def test_the_options_name_the_source_profile_and_default_budget() -> None:
    manifest = replace(small_manifest("tiny", {}), profile=get_profile("edge"))
    assert build_options(manifest) == [
        "--model", "tests:fake", "--profile", "edge", "--max-accuracy-drop", "0.5", "--min-cosine", "0.99",
        "--serve-concurrency", "0",  # its build skipped the serving stage
    ]  # fmt: skip


def test_a_rebuild_runs_the_serving_stage_the_live_build_ran() -> None:
    stage = ServingChoice(
        "v", ServingSettings(threads=2), 8, 50.0, 1.0, "measured", (), request_cpu_ms=0.25, request_cores=0,
        select_variant=True,
    )  # fmt: skip
    manifest = replace(small_manifest("tiny", {}), serving=stage)
    assert serving_options(manifest) == [
        "--serve-concurrency", "8", "--serve-request-cores", "0", "--serve-request-cpu-ms", "0.25",
        "--select-by", "throughput", "--serve-p99-ms", "50.0",
    ]  # fmt: skip
    assert build_options(manifest)[-len(serving_options(manifest)) :] == serving_options(manifest)
    # What the options say, the build's own parser takes (the trigger's tests run whole rebuilds).
    from typer.testing import CliRunner

    from optimise.cli import app

    result = CliRunner().invoke(
        app, ["optimise", "--model", "x", *serving_options(manifest), "--serve-concurrency", "0"]
    )
    assert "--select-by throughput needs the serving stage" in " ".join(result.output.split())


def test_a_variant_of_the_model_itself_is_no_student() -> None:
    assert live_student(small_manifest("tiny", {})) is None


def test_a_student_without_recorded_training_is_asked_for_its_budget() -> None:
    manifest = small_manifest("tiny", {})
    selected = replace(manifest.selected, passes=(PassRecord("distil", {"width": 0.25, "time_s": 30.2}),))
    student = live_student(replace(manifest, selected=selected))
    assert student == LiveStudent("width=0.25", None, 30.2)
    assert student is not None and student.budget_options() == ["--distil-time", "31"]
    assert LiveStudent("width=0.25", None, None).budget_options() == []


@pytest.mark.parametrize(
    ("metric", "constraints", "floor"),
    [
        (QualityMetric.ACCURACY, Constraints(), 0.99),  # 0.5 points: the trigger's floor is the lower
        (QualityMetric.ACCURACY, Constraints(max_accuracy_drop=0.03), 0.97),
        (QualityMetric.COSINE, Constraints(min_cosine=0.93), 0.93),
        (QualityMetric.COSINE, Constraints(min_cosine=0.999), 0.99),
    ],
)
def test_the_fidelity_floor_is_the_lower_of_the_trigger_and_the_budget(
    metric: QualityMetric, constraints: Constraints, floor: float
) -> None:
    assert fidelity_floor(metric, constraints, 0.99) == pytest.approx(floor)
