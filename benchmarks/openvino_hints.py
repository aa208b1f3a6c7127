"""OpenVINO's session settings on a stored variant: the LATENCY hint (what leanserve compiles)
against THROUGHPUT with one and two streams, and against static-shape length buckets, at batch 1
and batch 32, beside PyTorch eager FP32.

Opens the stored version's model through the session contract with the settings its manifest records
plus each setting, and times every setting and the PyTorch model in one interleaved run (medians over
rounds; read the ratios). For each setting it also says whether the session is batch-invariant (the
build's probe, `optimise.evaluate.batch_invariant`) and how far its answer to a lone evaluation row
is from the recorded settings' answer (largest difference over the row's largest value, and the
lowest cosine). Static shapes are the fastest batch-1 setting on MiniLM but answer a lone row on
another kernel than a batch, hence this column. Not a test.

    .venv/bin/python benchmarks/openvino_hints.py [--model minilm] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
import numpy as np

from benchmarks.openvino_profile import stored_openvino
from benchmarks.optimise_bench import TorchEager
from optimise.batches import tile_batch
from optimise.evaluate import Runner, batch_invariant, cosine_per_sample, measure_interleaved, unpadded_rows
from optimise.runtimes import open_session
from optimise.runtimes.base import ATTENTION_MASK
from optimise.space import BUCKETS_KEY, length_buckets

BUCKETED = "LATENCY, static length buckets"
HINTS = {
    "LATENCY, 1 stream": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"},
    "THROUGHPUT, 1 stream": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "1"},
    "THROUGHPUT, 2 streams": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2"},
    BUCKETED: {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"},
}
PROBE_ROWS = 100


def compare(tag: str, rounds: int) -> str:
    stored, bundle = stored_openvino(tag)
    selected = stored.manifest.selected
    threads = selected.intra_op_threads
    runners: dict[str, Runner] = {"pytorch-eager": TorchEager(bundle, threads)}
    max_length = (
        int(bundle.latency_inputs[ATTENTION_MASK].shape[1]) if ATTENTION_MASK in bundle.latency_inputs else 0
    )
    for name, hint in HINTS.items():
        settings = {**selected.runtime_settings, **hint}
        if name == BUCKETED:
            if not max_length:
                continue  # nothing masks the padding of a model without an attention mask
            settings[BUCKETS_KEY] = length_buckets(max_length)
        runners[name] = open_session(selected.runtime, stored.model_path, threads, settings=settings)
    recorded = open_session(selected.runtime, stored.model_path, threads, settings=selected.runtime_settings)
    rows = list(unpadded_rows(bundle.eval_inputs))[:PROBE_ROWS]
    expected = np.concatenate([recorded.run(row)[0] for row in rows])
    batch = tile_batch(bundle.latency_inputs, 32)
    timings = measure_interleaved(runners, bundle.latency_inputs, batch, rounds=rounds, throughput_calls=1)
    base = timings["pytorch-eager"]
    lines = [
        f"## {tag} ({selected.precision.value} on {selected.runtime}, {threads} threads)",
        "",
        "| setting | p50 ms (b=1) | vs PyTorch | items/s (b=32) | vs PyTorch | batch-invariant "
        f"| lone rows vs recorded settings ({len(rows)} rows) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in timings.items():
        runner = runners[name]
        if name == "pytorch-eager":
            invariant, agreement = "-", "-"
        else:
            invariant = "yes" if batch_invariant(runner, bundle.eval_inputs) else "no"
            agreement = answer_shift(np.concatenate([runner.run(row)[0] for row in rows]), expected)
        lines.append(
            f"| {name} | {t.latency_p50_ms:.2f} | {base.latency_p50_ms / t.latency_p50_ms:.2f}x "
            f"| {t.throughput_per_s:.0f} | {t.throughput_per_s / base.throughput_per_s:.2f}x "
            f"| {invariant} | {agreement} |"
        )
    return "\n".join(lines)


def answer_shift(actual: np.ndarray, expected: np.ndarray) -> str:
    """How far rows' answers (one per row along axis 0) moved from `expected`: the largest difference
    over the row's largest value, and the lowest cosine."""
    scale = np.maximum(np.abs(expected).reshape(len(expected), -1).max(axis=1), 1e-12)
    worst = float((np.abs(actual - expected).reshape(len(actual), -1).max(axis=1) / scale).max())
    return f"up to {worst * 100:.1f} % of the largest value, cosine >= {cosine_per_sample(actual, expected).min():.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="NAME or NAME:VERSION in the model store")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(compare(args.model, args.rounds))


if __name__ == "__main__":
    main()
