from __future__ import annotations

from dataclasses import replace
from typing import Any

import optuna
import pytest
from tiny_models import make_tiny_bundle

from optimise.pipeline import Recipe
from optimise.profiles import get_profile
from optimise.runtimes import LITERT, ONNX_RUNTIME, OPENVINO, TORCHSCRIPT
from optimise.source import ModelBundle
from optimise.space import (
    ONNX_RUNTIME_PRECISIONS,
    QUANTISE_OP_SETS,
    SearchSpace,
    default_space,
    length_buckets,
    reference_recipe,
    student_name,
    student_settings,
    suggest_recipe,
)
from optimise.types import HardwareProfile, PassSpec, Precision

PROFILE = HardwareProfile(
    name="all-precisions",
    description="test profile offering every precision",
    execution_providers=("CPUExecutionProvider",),
    precisions=tuple(Precision),
    intra_op_threads=3,
)


OPENVINO_PROFILE = replace(PROFILE, runtimes=(ONNX_RUNTIME, OPENVINO), bf16=True)


class Replay:
    """A Suggester that answers with fixed choice indices, then the first choice, and logs every call."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices
        self.calls: list[tuple[str, list[Any], int]] = []

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        choices = list(choices)
        position = len(self.calls)
        index = self.indices[position] if position < len(self.indices) else 0
        self.calls.append((name, choices, index))
        return choices[index]


def enumerate_recipes(space: SearchSpace, bundle: ModelBundle) -> list[Recipe]:
    """Every recipe reachable by walking every answer to every question the space asks."""
    recipes = []
    pending: list[list[int]] = [[]]
    while pending:
        prefix = pending.pop()
        suggester = Replay(prefix)
        recipes.append(suggest_recipe(suggester, space, bundle))
        for position in range(len(prefix), len(suggester.calls)):
            taken = [index for _, _, index in suggester.calls[:position]]
            n_choices = len(suggester.calls[position][1])
            pending.extend([*taken, other] for other in range(1, n_choices))
    return recipes


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return make_tiny_bundle()


SPACES = {
    "default-minimal": SearchSpace(),
    "everything": SearchSpace(
        prune=("none", "structured", "unstructured"),
        prune_ratios=(0.25, 0.5, 0.75),
        graph_optimise=(True, False),
        per_channel=(True, False),
        calibration=("minmax", "entropy", "percentile"),
        quantise_ops=("all", "matmul", "conv"),
        threads=(1, 2, 4),
    ),
    "static-only": SearchSpace(precisions=(Precision.INT8_STATIC,), graph_optimise=(True, False)),
    "fp16-and-fp32": SearchSpace(precisions=(Precision.FP32, Precision.FP16), prune=("none", "unstructured")),
    "single": SearchSpace(graph_optimise=(False,), precisions=(Precision.FP32,)),
    "openvino-everything": SearchSpace(
        runtimes=(OPENVINO,),
        nncf_presets=("mixed", "performance"),
        smooth_quant_alphas=(None, -1, 0.5),
        fast_bias_correction=(True, False),
        ignored_scopes=("none", "ffn-down"),
        sequence_buckets=("", "16,32"),
    ),
    "both-runtimes": SearchSpace(runtimes=(ONNX_RUNTIME, OPENVINO), precisions=(Precision.FP32,)),
    "students": SearchSpace(
        students=("none", "width=0.5", "width=0.25"),
        prune=("none", "structured"),
        prune_ratios=(0.25, 0.5),
        runtimes=(ONNX_RUNTIME, OPENVINO),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC),
    ),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_size_counts_every_distinct_recipe(name: str, bundle: ModelBundle) -> None:
    space = SPACES[name].for_profile(OPENVINO_PROFILE)
    recipes = enumerate_recipes(space, bundle)
    distinct = {repr(r) for r in recipes}
    assert len(distinct) == len(recipes)  # no two walks give the same recipe
    assert space.size() == len(distinct)


def test_size_matches_the_default_spaces_on_real_profiles() -> None:
    cnn = make_tiny_bundle()
    bert = make_tiny_bundle()
    bert.transformer_type = "bert"
    for bundle in (cnn, bert):
        for profile_name in ("cpu", "gpu", "edge"):
            space = default_space(bundle).for_profile(get_profile(profile_name))
            assert space.size() == len({repr(r) for r in enumerate_recipes(space, bundle)})


def test_brute_force_study_finds_as_many_recipes_as_size(bundle: ModelBundle) -> None:
    space = SearchSpace(
        prune=("none", "unstructured"),
        prune_ratios=(0.25, 0.5),
        per_channel=(True, False),
        calibration=("minmax", "entropy"),
    ).for_profile(get_profile("cpu"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
    seen: set[str] = set()

    def objective(trial: optuna.Trial) -> float:
        seen.add(repr(suggest_recipe(trial, space, bundle)))
        return 0.0

    study.optimize(objective, n_trials=500)
    assert len(study.trials) == space.size() == len(seen)


def test_size_of_an_unbound_space_is_zero() -> None:
    # Without a profile there are no precisions yet; for_profile supplies them.
    assert SearchSpace().size() == 0
    assert SearchSpace().for_profile(PROFILE).size() > 0


def test_size_arithmetic_for_a_known_space() -> None:
    space = SearchSpace(
        prune=("none", "structured"),
        prune_ratios=(0.25, 0.5),
        graph_optimise=(True, False),
        precisions=(Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8_STATIC),
        per_channel=(True, False),
        calibration=("minmax", "entropy"),
        quantise_ops=("all",),
        threads=(1, 2),
    )
    # prune: 1 + 2; threads 2; fp32 2 + dynamic 2*2 + static 2*2 (no graph choice) = 10
    assert space.size() == 3 * 2 * 10


# --- validation --------------------------------------------------------------


def test_unknown_prune_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="prune choices"):
        SearchSpace(prune=("none", "magnitude"))


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_prune_ratio_outside_the_open_unit_interval_is_rejected(ratio: float) -> None:
    with pytest.raises(ValueError, match="prune ratios"):
        SearchSpace(prune_ratios=(0.25, ratio))


def test_unknown_quantise_ops_are_rejected_naming_the_known_sets() -> None:
    with pytest.raises(ValueError, match="unknown quantise_ops") as info:
        SearchSpace(quantise_ops=("all", "gemm"))
    assert "gemm" in str(info.value)
    for known in QUANTISE_OP_SETS:
        assert known in str(info.value)


def test_valid_edges_are_accepted_and_kept() -> None:
    space = SearchSpace(
        prune=("structured", "unstructured"), prune_ratios=(0.01, 0.99), quantise_ops=("matmul", "conv")
    )
    assert space.prune == ("structured", "unstructured")
    assert space.prune_ratios == (0.01, 0.99) and space.quantise_ops == ("matmul", "conv")


# --- for_profile ---------------------------------------------------------------


def test_for_profile_drops_precisions_the_profile_lacks() -> None:
    space = SearchSpace(precisions=(Precision.FP32, Precision.FP16, Precision.INT8_STATIC))
    assert space.for_profile(get_profile("cpu")).precisions == (Precision.FP32, Precision.INT8_STATIC)
    assert space.for_profile(get_profile("gpu")).precisions == (Precision.FP32, Precision.FP16)


def test_for_profile_defaults_to_the_profiles_precisions_and_threads() -> None:
    bound = SearchSpace().for_profile(PROFILE)
    assert bound.precisions == ONNX_RUNTIME_PRECISIONS  # bf16 is OpenVINO's precision hint, not a file
    assert bound.threads == (3,)
    assert bound.runtimes == (ONNX_RUNTIME,)
    explicit = SearchSpace(threads=(1, 2)).for_profile(PROFILE)
    assert explicit.threads == (1, 2)


def test_recipes_use_the_profiles_thread_count(bundle: ModelBundle) -> None:
    space = SearchSpace().for_profile(replace(PROFILE, intra_op_threads=5))
    assert {r.threads for r in enumerate_recipes(space, bundle)} == {5}


# --- suggest_recipe --------------------------------------------------------------


def test_static_int8_never_gets_graph_optimise(bundle: ModelBundle) -> None:
    space = SPACES["everything"].for_profile(PROFILE)
    recipes = enumerate_recipes(space, bundle)
    static = [r for r in recipes if r.precision is Precision.INT8_STATIC]
    assert static
    for recipe in static:
        names = [p.name for p in recipe.onnx_passes]
        assert names == ["quantise_static"]
    # and the others may: graph_optimise exists in the space at all
    assert any(p.name == "graph_optimise" for r in recipes for p in r.onnx_passes)


def test_static_int8_is_not_even_asked_about_graph_optimise(bundle: ModelBundle) -> None:
    space = SearchSpace(precisions=(Precision.INT8_STATIC,), graph_optimise=(True,)).for_profile(PROFILE)
    suggester = Replay([])
    recipe = suggest_recipe(suggester, space, bundle)
    assert "graph_optimise" not in [name for name, _, _ in suggester.calls]
    assert [p.name for p in recipe.onnx_passes] == ["quantise_static"]
    assert recipe.onnx_passes[0].settings["calibration_method"] == "minmax"


def test_fp16_gives_an_fp16_pass(bundle: ModelBundle) -> None:
    space = SearchSpace(precisions=(Precision.FP16,), graph_optimise=(True, False)).for_profile(PROFILE)
    recipes = enumerate_recipes(space, bundle)
    assert len(recipes) == 2
    for recipe in recipes:
        assert recipe.onnx_passes[-1] == PassSpec("fp16")
        assert recipe.precision is Precision.FP16
        assert not any(p.name.startswith("quantise") for p in recipe.onnx_passes)


def test_dynamic_int8_settings_follow_the_answers(bundle: ModelBundle) -> None:
    space = SearchSpace(
        precisions=(Precision.INT8_DYNAMIC,), graph_optimise=(False,), quantise_ops=("all", "matmul")
    ).for_profile(PROFILE)
    by_ops = {
        r.onnx_passes[-1].settings.get("op_types_to_quantize"): r for r in enumerate_recipes(space, bundle)
    }
    assert set(by_ops) == {None, ("MatMul",)}
    assert all(r.onnx_passes[-1].name == "quantise_dynamic" for r in by_ops.values())
    assert all("calibration_method" not in r.onnx_passes[-1].settings for r in by_ops.values())


def test_prune_passes_carry_ratio_and_fine_tune_steps(bundle: ModelBundle) -> None:
    space = SearchSpace(
        prune=("structured", "unstructured"),
        prune_ratios=(0.5,),
        precisions=(Precision.FP32,),
        graph_optimise=(False,),
        fine_tune_steps=7,
    ).for_profile(PROFILE)
    recipes = {r.torch_passes[0].name: r.torch_passes[0] for r in enumerate_recipes(space, bundle)}
    # The tiny bundle has no fine_tune function: pruning cannot recover, so no steps.
    assert recipes == {
        "prune_structured": PassSpec("prune_structured", {"ratio": 0.5, "fine_tune_steps": 0}),
        "prune_unstructured": PassSpec("prune_unstructured", {"amount": 0.5, "fine_tune_steps": 0}),
    }
    tunable = make_tiny_bundle()
    tunable.fine_tune = lambda module, steps: None
    recipe = suggest_recipe(Replay([1]), space, tunable)
    assert recipe.torch_passes[0].settings["fine_tune_steps"] == 7


def test_reference_recipe_is_the_plain_fp32_export(bundle: ModelBundle) -> None:
    space = SearchSpace(threads=(3, 1)).for_profile(PROFILE)
    recipe = reference_recipe(space)
    assert recipe == Recipe((), PassSpec("export_onnx"), (), 3)
    assert recipe.precision is Precision.FP32
    # and it is one of the recipes the space itself can draw
    plain = SearchSpace(graph_optimise=(False, True)).for_profile(PROFILE)
    assert repr(reference_recipe(plain)) in {repr(r) for r in enumerate_recipes(plain, bundle)}


# --- default_space -----------------------------------------------------------------


def test_default_space_for_a_transformer_differs() -> None:
    cnn = make_tiny_bundle()
    bert = make_tiny_bundle()
    bert.transformer_type = "bert"
    cnn_space, bert_space = default_space(cnn), default_space(bert)
    assert cnn_space != bert_space
    assert bert_space.prune == ("none",)
    assert bert_space.precisions is not None and Precision.INT8_STATIC not in bert_space.precisions
    assert Precision.FP16 in bert_space.precisions
    assert "matmul" in bert_space.quantise_ops
    assert {"structured", "unstructured"} <= set(cnn_space.prune)
    assert "conv" in cnn_space.quantise_ops
    assert cnn_space.precisions is None  # every precision of the profile


def test_openvino_recipes_convert_then_quantise_with_nncf_and_carry_session_settings(
    bundle: ModelBundle,
) -> None:
    space = SearchSpace(
        runtimes=(OPENVINO,), sequence_buckets=("16,32",), smooth_quant_alphas=(0.5,)
    ).for_profile(OPENVINO_PROFILE)
    recipes = enumerate_recipes(space, bundle)
    assert {r.runtime for r in recipes} == {"openvino"} and {r.format for r in recipes} == {"openvino"}
    by_precision = {(r.precision, dict(r.runtime_settings)["INFERENCE_PRECISION_HINT"]): r for r in recipes}
    assert set(by_precision) == {
        (Precision.FP32, "f32"), (Precision.BF16, "bf16"), (Precision.INT8_STATIC, "f32"), (Precision.INT8_STATIC, "bf16"),
    }  # fmt: skip
    int8 = by_precision[(Precision.INT8_STATIC, "f32")]
    assert [p.name for p in int8.passes] == ["export_onnx", "convert_openvino", "quantise_nncf"]
    assert int8.onnx_passes[1].settings == {
        "preset": "mixed", "fast_bias_correction": True, "ignored_scope": "none", "smooth_quant_alpha": 0.5,
    }  # fmt: skip
    assert dict(int8.runtime_settings)["sequence_buckets"] == "16,32"


def test_bf16_is_only_offered_where_the_cpu_has_it() -> None:
    assert SearchSpace().for_profile(replace(OPENVINO_PROFILE, bf16=False)).precision_hints == ("f32",)
    assert SearchSpace().for_profile(OPENVINO_PROFILE).precision_hints == ("f32", "bf16")


def test_a_runtime_the_profile_does_not_search_is_dropped() -> None:
    assert SearchSpace(runtimes=(OPENVINO,)).for_profile(PROFILE).runtimes == ()
    assert SearchSpace().for_profile(OPENVINO_PROFILE).runtimes == (ONNX_RUNTIME, OPENVINO)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"runtimes": ("tensorrt",)}, "runtimes"),
        ({"precision_hints": ("fp8",)}, "precision_hints"),
        ({"nncf_presets": ("fastest",)}, "nncf_presets"),
        ({"ignored_scopes": ("heads",)}, "ignored_scopes"),
        ({"openvino_precisions": (Precision.INT8_DYNAMIC,)}, "openvino_precisions"),
    ],
)
def test_unknown_openvino_choices_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchSpace(**settings)  # type: ignore[arg-type]


def test_the_transformer_default_searches_both_presets_on_dynamic_shapes() -> None:
    bert = make_tiny_bundle()
    bert.transformer_type = "bert"
    space = default_space(bert)
    assert space.nncf_presets == ("mixed", "performance")
    assert space.sequence_buckets == ("",)
    assert space.precision_hints == ("f32",)  # bf16 answered 32-token rows wrong on OpenVINO 2026.4.1
    assert space.for_profile(replace(OPENVINO_PROFILE, bf16=False)).precision_hints == ("f32",)
    assert length_buckets(128) == "16,32,64,128"
    assert length_buckets(100) == "16,32,64,100"
    assert length_buckets(16) == "16"


def test_a_student_is_a_torch_pass_and_is_not_pruned_again(bundle: ModelBundle) -> None:
    space = SearchSpace(students=("none", "width=0.5"), prune=("none", "structured"), distil_time_s=30)
    recipes = enumerate_recipes(space.for_profile(PROFILE), bundle)
    distilled = [r for r in recipes if r.torch_passes and r.torch_passes[0].name == "distil"]
    assert distilled and all(len(r.torch_passes) == 1 for r in distilled)
    assert distilled[0].torch_passes[0].settings == {"width": 0.5, "time_s": 30}
    assert any(r.torch_passes and r.torch_passes[0].name == "prune_structured" for r in recipes)


def test_a_space_without_students_asks_no_student_question(bundle: ModelBundle) -> None:
    suggester = Replay([])
    suggest_recipe(suggester, SearchSpace().for_profile(PROFILE), bundle)
    assert "student" not in [name for name, _, _ in suggester.calls]


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("layers=3", {"layers": 3}),
        ("width=0.5", {"width": 0.5}),
        ("layers=4,prune_ratio=0.25", {"layers": 4, "prune_ratio": 0.25}),
        (" layers = 4 , layer_choice = spread", {"layers": 4, "layer_choice": "spread"}),
        ("layers=6,prune_ratio=1/3", {"layers": 6, "prune_ratio": 1 / 3}),
    ],
)
def test_a_student_name_carries_its_distil_settings(name: str, settings: dict[str, object]) -> None:
    assert student_settings(name) == settings
    space = SearchSpace(students=("none", name), distil_time_s=60)
    assert space.student_passes() == [PassSpec("distil", {**settings, "time_s": 60})]
    # and the settings a manifest records give back a name with the same settings, budget left out
    assert student_settings(student_name({**settings, "time_s": 60, "max_steps": 5})) == settings


def test_settings_that_name_no_student_have_no_name() -> None:
    with pytest.raises(ValueError, match="unknown student"):
        student_name({"time_s": 60})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("layers=x", "layers takes an integer, got 'x'"),
        ("layers=4,prune_ratio=1/0", "prune_ratio takes a number, got '1/0'"),
        ("layers=4/2", "layers takes an integer, got '4/2'"),
        ("depth=3", "unknown student 'depth=3': use 'layers=N"),  # not "(at 'depth=3')" again
        ("width=", "unknown student 'width=': use"),
        ("none=1", "unknown student 'none=1': use"),
        ("layers=4,depth=3", "(at 'depth=3')"),
        ("layers=4,layers=3", "layers is given twice"),
        ("layers=4,width=0.5", "layers and width together: use 'layers=N"),
        ("prune_ratio=0.25", "neither layers nor width: use 'layers=N"),
        ("layers=4,", "at ''"),
        ("layers=4,prune_ratio=1.5", "prune_ratio must be a number with 0 <= ratio < 1"),
        ("layers=0", "layers must be an integer >= 1"),
        ("layers=4,layer_choice=best", "layer_choice must be one of"),
    ],
)
def test_unknown_students_are_refused(name: str, message: str) -> None:
    with pytest.raises(ValueError, match="student") as raised:
        SearchSpace(students=("none", name))
    assert message in str(raised.value)


def test_steps_make_student_training_exact() -> None:
    space = SearchSpace(students=("none", "layers=3"), distil_time_s=100, distil_steps=50)
    assert space.student_passes() == [PassSpec("distil", {"layers": 3, "time_s": 100, "max_steps": 50})]


def test_torchscript_and_tflite_recipes_follow_the_answers(bundle: ModelBundle) -> None:
    space = SearchSpace(runtimes=(TORCHSCRIPT, LITERT)).for_profile(get_profile("cpu"))
    assert space.runtimes == (TORCHSCRIPT,)  # the cpu profile does not search LiteRT
    edge = SearchSpace(runtimes=(TORCHSCRIPT, LITERT)).for_profile(get_profile("edge"))
    assert edge.runtimes == (LITERT,)
    int8 = suggest_recipe(
        optuna.trial.FixedTrial(
            {"prune": "none", "runtime": LITERT, "tflite_precision": "int8-static", "threads": 1}
        ),
        edge,
        bundle,
    )
    assert (int8.export, int8.onnx_passes) == (
        PassSpec("export_tflite"),
        (PassSpec("quantise_litert", {"mode": "static"}),),
    )
    assert (int8.format, int8.runtime, int8.precision) == ("tflite", LITERT, Precision.INT8_STATIC)
    traced = suggest_recipe(
        optuna.trial.FixedTrial(
            {"prune": "none", "runtime": TORCHSCRIPT, "ts_precision": "int8-dynamic", "threads": 2}
        ),
        space,
        bundle,
    )
    assert (
        traced.export == PassSpec("export_torchscript", {"int8_dynamic": True}) and traced.onnx_passes == ()
    )
