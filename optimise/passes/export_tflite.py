"""Export the PyTorch module to TensorFlow Lite (`model.tflite`) with litert-torch, no TensorFlow.

The build environment cannot hold litert-torch (see `optimise.litert.environment`), so this pass
hands the model over as `torch.export` programs, one per fixed input shape, and the converter
environment lowers them into one `.tflite` with a signature per shape (batch 1; text models one per
sequence length, by default powers of two from 16 to the model's max length; the weights are
shared). litert-torch converts no dynamic axes (measured with 0.10.0: a dynamic batch or sequence
axis fails inside its lowering), hence the fixed shapes; LiteRT runs rows one at a time anyway.

Token ids become int32 in the file (litert-torch's default, what LiteRT kernels take); the session
casts. Beside the file, `model.io.json` names the model's tensors (the file itself says `args_0`).
Before the file is returned it is loaded by LiteRT and checked against PyTorch (load-and-parity):
a file LiteRT cannot load, or that answers differently, drops the candidate with the reason.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimise.batches import slice_batch
from optimise.errors import PassFailed
from optimise.litert.converter import ConversionFailed, run_converter
from optimise.passes.base import ExportPass, PassConfig, PassContext
from optimise.passes.positional import batch_axis_name, named_shape, output_infos, positional_module
from optimise.runtimes.base import TensorInfo
from optimise.runtimes.litert_session import IO_SUFFIX, LiteRtSession, Signature, io_json, new_interpreter
from optimise.runtimes.torchscript_session import flatten_outputs
from optimise.source import ModelBundle
from optimise.types import Batch

PARITY_ROWS = 7
TEXT_SIGNATURE = "s{length}"  # one per sequence length
TENSOR_SIGNATURE = "serving_default"  # LiteRT's name for a model's one entry point


@dataclass(frozen=True)
class ExportTfliteConfig(PassConfig):
    """Settings of the TFLite export.

    Attributes:
        lengths: text models: the sequence lengths that get a signature, comma-separated ('' = powers
            of two from 16 up to the model's max length, which is always included).
        atol: largest absolute difference allowed between PyTorch and LiteRT outputs.
    """

    lengths: str = ""
    atol: float = 1e-3

    def __post_init__(self) -> None:
        if self.atol <= 0:
            raise ValueError("atol must be positive")
        if self.lengths and not re.fullmatch(r"\d+(,\d+)*", self.lengths):
            raise ValueError(f"lengths must be comma-separated integers, got {self.lengths!r}")
        if any(int(n) < 2 for n in self.lengths.split(",") if n):
            raise ValueError("every length must be at least 2")


def has_sequence_axis(bundle: ModelBundle) -> bool:
    """Text models: integer inputs of rank 2 (batch, tokens)."""
    first = bundle.latency_inputs[bundle.input_names[0]]
    return first.ndim == 2 and np.issubdtype(first.dtype, np.integer)


class ExportTflite(ExportPass[ExportTfliteConfig]):
    name = "export_tflite"
    output_format = "tflite"
    config_type = ExportTfliteConfig

    def run(self, module: torch.nn.Module, ctx: PassContext) -> Path:
        bundle = ctx.bundle
        module = positional_module(module.eval(), bundle)
        target = ctx.workdir / "model.tflite"
        samples = self._samples(bundle)
        request: dict[str, Any] = {"task": "convert", "output": str(target), "signatures": {}}
        with self.failures("torch.export failed"), _quiet_torch_export():
            for name, sample in samples.items():
                program = torch.export.export(module, tuple(torch.from_numpy(a) for a in sample.values()))
                torch.export.save(program, ctx.workdir / f"{name}.pt2")
                arrays: dict[str, Any] = {f"arg{i}": a for i, a in enumerate(sample.values())}
                np.savez(ctx.workdir / f"{name}.npz", **arrays)
                request["signatures"][name] = {"program": f"{name}.pt2", "sample": f"{name}.npz"}
        try:
            run_converter(request, ctx.workdir)
        except ConversionFailed as exc:
            raise PassFailed(self.name, f"LiteRT conversion failed: {exc}") from None
        finally:
            for name in samples:
                (ctx.workdir / f"{name}.pt2").unlink(missing_ok=True)
                (ctx.workdir / f"{name}.npz").unlink(missing_ok=True)
        with self.failures("LiteRT cannot load the converted file"):
            write_io(target, bundle, module)
            session = LiteRtSession(target, threads=1)
        self._check_parity(module, session, bundle)
        return target

    def _samples(self, bundle: ModelBundle) -> dict[str, Batch]:
        """One batch-1 sample per signature, inputs in the module's positional order."""
        one = {n: np.ascontiguousarray(bundle.latency_inputs[n][:1]) for n in bundle.input_names}
        if not has_sequence_axis(bundle):
            return {TENSOR_SIGNATURE: one}
        return {
            TEXT_SIGNATURE.format(length=n): {k: _fit(a, n) for k, a in one.items()}
            for n in self._lengths(bundle)
        }

    def _lengths(self, bundle: ModelBundle) -> list[int]:
        if self.config.lengths:
            return sorted({int(n) for n in self.config.lengths.split(",")})
        from optimise.space import length_buckets  # the space's own buckets, for OpenVINO as well

        longest = bundle.max_length or int(bundle.latency_inputs[bundle.input_names[0]].shape[1])
        return [int(n) for n in length_buckets(longest).split(",")]

    def _check_parity(self, module: torch.nn.Module, session: LiteRtSession, bundle: ModelBundle) -> None:
        for batch in (bundle.latency_inputs, slice_batch(bundle.eval_inputs, 0, PARITY_ROWS)):
            with torch.inference_mode():
                expected = flatten_outputs(module(*(torch.from_numpy(batch[n]) for n in bundle.input_names)))
            with self.failures("LiteRT fails to run the converted file"):
                actual = session.run(batch)
            for want, got in zip(expected, actual, strict=False):
                if got.shape != want.shape:
                    raise PassFailed(self.name, f"LiteRT output shape {got.shape} != PyTorch {want.shape}")
                diff = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
                if not diff <= self.config.atol:  # also catches NaN
                    raise PassFailed(
                        self.name, f"LiteRT output differs from PyTorch by {diff:.2e} > {self.config.atol}"
                    )


# torch.export prints the graph it was tracing to sys.stderr when it fails, and warns through these
# loggers (handlers of their own); the pass's failure reason carries the first line that matters.
_TORCH_EXPORT_LOGGERS = (
    "torch.fx.experimental.symbolic_shapes",
    "torch._dynamo",
    "torch.export",
    "torch._export",
)


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _TORCH_EXPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def write_io(target: Path, bundle: ModelBundle, module: torch.nn.Module) -> None:
    """Write `model.io.json` for `target`: the model's tensors by the bundle's names, with the dtypes
    the file takes, and each signature's mapping to the file's own tensor names."""
    interpreter = new_interpreter(target, threads=1)
    signatures = []
    dtypes: dict[str, type[np.generic]] = {}
    for name, listed in interpreter.get_signature_list().items():
        runner = interpreter.get_signature_runner(name)
        details = runner.get_input_details()
        file_inputs = sorted(listed["inputs"], key=_position)
        file_outputs = sorted(listed["outputs"], key=_position)
        dtypes |= {n: details[f]["dtype"] for n, f in zip(bundle.input_names, file_inputs, strict=True)}
        length = int(name[1:]) if name.startswith("s") and name[1:].isdigit() else None
        signatures.append(
            Signature(
                name,
                length,
                dict(zip(bundle.input_names, file_inputs, strict=True)),
                dict(zip(bundle.output_names, file_outputs, strict=False)),
            )
        )
    batch = {0: batch_axis_name(bundle)}
    inputs = [
        TensorInfo(
            n,
            np.dtype(dtypes[n]).type,
            named_shape(bundle.latency_inputs[n].shape, bundle.dynamic_axes.get(n, batch)),
        )
        for n in bundle.input_names
    ]
    outputs = output_infos(module, bundle)
    target.with_suffix(IO_SUFFIX).write_text(io_json(inputs, outputs, signatures), encoding="utf-8")


def _position(tensor_name: str) -> int:
    """args_2 -> 2, output_0 -> 0 (the file lists them by name, not by position)."""
    digits = re.findall(r"\d+", tensor_name)
    return int(digits[-1]) if digits else 0


def _fit(array: np.ndarray, length: int) -> np.ndarray:
    """A batch-1 sample cut or padded (repeating its tokens) along axis 1 to `length`."""
    if array.shape[1] >= length:
        return np.ascontiguousarray(array[:, :length])
    return np.ascontiguousarray(np.resize(array, (array.shape[0], length)))
