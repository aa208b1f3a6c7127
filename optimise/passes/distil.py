"""Distillation: a smaller student, initialised from the teacher, trained to reproduce it.

Quantisation stops at a few times faster; a student with fewer layers (or
narrower layers) is the larger lever, and distillation recovers its quality
without labels: the student learns the teacher's outputs on unlabelled inputs
(see `optimise.distillation`). The data comes from the bundle (a user's
`--distil-data`, or the offline text corpus for text models); the trained student
is cached, so a second build does not train it again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from optimise.cache import cache_root
from optimise.distillation.students import (
    DEFAULT_WIDTH,
    LAYER_CHOICES,
    Family,
    LossWeights,
    StudentShape,
    family_for,
)
from optimise.distillation.trainer import (
    PRECISIONS,
    StudentTrainer,
    TrainingPlan,
    TrainingState,
    device,
    resolve_precision,
    student_key,
    teacher_digest,
)
from optimise.errors import ConfigError
from optimise.passes.base import PassConfig, PassContext, TorchPass
from optimise.source import ModelBundle
from optimise.types import StudentTraining

logger = logging.getLogger(__name__)
progress_logger = logging.getLogger("optimise.distillation.progress")
"""Training progress lines; the CLI shows them whatever its verbosity."""


@dataclass(frozen=True)
class DistilConfig(PassConfig):
    """Settings of a distilled student.

    Attributes:
        layers: transformers: encoder layers the student keeps (1..the teacher's), which ones by
            `layer_choice`; None keeps them all.
        prune_ratio: transformers: share of each kept layer's attention heads and FFN neurons removed
            (0 keeps them; it must remove a whole number of heads).
        width: classifiers: share of each layer's channels the student keeps, 0 < width < 1.
        time_s: training budget in seconds (counted across resumes).
        max_steps: stop after this many optimiser steps (None: the time budget decides).
        batch_size: inputs per step.
        lr: AdamW peak learning rate, after a 100-step linear warm-up, decaying as the inverse square
            root of the step and falling to zero over the last 30 % of the budget
            (`optimise.distillation.trainer.learning_rate`).
        layer_choice: transformers: "fidelity" keeps the layers whose untrained student is closest to
            the teacher on the training data (`optimise.distillation.students.choose_layers`);
            "spread" keeps layers spread evenly from the first to the last.
        hidden_weight: transformers: weight of the token-level hidden-state loss per mapped layer.
        temperature: classifiers: softmax temperature of the soft labels.
        label_weight: classifiers: share of the loss on true labels, where the data has them.
        seed: batch order (and so the trained weights, for a given number of steps).
        precision: arithmetic of the training steps, "auto" (bf16 where the device computes it
            natively, else fp32), "bf16" or "fp32" (`optimise.distillation.trainer.computing_in`).
    """

    layers: int | None = None
    prune_ratio: float = 0.0
    width: float | None = None
    time_s: float = 600.0
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 6e-4
    hidden_weight: float = 1.0
    temperature: float = 2.0
    label_weight: float = 0.5
    seed: int = 0
    layer_choice: str = "fidelity"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.layer_choice not in LAYER_CHOICES:
            raise ValueError(f"layer_choice must be one of {LAYER_CHOICES}, got {self.layer_choice!r}")
        if self.layers is not None and (not _is_int(self.layers) or self.layers < 1):
            raise ValueError(f"layers must be an integer >= 1, got {self.layers!r}")
        if not _is_number(self.prune_ratio) or not 0 <= self.prune_ratio < 1:
            raise ValueError(f"prune_ratio must be a number with 0 <= ratio < 1, got {self.prune_ratio!r}")
        if self.width is not None and (not _is_number(self.width) or not 0 < self.width < 1):
            raise ValueError(f"width must be a number with 0 < width < 1, got {self.width!r}")
        if not _is_number(self.time_s) or not 0 < self.time_s < math.inf:
            raise ValueError(f"time_s must be a positive, finite number of seconds, got {self.time_s!r}")
        if self.max_steps is not None and (not _is_int(self.max_steps) or self.max_steps < 1):
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        for name in ("batch_size", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < (1 if name == "batch_size" else 0):
                raise ValueError(f"{name} must be a non-negative integer (batch_size >= 1), got {value!r}")
        for name in ("lr", "temperature"):
            if not _is_number(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if not _is_number(self.hidden_weight) or self.hidden_weight < 0:
            raise ValueError(f"hidden_weight must be a number >= 0, got {self.hidden_weight!r}")
        if not _is_number(self.label_weight) or not 0 <= self.label_weight <= 1:
            raise ValueError(f"label_weight must lie in [0, 1], got {self.label_weight!r}")

    @property
    def shape(self) -> StudentShape:
        return StudentShape(self.layers, self.prune_ratio, self.width, self.layer_choice)

    def cache_settings(self) -> dict[str, object]:
        """What decides the weights besides the teacher and the data: everything but the budget, with
        defaults spelled out (no width and width 0.5 are one classifier student, one cache entry)."""
        settings = asdict(self)
        del settings["time_s"], settings["max_steps"]
        if settings["width"] is None and settings["layers"] is None:
            settings["width"] = DEFAULT_WIDTH
        return settings


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Distil(TorchPass[DistilConfig]):
    name = "distil"
    config_type = DistilConfig
    state: TrainingState | None = None
    """Where the last run's training ended (steps, seconds, loss, held-out quality)."""

    def run(self, module: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        bundle = ctx.bundle
        config = self.config
        weights = LossWeights(config.hidden_weight, config.temperature, config.label_weight)
        family = family_for(bundle, weights)  # ConfigError: a family without a recipe stops the run
        if bundle.distillation_data is None:
            raise ConfigError(f"{bundle.name} has no distillation data: pass --distil-data FILE")
        data = bundle.distillation_data()
        with self.failures("student"):
            student = family.student(module, config.shape, data)
        precision = resolve_precision(config.precision, device())
        # Texts become token ids at the bundle's length limit: a different limit trains another student;
        # "auto" precision is keyed as what it resolved to on this machine.
        settings = {**config.cache_settings(), "max_length": bundle.max_length, "precision": precision}
        key = student_key(teacher_digest(module), data, family.name, settings)
        plan = TrainingPlan(
            config.time_s, config.max_steps, config.batch_size, config.lr, config.seed, precision
        )
        quality = HeldOutQuality(family, module, bundle)
        trainer = StudentTrainer(
            family,
            module,
            student,
            data,
            plan,
            cache_root() / "students" / key / "checkpoint.pt",
            held_out=quality,
            progress=lambda state: _report(bundle.name, config, state, quality.metric),
        )
        with self.failures("training"):
            self.state = trainer.run()
        _report(bundle.name, config, self.state, quality.metric, final=True)
        return trainer.student

    def training(self) -> StudentTraining | None:
        return StudentTraining(self.state.steps, self.state.seconds) if self.state is not None else None


class HeldOutQuality:
    """Mean cosine (or argmax agreement for classifiers) of a student to the teacher on the evaluation
    set; shown as progress only, never used to choose a checkpoint. The teacher's outputs are computed
    once, at the first report, not again at every one."""

    def __init__(self, family: Family, teacher: torch.nn.Module, bundle: ModelBundle) -> None:
        self.family = family
        self.teacher = teacher
        self.bundle = bundle
        self._teacher_outputs: list[torch.Tensor] | None = None

    @property
    def metric(self) -> str:
        """What the score is: "agreement" (share of argmax answers the teacher's) or "cosine" (mean)."""
        return "agreement" if self.bundle.eval_labels is not None else "cosine"

    def __call__(self, student: torch.nn.Module) -> float:
        device = next(student.parameters()).device
        batches = [
            {name: torch.from_numpy(array).to(device) for name, array in batch.items()}
            for batch in self._batches()
        ]
        if self._teacher_outputs is None:
            teacher = self.teacher.to(device)
            self._teacher_outputs = [self.family.outputs(teacher, tensors) for tensors in batches]
        agreement: list[np.ndarray] = []
        for tensors, t in zip(batches, self._teacher_outputs, strict=True):
            s = self.family.outputs(student, tensors)
            t = t.to(s.device)
            if self.bundle.eval_labels is not None:
                agreement.append((s.argmax(-1) == t.argmax(-1)).float().cpu().numpy())
            else:
                agreement.append(
                    torch.nn.functional.cosine_similarity(s.flatten(1), t.flatten(1), dim=-1).cpu().numpy()
                )
        return float(np.concatenate(agreement).mean())

    def _batches(self) -> list[dict[str, np.ndarray]]:
        from optimise.batches import trimmed_batches

        return trimmed_batches(self.bundle.eval_inputs, 64)  # the mean over rows needs no row order


def _origin(state: TrainingState) -> str:
    if not state.resumed_from:
        return ""
    if state.resumed_from == state.steps:
        return " (from the cache)"
    return f" (resumed at step {state.resumed_from})"


def student_label(config: DistilConfig) -> str:
    """What tells one student from another in progress lines: '4 layers', '6 layers, prune_ratio 0.333',
    '4 layers, spread', 'width 0.125'."""
    if config.layers is None:
        return f"width {config.width if config.width is not None else DEFAULT_WIDTH:g}"
    parts = [f"{config.layers} layers"]
    if config.prune_ratio:
        parts.append(f"prune_ratio {config.prune_ratio:.3g}")
    if config.layer_choice != "fidelity":
        parts.append(config.layer_choice)
    return ", ".join(parts)


def _report(model: str, config: DistilConfig, state: TrainingState, metric: str, final: bool = False) -> None:
    what = student_label(config)
    held_out = "" if state.held_out is None else f", held-out {metric} to the teacher {state.held_out:.4f}"
    progress_logger.info(
        "distil %s (%s)%s: step %d%s, %.0f/%.0f s, loss %.4f%s%s",
        model, what, " done" if final else "", state.steps,
        "" if config.max_steps is None else f"/{config.max_steps}", state.seconds, config.time_s, state.loss,
        held_out, _origin(state),
    )  # fmt: skip
