"""Dropping MiniLM's layers one at a time against the direct 4-layer student, at about equal time.

The gradual arm trains a 5-layer student (its layers chosen by fidelity, as the `distil` pass
chooses them), drops the layer whose removal keeps it closest to the teacher, and trains the
4 left; the direct arm trains the 4-layer student the pass would build. Both run the pass's
loss, schedule (warm-up, inverse square root, fall to zero over the last 30 %), fused AdamW
and batch order, one after the other in this process, in float32; each prints its seconds
(tokenising the corpus once included) and the FP32 student's fidelity to the teacher on the
held-out texts. A 5-layer step costs about 1.17 of a 4-layer one on 2 CPU threads (the teacher's
forward pass is the same), hence the default 400 + 732 steps against 1,200. Not a test.

    .venv/bin/python benchmarks/distillation_layer_drop.py [--five 400] [--four 732] [--direct 1200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from optimise.batches import iter_batches
from optimise.distillation.data import DistillationData
from optimise.distillation.policy import resolve_data
from optimise.distillation.students import (
    BertEncoderFamily,
    LossWeights,
    StudentShape,
    _encoder,
    batches_forever,
    choose_layers,
)
from optimise.distillation.trainer import learning_rate
from optimise.evaluate import cosine_per_sample, neighbour_recall
from optimise.source import ModelBundle
from optimise.sources import load_source

PEAK_LR = 6e-4
BATCH = 64


class Arm:
    """One student's training under the pass's recipe, with its fidelity to the teacher."""

    def __init__(self, bundle: ModelBundle, data: DistillationData, layers: int) -> None:
        self.bundle, self.data = bundle, data
        self.family = BertEncoderFamily(bundle, LossWeights())
        self.teacher = bundle.module.eval()
        torch.manual_seed(0)
        self.student = self.family.student(self.teacher, StudentShape(layers=layers), data)
        self.optimiser = torch.optim.AdamW(
            self.student.parameters(), lr=PEAK_LR, weight_decay=0.01, fused=True
        )
        self.seconds = 0.0

    def train(self, first: int, last: int, total: int) -> None:
        """Steps `first`..`last` of a run of `total` steps (the batches and the rate of those steps)."""
        batches = batches_forever(self.family, self.data, BATCH, 0, first)
        started = time.perf_counter()
        for step in range(first, last):
            batch = next(batches)
            for group in self.optimiser.param_groups:
                group["lr"] = learning_rate(PEAK_LR, step, step / total)
            self.optimiser.zero_grad(set_to_none=True)
            with torch.enable_grad():
                self.family.loss(self.student, self.teacher, batch).backward()
            self.optimiser.step()
        self.seconds += time.perf_counter() - started

    def drop_one_layer(self) -> list[int]:
        """Drop the layer whose removal keeps the student closest to the teacher; the teacher layers kept."""
        layers = list(_encoder(self.student).encoder.layer)
        score = self.family._fidelity(self.teacher, self.student, layers, self.data)
        keep = choose_layers(score, len(layers), len(layers) - 1)
        self.family._keep(self.student, [layers[i] for i in keep])
        self.family.layer_map = [self.family.layer_map[i] for i in keep]
        return [i - 1 for i in self.family.layer_map]

    def report(self, label: str, teacher_outputs: np.ndarray) -> None:
        outputs = embed(self.bundle, self.student)
        cosine = cosine_per_sample(outputs, teacher_outputs)
        recall = neighbour_recall(outputs, teacher_outputs)
        print(
            f"| {label} | {self.seconds:.0f} | {cosine.mean():.4f} | {cosine.min():.3f} | "
            f"{'-' if recall is None else f'{recall:.3f}'} |",
            flush=True,
        )


def embed(bundle: ModelBundle, module: torch.nn.Module) -> np.ndarray:
    assert bundle.forward is not None
    with torch.inference_mode():
        return np.concatenate(
            [bundle.forward(module, batch)[0] for batch in iter_batches(bundle.eval_inputs, 64)]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--five", type=int, default=400, help="steps of the 5-layer student")
    parser.add_argument("--four", type=int, default=732, help="steps after its layer is dropped")
    parser.add_argument("--direct", type=int, default=1200, help="steps of the direct 4-layer student")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_source("minilm")
    data = resolve_data(bundle)
    teacher_outputs = embed(bundle, bundle.module)
    print("| student | seconds trained | mean cosine | min cosine | recall@10 |\n|---|---|---|---|---|")

    gradual = Arm(bundle, data, layers=5)
    gradual.report(f"5 layers {[i - 1 for i in gradual.family.layer_map]}, untrained", teacher_outputs)
    total = args.five + args.four
    gradual.train(0, args.five, total)
    gradual.report(f"5 layers, {args.five} steps", teacher_outputs)
    kept = gradual.drop_one_layer()
    gradual.report(f"4 layers {kept}, just dropped", teacher_outputs)
    gradual.train(args.five, total, total)
    gradual.report(f"4 layers {kept}, {args.five} + {args.four} steps", teacher_outputs)

    direct = Arm(bundle, data, layers=4)
    direct.report(f"4 layers {[i - 1 for i in direct.family.layer_map]}, untrained", teacher_outputs)
    direct.train(0, args.direct, args.direct)
    direct.report(f"4 layers direct, {args.direct} steps", teacher_outputs)


if __name__ == "__main__":
    main()
