from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_bundle

from optimise.evaluate import (
    EVAL_BATCH_SIZE,
    Timing,
    batch_invariant,
    compressed_size,
    cosine_per_sample,
    length_probes,
    measure_interleaved,
    neighbour_recall,
    predict,
    reference_outputs,
    reference_quality,
    score,
    size_on_disk,
)
from optimise.passes.base import PassContext
from optimise.passes.quantise_dynamic import QuantiseDynamic, QuantiseDynamicConfig
from optimise.runtimes.ort_session import OnnxSession
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
    assert quality.recall_at_10 is None  # classifiers are judged by labels, not neighbours


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
    assert quality.recall_at_10 is None  # 8 samples cannot have 10 neighbours each


def test_score_of_embeddings_reports_neighbour_recall() -> None:
    bundle = make_tiny_bundle()
    bundle.eval_labels = None
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(40, 16)).astype(np.float32)
    assert score(reference, bundle, reference).recall_at_10 == 1.0
    noisy = reference + rng.normal(scale=0.5, size=reference.shape).astype(np.float32)
    quality = score(noisy, bundle, reference)
    assert quality.recall_at_10 == neighbour_recall(noisy, reference, k=10)
    assert quality.recall_at_10 is not None and 0.1 < quality.recall_at_10 < 1.0


def test_length_probes_hold_one_row_of_every_length_up_to_the_longest() -> None:
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    ids = np.array([[5, 6, 7, 0, 0], [11, 12, 13, 14, 0], [8, 9, 0, 0, 0]])
    extra = np.arange(3)[:, None]  # not a sequence input: repeated as it is
    probes = length_probes({"input_ids": ids, "attention_mask": mask, "extra": extra})
    assert probes is not None
    assert probes["attention_mask"].sum(axis=1).tolist() == [1, 2, 3, 4]
    assert probes["input_ids"].tolist() == [
        [11, 0, 0, 0, 0],
        [11, 12, 0, 0, 0],
        [11, 12, 13, 0, 0],
        [11, 12, 13, 14, 0],
    ]
    assert probes["extra"].tolist() == [[1]] * 4
    assert length_probes({"x": np.ones((3, 4))}) is None  # no mask: not text


def test_score_reports_the_weakest_sequence_length() -> None:
    bundle = make_tiny_bundle()
    bundle.eval_labels = None
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(8, 4)).astype(np.float32)
    probe_reference = rng.normal(size=(6, 4)).astype(np.float32)
    probe_outputs = probe_reference.copy()
    probe_outputs[3] = -probe_outputs[3]  # wrong at length 4 only
    quality = score(reference, bundle, reference, (probe_outputs, probe_reference))
    assert quality.value == pytest.approx(1.0)
    assert quality.length_minimum == pytest.approx(-1.0) and quality.length_minimum_at == 4
    assert score(reference, bundle, reference).length_minimum is None


# --- neighbour_recall ---------------------------------------------------------------


def test_neighbour_recall_is_one_for_the_same_outputs_at_any_scale() -> None:
    reference = np.random.default_rng(5).normal(size=(30, 6))
    scales = np.linspace(0.1, 10.0, 30)[:, None]
    assert neighbour_recall(reference, reference) == 1.0
    assert neighbour_recall(reference * scales, reference) == 1.0  # cosine ignores length


def test_neighbour_recall_counts_kept_neighbours() -> None:
    def at(degrees: list[float]) -> np.ndarray:
        radians = np.deg2rad(degrees)
        return np.stack([np.cos(radians), np.sin(radians)], axis=1)

    # Reference pairs up 0-1 and 2-3; actual moves sample 1 next to 2, so 1 and 2 lose their
    # nearest neighbour while 0 (nearest: 1) and 3 (nearest: 2) keep theirs.
    reference = at([0.0, 10.0, 90.0, 100.0])
    actual = at([0.0, 80.0, 90.0, 170.0])
    assert neighbour_recall(actual, reference, k=1) == 0.5
    # At k=2 the move only reorders: 0 {1, 2}, 1 {0, 2}, 2 {1, 3}, 3 {1, 2} under both.
    assert neighbour_recall(actual, reference, k=2) == 1.0
    # With sample 3 at 50 degrees: 0 has {3, 1} (keeps 1 of {1, 2}), 1 has {2, 3} (keeps 2 of
    # {0, 2}), 2 has {1, 3} and 3 has {1, 2} (both keep all): (0.5 + 0.5 + 1 + 1) / 4.
    moved = at([0.0, 80.0, 90.0, 50.0])
    assert neighbour_recall(moved, reference, k=2) == 0.75
    assert neighbour_recall(moved, reference, k=1) == 0.0


def test_neighbour_recall_flattens_each_sample() -> None:
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(20, 3, 4))
    actual = reference + rng.normal(scale=0.8, size=reference.shape)
    flat = neighbour_recall(actual.reshape(20, 12), reference.reshape(20, 12), k=5)
    assert neighbour_recall(actual, reference, k=5) == flat
    assert flat is not None and flat < 1.0


def test_neighbour_recall_of_unrelated_outputs_is_near_chance() -> None:
    rng = np.random.default_rng(7)
    recall = neighbour_recall(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
    assert recall is not None and recall < 0.15  # chance is 10 / 199 = 0.05


def test_neighbour_recall_breaks_ties_by_index() -> None:
    # Every sample is as similar to every other: an unstable sort could pick different neighbours
    # for the two equal arrays; the stable one picks the lowest indices for both.
    same = np.ones((15, 4))
    assert neighbour_recall(3 * same, same, k=10) == 1.0


def test_neighbour_recall_needs_k_plus_one_samples() -> None:
    rows = np.random.default_rng(8).normal(size=(11, 3))
    assert neighbour_recall(rows[:10], rows[:10]) is None
    assert neighbour_recall(rows, rows) == 1.0
    assert neighbour_recall(rows[:3], rows[:3], k=2) == 1.0


def test_neighbour_recall_rejects_bad_arguments() -> None:
    rows = np.zeros((12, 3))
    with pytest.raises(ValueError, match="k must be"):
        neighbour_recall(rows, rows, k=0)
    with pytest.raises(ValueError, match="rows"):
        neighbour_recall(rows, rows[:11])


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


class Drifter:
    """Sleeps `delays[r]` seconds per call in round r: a runner whose speed changes between rounds."""

    def __init__(self, delays: list[float], warmup: int, calls_per_round: int) -> None:
        self.delays = delays
        self.before_rounds = warmup + 1  # warm-up calls, then one throughput call
        self.calls_per_round = calls_per_round
        self.calls = 0

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        measured = max(self.calls - self.before_rounds, 0)
        self.calls += 1
        time.sleep(self.delays[min(measured // self.calls_per_round, len(self.delays) - 1)])
        return [feeds["x"]]


def test_measure_interleaved_reports_the_spread_of_per_round_p50s_robust_to_one_bad_round() -> None:
    batch = {"x": np.zeros((1, 1), np.float32)}
    drifter = Drifter([0.001, 0.002, 0.003, 0.004, 0.015], warmup=1, calls_per_round=5 + 1)
    steady = Sleeper(0.001, [], "steady")
    timings = measure_interleaved(
        {"drifter": drifter, "steady": steady},
        batch,
        batch,
        rounds=5,
        latency_calls=5,
        throughput_calls=1,
        warmup=1,
    )
    drift = timings["drifter"]
    # Per-round p50s of about 1, 2, 3, 4 and 15 ms: the interquartile range is about 2 ms, where
    # max - min would be 14 ms, set by the one disturbed round.
    assert 1.5 < drift.latency_p50_spread_ms < 3.5
    assert timings["steady"].latency_p50_spread_ms < drift.latency_p50_spread_ms / 2


def test_one_round_has_no_spread() -> None:
    batch = {"x": np.zeros((1, 1), np.float32)}
    timing = measure_interleaved(
        {"a": Sleeper(0.0005, [], "a")}, batch, batch, rounds=1, latency_calls=5, throughput_calls=1
    )
    assert timing["a"].latency_p50_spread_ms == 0.0
    assert timing["a"].latency_p50_ms >= 0.5


# --- batch_invariant -------------------------------------------------------------------


def test_an_fp32_export_is_batch_invariant(tiny_onnx: Path, tiny_context: PassContext) -> None:
    session = OnnxSession(tiny_onnx)
    assert batch_invariant(session, tiny_context.bundle.eval_inputs)
    assert batch_invariant(session, tiny_context.bundle.eval_inputs, rows=16, rtol=1e-5)


def test_dynamic_int8_is_not_batch_invariant(tiny_onnx: Path, tiny_context: PassContext) -> None:
    # One activation scale per call: the batch's largest value sets every row's rounding step.
    quantised = QuantiseDynamic(QuantiseDynamicConfig()).apply(tiny_onnx, tiny_context)
    assert not batch_invariant(OnnxSession(quantised), tiny_context.bundle.eval_inputs)


class BatchMaxScaler:
    """Divides by the largest value in the batch: each row's answer depends on its neighbours."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, ...]] = []

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        self.batches.append(x.shape)
        return [x / np.abs(x).max()]


def test_a_runner_whose_rows_depend_on_the_batch_is_not_invariant() -> None:
    x = np.arange(1, 25, dtype=np.float32).reshape(8, 3)
    runner = BatchMaxScaler()
    assert not batch_invariant(runner, {"x": x}, rows=4)
    # Without a mask the first rows are batched as they are (the batch call stops at row 0's mismatch).
    assert runner.batches == [(4, 3), (1, 3)]
    # Rows of equal largest value give the same scale alone and together: invariant.
    assert batch_invariant(BatchMaxScaler(), {"x": np.tile([[1.0, 2.0, 3.0]], (5, 1))})


class MaskedContext(torch.nn.Module):
    """Token states plus the masked mean of the sequence: a toy encoder, blind to padding."""

    def __init__(self, use_mask: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(32, 8)
        self.mix = torch.nn.Linear(8, 8)
        self.use_mask = use_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.mix(self.embed(input_ids))
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        if not self.use_mask:  # a bug an export can carry: padding leaks into every token
            weights = torch.ones_like(weights)
        context = (states * weights).sum(dim=1) / weights.sum(dim=1)
        return states + context.unsqueeze(1)


def _masked_batch() -> dict[str, np.ndarray]:
    lengths = [5, 2, 9, 5, 3, 7]
    ids = np.random.default_rng(9).integers(1, 32, size=(len(lengths), 12))
    mask = (np.arange(12)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def _export(module: torch.nn.Module, folder: Path) -> OnnxSession:
    batch = _masked_batch()
    target = folder / f"masked-{id(module)}.onnx"
    torch.onnx.export(
        module.eval(),
        (torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])),
        str(target),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes={name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask")},
        opset_version=17,
        dynamo=False,
    )
    return OnnxSession(target)


def test_padding_is_invisible_to_a_model_that_masks_it(tmp_path: Path) -> None:
    batch = _masked_batch()
    assert batch_invariant(_export(MaskedContext(use_mask=True), tmp_path), batch)
    assert not batch_invariant(_export(MaskedContext(use_mask=False), tmp_path), batch)


class ShapeRecorder:
    """Echoes the ids as floats and records the (batch, length) of every call."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.shapes.append(feeds["input_ids"].shape)
        assert feeds["attention_mask"].shape == feeds["input_ids"].shape
        return [feeds["input_ids"].astype(np.float32)]


def test_rows_of_different_lengths_run_alone_unpadded_and_together_cut_to_the_longest() -> None:
    runner = ShapeRecorder()
    assert batch_invariant(runner, _masked_batch(), rows=3)
    # Lengths 5, 2, 9, 5, 3, 7: distinct 2, 3, 5, 7, 9; three spread out are 2, 5 and 9,
    # so the batch is padded to 9 (not 12) and each row runs alone at its own length.
    assert runner.shapes == [(3, 9), (1, 2), (1, 5), (1, 9)]


def test_too_few_distinct_lengths_are_filled_up_with_other_rows() -> None:
    batch = _masked_batch()
    batch["attention_mask"][:] = batch["attention_mask"][2]  # every row now has length 9
    runner = ShapeRecorder()
    assert batch_invariant(runner, batch, rows=4)
    assert runner.shapes == [(4, 9)] + [(1, 9)] * 4


def test_batch_invariant_rejects_a_batch_of_one() -> None:
    with pytest.raises(ValueError, match="rows"):
        batch_invariant(BatchMaxScaler(), {"x": np.ones((4, 2))}, rows=1)


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
