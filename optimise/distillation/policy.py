"""Whether a build distils, which students it trains, and on what data.

Distillation costs minutes of training, so it runs when asked (`--distil`) or when
the quality budget admits what a student reaches (a mean-cosine floor at or below
`AUTO_MIN_COSINE`); otherwise the build says it was skipped and how to ask for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from optimise.distillation.data import MIN_TEXTS, DistillationData, read_npz_file, read_text_file, texts_data
from optimise.distillation.students import LossWeights, family_for
from optimise.errors import ConfigError
from optimise.source import ModelBundle
from optimise.space import SearchSpace, default_students
from optimise.types import Constraints, QualityMetric

logger = logging.getLogger(__name__)

AUTO_MIN_COSINE = 0.97
"""A floor at or below this admits distilled students. Measured on MiniLM on 2 cores: a 4-layer student
stood at 0.928 mean cosine after 30 minutes (README, Measured), so at 0.97 the students train and are
rejected with their figures; the floor says where distillation is worth asking for, not what it reaches."""


@dataclass(frozen=True)
class DistillationDecision:
    students: tuple[str, ...]
    note: str | None
    """Why distillation was skipped and how to ask for it (None when it runs)."""


def decide(bundle: ModelBundle, constraints: Constraints, forced: bool | None) -> DistillationDecision:
    """Students to train: `forced` True/False decides; None leaves it to the quality budget.

    Raises ConfigError when distillation is forced on a model without a recipe or without data.
    """
    if forced is False:
        return DistillationDecision((), None)
    try:
        family_for(bundle, LossWeights())
        if bundle.distillation_data is None:
            raise ConfigError(f"distilling {bundle.name} needs unlabelled inputs: pass --distil-data FILE")
    except ConfigError as exc:
        if forced:
            raise
        return DistillationDecision((), f"distillation: {exc}")
    cosine = bundle.quality_metric is QualityMetric.COSINE
    if forced or (cosine and constraints.min_cosine <= AUTO_MIN_COSINE):
        return DistillationDecision(default_students(bundle), None)
    budget = f"--min-cosine {constraints.min_cosine}" if cosine else "the accuracy budget"
    hint = f"--distil or --min-cosine {AUTO_MIN_COSINE}" if cosine else "--distil"
    return DistillationDecision(
        (), f"distillation: off under {budget} (it trains for minutes); ask for it with {hint}"
    )


def with_students(
    space: SearchSpace, students: tuple[str, ...], time_s: float, steps: int | None
) -> SearchSpace:
    """`space` with the model itself and `students`, each trained for an equal share of `time_s`."""
    if not students:
        return space
    return replace(
        space, students=("none", *students), distil_time_s=time_s / len(students), distil_steps=steps
    )


def resolve_data(bundle: ModelBundle) -> DistillationData:
    """Read (or build) the bundle's distillation data now, so that a missing corpus source stops the
    run before anything is built, and every student shares one copy. Raises ConfigError."""
    if bundle.distillation_data is None:
        raise ConfigError(f"distilling {bundle.name} needs unlabelled inputs: pass --distil-data FILE")
    data = bundle.distillation_data()
    bundle.distillation_data = lambda: data
    return data


def read_user_data(bundle: ModelBundle, path: Path) -> DistillationData:
    """`--distil-data`: texts for text models, an `.npz` of inputs (and `labels`) for tensor models.

    Raises ConfigError for a file distillation cannot use (labels included: a class the model's
    output does not have would only fail inside the training).
    """
    if bundle.tokenizer is not None:
        return _without_judging_texts(bundle, read_text_file(path), path)
    dtypes = {name: np.asarray(bundle.latency_inputs[name]).dtype for name in bundle.input_names}
    shapes = {
        name: tuple(
            None if axis + 1 in bundle.dynamic_axes.get(name, {}) else size
            for axis, size in enumerate(np.shape(bundle.latency_inputs[name])[1:])
        )
        for name in bundle.input_names
    }
    data = read_npz_file(path, bundle.input_names, dtypes, row_shapes=shapes)
    if data.labels is not None:
        classes = bundle.run_torch(bundle.latency_inputs)[0].shape[-1]
        if int(data.labels.max(initial=0)) >= classes:
            raise ConfigError(
                f"distillation data {path}: 'labels' go up to {int(data.labels.max())}, "
                f"the model has {classes} classes (0 to {classes - 1})"
            )
    return data


def _without_judging_texts(bundle: ModelBundle, data: DistillationData, path: Path) -> DistillationData:
    """The user's texts less those the build judges or calibrates with (the same token ids as an
    evaluation or calibration row): a student trained on them would be graded on what it learnt.
    Raises ConfigError when too few texts are left."""
    assert data.texts is not None
    judged = set()
    for inputs in (bundle.eval_inputs, bundle.calibration_inputs):
        if inputs is None or "input_ids" not in inputs:
            continue
        mask = inputs.get("attention_mask", np.ones_like(inputs["input_ids"]))
        judged |= {
            tuple(ids[m.astype(bool)].tolist()) for ids, m in zip(inputs["input_ids"], mask, strict=True)
        }
    if not judged:
        return data
    max_length = bundle.max_length or np.shape(bundle.eval_inputs["input_ids"])[1]
    encoded = bundle.tokenizer(list(data.texts), truncation=True, max_length=max_length)["input_ids"]
    kept = [text for text, ids in zip(data.texts, encoded, strict=True) if tuple(ids) not in judged]
    left_out = len(data.texts) - len(kept)
    if left_out == 0:
        return data
    if len(kept) < MIN_TEXTS:
        raise ConfigError(
            f"distillation data {path}: {len(kept):,} texts once the {left_out:,} that are evaluation or "
            f"calibration texts are left out; distillation needs {MIN_TEXTS:,}"
        )
    logger.info("distillation data %s: %d evaluation or calibration texts left out", path, left_out)
    return texts_data(kept, f"{path.name} ({left_out:,} evaluation texts left out)")
