"""Measure candidates: latency, throughput, size and quality on the target profile.

Latency is measured interleaved: every round visits every candidate in turn,
so a noisy neighbour slows all candidates alike instead of whichever one
happened to run at that moment. Percentiles pool the calls of all rounds;
throughput is the median over rounds.
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
from optimise.types import Batch, QualityMetric

if TYPE_CHECKING:
    from optimise.source import ModelBundle

EVAL_BATCH_SIZE = 32
PADDING_MASK = "attention_mask"


class Runner(Protocol):
    """Anything that maps named inputs to outputs: an ORT session, a TorchScript module."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Timing:
    latency_p50_ms: float
    latency_p95_ms: float
    throughput_per_s: float


@dataclass(frozen=True)
class Quality:
    value: float  # accuracy, or mean cosine
    minimum: float | None  # smallest per-sample cosine (fidelity only)
    metric: QualityMetric


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
    """Time every runner at batch 1 and at batch N, round-robin over `rounds`."""
    batch_size = len(next(iter(throughput_batch.values())))
    for runner in runners.values():
        for _ in range(warmup):
            runner.run(latency_batch)
        runner.run(throughput_batch)
    latencies: dict[str, list[float]] = {key: [] for key in runners}
    rates: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            latencies[key] += _call_times(partial(runner.run, latency_batch), latency_calls)
            elapsed = sum(_call_times(partial(runner.run, throughput_batch), throughput_calls))
            rates[key].append(batch_size * throughput_calls / elapsed)
    return {
        key: Timing(
            latency_p50_ms=float(np.percentile(latencies[key], 50) * 1e3),
            latency_p95_ms=float(np.percentile(latencies[key], 95) * 1e3),
            throughput_per_s=float(np.median(rates[key])),
        )
        for key in runners
    }


def predict(runner: Runner, inputs: Batch, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """The first output over a whole data set, in batches."""
    return np.concatenate([runner.run(batch)[0] for batch in iter_batches(inputs, batch_size)])


def unpadded_rows(inputs: Batch) -> Iterator[Batch]:
    """Each sample alone; with an attention mask, its right padding is cut off too."""
    mask = inputs.get(PADDING_MASK)
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


def cosine_per_sample(actual: np.ndarray, reference: np.ndarray) -> np.ndarray:
    a = actual.reshape(len(actual), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)


def score(outputs: np.ndarray, bundle: ModelBundle, reference_outputs: np.ndarray) -> Quality:
    """Accuracy against labels, or cosine fidelity against the FP32 reference outputs."""
    if bundle.eval_labels is not None:
        accuracy = float(np.mean(outputs.argmax(axis=-1) == bundle.eval_labels))
        return Quality(accuracy, None, QualityMetric.ACCURACY)
    cosines = cosine_per_sample(outputs, reference_outputs)
    return Quality(float(cosines.mean()), float(cosines.min()), QualityMetric.COSINE)


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
