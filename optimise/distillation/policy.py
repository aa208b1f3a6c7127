"""Whether a build distils, which students it trains, and on what data.

Distillation costs minutes of training, so it runs when asked (`--distil`) or when
the quality budget admits what a student reaches (a mean-cosine floor at or below
`AUTO_MIN_COSINE`); otherwise the build says it was skipped and how to ask for it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from optimise.distillation.data import (
    MIN_LIVE_ROWS,
    MIN_ROWS,
    MIN_TEXTS,
    DistillationData,
    read_npz_file,
    read_text_file,
    read_token_file,
    tensor_data,
    texts_data,
    token_data,
    with_live_rows,
)
from optimise.distillation.students import LossWeights, family_for
from optimise.errors import ConfigError
from optimise.passes.distil import DistilConfig
from optimise.source import ModelBundle
from optimise.space import SearchSpace, default_students, student_settings
from optimise.types import Constraints, QualityMetric

logger = logging.getLogger(__name__)

AUTO_MIN_COSINE = 0.97
"""A floor at or below this admits distilled students. Measured on MiniLM on 2 cores: a 4-layer student
stood at 0.936 mean cosine after 30 minutes of bf16 training (README, Measured), so at 0.97 the students
train and are rejected with their figures; the floor says where distillation is worth asking for, not
what it reaches."""


@dataclass(frozen=True)
class DistillationDecision:
    students: tuple[str, ...]
    note: str | None
    """Why distillation was skipped and how to ask for it (None when it runs)."""


def decide(
    bundle: ModelBundle, constraints: Constraints, forced: bool | None, students: tuple[str, ...] = ()
) -> DistillationDecision:
    """Students to train: `students` by name (`optimise.space.student_settings`) when given, else the
    family's defaults; `forced` True/False decides; None leaves it to the quality budget (named
    students force it).

    Raises ConfigError when distillation is forced on a model without a recipe or without data, or a
    named student is one the model cannot become; ValueError for a name that is not a student.
    """
    if forced is False:
        return DistillationDecision((), None)
    if students:
        students = check_students(bundle, students)
        forced = True
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
        return DistillationDecision(students or default_students(bundle), None)
    budget = f"--min-cosine {constraints.min_cosine}" if cosine else "the accuracy budget"
    hint = f"--distil or --min-cosine {AUTO_MIN_COSINE}" if cosine else "--distil"
    return DistillationDecision(
        (), f"distillation: off under {budget} (it trains for minutes); ask for it with {hint}"
    )


def check_students(bundle: ModelBundle, students: tuple[str, ...]) -> tuple[str, ...]:
    """The named students less repeats (two spellings of the same settings: 'width=0.5', 'width=1/2').

    Refuses, before anything is built, a student name that is not one (ValueError) or a student the
    model's architecture cannot take (ConfigError: more layers than it has, a prune ratio that is not a
    whole number of heads, a width on a transformer, layers on a classifier)."""
    family = family_for(bundle, LossWeights())
    unique: dict[str, str] = {}
    for name in students:
        settings = student_settings(name)
        unique.setdefault(json.dumps(settings, sort_keys=True), name)
        try:
            family.check(bundle.module, DistilConfig(**settings).shape)
        except ConfigError as exc:
            raise ConfigError(f"student {name!r}: {exc}") from None
    return tuple(unique.values())


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
    return _read_tensor_file(bundle, path, MIN_ROWS)


def _read_tensor_file(bundle: ModelBundle, path: Path, minimum: int) -> DistillationData:
    dtypes = {name: np.asarray(bundle.latency_inputs[name]).dtype for name in bundle.input_names}
    shapes = {
        name: tuple(
            None if axis + 1 in bundle.dynamic_axes.get(name, {}) else size
            for axis, size in enumerate(np.shape(bundle.latency_inputs[name])[1:])
        )
        for name in bundle.input_names
    }
    data = read_npz_file(path, bundle.input_names, dtypes, minimum, row_shapes=shapes)
    if data.labels is not None:
        classes = bundle.run_torch(bundle.latency_inputs)[0].shape[-1]
        if int(data.labels.max(initial=0)) >= classes:
            raise ConfigError(
                f"distillation data {path}: 'labels' go up to {int(data.labels.max())}, "
                f"the model has {classes} classes (0 to {classes - 1})"
            )
    return _without_judging_rows(bundle, data, path, minimum)


def _without_judging_rows(
    bundle: ModelBundle, data: DistillationData, path: Path, minimum: int
) -> DistillationData:
    """Tensor rows less those equal (byte for byte, every input) to an evaluation or calibration row, as
    `_without_judging_texts` does for texts. Raises ConfigError when fewer than `minimum` are left."""
    assert data.inputs is not None

    def row_keys(inputs: Mapping[str, np.ndarray], dtypes: Mapping[str, np.dtype]) -> list[bytes]:
        arrays = [np.ascontiguousarray(np.asarray(inputs[name]), dtypes[name]) for name in bundle.input_names]
        return [b"".join(array[i].tobytes() for array in arrays) for i in range(len(arrays[0]))]

    dtypes = {name: data.inputs[name].dtype for name in bundle.input_names}
    judged: set[bytes] = set()
    for inputs in (bundle.eval_inputs, bundle.calibration_inputs):
        if inputs is not None and all(name in inputs for name in bundle.input_names):
            judged |= set(row_keys(inputs, dtypes))
    keep = np.array([key not in judged for key in row_keys(data.inputs, dtypes)], dtype=bool)
    left_out = int((~keep).sum())
    if left_out == 0:
        return data
    _enough_left(path, int(keep.sum()), left_out, minimum, "rows")
    inputs = {name: array[keep] for name, array in data.inputs.items()}
    labels = data.labels[keep] if data.labels is not None else None
    return tensor_data(inputs, labels, f"{path.name} ({left_out:,} evaluation rows left out)")


def read_live_data(bundle: ModelBundle, path: Path) -> DistillationData:
    """`--distil-live`: inputs a server recorded (a `.npz` of the model's inputs: token ids for text
    models), less the rows the build judges or calibrates with. Raises ConfigError for a file
    distillation cannot use or fewer than `MIN_LIVE_ROWS` rows left."""
    if bundle.tokenizer is None:
        return _read_tensor_file(bundle, path, MIN_LIVE_ROWS)
    data = read_token_file(path, len(bundle.tokenizer), MIN_LIVE_ROWS)
    assert data.token_ids is not None
    judged = _judged_rows(bundle)
    kept = [row for row in data.token_ids if row not in judged]
    left_out = len(data.token_ids) - len(kept)
    if left_out == 0:
        return data
    _enough_left(path, len(kept), left_out, MIN_LIVE_ROWS, "rows")
    return token_data(kept, f"{path.name} ({left_out:,} evaluation rows left out)")


def add_live_rows(bundle: ModelBundle, live: DistillationData) -> None:
    """Make the bundle's distillation data (its own, or `--distil-data`) include the recorded rows
    `live` (`with_live_rows`), joined when first read; a bundle without data of its own learns from
    `live` alone. Raises ConfigError when `live` alone is fewer rows than distillation needs."""
    own = bundle.distillation_data
    if own is None:
        minimum = MIN_TEXTS if bundle.tokenizer is not None else MIN_ROWS
        if live.size < minimum:
            raise ConfigError(
                f"distilling {bundle.name} needs unlabelled inputs: {live.size:,} recorded rows alone are "
                f"fewer than {minimum:,}; pass --distil-data FILE as well"
            )
        bundle.distillation_data = lambda: live
        return
    joined: list[DistillationData] = []

    def data() -> DistillationData:
        if not joined:
            joined.append(with_live_rows(own(), live))
        return joined[0]

    bundle.distillation_data = data


def _judged_rows(bundle: ModelBundle) -> set[tuple[int, ...]]:
    """Token ids (real tokens) of every evaluation and calibration row of a text model."""
    judged: set[tuple[int, ...]] = set()
    for inputs in (bundle.eval_inputs, bundle.calibration_inputs):
        if inputs is None or "input_ids" not in inputs:
            continue
        mask = inputs.get("attention_mask", np.ones_like(inputs["input_ids"]))
        judged |= {
            tuple(ids[m.astype(bool)].tolist()) for ids, m in zip(inputs["input_ids"], mask, strict=True)
        }
    return judged


def _without_judging_texts(bundle: ModelBundle, data: DistillationData, path: Path) -> DistillationData:
    """The user's texts less those the build judges or calibrates with (the same token ids as an
    evaluation or calibration row): a student trained on them would be graded on what it learnt.
    Raises ConfigError when too few texts are left."""
    assert data.texts is not None
    judged = _judged_rows(bundle)
    if not judged:
        return data
    max_length = bundle.max_length or np.shape(bundle.eval_inputs["input_ids"])[1]
    encoded = bundle.tokenizer(list(data.texts), truncation=True, max_length=max_length)["input_ids"]
    kept = [text for text, ids in zip(data.texts, encoded, strict=True) if tuple(ids) not in judged]
    left_out = len(data.texts) - len(kept)
    if left_out == 0:
        return data
    _enough_left(path, len(kept), left_out, MIN_TEXTS, "texts")
    return texts_data(kept, f"{path.name} ({left_out:,} evaluation texts left out)")


def _enough_left(path: Path, kept: int, left_out: int, minimum: int, what: str) -> None:
    """Log the `left_out` evaluation or calibration `what` (texts, rows) taken from the user's data; raise
    ConfigError when the `kept` ones are fewer than `minimum`."""
    if kept < minimum:
        raise ConfigError(
            f"distillation data {path}: {kept:,} {what} once the {left_out:,} that are evaluation or "
            f"calibration {what} are left out; distillation needs {minimum:,}"
        )
    logger.info("distillation data %s: %d evaluation or calibration %s left out", path, left_out, what)
