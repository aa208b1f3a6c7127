from pathlib import Path

import pytest
from tiny_models import make_tiny_bundle, unexportable

from optimise.build import BuildResult, check_profile_runs_here, optimise
from optimise.errors import OptimiseError, ProfileError
from optimise.profiles import get_profile
from optimise.search import SearchSettings
from optimise.select import NoFeasibleVariant
from optimise.source import ModelBundle
from optimise.space import SearchSpace
from optimise.types import Constraints, Precision, QualityMetric

SMALL_SPACE = SearchSpace(
    graph_optimise=(False, True),
    precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
    per_channel=(True,),
)


def build_tiny(
    tmp_path: Path, constraints: Constraints | None = None, bundle: ModelBundle | None = None
) -> BuildResult:
    return optimise(
        bundle or make_tiny_bundle(),
        get_profile("cpu"),
        constraints or Constraints(),
        SearchSettings(sampler="grid"),
        tmp_path,
        space=SMALL_SPACE,
        rounds=2,
    )


def test_every_recipe_is_measured_and_the_winner_is_feasible_and_fastest(tmp_path: Path) -> None:
    result = build_tiny(tmp_path)
    assert len(result.variants) == SMALL_SPACE.for_profile(get_profile("cpu")).size() == 4
    assert result.variants[0].describe() == "fp32 export"  # the reference is always a candidate
    feasible = [v for v in result.variants if result.selection.verdicts[v.id].feasible]
    assert result.winner in feasible
    fastest = min(v.metrics.latency_p50_ms for v in feasible if v.metrics)
    assert result.winner.metrics is not None
    assert result.winner.metrics.latency_p50_ms <= fastest * (1 + Constraints().latency_tolerance)
    assert result.reference.metric is QualityMetric.ACCURACY
    assert result.winner.id in result.selection.pareto_ids or any(
        result.selection.verdicts[i].feasible for i in result.selection.pareto_ids
    )


def test_every_measurement_is_filled_in(tmp_path: Path) -> None:
    for variant in build_tiny(tmp_path).variants:
        m = variant.metrics
        assert m is not None
        assert 0 < m.latency_p50_ms <= m.latency_p95_ms
        assert m.throughput_per_s > 0
        assert m.size_bytes == variant.artefact.stat().st_size
        assert m.compressed_size_bytes > 0
        assert m.build_seconds >= 0


def test_impossible_constraints_are_a_user_error_naming_the_cause(tmp_path: Path) -> None:
    with pytest.raises(NoFeasibleVariant, match="size"):
        build_tiny(tmp_path, Constraints(max_size_bytes=10))


def test_a_model_that_cannot_export_fails_the_run_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(OptimiseError, match="export_onnx"):
        build_tiny(tmp_path, bundle=unexportable())


def test_gpu_profile_is_refused_on_a_machine_without_cuda() -> None:
    with pytest.raises(ProfileError, match="CUDAExecutionProvider"):
        check_profile_runs_here(get_profile("gpu"))
