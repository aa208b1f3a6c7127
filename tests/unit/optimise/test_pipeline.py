from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from optimise import pipeline
from optimise.errors import ConfigError, PassFailed
from optimise.passes.base import PassContext
from optimise.passes.export_onnx import ExportOnnx
from optimise.passes.quantise_dynamic import QuantiseDynamic
from optimise.pipeline import CandidateBuilder, Recipe, variant_id
from optimise.runtimes.ort_session import OnnxSession
from optimise.source import ModelBundle
from optimise.types import PassSpec, Precision

EXPORT = PassSpec("export_onnx")
QUANTISE = PassSpec("quantise_dynamic", {"per_channel": True})
GRAPH = PassSpec("graph_optimise")


def recipe(*onnx_passes: PassSpec, torch_passes: tuple[PassSpec, ...] = (), threads: int = 1) -> Recipe:
    return Recipe(torch_passes, EXPORT, onnx_passes, threads)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


@pytest.fixture
def builder(tiny_context: PassContext, scratch: Path) -> CandidateBuilder:
    return CandidateBuilder(tiny_context.bundle, tiny_context.profile, scratch)


@pytest.fixture
def export_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = ExportOnnx.run

    def counting(self: ExportOnnx, module: torch.nn.Module, ctx: PassContext) -> Path:
        calls.append(1)
        return original(self, module, ctx)

    monkeypatch.setattr(ExportOnnx, "run", counting)
    return calls


def pass_dirs(scratch: Path, name: str) -> list[Path]:
    return sorted(p for p in scratch.iterdir() if p.is_dir() and p.name.startswith(f"{name}-"))


# --- Recipe ---------------------------------------------------------------------


def test_recipe_precision_and_passes() -> None:
    assert recipe().precision is Precision.FP32
    assert recipe(GRAPH).precision is Precision.FP32
    assert recipe(GRAPH, QUANTISE).precision is Precision.INT8_DYNAMIC
    assert recipe(PassSpec("quantise_static")).precision is Precision.INT8_STATIC
    assert recipe(PassSpec("fp16")).precision is Precision.FP16
    prune = PassSpec("prune_unstructured", {"amount": 0.5})
    assert recipe(QUANTISE, torch_passes=(prune,)).passes == (prune, EXPORT, QUANTISE)
    assert recipe().passes == (EXPORT,)
    torchscript = PassSpec("export_torchscript")
    assert Recipe((), torchscript, (), 1).passes == (torchscript,)


def test_a_recipe_names_its_file_format_and_the_runtime_that_measures_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (recipe(GRAPH, QUANTISE).format, recipe(GRAPH, QUANTISE).runtime) == ("onnx", "onnxruntime")
    torchscript = Recipe((), PassSpec("export_torchscript", {"int8_dynamic": True}), (), 1)
    assert (torchscript.format, torchscript.runtime) == ("torchscript", "torchscript")
    assert torchscript.precision is Precision.INT8_DYNAMIC
    monkeypatch.setattr(pipeline, "FORMAT_RUNTIMES", {"onnx": "onnxruntime"})
    with pytest.raises(ConfigError, match="no runtime measures torchscript files yet"):
        _ = torchscript.runtime


# --- variant_id ---------------------------------------------------------------------


def test_variant_id_is_stable_and_short() -> None:
    passes = (EXPORT, QUANTISE)
    first = variant_id(passes, 4)
    assert first == variant_id(
        (PassSpec("export_onnx"), PassSpec("quantise_dynamic", {"per_channel": True})), 4
    )
    assert len(first) == 10 and all(c in "0123456789abcdef" for c in first)


def test_variant_id_ignores_the_order_of_settings() -> None:
    a = PassSpec("quantise_dynamic", {"per_channel": True, "reduce_range": False})
    b = PassSpec("quantise_dynamic", {"reduce_range": False, "per_channel": True})
    assert variant_id((EXPORT, a), 1) == variant_id((EXPORT, b), 1)


def test_variant_id_differs_for_different_settings_passes_and_threads() -> None:
    ids = {
        variant_id((EXPORT, QUANTISE), 1),
        variant_id((EXPORT, PassSpec("quantise_dynamic", {"per_channel": False})), 1),
        variant_id((EXPORT, PassSpec("quantise_dynamic")), 1),
        variant_id((EXPORT, QUANTISE), 2),
        variant_id((EXPORT, QUANTISE), None),
        variant_id((EXPORT, GRAPH, QUANTISE), 1),
        variant_id((EXPORT, QUANTISE, GRAPH), 1),  # order of passes matters
        variant_id((EXPORT,), 1),
    }
    assert len(ids) == 8


# --- CandidateBuilder ---------------------------------------------------------------


def test_export_then_quantise_builds_an_int8_child_of_the_export(
    builder: CandidateBuilder, scratch: Path, tiny_bundle: ModelBundle
) -> None:
    export_only, export_seconds = builder.build(recipe())
    assert export_only.parent_id is None
    assert export_only.precision is Precision.FP32
    assert export_only.passes == (EXPORT,)

    quantised, seconds = builder.build(recipe(QUANTISE))
    assert quantised.precision is Precision.INT8_DYNAMIC
    assert quantised.parent_id == export_only.id
    assert quantised.id == variant_id((EXPORT, QUANTISE), 1)
    assert quantised.id != export_only.id
    assert quantised.passes == (EXPORT, QUANTISE)
    assert quantised.intra_op_threads == 1
    assert (quantised.format, quantised.runtime) == ("onnx", "onnxruntime")
    assert quantised.metrics is None
    for variant in (export_only, quantised):
        assert variant.artefact.is_file()
        assert variant.artefact.resolve().is_relative_to(scratch.resolve())
    assert quantised.artefact != export_only.artefact
    # the build time of a child counts the (cached) export it was made from
    assert 0 < export_seconds <= seconds
    outputs = OnnxSession(quantised.artefact).run(tiny_bundle.latency_inputs)
    assert outputs[0].shape == (1, 4)


def test_recipes_sharing_an_export_export_once(
    builder: CandidateBuilder, export_calls: list[int], scratch: Path
) -> None:
    quantised, _ = builder.build(recipe(QUANTISE))
    optimised, _ = builder.build(recipe(GRAPH))
    both, _ = builder.build(recipe(GRAPH, QUANTISE))
    again, _ = builder.build(recipe(QUANTISE))
    assert len(export_calls) == 1
    assert len(pass_dirs(scratch, "export_onnx")) == 1
    assert len(pass_dirs(scratch, "graph_optimise")) == 1  # shared by GRAPH and GRAPH -> QUANTISE
    assert len(pass_dirs(scratch, "quantise_dynamic")) == 2
    assert again == quantised
    assert both.parent_id == optimised.id
    assert len({quantised.artefact, optimised.artefact, both.artefact}) == 3


def test_different_threads_share_the_artefact_but_not_the_id(
    builder: CandidateBuilder, export_calls: list[int]
) -> None:
    one, _ = builder.build(recipe(QUANTISE, threads=1))
    four, _ = builder.build(recipe(QUANTISE, threads=4))
    assert len(export_calls) == 1
    assert one.artefact == four.artefact
    assert one.id != four.id
    assert four.intra_op_threads == 4
    assert four.parent_id == variant_id((EXPORT,), 4)


def test_a_torch_pass_runs_on_a_copy_and_changes_the_export(
    builder: CandidateBuilder, tiny_bundle: ModelBundle, export_calls: list[int]
) -> None:
    before = {k: v.clone() for k, v in tiny_bundle.module.state_dict().items()}
    prune = PassSpec("prune_unstructured", {"amount": 0.5})
    plain, _ = builder.build(recipe())
    pruned, _ = builder.build(recipe(torch_passes=(prune,)))
    pruned_quantised, _ = builder.build(recipe(QUANTISE, torch_passes=(prune,)))
    assert len(export_calls) == 2  # one per distinct module, not per recipe
    assert pruned.parent_id == variant_id((prune,), 1)
    assert pruned_quantised.parent_id == pruned.id
    assert plain.artefact != pruned.artefact
    for key, value in tiny_bundle.module.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_a_students_variants_carry_the_training_it_had(
    tiny_context: PassContext, scratch: Path, tiny_bundle: ModelBundle
) -> None:
    import dataclasses

    import numpy as np

    from optimise.distillation.data import tensor_data

    rows = np.random.default_rng(0).normal(size=(256, 16)).astype(np.float32)
    bundle = dataclasses.replace(
        tiny_bundle, distillation_data=lambda: tensor_data({"features": rows}, None, "random rows")
    )
    builder = CandidateBuilder(bundle, tiny_context.profile, scratch)
    student = PassSpec("distil", {"width": 0.5, "max_steps": 7})
    distilled, _ = builder.build(recipe(torch_passes=(student,)))
    quantised, _ = builder.build(recipe(QUANTISE, torch_passes=(student,)))
    plain, _ = builder.build(recipe())
    assert distilled.training is not None and distilled.training.steps == 7 and distilled.training.seconds > 0
    assert quantised.training == distilled.training and plain.training is None
    assert "distil(max_steps=7,width=0.5) {trained 7 steps in" in quantised.describe()


def test_a_failing_pass_leaves_no_directory_behind(
    builder: CandidateBuilder, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Path] = []

    def failing(self: QuantiseDynamic, model: Path, ctx: PassContext) -> Path:
        seen.append(ctx.workdir)
        (ctx.workdir / "model.onnx").write_bytes(b"half written")  # a scratch file, as quantisers leave
        assert Path.cwd().resolve() == ctx.workdir.resolve()  # a pass runs inside its own directory
        raise PassFailed("quantise_dynamic", "simulated failure")

    cwd = Path.cwd()
    monkeypatch.setattr(QuantiseDynamic, "run", failing)
    with pytest.raises(PassFailed, match="simulated failure"):
        builder.build(recipe(QUANTISE))
    assert len(seen) == 1 and seen[0].parent == scratch
    assert not seen[0].exists()
    assert pass_dirs(scratch, "quantise_dynamic") == []
    assert len(pass_dirs(scratch, "export_onnx")) == 1  # the export before it succeeded and stays
    assert Path.cwd() == cwd


def test_a_failed_pass_can_be_retried(
    builder: CandidateBuilder, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(self: Any, model: Path, ctx: PassContext) -> Path:
        raise PassFailed("quantise_dynamic", "transient")

    with monkeypatch.context() as patch:
        patch.setattr(QuantiseDynamic, "run", failing)
        with pytest.raises(PassFailed):
            builder.build(recipe(QUANTISE))
    variant, _ = builder.build(recipe(QUANTISE))  # the failure was not cached
    assert variant.artefact.is_file()
    assert len(pass_dirs(scratch, "quantise_dynamic")) == 1


def test_a_pass_that_cannot_follow_its_input_leaves_nothing_behind(
    builder: CandidateBuilder, scratch: Path
) -> None:
    # An ONNX pass used as the export gets a torch module: a programming error, not a candidate failure.
    with pytest.raises(TypeError, match="cannot follow"):
        builder.build(Recipe((), QUANTISE, (), 1))
    assert list(scratch.iterdir()) == []
