from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optimise.errors import SourceError
from optimise.sources.torchscript import load_torchscript
from optimise.types import QualityMetric


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(6, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 2)
        self.b = torch.nn.Linear(3, 2)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(left) + self.b(right), self.b(right)


def features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)


@pytest.fixture
def module() -> Classifier:
    torch.manual_seed(0)
    return Classifier().eval()


@pytest.fixture
def scripted(module: Classifier, tmp_path: Path) -> Path:
    path = tmp_path / "classifier.pt"
    torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    path = tmp_path / "examples.npz"
    np.savez(path, features=features(5))
    return path


def test_scripted_model_without_eval_data_is_judged_by_cosine(
    scripted: Path, examples: Path, module: Classifier
) -> None:
    bundle = load_torchscript(scripted, examples)
    assert bundle.name == "classifier"
    assert bundle.input_names == ("features",)
    assert bundle.output_names == ("output_0",)
    assert bundle.dynamic_axes == {"features": {0: "batch"}, "output_0": {0: "batch"}}
    assert bundle.eval_labels is None
    assert bundle.quality_metric is QualityMetric.COSINE
    assert bundle.calibration_inputs is None
    np.testing.assert_array_equal(bundle.eval_inputs["features"], features(5))
    np.testing.assert_array_equal(bundle.latency_inputs["features"], features(5)[:1])
    expected = module(torch.from_numpy(features(5))).detach().numpy()
    np.testing.assert_allclose(bundle.run_torch(bundle.eval_inputs)[0], expected, atol=1e-6)


def test_eval_data_with_labels_gives_accuracy(scripted: Path, examples: Path, tmp_path: Path) -> None:
    eval_path = tmp_path / "eval.npz"
    labels = np.array([0, 1, 2, 1, 0, 2, 2], dtype=np.int64)
    np.savez(eval_path, features=features(7, seed=1), labels=labels)
    bundle = load_torchscript(scripted, examples, eval_path)
    assert bundle.quality_metric is QualityMetric.ACCURACY
    np.testing.assert_array_equal(bundle.eval_labels, labels)
    assert set(bundle.eval_inputs) == {"features"}  # labels are not a model input
    np.testing.assert_array_equal(bundle.eval_inputs["features"], features(7, seed=1))
    # with a separate evaluation set, the examples become calibration data
    assert bundle.calibration_inputs is not None
    np.testing.assert_array_equal(bundle.calibration_inputs["features"], features(5))


def test_eval_data_without_labels_gives_cosine(scripted: Path, examples: Path, tmp_path: Path) -> None:
    eval_path = tmp_path / "eval.npz"
    np.savez(eval_path, features=features(9, seed=2))
    bundle = load_torchscript(scripted, examples, eval_path)
    assert bundle.quality_metric is QualityMetric.COSINE
    assert bundle.eval_inputs["features"].shape == (9, 6)


def test_traced_model_with_two_inputs_and_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = TwoInputs().eval()
    left = np.ones((3, 4), np.float32)
    right = np.ones((3, 3), np.float32)
    path = tmp_path / "two.pt"
    torch.jit.trace(module, (torch.from_numpy(left), torch.from_numpy(right))).save(str(path))
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, left=left, right=right)
    bundle = load_torchscript(path, inputs)
    assert bundle.input_names == ("left", "right")  # the order the .npz names them
    assert bundle.output_names == ("output_0", "output_1")
    outputs = bundle.run_torch(bundle.latency_inputs)
    assert [o.shape for o in outputs] == [(1, 2), (1, 2)]


def test_missing_example_inputs_is_a_source_error(scripted: Path) -> None:
    with pytest.raises(SourceError, match="needs --example-inputs"):
        load_torchscript(scripted, None)


def test_corrupt_model_file_is_a_source_error(examples: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a torchscript archive")
    with pytest.raises(SourceError, match=r"cannot load TorchScript file .*corrupt\.pt"):
        load_torchscript(corrupt, examples)


def test_a_plain_state_dict_is_not_torchscript(module: Classifier, examples: Path, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(module.state_dict(), path)
    with pytest.raises(SourceError, match="cannot load TorchScript file"):
        load_torchscript(path, examples)


def test_missing_example_file_is_a_source_error(scripted: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"example inputs file .*missing\.npz does not exist"):
        load_torchscript(scripted, tmp_path / "missing.npz")


def test_missing_eval_file_is_a_source_error(scripted: Path, examples: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"evaluation data file .*nothing\.npz does not exist"):
        load_torchscript(scripted, examples, tmp_path / "nothing.npz")


def test_unreadable_npz_is_a_source_error(scripted: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage, not a zip")
    with pytest.raises(SourceError, match="cannot read example inputs file"):
        load_torchscript(scripted, bad)


def test_empty_npz_is_a_source_error(scripted: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    with pytest.raises(SourceError, match="holds no arrays"):
        load_torchscript(scripted, empty)


def test_mismatched_names_are_a_source_error(scripted: Path, examples: Path, tmp_path: Path) -> None:
    eval_path = tmp_path / "eval.npz"
    np.savez(eval_path, pixels=features(4), labels=np.zeros(4, np.int64))
    with pytest.raises(
        SourceError, match=r"evaluation data names \['pixels'\] differ from example inputs \['features'\]"
    ):
        load_torchscript(scripted, examples, eval_path)


def test_examples_that_do_not_fit_the_model_are_a_source_error(scripted: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, features=np.ones((2, 5), np.float32))  # the model takes 6 features
    with pytest.raises(SourceError, match=r"classifier\.pt fails on its example inputs: RuntimeError"):
        load_torchscript(scripted, wrong)
