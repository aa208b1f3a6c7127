"""Measure candidates: latency, throughput, size and quality on the target profile.

Latency is measured interleaved: every round visits every candidate in turn,
so a noisy neighbour slows all candidates alike instead of whichever one
happened to run at that moment. Percentiles pool the calls of all rounds;
throughput is the median over rounds. Each round's p50 is kept too: two variants'
round-by-round differences cancel the noise common to a round (see `optimise.select`).

Quality is accuracy against labels, or, for embeddings, cosine fidelity to the
FP32 outputs plus neighbour agreement (recall@10). `batch_invariant` says
whether a variant may be served batched at all.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from optimise.batches import iter_batches
from optimise.runtimes.base import ATTENTION_MASK
from optimise.types import Batch, QualityMetric

if TYPE_CHECKING:
    from optimise.source import ModelBundle

EVAL_BATCH_SIZE = 32


class Runner(Protocol):
    """Anything that maps named inputs to outputs: an ORT session, a TorchScript module."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Timing:
    """One runner's timings: latencies at batch 1 in ms, throughput in samples per second."""

    latency_p50_ms: float
    latency_p95_ms: float
    throughput_per_s: float
    latency_p50_spread_ms: float
    """Interquartile range of the per-round p50s, in ms (0.0 with one round): the run-to-run noise.
    Not max - min: one disturbed round on a shared machine made that a third of the p50."""
    latency_p50_rounds_ms: tuple[float, ...] = ()
    """The p50 of each round, in ms, in round order."""


@dataclass(frozen=True)
class Quality:
    value: float  # accuracy, or mean cosine
    minimum: float | None  # smallest per-sample cosine (fidelity only)
    metric: QualityMetric
    recall_at_10: float | None  # neighbour agreement with the reference (COSINE only; None if too few rows)
    length_minimum: float | None = None
    """Smallest cosine over `length_probes` (one row of every sequence length; text models only)."""
    length_minimum_at: int | None = None
    """The sequence length, in tokens, where `length_minimum` was found."""


def _call_times(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def measure_interleaved(
    runners: Mapping[str, Runner],
    latency_batch: Batch,
    throughput_batch: Batch,
    rounds: int = 5,
    latency_calls: int = 20,
    throughput_calls: int = 3,
    warmup: int = 3,
) -> dict[str, Timing]:
    """Time every runner at batch 1 and at batch N, round-robin over `rounds`.

    Returns a `Timing` per key of `runners`: p50/p95 over all `rounds * latency_calls` calls
    at `latency_batch`, the median throughput over rounds at `throughput_batch` (its first
    axis is the batch size), and the spread (interquartile range) of the per-round p50s.
    """
    batch_size = len(next(iter(throughput_batch.values())))
    for runner in runners.values():
        for _ in range(warmup):
            runner.run(latency_batch)
        runner.run(throughput_batch)
    latencies: dict[str, list[list[float]]] = {key: [] for key in runners}  # seconds, one list per round
    rates: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            latencies[key].append(_call_times(partial(runner.run, latency_batch), latency_calls))
            elapsed = sum(_call_times(partial(runner.run, throughput_batch), throughput_calls))
            rates[key].append(batch_size * throughput_calls / elapsed)
    return {key: _timing(latencies[key], rates[key]) for key in runners}


def _timing(rounds: list[list[float]], rates: list[float]) -> Timing:
    pooled = [t for calls in rounds for t in calls]
    # Per-round p50s: the selection compares two variants round by round (and falls back to the
    # spread where rounds are missing).
    per_round = [float(np.percentile(calls, 50)) for calls in rounds]
    return Timing(
        latency_p50_ms=float(np.percentile(pooled, 50) * 1e3),
        latency_p95_ms=float(np.percentile(pooled, 95) * 1e3),
        throughput_per_s=float(np.median(rates)),
        latency_p50_spread_ms=float(np.subtract(*np.percentile(per_round, [75, 25]))) * 1e3,
        latency_p50_rounds_ms=tuple(p * 1e3 for p in per_round),
    )


def predict(runner: Runner, inputs: Batch, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """The first output over a whole data set, in batches."""
    return np.concatenate([runner.run(batch)[0] for batch in iter_batches(inputs, batch_size)])


def unpadded_rows(inputs: Batch) -> Iterator[Batch]:
    """Each sample alone; with an attention mask, its right padding is cut off too."""
    mask = inputs.get(ATTENTION_MASK)
    for i in range(len(next(iter(inputs.values())))):
        length = int(mask[i].sum()) if mask is not None else None
        yield {
            k: v[i : i + 1, :length] if length and v.ndim >= 2 else v[i : i + 1] for k, v in inputs.items()
        }


def predict_rows(runner: Runner, inputs: Batch) -> np.ndarray:
    """The first output, one unpadded sample at a time: what the service computes for each request.

    Dynamic int8 quantises activations with one scale per call, so a sample's output moves with
    whatever shares its batch (padding included); single rows are the canonical answer.
    """
    return np.concatenate([runner.run(row)[0] for row in unpadded_rows(inputs)])


def _probe_rows(inputs: Batch, rows: int) -> list[int]:
    """Up to `rows` sample indices; with a mask, one per distinct length first, shortest to longest."""
    n = len(next(iter(inputs.values())))
    mask = inputs.get(ATTENTION_MASK)
    if mask is None:
        return list(range(min(rows, n)))
    lengths = mask.reshape(n, -1).sum(axis=1)
    by_length = np.argsort(lengths, kind="stable")
    _, first = np.unique(lengths[by_length], return_index=True)
    distinct = by_length[first]  # the first row of each length, shortest first
    # Evenly spaced over the distinct lengths, so the shortest and the longest are both in.
    spaced = np.linspace(0, len(distinct) - 1, min(rows, len(distinct))).round().astype(int)
    picked = [int(i) for i in distinct[spaced]]
    # Too few distinct lengths: fill up with other rows, so the batch still holds several.
    taken = set(picked)
    rest = [i for i in range(n) if i not in taken]
    return picked + rest[: rows - len(picked)]


def batch_invariant(runner: Runner, inputs: Batch, rows: int = 4, rtol: float = 1e-3) -> bool:
    """Whether each sample's first output is the same alone as inside a padded batch.

    Dynamic int8 quantises activations with one scale per call, so a row's answer depends on
    what shares its batch (padding included); a service may batch requests only for variants
    where this holds, and must run the others one row at a time.

    Up to `rows` samples of `inputs` are probed: with an `attention_mask`, rows of different
    lengths (the shortest, the longest and ones between); else the first rows. Each runs
    alone and unpadded (as `unpadded_rows` cuts it), then all run as one batch padded to the
    longest of them (rank>=2 inputs cut to that length along axis 1; without a mask the rows
    are batched as they are). A row is invariant when max|alone - batched| <= rtol *
    max(max|alone|, 1e-6) over its output (sequence outputs compared on its real positions).
    With a single sample there is nothing to share a batch with, and the answer is True.

    Raises ValueError when `rows` < 2 or `rtol` < 0.
    """
    if rows < 2:
        raise ValueError(f"rows must be at least 2 (a batch to share), got {rows}")
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    picked = _probe_rows(inputs, rows)
    probe = {name: array[picked] for name, array in inputs.items()}
    mask = probe.get(ATTENTION_MASK)
    if mask is not None:
        longest = int(mask.reshape(len(mask), -1).sum(axis=1).max())
        probe = {k: v[:, :longest] if v.ndim >= 2 else v for k, v in probe.items()}
    batched = runner.run(probe)[0]
    return all(_agrees(runner.run(row)[0][0], batched[i], rtol) for i, row in enumerate(unpadded_rows(probe)))


def _agrees(alone: np.ndarray, together: np.ndarray, rtol: float) -> bool:
    """One row's output alone vs its slice of the batched output, within `rtol` of its largest value."""
    a, b = np.asarray(alone, dtype=np.float64), np.asarray(together, dtype=np.float64)
    if a.ndim != b.ndim or any(x > y for x, y in zip(a.shape, b.shape, strict=True)):
        return False  # the row's output shape itself changes with the batch
    # A padded sequence output also carries the padding positions: compare the real ones only.
    b = b[tuple(slice(0, size) for size in a.shape)]
    scale = max(float(np.max(np.abs(a), initial=0.0)), 1e-6)
    return float(np.max(np.abs(a - b), initial=0.0)) <= rtol * scale


def cosine_per_sample(actual: np.ndarray, reference: np.ndarray) -> np.ndarray:
    a = actual.reshape(len(actual), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)


def _nearest(outputs: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k most cosine-similar other rows, shape (n, k), most similar first."""
    flat = outputs.reshape(len(outputs), -1).astype(np.float64)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # a sample is not its own neighbour
    # Stable, so equal similarities rank by index and the result never varies run to run.
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def neighbour_recall(actual: np.ndarray, reference: np.ndarray, k: int = 10) -> float | None:
    """Mean share of each sample's k nearest neighbours under `reference` that it keeps under `actual`.

    `actual` and `reference` hold the same n samples along axis 0 (each row is flattened, as in
    `cosine_per_sample`); neighbours are the k most cosine-similar other rows. Retrieval quality
    of embeddings, which a high mean cosine alone does not guarantee: 1.0 when every sample
    keeps its neighbours, k/(n-1) in expectation for unrelated outputs. Takes O(n^2) memory.

    Returns None when n < k + 1 (no sample has k others). Raises ValueError when k < 1 or the
    row counts differ.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(actual) != len(reference):
        raise ValueError(f"actual has {len(actual)} rows, reference {len(reference)}")
    if len(actual) < k + 1:
        return None
    ours, theirs = _nearest(actual, k), _nearest(reference, k)
    overlap = (ours[:, :, None] == theirs[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.mean(overlap / k))


def score(
    outputs: np.ndarray,
    bundle: ModelBundle,
    reference_outputs: np.ndarray,
    probes: tuple[np.ndarray, np.ndarray] | None = None,
) -> Quality:
    """Accuracy against labels, or fidelity to the FP32 reference outputs.

    Without labels (embeddings): mean and minimum per-sample cosine, and recall@10 of
    neighbours (None with fewer than 11 samples). `outputs` and `reference_outputs` hold one
    row per evaluation sample, in the same order. `probes`: (outputs, reference outputs) on
    `length_probes`, row i of length i + 1, for the smallest cosine at any length.
    """
    if bundle.eval_labels is not None:
        accuracy = float(np.mean(outputs.argmax(axis=-1) == bundle.eval_labels))
        return Quality(accuracy, None, QualityMetric.ACCURACY, recall_at_10=None)
    cosines = cosine_per_sample(outputs, reference_outputs)
    recall = neighbour_recall(outputs, reference_outputs, k=10)
    weakest = weakest_at = None
    if probes is not None:
        by_length = cosine_per_sample(*probes)
        weakest, weakest_at = float(by_length.min()), int(by_length.argmin()) + 1
    return Quality(
        float(cosines.mean()), float(cosines.min()), QualityMetric.COSINE, recall, weakest, weakest_at
    )


def length_probes(inputs: Batch) -> Batch | None:
    """For text inputs (with an `attention_mask`): one row of every sequence length from 1 token to
    the longest row's, row i holding the first i + 1 tokens of that longest row (the rest padding).
    A runtime can take another kernel path at one length only (OpenVINO's bf16 hint with NNCF int8
    answered MiniLM at exactly 32 tokens with cosine 0.79 and at every other length above 0.98),
    which natural texts of scattered lengths can miss. None for inputs without a mask."""
    mask = inputs.get(ATTENTION_MASK)
    if mask is None or mask.ndim != 2 or not mask.any():
        return None
    longest = int(np.argmax(mask.sum(axis=1)))
    width = int(mask[longest].sum())
    keep = np.arange(mask.shape[1])[None, :] < np.arange(1, width + 1)[:, None]  # [width, columns]
    probes = {}
    for name, array in inputs.items():
        rows = np.repeat(array[longest : longest + 1], width, axis=0)
        probes[name] = np.where(keep, rows, 0).astype(array.dtype) if array.shape == mask.shape else rows
    return probes


def reference_outputs(bundle: ModelBundle) -> np.ndarray:
    """The FP32 PyTorch model's first output on the evaluation set."""
    parts = [bundle.run_torch(batch)[0] for batch in iter_batches(bundle.eval_inputs, EVAL_BATCH_SIZE)]
    return np.concatenate(parts)


def reference_quality(bundle: ModelBundle, outputs: np.ndarray) -> Quality:
    return score(outputs, bundle, outputs)


def size_on_disk(artefact: Path) -> int:
    files = [artefact] if artefact.is_file() else [p for p in artefact.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def compressed_size(artefact: Path) -> int:
    """Bytes after DEFLATE: what unstructured sparsity buys on the wire and on disk."""
    files = [artefact] if artefact.is_file() else sorted(p for p in artefact.rglob("*") if p.is_file())
    return sum(len(zlib.compress(p.read_bytes(), 6)) for p in files)
