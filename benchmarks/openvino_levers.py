"""The levers on OpenVINO NNCF int8 MiniLM at batch 1, side by side in one run against PyTorch eager FP32.

Builds the MiniLM sentence transformer through leanserve's own passes (ONNX export, OpenVINO IR,
NNCF int8) once per lever and times every variant with PyTorch eager FP32 in one interleaved run
(medians over rounds: read the ratios). Levers, each changed alone from the default recipe (mixed
preset, NNCF's transformer defaults, dynamic shapes, f32 inference precision):

- `performance` preset (symmetric activations);
- attention MatMuls kept in floating point (ignored scope `attention-matmuls`);
- SmoothQuant off (smooth-quant alpha -1);
- CPU pinning (`ENABLE_CPU_PINNING`);
- conversion from PyTorch (OpenVINO's PyTorch frontend, which keeps scaled-dot-product attention as
  one operation) instead of from the ONNX file: not a leanserve pass, measured here to see whether one
  would pay;
- static shapes: the default and the performance-preset model with a static-shape copy per length
  bucket for lone rows (`sequence_buckets`).

Each row also gives the mean / minimum cosine to FP32 on the held-out texts (each alone, unpadded),
whether the session is batch-invariant (the build's probe), and for static shapes how far a lone
row's answer moves from the dynamic session's. Not a test; about 5 minutes on 2 cores.

    .venv/bin/python benchmarks/openvino_levers.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks.openvino_hints import answer_shift
from benchmarks.optimise_bench import TorchEager
from optimise.batches import tile_batch
from optimise.evaluate import Runner, batch_invariant, cosine_per_sample, measure_interleaved, unpadded_rows
from optimise.passes.base import PassContext
from optimise.passes.convert_openvino import IR_FILE, ConvertOpenVino, ConvertOpenVinoConfig
from optimise.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimise.passes.quantise_nncf import QuantiseNncf, QuantiseNncfConfig
from optimise.profiles import get_profile
from optimise.runtimes.base import ATTENTION_MASK
from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.runtimes.telemetry import telemetry_off
from optimise.source import ModelBundle
from optimise.sources import load_source
from optimise.space import BUCKETS_KEY, length_buckets

THREADS = 2


class _Embedding(torch.nn.Module):
    """A sentence-transformers model called positionally, for OpenVINO's PyTorch frontend."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(dict(zip(self.names, inputs, strict=True)))["sentence_embedding"]
        return out


def _from_pytorch(bundle: ModelBundle, workdir: Path) -> Path:
    """MiniLM converted by OpenVINO's PyTorch frontend, inputs and output named as the ONNX export names them."""
    with telemetry_off():
        import openvino as ov

        example = tuple(torch.from_numpy(bundle.latency_inputs[name]) for name in bundle.input_names)
        model = ov.convert_model(_Embedding(bundle.module, bundle.input_names).eval(), example_input=example)
        for name, port in zip(bundle.input_names, model.inputs, strict=True):
            port.get_tensor().set_names({name})
        model.outputs[0].get_tensor().set_names({bundle.output_names[0]})
        workdir.mkdir()
        target = workdir / IR_FILE
        ov.save_model(model, str(target), compress_to_fp16=False)
    return target


def levers(rounds: int) -> str:
    bundle = load_source("minilm")
    profile = get_profile("cpu")
    root = Path(tempfile.mkdtemp(prefix="leanserve-levers-"))

    def context(name: str) -> PassContext:
        (root / name).mkdir()
        return PassContext(bundle, profile, root / name)

    onnx = ExportOnnx(ExportOnnxConfig()).apply(bundle.module, context("onnx"))
    ir = ConvertOpenVino(ConvertOpenVinoConfig()).apply(onnx, context("ir"))

    def int8(name: str, source: Path, **settings: object) -> Path:
        return QuantiseNncf(QuantiseNncfConfig(**settings)).apply(source, context(name))  # type: ignore[arg-type]

    default = int8("default", ir)
    performance = int8("performance", ir, preset="performance")
    buckets = {BUCKETS_KEY: length_buckets(int(bundle.latency_inputs[ATTENTION_MASK].shape[1]))}
    sessions: dict[str, Callable[[], OpenVinoSession]] = {
        "default recipe (mixed preset, dynamic shapes)": lambda: OpenVinoSession(default, THREADS),
        "performance preset": lambda: OpenVinoSession(performance, THREADS),
        "attention MatMuls in floating point": lambda: OpenVinoSession(
            int8("attention", ir, ignored_scope="attention-matmuls"), THREADS
        ),
        "SmoothQuant off": lambda: OpenVinoSession(
            int8("no-smoothquant", ir, smooth_quant_alpha=-1), THREADS
        ),
        "CPU pinning": lambda: OpenVinoSession(default, THREADS, {"ENABLE_CPU_PINNING": "YES"}),
        "converted from PyTorch, not ONNX": lambda: OpenVinoSession(
            int8("pytorch-int8", _from_pytorch(bundle, root / "pytorch")), THREADS
        ),
        "static shapes (length buckets)": lambda: OpenVinoSession(default, THREADS, buckets),
        "performance preset + static shapes": lambda: OpenVinoSession(performance, THREADS, buckets),
    }
    runners: dict[str, Runner] = {"PyTorch eager FP32": TorchEager(bundle, THREADS)}
    runners.update({name: make() for name, make in sessions.items()})
    dynamic = {"static shapes (length buckets)": default, "performance preset + static shapes": performance}

    rows = list(unpadded_rows(bundle.eval_inputs))
    reference = np.concatenate([bundle.run_torch(row)[0] for row in rows])
    timings = measure_interleaved(
        runners,
        bundle.latency_inputs,
        tile_batch(bundle.latency_inputs, 32),
        rounds=rounds,
        throughput_calls=1,
    )
    base = timings["PyTorch eager FP32"]
    lines = [
        f"## MiniLM, OpenVINO NNCF int8 levers, batch 1 x {bundle.latency_inputs[ATTENTION_MASK].shape[1]} "
        f"tokens, {THREADS} threads, {rounds} rounds",
        "",
        "| lever | p50 ms | vs PyTorch | items/s (b=32) | vs PyTorch | mean cosine (min) | batch-invariant "
        "| lone row vs dynamic shapes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in timings.items():
        runner = runners[name]
        if isinstance(runner, OpenVinoSession):
            answers = np.concatenate([runner.run(row)[0] for row in rows])
            cosine = cosine_per_sample(answers, reference)
            quality = f"{cosine.mean():.4f} ({cosine.min():.3f})"
            invariant = "yes" if batch_invariant(runner, bundle.eval_inputs) else "no"
            moved = "-"
            if name in dynamic:
                session = OpenVinoSession(dynamic[name], THREADS)
                moved = answer_shift(answers, np.concatenate([session.run(row)[0] for row in rows]))
        else:
            quality, invariant, moved = "1.0000", "-", "-"
        lines.append(
            f"| {name} | {t.latency_p50_ms:.2f} | {base.latency_p50_ms / t.latency_p50_ms:.2f}x "
            f"| {t.throughput_per_s:.0f} | {t.throughput_per_s / base.throughput_per_s:.2f}x "
            f"| {quality} | {invariant} | {moved} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(levers(args.rounds))


if __name__ == "__main__":
    main()
