"""The training loop: bounded, deterministic for a step count, resumable, keyed for the cache."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_bundle

from optimise.distillation import trainer as trainer_module
from optimise.distillation.data import tensor_data
from optimise.distillation.students import ClassifierFamily, LossWeights, StudentShape, TensorBatch
from optimise.distillation.trainer import (
    DECAY_SHARE,
    WARMUP_STEPS,
    StudentTrainer,
    TrainingPlan,
    computing_in,
    learning_rate,
    resolve_precision,
    student_key,
    teacher_digest,
)

FEATURES = np.random.default_rng(0).normal(size=(512, 16)).astype(np.float32)
DATA = tensor_data({"features": FEATURES}, None, "random rows")


class StoppingFamily(ClassifierFamily):
    """Stops the run (as a killed build would) when it asks for the loss of step `stop_at`."""

    def __init__(self, *args: Any, stop_at: int) -> None:
        super().__init__(*args)
        self.calls, self.stop_at = 0, stop_at

    def loss(self, student: torch.nn.Module, teacher: torch.nn.Module, batch: TensorBatch) -> torch.Tensor:
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.calls += 1
        return super().loss(student, teacher, batch)


def _trainer(
    checkpoint: Path, steps: int, time_s: float = 600.0, precision: str = "fp32", stop_at: int | None = None
) -> StudentTrainer:
    bundle = make_tiny_bundle()
    weights = LossWeights()
    family = (
        ClassifierFamily(bundle, weights)
        if stop_at is None
        else StoppingFamily(bundle, weights, stop_at=stop_at)
    )
    student = family.student(bundle.module, StudentShape(width=0.5), DATA)
    plan = TrainingPlan(time_s=time_s, max_steps=steps, batch_size=32, lr=1e-2, seed=0, precision=precision)
    return StudentTrainer(family, bundle.module, student, DATA, plan, checkpoint)


def _weights(trainer: StudentTrainer) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in trainer.student.state_dict().items()}


def _assert_same_student(expected: StudentTrainer, actual: StudentTrainer) -> None:
    for name, tensor in _weights(expected).items():
        assert torch.allclose(tensor, _weights(actual)[name], atol=1e-6), name


def test_the_learning_rate_warms_up_to_its_peak_then_decays_and_falls_to_zero_at_the_end() -> None:
    rates = [learning_rate(1e-3, step) for step in range(4 * WARMUP_STEPS)]
    assert rates[0] == pytest.approx(1e-3 / WARMUP_STEPS)
    assert max(rates) == pytest.approx(1e-3) and rates.index(max(rates)) == WARMUP_STEPS - 1
    assert all(a > b for a, b in zip(rates[WARMUP_STEPS - 1 :], rates[WARMUP_STEPS:], strict=False))
    assert rates[4 * WARMUP_STEPS - 1] == pytest.approx(1e-3 / 2)  # inverse square root: 4x the steps, half
    assert learning_rate(1e-3, 10**6) > 0
    step = 4 * WARMUP_STEPS - 1
    assert learning_rate(1e-3, step, 1 - DECAY_SHARE) == pytest.approx(rates[step])  # the fall starts
    assert learning_rate(1e-3, step, 1 - DECAY_SHARE / 2) == pytest.approx(rates[step] / 2)
    assert learning_rate(1e-3, step, 1.0) == 0.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_lowers_the_loss_and_stops_at_the_step_bound(tmp_path: Path, precision: str) -> None:
    trainer = _trainer(tmp_path / "a.pt", steps=60, precision=precision)
    first = _trainer(tmp_path / "b.pt", steps=1, precision=precision).run()
    state = trainer.run()
    assert state.steps == 60 and state.loss < first.loss
    assert not trainer.student.training and next(trainer.student.parameters()).device.type == "cpu"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_stopped_run_resumes_to_the_same_weights_as_an_uninterrupted_one(
    tmp_path: Path, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = _trainer(tmp_path / "straight.pt", steps=40, precision=precision)
    straight.run()
    monkeypatch.setattr(trainer_module, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint after every step
    with pytest.raises(KeyboardInterrupt):  # stopped in the learning rate's fall, at step 35 of 40
        _trainer(tmp_path / "stopped.pt", steps=40, precision=precision, stop_at=35).run()
    resumed = _trainer(tmp_path / "stopped.pt", steps=40, precision=precision)
    assert resumed.resumed_from == 35
    state = resumed.run()
    assert state.steps == 40 and state.resumed_from == 35
    _assert_same_student(straight, resumed)


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_one_before_its_fall(
    tmp_path: Path,
) -> None:
    straight = _trainer(tmp_path / "straight.pt", steps=40)
    straight.run()
    with pytest.raises(KeyboardInterrupt):  # the minute's checkpoint never came: only the stable one
        _trainer(tmp_path / "stopped.pt", steps=40, stop_at=33).run()
    assert not (tmp_path / "stopped.pt").exists() and (tmp_path / "stopped.stable.pt").is_file()
    resumed = _trainer(tmp_path / "stopped.pt", steps=40)
    assert resumed.resumed_from == 28  # 28 / 40: where the fall began
    resumed.run()
    _assert_same_student(straight, resumed)


def test_an_unreadable_last_checkpoint_falls_back_to_the_one_before_the_fall(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "straight.pt", steps=40)
    straight.run()
    _trainer(tmp_path / "torn.pt", steps=40).run()
    (tmp_path / "torn.pt").write_bytes((tmp_path / "torn.pt").read_bytes()[:1000])  # torn by a crash
    resumed = _trainer(tmp_path / "torn.pt", steps=40)
    assert resumed.resumed_from == 28  # not 0: the stable checkpoint survived
    resumed.run()
    _assert_same_student(straight, resumed)


def test_a_longer_plan_goes_on_from_before_the_shorter_ones_fall(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "straight.pt", steps=40)
    straight.run()
    _trainer(tmp_path / "short.pt", steps=15).run()  # falls from step 11 (11/15 >= 0.7)
    assert (tmp_path / "short.stable.pt").is_file()
    longer = _trainer(tmp_path / "short.pt", steps=40)
    assert longer.resumed_from == 11  # not 15: those steps were taken at falling rates
    longer.run()
    _assert_same_student(straight, longer)


def test_a_finished_student_is_loaded_not_trained_again(tmp_path: Path) -> None:
    _trainer(tmp_path / "done.pt", steps=20).run()
    again = _trainer(tmp_path / "done.pt", steps=20)
    assert again.done()
    state = again.run()
    assert state.steps == 20 and state.resumed_from == 20


def test_auto_precision_is_bf16_where_the_device_computes_it_natively() -> None:
    cpu = torch.device("cpu")
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", cpu)


def test_bf16_computes_matrix_products_in_bfloat16_and_keeps_float32_weights() -> None:
    layer = torch.nn.Linear(8, 8)
    x = torch.ones(2, 8)
    with computing_in("bf16", torch.device("cpu")):
        out = layer(x)
        attention = torch.nn.functional.scaled_dot_product_attention(
            x.view(1, 1, 2, 8), x.view(1, 1, 2, 8), x.view(1, 1, 2, 8)
        )
    assert out.dtype == torch.bfloat16 and attention.dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32
    with computing_in("fp32", torch.device("cpu")):
        assert layer(x).dtype == torch.float32


def test_the_time_budget_bounds_the_run(tmp_path: Path) -> None:
    state = _trainer(tmp_path / "t.pt", steps=10**9, time_s=0.5).run()
    assert 0.5 <= state.seconds < 5 and state.steps >= 1


def test_an_unreadable_checkpoint_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = tmp_path / "torn.pt"
    checkpoint.write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.WARNING, logger="optimise.distillation.trainer"):
        trainer = _trainer(checkpoint, steps=5)
    assert trainer.resumed_from == 0 and "ignoring unreadable student checkpoint" in caplog.text
    assert trainer.run().steps == 5


def test_the_cache_key_follows_teacher_data_and_settings_but_not_the_budget() -> None:
    bundle = make_tiny_bundle()
    teacher = teacher_digest(bundle.module)
    key = student_key(teacher, DATA, "classifier", {"width": 0.5, "seed": 0})
    assert key == student_key(
        teacher_digest(make_tiny_bundle().module), DATA, "classifier", {"width": 0.5, "seed": 0}
    )
    other_data = tensor_data({"features": FEATURES[:-1]}, None, "fewer rows")
    assert key != student_key(teacher, other_data, "classifier", {"width": 0.5, "seed": 0})
    assert key != student_key(teacher, DATA, "classifier", {"width": 0.25, "seed": 0})
    assert key != student_key(
        teacher_digest(make_tiny_bundle(seed=1).module), DATA, "classifier", {"width": 0.5, "seed": 0}
    )


def test_only_the_most_recent_students_stay_in_the_cache(tmp_path: Path) -> None:
    import os

    from optimise.distillation.trainer import prune_students

    for i in range(5):
        folder = tmp_path / f"student-{i}"
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"x")
        os.utime(folder / "checkpoint.pt", (1_000 + i, 1_000 + i))
    (tmp_path / "starting").mkdir()  # a run still in its first minute: no checkpoint yet
    stopped = tmp_path / "stopped"  # stopped after its stable checkpoint, before its first minute's
    stopped.mkdir()
    (stopped / "checkpoint.stable.pt").write_bytes(b"x")
    os.utime(stopped / "checkpoint.stable.pt", (999, 999))
    removed = prune_students(tmp_path, keep=3)
    assert sorted(p.name for p in removed) == ["stopped", "student-0", "student-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["starting", "student-2", "student-3", "student-4"]
    assert prune_students(tmp_path / "missing", keep=3) == []
