from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from tiny_models import make_tiny_bundle

from optimise.errors import ConfigError, OptimiseError, PassFailed
from optimise.evaluate import reference_outputs
from optimise.passes.base import PassContext
from optimise.passes.quantise_dynamic import QuantiseDynamic
from optimise.pipeline import CandidateBuilder, Recipe
from optimise.profiles import get_profile
from optimise.runtimes import LITERT, ONNX_RUNTIME, OPENVINO, TORCHSCRIPT
from optimise.search import GRID_LIMIT, Candidate, Search, SearchSettings, _sampler
from optimise.source import ModelBundle
from optimise.space import SearchSpace
from optimise.types import PassSpec, Precision, QualityMetric

SMALL = SearchSpace(
    prune=("none",),
    graph_optimise=(False,),
    precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
    per_channel=(True,),
    runtimes=(ONNX_RUNTIME,),
)
GRID = SearchSettings(sampler="grid")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return reference_outputs(make_tiny_bundle())


@pytest.fixture
def make_search(
    tiny_bundle: ModelBundle, tmp_path: Path, reference: np.ndarray
) -> Callable[..., tuple[Search, list[Recipe]]]:
    """A Search over the tiny bundle whose builder logs every recipe it builds."""

    def make(space: SearchSpace = SMALL) -> tuple[Search, list[Recipe]]:
        scratch = tmp_path / f"scratch-{len(list(tmp_path.glob('scratch-*')))}"
        scratch.mkdir()
        profile = get_profile("cpu")
        builder = CandidateBuilder(tiny_bundle, profile, scratch)
        built: list[Recipe] = []
        original = builder.build

        def logging_build(recipe: Recipe) -> Any:
            built.append(recipe)
            return original(recipe)

        builder.build = logging_build  # type: ignore[method-assign]
        return Search(tiny_bundle, profile, space, builder, reference), built

    return make


def reference_recipe(threads: int) -> Recipe:
    return Recipe((), PassSpec("export_onnx"), (), threads)


def fail_quantise_dynamic(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(self: QuantiseDynamic, model: Path, ctx: PassContext) -> Path:
        raise PassFailed("quantise_dynamic", "simulated quantiser crash")

    monkeypatch.setattr(QuantiseDynamic, "run", failing)


# --- SearchSettings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "random"}, "unknown sampler 'random'"),
        ({"n_trials": 0}, "n_trials"),
        ({"n_trials": -3}, "n_trials"),
        ({"time_budget_s": -1.0}, "time budget"),
        ({"time_budget_s": 0}, "time budget"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        SearchSettings(**kwargs)
    assert isinstance(info.value, OptimiseError)


def test_good_settings_are_accepted_and_kept() -> None:
    for sampler in ("auto", "grid", "tpe", "nsga2"):
        settings = SearchSettings(sampler=sampler, n_trials=1, time_budget_s=0.5)
        assert (settings.sampler, settings.n_trials, settings.time_budget_s) == (sampler, 1, 0.5)


def test_auto_sampler_enumerates_small_spaces_only() -> None:
    auto = SearchSettings()
    assert isinstance(_sampler(auto, GRID_LIMIT), optuna.samplers.BruteForceSampler)
    assert isinstance(_sampler(auto, GRID_LIMIT + 1), optuna.samplers.TPESampler)
    assert isinstance(_sampler(SearchSettings(sampler="grid"), 10_000), optuna.samplers.BruteForceSampler)
    assert isinstance(_sampler(SearchSettings(sampler="tpe"), 2), optuna.samplers.TPESampler)
    assert isinstance(_sampler(SearchSettings(sampler="nsga2"), 2), optuna.samplers.NSGAIISampler)


# --- Search.run ----------------------------------------------------------------------


def test_grid_search_tries_every_recipe_once_reference_first(
    make_search: Callable[..., tuple[Search, list[Recipe]]],
) -> None:
    search, built = make_search()
    assert search.space.size() == 2
    seen: list[Candidate] = []
    candidates = search.run(GRID, on_trial=seen.append)
    threads = get_profile("cpu").intra_op_threads
    assert len(candidates) == 2 == len(built)
    assert len({repr(r) for r in built}) == 2
    assert candidates[0].recipe == reference_recipe(threads)
    assert candidates[0].recipe.precision is Precision.FP32
    assert candidates[1].recipe.precision is Precision.INT8_DYNAMIC
    assert seen[0] is candidates[0]  # the reference is reported first
    assert {id(c) for c in seen} == {id(c) for c in candidates}  # every candidate is reported
    for candidate in candidates:
        assert candidate.failure is None
        assert candidate.variant is not None and candidate.variant.artefact.is_file()
        assert candidate.quality is not None and candidate.quality.metric is QualityMetric.ACCURACY
        assert candidate.quick_latency_ms is not None and candidate.quick_latency_ms > 0
        assert candidate.build_seconds > 0
    assert candidates[0].quality is not None and candidates[0].quality.value == pytest.approx(1.0)
    assert candidates[1].params["precision"] == "int8-dynamic"  # the trial's parameters are kept
    assert search.reference_quality == 1.0


def test_a_search_cut_to_one_trial_has_tried_the_reference(
    make_search: Callable[..., tuple[Search, list[Recipe]]],
) -> None:
    search, built = make_search()
    candidates = search.run(SearchSettings(sampler="tpe", n_trials=1))
    assert candidates[0].recipe == reference_recipe(get_profile("cpu").intra_op_threads)
    assert candidates[0].failure is None
    assert len(candidates) <= 2 and len(built) == len(candidates)


def test_a_failing_pass_is_recorded_and_the_study_goes_on(
    make_search: Callable[..., tuple[Search, list[Recipe]]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fail_quantise_dynamic(monkeypatch)
    # 4 recipes: fp32 +/- graph_optimise, int8 +/- graph_optimise; both int8 ones fail.
    space = SearchSpace(
        prune=("none",),
        graph_optimise=(False, True),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
        per_channel=(True,),
        runtimes=(ONNX_RUNTIME,),
    )
    search, built = make_search(space)
    storage = f"sqlite:///{tmp_path / 'failures.sqlite3'}"
    candidates = search.run(SearchSettings(sampler="grid", storage=storage, study_name="failures"))
    assert len(candidates) == 4 == len(built)
    failed = [c for c in candidates if c.failure is not None]
    assert [c.recipe.precision for c in failed] == [Precision.INT8_DYNAMIC] * 2
    for candidate in failed:
        assert candidate.failure == "quantise_dynamic: simulated quantiser crash"
        assert candidate.variant is None and candidate.quality is None
    ok = [c for c in candidates if c.failure is None]
    assert len(ok) == 2 and all(c.recipe.precision is Precision.FP32 for c in ok)
    # a successful candidate came after the first failure: the study did not stop there
    first_failure = candidates.index(failed[0])
    assert any(c.failure is None for c in candidates[first_failure + 1 :])
    # the study knows which trials failed, and why
    trials = optuna.load_study(study_name="failures", storage=storage).trials
    assert trials
    for trial in trials:
        if trial.params["precision"] == Precision.INT8_DYNAMIC.value:
            assert trial.state is optuna.trial.TrialState.FAIL
            assert trial.user_attrs["failure"] == "quantise_dynamic: simulated quantiser crash"
        else:
            assert trial.state is optuna.trial.TrialState.COMPLETE
            assert len(trial.values) == 4  # latency, quality loss, size, build time
    assert {t.state for t in trials} == {optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE}


def test_try_recipe_caches_by_recipe(make_search: Callable[..., tuple[Search, list[Recipe]]]) -> None:
    search, built = make_search()
    recipe = reference_recipe(1)
    first = search.try_recipe(recipe, {"precision": "fp32"})
    assert search.try_recipe(recipe) is first
    assert len(built) == 1
    assert first.params == {"precision": "fp32"}


def test_a_bad_pass_setting_stops_the_search(make_search: Callable[..., tuple[Search, list[Recipe]]]) -> None:
    search, _ = make_search()
    bad = Recipe((), PassSpec("export_onnx", {"atol": -1.0}), (), 1)
    with pytest.raises(ConfigError, match="atol"):
        search.try_recipe(bad)


def test_a_sqlite_study_can_be_reused(
    make_search: Callable[..., tuple[Search, list[Recipe]]], tmp_path: Path
) -> None:
    settings = SearchSettings(
        sampler="grid", storage=f"sqlite:///{tmp_path / 'study.sqlite3'}", study_name="tiny"
    )
    first, _ = make_search()
    assert len(first.run(settings)) == 2
    second, _ = make_search()
    candidates = second.run(settings)  # load_if_exists: no DuplicatedStudyError
    assert candidates and all(c.failure is None for c in candidates)
    study = optuna.load_study(study_name="tiny", storage=settings.storage)
    assert len(study.trials) == 2 + len(candidates)
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_resumed_study_still_puts_the_reference_first(
    make_search: Callable[..., tuple[Search, list[Recipe]]], tmp_path: Path
) -> None:
    space = SearchSpace(
        prune=("none",),
        graph_optimise=(False, True),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
        per_channel=(True,),
        runtimes=(ONNX_RUNTIME,),
    )
    storage = f"sqlite:///{tmp_path / 'resumed.sqlite3'}"
    first, _ = make_search(space)
    first.run(SearchSettings(sampler="grid", storage=storage, study_name="resumed", n_trials=2))
    second, _ = make_search(space)
    candidates = second.run(SearchSettings(sampler="grid", storage=storage, study_name="resumed"))
    assert candidates, "the resumed search built nothing"
    assert candidates[0].recipe == reference_recipe(get_profile("cpu").intra_op_threads)


def test_the_openvino_int8_preset_is_tried_first_after_the_reference(
    make_search: Callable[..., tuple[Search, list[Recipe]]],
) -> None:
    both = SearchSpace(prune=("none",), runtimes=(ONNX_RUNTIME, OPENVINO), precision_hints=("bf16",))
    search, built = make_search(both)
    search.run(SearchSettings(sampler="tpe", n_trials=1))
    assert len(built) == 2  # the reference, then the first preset
    assert built[1].runtime == OPENVINO
    assert [p.name for p in built[1].onnx_passes] == ["convert_openvino", "quantise_nncf"]
    expected_hint = "bf16" if get_profile("cpu").bf16 else "f32"
    assert dict(built[1].runtime_settings)["INFERENCE_PRECISION_HINT"] == expected_hint


def test_students_are_tried_right_after_the_first_preset(
    make_search: Callable[..., tuple[Search, list[Recipe]]], tiny_bundle: ModelBundle
) -> None:
    from optimise.distillation.data import tensor_data

    data = tensor_data({"features": np.zeros((300, 16), np.float32)}, None, "zeros")
    tiny_bundle.distillation_data = lambda: data
    space = SearchSpace(
        prune=("none",), students=("none", "width=0.5"), precisions=(Precision.INT8_DYNAMIC,), distil_steps=3
    )
    search, built = make_search(space)
    search.run(SearchSettings(sampler="tpe", n_trials=2))
    assert built[1].torch_passes == ()  # the preset on the model itself
    assert [p.name for p in built[2].torch_passes] == ["distil"]
    assert built[2].onnx_passes == built[1].onnx_passes  # the same preset on the student


def test_every_torchscript_and_tflite_precision_is_a_preset(
    tiny_bundle: ModelBundle, tmp_path: Path, reference: np.ndarray
) -> None:
    # Presets only: a sampled search of a larger space may never draw a runtime the report compares.
    def presets(profile: str, space: SearchSpace) -> list[dict[str, Any]]:
        builder = CandidateBuilder(tiny_bundle, get_profile(profile), tmp_path)
        return Search(tiny_bundle, get_profile(profile), space, builder, reference)._presets()

    edge = presets("edge", SearchSpace(runtimes=(ONNX_RUNTIME, LITERT)))
    assert [p["tflite_precision"] for p in edge if p["runtime"] == LITERT] == [
        "fp32",
        "int8-dynamic",
        "int8-static",
    ]
    cpu = presets("cpu", SearchSpace(runtimes=(ONNX_RUNTIME, TORCHSCRIPT)))
    assert [p["ts_precision"] for p in cpu if p["runtime"] == TORCHSCRIPT] == ["fp32", "int8-dynamic"]
