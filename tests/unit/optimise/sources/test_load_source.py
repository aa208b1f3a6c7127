from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optimise.demos import digits
from optimise.errors import SourceError
from optimise.sources import DEMOS, TORCHSCRIPT_SUFFIXES, load_source


def test_unknown_spec_names_the_demos_and_the_accepted_forms() -> None:
    with pytest.raises(SourceError) as info:
        load_source("no-such-model")
    message = str(info.value)
    assert "'no-such-model'" in message
    for demo in DEMOS:
        assert demo in message
    assert ".pt" in message and "package.module:function" in message


@pytest.mark.parametrize("suffix", sorted(TORCHSCRIPT_SUFFIXES))
def test_a_missing_torchscript_file_is_a_source_error(suffix: str, tmp_path: Path) -> None:
    missing = tmp_path / f"model{suffix}"
    with pytest.raises(SourceError, match=f"model file {missing} does not exist"):
        load_source(str(missing), example_inputs=tmp_path / "examples.npz")


def test_an_existing_torchscript_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    torch.jit.script(torch.nn.Linear(3, 2).eval()).save(str(path))
    examples = tmp_path / "examples.npz"
    np.savez(examples, x=np.ones((2, 3), np.float32))
    bundle = load_source(str(path), example_inputs=examples)
    assert bundle.name == "net" and bundle.input_names == ("x",)


def test_a_factory_spec_is_loaded_through_the_factory() -> None:
    with pytest.raises(SourceError, match="has no callable 'no_such_function'"):
        load_source("optimise.demos.digits:no_such_function")


def test_a_folder_with_missing_user_texts_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"text file .*texts\.txt does not exist"):
        load_source(str(tmp_path), eval_data=tmp_path / "texts.txt")


def test_digits_resolves_to_the_digits_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(digits.CACHE_ENV, str(tmp_path))
    trained: list[digits.TrainConfig] = []

    def untrained(config: digits.TrainConfig) -> digits.DigitsCNN:  # the full training takes ~8 s
        trained.append(config)
        return digits._new_module(config)

    monkeypatch.setattr(digits, "train_module", untrained)
    bundle = load_source("digits")
    assert bundle.name == "digits"
    assert bundle.input_names == ("pixels",) and bundle.output_names == ("logits",)
    assert bundle.eval_labels is not None and bundle.fine_tune is not None
    assert trained == [digits.TrainConfig()]
    cache = digits.cache_path(digits.TrainConfig())
    assert cache.is_file() and cache.is_relative_to(tmp_path)
    again = load_source("digits")  # served from the cache in tmp_path: no second training
    assert len(trained) == 1
    for key, value in bundle.module.state_dict().items():
        torch.testing.assert_close(again.module.state_dict()[key], value, rtol=0, atol=0)
