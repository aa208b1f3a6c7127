"""When a build distils, which students it trains, and what `--distil-data` may be."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from tiny_models import make_tiny_bundle

from optimise.distillation import policy
from optimise.distillation.data import tensor_data
from optimise.errors import ConfigError
from optimise.source import ModelBundle
from optimise.space import SearchSpace
from optimise.types import Constraints


def _with_data(bundle: ModelBundle) -> ModelBundle:
    data = tensor_data({"features": np.zeros((300, 16), np.float32)}, None, "zeros")
    return dataclasses.replace(bundle, distillation_data=lambda: data)


def test_a_classifier_distils_only_when_asked() -> None:
    bundle = _with_data(make_tiny_bundle())
    auto = policy.decide(bundle, Constraints(), forced=None)
    assert auto.students == () and auto.note is not None and "--distil" in auto.note
    assert policy.decide(bundle, Constraints(), forced=True).students == ("width=0.5",)
    assert policy.decide(bundle, Constraints(), forced=False) == policy.DistillationDecision((), None)


def test_forcing_distillation_without_data_or_recipe_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="--distil-data"):
        policy.decide(make_tiny_bundle(), Constraints(), forced=True)
    embedding = dataclasses.replace(_with_data(make_tiny_bundle()), eval_labels=None)
    with pytest.raises(ConfigError, match="no distillation recipe"):
        policy.decide(embedding, Constraints(), forced=True)
    note = policy.decide(embedding, Constraints(), forced=None).note
    assert note is not None and "no distillation recipe" in note  # auto: skipped with the reason


def test_named_students_replace_the_defaults_and_force_distillation() -> None:
    bundle = _with_data(make_tiny_bundle())
    names = ("width=0.25", "width=0.75", "width=1/4", " width = 0.75")  # the last two repeat the first two
    decision = policy.decide(bundle, Constraints(), forced=None, students=names)
    assert decision == policy.DistillationDecision(("width=0.25", "width=0.75"), None)
    assert policy.decide(bundle, Constraints(), forced=False, students=("width=0.25",)).students == ()


@pytest.mark.parametrize(
    ("student", "error", "message"),
    [
        ("layers=2", ConfigError, "student 'layers=2': a classifier student takes a width"),
        ("width=0.5,prune_ratio=0.5", ConfigError, "not layers, prune_ratio or layer_choice"),
        ("width=2", ValueError, "student 'width=2': width must be a number with 0 < width < 1"),
        ("depth=2", ValueError, "unknown student 'depth=2'"),
    ],
)
def test_a_student_the_model_cannot_become_is_refused_before_any_work(
    student: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        policy.decide(_with_data(make_tiny_bundle()), Constraints(), forced=None, students=(student,))


def test_the_budget_split_goes_to_each_student() -> None:
    space = policy.with_students(SearchSpace(), ("layers=4", "layers=3"), time_s=600, steps=None)
    assert space.students == ("none", "layers=4", "layers=3") and space.distil_time_s == 300
    assert [p.settings for p in space.student_passes()] == [
        {"layers": 4, "time_s": 300},
        {"layers": 3, "time_s": 300},
    ]
    assert policy.with_students(SearchSpace(), (), 600, None) == SearchSpace()


def test_user_data_is_text_for_text_models_and_npz_for_tensor_models(tmp_path: Path) -> None:
    bundle = make_tiny_bundle()
    np.savez(tmp_path / "x.npz", features=np.ones((300, 16)))
    data = policy.read_user_data(bundle, tmp_path / "x.npz")
    assert data.inputs is not None and data.inputs["features"].dtype == np.float32
    (tmp_path / "x.txt").write_text("a text\n" * 10)
    with pytest.raises(ConfigError, match=r"not a readable \.npz"):
        policy.read_user_data(bundle, tmp_path / "x.txt")
    text_model = dataclasses.replace(bundle, tokenizer=object())
    with pytest.raises(ConfigError, match="holds 10 texts"):
        policy.read_user_data(text_model, tmp_path / "x.txt")


def test_resolving_reads_the_data_once_and_names_what_is_missing() -> None:
    calls: list[int] = []
    data = tensor_data({"features": np.zeros((300, 16), np.float32)}, None, "zeros")

    def read() -> object:
        calls.append(1)
        return data

    bundle = dataclasses.replace(make_tiny_bundle(), distillation_data=read)
    assert policy.resolve_data(bundle) is data
    assert bundle.distillation_data is not None and bundle.distillation_data() is data and calls == [1]
    with pytest.raises(ConfigError, match="--distil-data"):
        policy.resolve_data(make_tiny_bundle())


def test_user_rows_must_have_the_model_input_shape(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", features=np.ones((300, 15)))
    with pytest.raises(ConfigError, match=r"rows of 'features' have shape \(15,\), the model takes \(16,\)"):
        policy.read_user_data(make_tiny_bundle(), tmp_path / "x.npz")
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        policy.read_user_data(make_tiny_bundle(), tmp_path)
    with pytest.raises(ConfigError, match="/dev/null is not a regular file"):
        policy.read_user_data(make_tiny_bundle(), Path("/dev/null"))
    with pytest.raises(ConfigError, match="does not exist"):
        policy.read_user_data(make_tiny_bundle(), tmp_path / "absent.npz")


def test_labels_must_be_classes_the_model_has(tmp_path: Path) -> None:
    features = np.ones((300, 16), np.float32)
    np.savez(tmp_path / "ok.npz", features=features, labels=np.arange(300) % 4)
    assert policy.read_user_data(make_tiny_bundle(), tmp_path / "ok.npz").labels is not None
    np.savez(tmp_path / "x.npz", features=features, labels=np.arange(300) % 7)  # the model has 4 classes
    with pytest.raises(ConfigError, match=r"'labels' go up to 6, the model has 4 classes \(0 to 3\)"):
        policy.read_user_data(make_tiny_bundle(), tmp_path / "x.npz")


@pytest.mark.slow
def test_user_texts_that_the_build_judges_with_are_left_out(tmp_path: Path) -> None:
    from optimise.demos.minilm import DATA_DIR, read_lines
    from optimise.sources import load_source

    bundle = load_source("minilm")
    judged = (
        read_lines(DATA_DIR / "minilm_fidelity.txt")[:40]
        + read_lines(DATA_DIR / "minilm_calibration.txt")[:10]
    )
    own = [f"a line of my own traffic, number {i}" for i in range(1_100)]
    # The same texts with other case and spacing are the same token ids for an uncased model.
    (tmp_path / "traffic.txt").write_text("\n".join(own + [f"  {t.upper()} " for t in judged]) + "\n")
    data = policy.read_user_data(bundle, tmp_path / "traffic.txt")
    assert data.texts is not None and list(data.texts) == own
    assert "50 evaluation texts left out" in data.source
    (tmp_path / "small.txt").write_text("\n".join(own[:960] + judged) + "\n")
    with pytest.raises(ConfigError, match="960 texts once the 50"):
        policy.read_user_data(bundle, tmp_path / "small.txt")


def test_recorded_rows_join_the_data_of_the_model_or_stand_alone(tmp_path: Path) -> None:
    rows = np.random.default_rng(7).normal(size=(300, 16)).astype(np.float32)  # not the tiny model's rows
    np.savez(tmp_path / "live.npz", features=rows)
    bundle = _with_data(make_tiny_bundle())
    live = policy.read_live_data(bundle, tmp_path / "live.npz")
    policy.add_live_rows(bundle, live)
    joined = policy.resolve_data(bundle)
    assert joined.size == 300 + 300 and "300 recorded rows x1" in joined.source
    alone = make_tiny_bundle()  # no data of its own: the recorded rows are enough (300 >= 256)
    policy.add_live_rows(alone, live)
    assert policy.resolve_data(alone) is live
    np.savez(tmp_path / "few.npz", features=rows[:100])
    few = policy.read_live_data(make_tiny_bundle(), tmp_path / "few.npz")  # 100 >= 50: fine beside data
    with pytest.raises(ConfigError, match="100 recorded rows alone are fewer than 256"):
        policy.add_live_rows(make_tiny_bundle(), few)
    np.savez(tmp_path / "tiny.npz", features=rows[:10])
    with pytest.raises(ConfigError, match="holds 10 rows; distillation needs 50"):
        policy.read_live_data(make_tiny_bundle(), tmp_path / "tiny.npz")


def test_tensor_rows_the_build_judges_with_are_left_out(tmp_path: Path) -> None:
    bundle = make_tiny_bundle()
    assert bundle.eval_inputs is not None
    judged = np.asarray(bundle.eval_inputs["features"], np.float32)
    fresh = np.random.default_rng(5).normal(size=(300, 16)).astype(np.float32)
    np.savez(tmp_path / "x.npz", features=np.concatenate([fresh, judged[:20]]))
    data = policy.read_user_data(bundle, tmp_path / "x.npz")
    assert data.size == 300 and "20 evaluation rows left out" in data.source
    assert policy.read_live_data(bundle, tmp_path / "x.npz").size == 300
    np.savez(tmp_path / "mostly.npz", features=np.concatenate([fresh[:40], judged[:20]]))
    with pytest.raises(ConfigError, match="40 rows once the 20 that are evaluation or calibration rows"):
        policy.read_live_data(bundle, tmp_path / "mostly.npz")


def test_recorded_token_rows_the_build_judges_with_are_left_out(tmp_path: Path) -> None:
    from tiny_models import MASKED_VOCAB, make_tiny_text_bundle

    class Vocabulary:  # read_live_data asks the tokenizer only for its size
        def __len__(self) -> int:
            return MASKED_VOCAB

    bundle = dataclasses.replace(make_tiny_text_bundle(), tokenizer=Vocabulary())
    assert bundle.eval_inputs is not None
    judged_ids, judged_mask = bundle.eval_inputs["input_ids"], bundle.eval_inputs["attention_mask"]
    fresh = np.random.default_rng(9).integers(1, MASKED_VOCAB, size=(60, judged_ids.shape[1]))
    ids = np.concatenate([fresh, judged_ids[:10]])
    mask = np.concatenate([np.ones_like(fresh), judged_mask[:10]])
    np.savez(tmp_path / "live.npz", input_ids=ids, attention_mask=mask)
    data = policy.read_live_data(bundle, tmp_path / "live.npz")
    assert data.size == 60 and "10 evaluation rows left out" in data.source
    twice = {
        "input_ids": np.concatenate([judged_ids] * 2),
        "attention_mask": np.concatenate([judged_mask] * 2),
    }
    np.savez(tmp_path / "judged.npz", **twice)
    with pytest.raises(ConfigError, match="0 rows once the 96 that are evaluation or calibration rows"):
        policy.read_live_data(bundle, tmp_path / "judged.npz")
