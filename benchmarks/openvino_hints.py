"""OpenVINO's performance hints on a stored variant: LATENCY (what leanserve compiles) against
THROUGHPUT with one and two streams, at batch 1 and batch 32, beside PyTorch eager FP32.

Opens the stored version's model through the session contract with the settings its manifest records
plus the hint, and times every setting and the PyTorch model in one interleaved run (medians over
rounds; read the ratios). Not a test.

    .venv/bin/python benchmarks/openvino_hints.py [--model minilm] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks.openvino_profile import stored_openvino
from benchmarks.optimise_bench import TorchEager
from optimise.batches import tile_batch
from optimise.evaluate import Runner, measure_interleaved
from optimise.runtimes import open_session

HINTS = {
    "LATENCY, 1 stream": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"},
    "THROUGHPUT, 1 stream": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "1"},
    "THROUGHPUT, 2 streams": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2"},
}


def compare(tag: str, rounds: int) -> str:
    stored, bundle = stored_openvino(tag)
    selected = stored.manifest.selected
    threads = selected.intra_op_threads
    runners: dict[str, Runner] = {"pytorch-eager": TorchEager(bundle, threads)}
    for name, hint in HINTS.items():
        settings = {**selected.runtime_settings, **hint}
        runners[name] = open_session(selected.runtime, stored.model_path, threads, settings=settings)
    batch = tile_batch(bundle.latency_inputs, 32)
    timings = measure_interleaved(runners, bundle.latency_inputs, batch, rounds=rounds, throughput_calls=1)
    base = timings["pytorch-eager"]
    lines = [
        f"## {tag} ({selected.precision.value} on {selected.runtime}, {threads} threads)",
        "",
        "| setting | p50 ms (b=1) | vs PyTorch | items/s (b=32) | vs PyTorch |",
        "|---|---|---|---|---|",
    ]
    for name, t in timings.items():
        lines.append(
            f"| {name} | {t.latency_p50_ms:.2f} | {base.latency_p50_ms / t.latency_p50_ms:.2f}x "
            f"| {t.throughput_per_s:.0f} | {t.throughput_per_s / base.throughput_per_s:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="NAME or NAME:VERSION in the model store")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(compare(args.model, args.rounds))


if __name__ == "__main__":
    main()
