from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from optimise.demos import digits
from optimise.source import ModelBundle

# Enough to check the cache and determinism machinery without paying for full training.
QUICK = digits.TrainConfig(epochs=1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(digits.CACHE_ENV, str(path))
        yield path


@pytest.fixture(scope="module")
def bundle(cache_dir: Path) -> ModelBundle:
    return digits.build()


def accuracy(bundle: ModelBundle) -> float:
    logits = bundle.run_torch(bundle.eval_inputs)[0]
    return float((logits.argmax(axis=1) == bundle.eval_labels).mean())


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_bundle_shape(bundle: ModelBundle) -> None:
    assert bundle.name == "digits"
    assert bundle.input_names == ("pixels",) and bundle.output_names == ("logits",)
    assert bundle.opset == 17 and bundle.description
    assert bundle.latency_inputs["pixels"].shape == (1, 1, 8, 8)
    assert bundle.calibration_inputs is not None
    for batch in (bundle.latency_inputs, bundle.eval_inputs, bundle.calibration_inputs):
        pixels = batch["pixels"]
        assert pixels.dtype == np.float32 and pixels.shape[1:] == (1, 8, 8)
        assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert bundle.run_torch(bundle.latency_inputs)[0].shape == (1, 10)
    assert 150_000 <= sum(p.numel() for p in bundle.module.parameters()) <= 300_000


def test_held_out_accuracy(bundle: ModelBundle) -> None:
    assert accuracy(bundle) >= 0.97


def test_eval_mode_disables_dropout(bundle: ModelBundle) -> None:
    assert not bundle.module.training
    first, second = bundle.run_torch(bundle.eval_inputs)[0], bundle.run_torch(bundle.eval_inputs)[0]
    np.testing.assert_array_equal(first, second)


def test_cached_weights_equal_a_fresh_retrain(bundle: ModelBundle, cache_dir: Path) -> None:
    assert digits.cache_path(digits.TrainConfig()).is_relative_to(cache_dir)
    cached = digits.build()  # loaded from the file the fixture wrote
    assert_same_state(state_of(cached.module), state_of(bundle.module))
    assert_same_state(state_of(digits.train_module(digits.TrainConfig())), state_of(cached.module))


def test_training_leaves_global_torch_state_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(digits.CACHE_ENV, str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    torch.set_num_threads(2)  # training pins its own count; the caller's must come back
    digits.build(QUICK)
    torch.testing.assert_close(torch.rand(3), expected)
    assert torch.get_num_threads() == 2
    assert not torch.are_deterministic_algorithms_enabled()


def test_corrupt_cache_is_retrained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(digits.CACHE_ENV, str(tmp_path))
    path = digits.cache_path(QUICK)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    rebuilt = digits.build(QUICK)
    assert_same_state(state_of(rebuilt.module), state_of(digits.train_module(QUICK)))
    assert_same_state(torch.load(path, weights_only=True), state_of(rebuilt.module))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_cache_key_follows_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(digits.CACHE_ENV, str(tmp_path))
    assert digits.cache_path(QUICK) == digits.cache_path(digits.TrainConfig(epochs=1))
    assert digits.cache_path(QUICK) != digits.cache_path(digits.TrainConfig())
    assert digits.cache_path(QUICK).is_relative_to(tmp_path)


def test_splits_are_disjoint_and_stratified() -> None:
    splits = digits.load_splits()
    parts = (splits.train, splits.calibration, splits.evaluation)
    indices = np.concatenate([s.indices for s in parts])
    assert len(np.unique(indices)) == len(indices) == 1797
    assert [len(s.labels) for s in parts] == [1077, 180, 540]
    labels = np.concatenate([s.labels for s in parts])
    overall = np.bincount(labels, minlength=10) / len(labels)
    for split in parts:
        share = np.bincount(split.labels, minlength=10) / len(split.labels)
        np.testing.assert_allclose(share, overall, atol=0.01)
    again = digits.load_splits()
    np.testing.assert_array_equal(again.evaluation.indices, splits.evaluation.indices)


def test_fine_tune_changes_weights_and_restores_eval_mode(bundle: ModelBundle) -> None:
    assert bundle.fine_tune is not None
    module = copy.deepcopy(bundle.module)
    before = state_of(module)
    bundle.fine_tune(module, 3)
    assert not module.training
    after = state_of(module)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert_same_state(state_of(bundle.module), before)  # the bundle's own module is untouched
    again = copy.deepcopy(bundle.module)
    bundle.fine_tune(again, 3)
    assert_same_state(state_of(again), after)  # deterministic


def test_onnx_export_matches_torch(bundle: ModelBundle, tmp_path: Path) -> None:
    path = tmp_path / "digits.onnx"
    torch.onnx.export(
        bundle.module,
        (torch.from_numpy(bundle.latency_inputs["pixels"]),),
        str(path),
        input_names=list(bundle.input_names),
        output_names=list(bundle.output_names),
        dynamic_axes=bundle.dynamic_axes,
        opset_version=bundle.opset,
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for n in (1, 7):
        batch = {"pixels": bundle.eval_inputs["pixels"][:n]}
        (logits,) = session.run(["logits"], batch)
        assert logits.shape == (n, 10)
        np.testing.assert_allclose(logits, bundle.run_torch(batch)[0], atol=1e-4, rtol=0)
