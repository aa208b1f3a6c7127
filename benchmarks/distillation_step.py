"""Where one distillation training step's time goes, on this machine: the teacher's forward pass, the
student's forward and backward passes, and the optimiser step. Not a test.

Builds a MiniLM student (`--layers`, 4 of 6 by default) the way the `distil` pass does, then times
`--steps` steps of batches of 64 corpus texts (after `--warmup` steps), each split into: the teacher's
outputs alone (what the loss computes first, under no_grad), the whole loss with its backward pass,
and AdamW's step. The student's share is the loss-and-backward time less the teacher's. Runs on CUDA
when the machine has it, in the precision training picks (`resolve_precision("auto")`).

    .venv/bin/python benchmarks/distillation_step.py [--layers 4] [--steps 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from optimise.distillation.students import LossWeights, StudentShape, family_for
from optimise.distillation.trainer import computing_in, device, resolve_precision
from optimise.sources import load_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    where = device()
    precision = resolve_precision("auto", where)
    bundle = load_source("minilm")
    assert bundle.distillation_data is not None
    data = bundle.distillation_data()
    family = family_for(bundle, LossWeights())
    teacher = bundle.module.eval().to(where)
    student = family.student(bundle.module, StudentShape(layers=args.layers), data).to(where).eval()
    optimiser = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    batches = family.batches(data, 64, 0, 0)[: args.warmup + args.steps]
    parts = {"teacher forward": 0.0, "student forward and backward": 0.0, "optimiser": 0.0}
    tokens = 0

    def synchronise() -> float:
        if where.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    for index, batch in enumerate(batches):
        if index == args.warmup:
            parts = dict.fromkeys(parts, 0.0)
            tokens = 0
        batch = {name: tensor.to(where) for name, tensor in batch.items()}
        tokens += int(batch["attention_mask"].sum())
        start = synchronise()
        with torch.no_grad(), computing_in(precision, where):
            family.outputs(teacher, batch)
        teacher_done = synchronise()
        optimiser.zero_grad(set_to_none=True)
        with torch.enable_grad():
            with computing_in(precision, where):
                loss = family.loss(student, teacher, batch)
            loss.backward()
        backward_done = synchronise()
        optimiser.step()
        step_done = synchronise()
        parts["teacher forward"] += teacher_done - start
        # The loss runs the teacher again: its forward pass is taken out of the student's share.
        parts["student forward and backward"] += (backward_done - teacher_done) - (teacher_done - start)
        parts["optimiser"] += step_done - backward_done
    # The timing ran the teacher twice per step (alone, then inside the loss): a training step is the
    # sum of the three parts, not the wall time of this loop.
    total = sum(parts.values())
    print(
        f"MiniLM {args.layers}-layer student on {where} ({torch.get_num_threads()} threads, {precision}): "
        f"{args.steps / total:.2f} steps/s of 64 texts, {tokens / total:,.0f} tokens/s"
    )
    for name, seconds in parts.items():
        print(f"  {name}: {seconds / args.steps * 1e3:.1f} ms per step ({seconds / total:.0%})")


if __name__ == "__main__":
    main()
