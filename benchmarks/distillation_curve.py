"""Quality of distilled MiniLM students against training time: the curve behind `--distil-time`.

Trains each student (3 and 4 of MiniLM's 6 layers by default; any student name,
e.g. `layers=6,prune_ratio=1/3`) through the `distil` pass and stops at each time mark; the next mark resumes from the checkpoint the
last one left in the cache, so one run gives the whole curve. At each mark it
prints the steps taken and the student's fidelity to the teacher on the held-out
texts (mean and minimum cosine, recall@10), in FP32 PyTorch: what the student
learnt, before any quantisation (optimise_bench.py --distil measures its variants).
Runs on CUDA when the machine has it. Not a test.

    .venv/bin/python benchmarks/distillation_curve.py [--students layers=4 layers=3] [--minutes 5 15 30] [--fresh]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from optimise.batches import iter_batches
from optimise.distillation.trainer import device, resolve_precision
from optimise.evaluate import cosine_per_sample, neighbour_recall
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.distil import Distil
from optimise.profiles import get_profile
from optimise.source import ModelBundle
from optimise.sources import load_source
from optimise.space import student_settings
from optimise.types import PassSpec


def embed(bundle: ModelBundle, module: torch.nn.Module) -> np.ndarray:
    assert bundle.forward is not None
    return np.concatenate(
        [bundle.forward(module, batch)[0] for batch in iter_batches(bundle.eval_inputs, 64)]
    )


def curve(bundle: ModelBundle, student: str, minutes: list[float], lines: list[str]) -> None:
    teacher = embed(bundle, bundle.module)
    profile = get_profile("cpu")
    for mark in minutes:
        distil = build_pass(PassSpec("distil", {**student_settings(student), "time_s": mark * 60}))
        assert isinstance(distil, Distil)
        with tempfile.TemporaryDirectory() as workdir:
            trained = distil.apply(bundle.module, PassContext(bundle, profile, Path(workdir)))
        steps = distil.state.steps if distil.state else 0
        outputs = embed(bundle, trained)
        cosine = cosine_per_sample(outputs, teacher)
        recall = neighbour_recall(outputs, teacher)
        lines.append(
            f"| {student} | {mark:g} | {steps} | {cosine.mean():.4f} | {cosine.min():.3f} "
            f"| {'-' if recall is None else f'{recall:.3f}'} |"
        )
        print(lines[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", default=["layers=4", "layers=3"])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 15, 30])
    parser.add_argument("--fresh", action="store_true", help="train from scratch in a temporary cache")
    args = parser.parse_args()
    if args.fresh:
        os.environ["LEANSERVE_CACHE_DIR"] = tempfile.mkdtemp(prefix="leanserve-curve-")
    logging.getLogger("optimise.distillation.progress").setLevel(logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(get_profile("cpu").intra_op_threads)
    bundle = load_source("minilm")
    data = bundle.distillation_data() if bundle.distillation_data else None
    print(
        f"## MiniLM students on {device()} ({torch.get_num_threads()} threads, "
        f"{resolve_precision('auto', device())} training), corpus: {data and data.source}"
    )
    print()
    lines = [
        "| student | minutes | steps | mean cosine | min cosine | recall@10 |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for student in args.students:
        student_settings(student)  # a bad name stops the run before any training
    for student in args.students:
        curve(bundle, student, sorted(args.minutes), lines)


if __name__ == "__main__":
    main()
