from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from tiny_models import make_tiny_bundle

from optimise.evaluate import (
    EVAL_BATCH_SIZE,
    Timing,
    compressed_size,
    cosine_per_sample,
    measure_interleaved,
    predict,
    reference_outputs,
    reference_quality,
    score,
    size_on_disk,
)
from optimise.types import QualityMetric

# --- cosine_per_sample ----------------------------------------------------------


def test_identical_rows_have_cosine_one() -> None:
    a = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    np.testing.assert_allclose(cosine_per_sample(a, a), np.ones(5), atol=1e-9)


def test_opposite_rows_have_cosine_minus_one_and_scale_does_not_matter() -> None:
    a = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_allclose(cosine_per_sample(-a, a), -np.ones(4), atol=1e-9)
    np.testing.assert_allclose(cosine_per_sample(10 * a, a), np.ones(4), atol=1e-9)


def test_orthogonal_rows_have_cosine_zero() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 3.0], [5.0, 0.0]])
    np.testing.assert_allclose(cosine_per_sample(a, b), [0.0, 0.0], atol=1e-12)


def test_zero_vector_gives_a_finite_cosine() -> None:
    a = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    b = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    with np.errstate(all="raise"):  # no division by zero, no invalid value
        cosines = cosine_per_sample(a, b)
        both_zero = cosine_per_sample(np.zeros((1, 3)), np.zeros((1, 3)))
    assert np.all(np.isfinite(cosines)) and np.all(np.isfinite(both_zero))
    assert cosines[0] == 0.0 and cosines[1] == pytest.approx(1.0)


def test_cosine_flattens_each_sample() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 4, 5)).astype(np.float16)
    b = rng.normal(size=(3, 4, 5)).astype(np.float32)
    expected = [
        float(
            np.dot(x.ravel().astype(np.float64), y.ravel())
            / (np.linalg.norm(x.astype(np.float64)) * np.linalg.norm(y))
        )
        for x, y in zip(a, b, strict=True)
    ]
    result = cosine_per_sample(a, b)
    assert result.shape == (3,)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


# --- score ------------------------------------------------------------------------


def one_hot(labels: np.ndarray, classes: int = 4) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels]


def test_score_is_accuracy_when_labels_exist() -> None:
    bundle = make_tiny_bundle()
    assert bundle.eval_labels is not None
    outputs = one_hot(bundle.eval_labels)
    wrong = (bundle.eval_labels[:16] + 1) % 4
    outputs[:16] = one_hot(wrong)
    quality = score(outputs, bundle, outputs)
    assert quality.metric is QualityMetric.ACCURACY
    assert quality.value == pytest.approx(48 / 64)
    assert quality.minimum is None


def test_score_is_cosine_fidelity_without_labels() -> None:
    bundle = make_tiny_bundle()
    bundle.eval_labels = None
    reference = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
    same = score(reference, bundle, reference)
    assert same.metric is QualityMetric.COSINE
    assert same.value == pytest.approx(1.0) and same.minimum == pytest.approx(1.0)
    flipped = reference.copy()
    flipped[0] *= -1
    quality = score(flipped, bundle, reference)
    assert quality.value == pytest.approx((7 - 1) / 8)
    assert quality.minimum == pytest.approx(-1.0)


def test_reference_quality_of_the_tiny_bundle() -> None:
    bundle = make_tiny_bundle()
    outputs = reference_outputs(bundle)
    assert outputs.shape == (64, 4)
    np.testing.assert_allclose(outputs, bundle.run_torch(bundle.eval_inputs)[0], atol=1e-6)
    quality = reference_quality(bundle, outputs)
    assert quality.metric is QualityMetric.ACCURACY
    assert quality.value == 1.0  # the labels are the module's own predictions


# --- predict -----------------------------------------------------------------------


class Recorder:
    """Returns the input times two and records the batch sizes it saw."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.sizes.append(len(feeds["x"]))
        return [feeds["x"] * 2, feeds["x"]]


def test_predict_runs_in_batches_and_keeps_the_first_output() -> None:
    x = np.arange(70, dtype=np.float32).reshape(70, 1)
    runner = Recorder()
    out = predict(runner, {"x": x})
    assert runner.sizes == [EVAL_BATCH_SIZE, EVAL_BATCH_SIZE, 70 - 2 * EVAL_BATCH_SIZE]
    np.testing.assert_array_equal(out, x * 2)
    runner = Recorder()
    predict(runner, {"x": x}, batch_size=50)
    assert runner.sizes == [50, 20]


# --- measure_interleaved --------------------------------------------------------------


class Sleeper:
    def __init__(self, seconds: float, log: list[str], name: str) -> None:
        self.seconds = seconds
        self.log = log
        self.name = name
        self.calls = 0

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        self.log.append(self.name)
        time.sleep(self.seconds)
        return [feeds["x"]]


def test_measure_interleaved_times_every_runner() -> None:
    log: list[str] = []
    fast, slow = Sleeper(0.001, log, "fast"), Sleeper(0.003, log, "slow")
    latency = {"x": np.zeros((1, 2), np.float32)}
    throughput = {"x": np.zeros((8, 2), np.float32)}
    rounds, latency_calls, throughput_calls, warmup = 3, 6, 2, 1
    timings = measure_interleaved(
        {"fast": fast, "slow": slow},
        latency,
        throughput,
        rounds=rounds,
        latency_calls=latency_calls,
        throughput_calls=throughput_calls,
        warmup=warmup,
    )
    assert set(timings) == {"fast", "slow"}
    for timing in timings.values():
        assert isinstance(timing, Timing)
        assert 0 < timing.latency_p50_ms <= timing.latency_p95_ms
        assert timing.throughput_per_s > 0
    assert timings["fast"].latency_p50_ms >= 1.0  # a 1 ms sleep cannot take less than 1 ms
    assert timings["slow"].latency_p50_ms >= 3.0
    assert timings["slow"].latency_p50_ms > timings["fast"].latency_p50_ms
    assert timings["fast"].throughput_per_s > timings["slow"].throughput_per_s
    # 8 samples per 3 ms call at most ~2700/s (and well above 1/3 ms): throughput counts samples, not calls
    assert 8 / 0.003 / 10 < timings["slow"].throughput_per_s <= 8 / 0.003
    expected_calls = warmup + 1 + rounds * (latency_calls + throughput_calls)
    assert fast.calls == slow.calls == expected_calls


def test_measure_interleaved_alternates_between_runners() -> None:
    log: list[str] = []
    a, b = Sleeper(0.0, log, "a"), Sleeper(0.0, log, "b")
    batch = {"x": np.zeros((1, 1), np.float32)}
    measure_interleaved(
        {"a": a, "b": b}, batch, batch, rounds=3, latency_calls=2, throughput_calls=1, warmup=0
    )
    measured = log[2:]  # after one warm-up throughput call each
    per_round = 2 + 1
    blocks = [measured[i : i + per_round] for i in range(0, len(measured), per_round)]
    assert blocks == [["a"] * 3, ["b"] * 3] * 3


# --- sizes ---------------------------------------------------------------------------


def test_compressed_size_of_zeros_is_much_smaller(tmp_path: Path) -> None:
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(1_000_000))
    assert size_on_disk(path) == 1_000_000
    assert compressed_size(path) < size_on_disk(path) / 100


def test_random_bytes_do_not_compress(tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(np.random.default_rng(0).bytes(100_000))
    assert compressed_size(path) > 0.95 * size_on_disk(path)


def test_sizes_of_a_folder_count_every_file(tmp_path: Path) -> None:
    folder = tmp_path / "artefact"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(bytes(3000))
    (folder / "sub" / "weights.bin").write_bytes(bytes(5000))
    assert size_on_disk(folder) == 8000
    single = compressed_size(folder / "model.onnx") + compressed_size(folder / "sub" / "weights.bin")
    assert compressed_size(folder) == single
    assert 0 < compressed_size(folder) < 8000
