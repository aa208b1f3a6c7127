from pathlib import Path

import pytest
from builds import build, with_more_calibration_rows
from tiny_models import make_tiny_bundle, unexportable

from optimise.build import MAX_FINAL_CANDIDATES, BuildResult, _finalists, check_profile_runs_here, optimise
from optimise.errors import OptimiseError, ProfileError
from optimise.pipeline import Recipe
from optimise.profiles import get_profile
from optimise.runtimes import LITERT, ONNX_RUNTIME, OPENVINO, TORCHSCRIPT
from optimise.search import Candidate, SearchSettings
from optimise.select import NoFeasibleVariant
from optimise.source import ModelBundle
from optimise.space import SearchSpace
from optimise.types import Constraints, PassSpec, Precision, QualityMetric

SMALL_SPACE = SearchSpace(
    graph_optimise=(False, True),
    precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
    per_channel=(True,),
    runtimes=(ONNX_RUNTIME,),
)
OPENVINO_SPACE = SearchSpace(runtimes=(OPENVINO,), precision_hints=("f32",))


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
    fastest = min((v.metrics for v in feasible if v.metrics), key=lambda m: m.latency_p50_ms)
    winner = result.winner.metrics
    assert winner is not None
    constraints = Constraints()
    margin = max(
        fastest.latency_p50_ms * constraints.latency_tolerance,
        constraints.latency_tolerance_ms,
        fastest.latency_p50_spread_ms,
        winner.latency_p50_spread_ms,
    )
    assert winner.latency_p50_ms <= fastest.latency_p50_ms + margin
    assert result.selection.reason
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
        assert m.recall_at_10 is None  # a classifier: accuracy, no neighbours
        assert variant.batch_invariant is (variant.precision is not Precision.INT8_DYNAMIC)
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


def test_openvino_candidates_are_converted_quantised_and_measured_on_openvino(tmp_path: Path) -> None:
    bundle = with_more_calibration_rows(make_tiny_bundle())
    result = optimise(
        bundle,
        get_profile("cpu"),
        Constraints(),
        SearchSettings(sampler="grid"),
        tmp_path,
        OPENVINO_SPACE,
        rounds=2,
    )
    openvino = {v.precision: v for v in result.variants if v.runtime == OPENVINO}
    assert set(openvino) == {Precision.FP32, Precision.INT8_STATIC}
    int8 = openvino[Precision.INT8_STATIC]
    assert [p.name for p in int8.passes] == ["export_onnx", "convert_openvino", "quantise_nncf"]
    assert int8.format == "openvino" and int8.artefact.suffix == ".xml"
    assert int8.runtime_settings == (("INFERENCE_PRECISION_HINT", "f32"),)
    assert int8.batch_invariant is True  # static scales: a row's answer does not depend on its batch
    assert int8.metrics is not None
    assert int8.metrics.size_bytes == sum(f.stat().st_size for f in int8.model_files)
    assert int8.model_files[1].suffix == ".bin"
    assert "FakeQuantize" in int8.artefact.read_text()  # int8 ops, not the FP32 graph again


def test_a_calibration_set_too_small_for_nncf_drops_those_candidates_with_the_minimum(tmp_path: Path) -> None:
    result = optimise(
        make_tiny_bundle(), get_profile("cpu"), Constraints(), SearchSettings(sampler="grid"), tmp_path,
        OPENVINO_SPACE, rounds=1,
    )  # fmt: skip
    assert [v.precision for v in result.variants if v.runtime == OPENVINO] == [Precision.FP32]
    assert any("at least 64" in (c.failure or "") for c in result.failures)


def test_torchscript_candidates_are_traced_and_measured_on_pytorch(tmp_path: Path) -> None:
    result = build(make_tiny_bundle(), SearchSpace(runtimes=(TORCHSCRIPT,)), tmp_path)
    torchscript = {v.precision: v for v in result.variants if v.runtime == TORCHSCRIPT}
    assert set(torchscript) == {Precision.FP32, Precision.INT8_DYNAMIC}
    int8 = torchscript[Precision.INT8_DYNAMIC]
    assert int8.format == "torchscript" and int8.artefact.name == "model.pt"
    assert int8.passes == (PassSpec("export_torchscript", {"int8_dynamic": True}),)
    assert int8.describe() == "export_torchscript(int8_dynamic=True)"  # not "fp32 export"
    assert torchscript[Precision.FP32].describe() == "fp32 export"
    assert int8.metrics is not None and int8.metrics.size_bytes == int8.artefact.stat().st_size
    assert int8.metrics.size_bytes < torchscript[Precision.FP32].artefact.stat().st_size
    assert int8.batch_invariant is not None


def _candidate(runtime: str, quick_ms: float) -> Candidate:
    return Candidate(
        recipe=Recipe((), PassSpec("export_torchscript" if runtime == TORCHSCRIPT else "export_onnx"), (), 1),
        quick_latency_ms=quick_ms,
    )


def test_the_quickest_candidate_of_every_runtime_reaches_the_final_measurement() -> None:
    reference = _candidate(ONNX_RUNTIME, 1.0)
    onnx = [_candidate(ONNX_RUNTIME, 0.1 + i / 100) for i in range(MAX_FINAL_CANDIDATES + 3)]
    slow_torchscript = _candidate(TORCHSCRIPT, 5.0)
    finalists = _finalists([reference, slow_torchscript, *onnx])
    assert len(finalists) == MAX_FINAL_CANDIDATES and finalists[0] is reference
    assert slow_torchscript in finalists  # not quick enough to rank, kept for the comparison
    assert finalists[1:-1] == onnx[: MAX_FINAL_CANDIDATES - 2]  # the rest by quick latency


def test_tflite_candidates_are_converted_and_measured_on_litert_for_the_edge(tmp_path: Path) -> None:
    edge = get_profile("edge")
    assert LITERT in edge.runtimes
    bundle = with_more_calibration_rows(make_tiny_bundle())
    result = build(bundle, SearchSpace(runtimes=(LITERT,)), tmp_path, profile="edge")
    tflite = {v.precision: v for v in result.variants if v.runtime == LITERT}
    assert set(tflite) == {Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8_STATIC}
    static = tflite[Precision.INT8_STATIC]
    assert [p.name for p in static.passes] == ["export_tflite", "quantise_litert"]
    assert static.format == "tflite" and [f.name for f in static.model_files] == [
        "model.tflite",
        "model.io.json",
    ]
    assert static.metrics is not None and static.metrics.size_bytes == sum(
        f.stat().st_size for f in static.model_files
    )
    assert static.batch_invariant is True  # rows run one at a time
    assert result.winner.intra_op_threads == 1  # the edge profile's one thread
