"""Every candidate of each demo against PyTorch eager FP32, measured side by side.

Runs the build step for `minilm` and `digits` on a profile (cpu by default; edge for TFLite), then times
every measured variant and the PyTorch eager model in one interleaved run
(same process, same rounds, so machine noise hits all alike) and prints p50
latency at batch 1 (MiniLM at 128 tokens), throughput at batch 32, size,
quality and the ratios against PyTorch. Medians over rounds; not a test.

    .venv/bin/python benchmarks/optimise_bench.py [--demo minilm] [--rounds 7] [--profile edge]
        [--distil --distil-time 3600 --min-cosine 0.95] [--student layers=4 ...]

With `--distil` the demo's students (or those named by `--student`) compete too
(trained for `--distil-time` seconds in all, or taken from the cache that
`distillation_curve.py` filled).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from optimise.batches import tile_batch
from optimise.build import optimise
from optimise.distillation.policy import with_students
from optimise.evaluate import Runner, measure_interleaved
from optimise.profiles import get_profile
from optimise.runtimes import open_variant
from optimise.search import SearchSettings
from optimise.source import ModelBundle
from optimise.sources import load_source
from optimise.space import default_space, default_students
from optimise.types import Constraints, QualityMetric

TIME_BUDGETS = {"minilm": None, "digits": 45.0}


class TorchEager:
    """The baseline a user has before leanserve: the FP32 PyTorch module, eager mode."""

    def __init__(self, bundle: ModelBundle, threads: int) -> None:
        self.bundle = bundle
        torch.set_num_threads(threads)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.bundle.run_torch(dict(feeds))


def _state_dict_bytes(module: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def bench(
    demo: str,
    rounds: int,
    constraints: Constraints,
    distil_time_s: float | None,
    profile_name: str = "cpu",
    students: tuple[str, ...] = (),
) -> str:
    profile = get_profile(profile_name)
    bundle = load_source(demo)
    space = default_space(bundle)
    if distil_time_s is not None:
        space = with_students(space, students or default_students(bundle), distil_time_s, None)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        settings = SearchSettings(time_budget_s=TIME_BUDGETS[demo])
        result = optimise(bundle, profile, constraints, settings, Path(scratch), space)
        build_s = time.perf_counter() - start
        runners: dict[str, Runner] = {"pytorch-eager": TorchEager(bundle, profile.intra_op_threads)}
        for v in result.variants:
            runners[v.id] = open_variant(v, profile.execution_providers)
        batch = tile_batch(bundle.latency_inputs, 32)
        timings = measure_interleaved(
            runners, bundle.latency_inputs, batch, rounds=rounds, throughput_calls=1
        )
    base = timings["pytorch-eager"]
    torch_size = _state_dict_bytes(bundle.module)
    metric = result.reference.metric
    lines = [
        f"## {demo} ({profile.name} profile, {profile.isa}, {profile.intra_op_threads} threads"
        + (f", size budget {profile.max_size_bytes / 2**20:.0f} MiB" if profile.max_size_bytes else "")
        + f"; build {build_s:.0f} s)",
        "",
        "| variant | format | runtime | passes | p50 ms (b=1) | p50 vs PyTorch | items/s (b=32) | vs PyTorch | MB "
        "| smaller | quality | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| pytorch-eager | - | torch | FP32 eager | {base.latency_p50_ms:.2f} | 1.00x | {base.throughput_per_s:.0f} "
        f"| 1.00x | {torch_size / 1e6:.2f} | 1.00x | {result.reference.value:.4f} | 1.000 |",
    ]
    for v in sorted(result.variants, key=lambda v: timings[v.id].latency_p50_ms):
        t, m = timings[v.id], v.metrics
        assert m is not None
        quality = f"{m.quality:.4f}" + (
            f" (min {m.quality_min:.3f})" if metric is QualityMetric.COSINE else ""
        )
        mark = " **selected**" if v.id == result.winner.id else ""
        recall = "-" if m.recall_at_10 is None else f"{m.recall_at_10:.3f}"
        lines.append(
            f"| {v.id}{mark} | {v.format} | {v.runtime} | {v.describe()} | {t.latency_p50_ms:.2f} "
            f"| {base.latency_p50_ms / t.latency_p50_ms:.2f}x | {t.throughput_per_s:.0f} "
            f"| {t.throughput_per_s / base.throughput_per_s:.2f}x | {m.size_bytes / 1e6:.2f} "
            f"| {torch_size / m.size_bytes:.2f}x | {quality} | {recall} |"
        )
    lines += ["", f"Selected because: {result.selection.reason}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", choices=sorted(TIME_BUDGETS), action="append")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", choices=["cpu", "edge"], default="cpu")
    parser.add_argument("--distil", action="store_true", help="let distilled students compete")
    parser.add_argument("--distil-time", type=float, default=1200.0, help="seconds for all students")
    parser.add_argument("--min-cosine", type=float, default=Constraints().min_cosine)
    parser.add_argument("--student", action="append", default=[], help="a student name (repeatable)")
    args = parser.parse_args()
    constraints = Constraints(min_cosine=args.min_cosine)
    for demo in args.demo or ["minilm", "digits"]:
        distil_time = args.distil_time if args.distil else None
        print(
            bench(demo, args.rounds, constraints, distil_time, args.profile, tuple(args.student)), flush=True
        )
        print()


if __name__ == "__main__":
    main()
