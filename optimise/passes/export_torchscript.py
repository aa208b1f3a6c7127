"""Export the PyTorch module to TorchScript (`model.pt`), for PyTorch Mobile, libtorch and servers
that run TorchScript; optionally with PyTorch's dynamic int8 on the Linear layers first.

Tracing records one run on the batch-1 latency input, so anything data- or shape-dependent can
silently be baked in; the parity check therefore also runs a batch of 7 rows and drops the
candidate when the outputs differ. The file carries the inputs' and outputs' names, dtypes and
shapes (`optimise.runtimes.torchscript_session.SIGNATURE_FILE`), so the runtime layer can feed it by
name; `torch.jit.load` ignores them.

Dynamic int8 (`torch.ao.quantization.quantize_dynamic`): Linear weights stored as int8 per channel
(per tensor kept MiniLM at mean cosine 0.92),
activations quantised per batch at run time (fbgemm/x86 kernels on x86, qnnpack on ARM); other
layers (convolutions, embeddings) stay FP32. The parity check then compares with the quantised
eager module, since the quantisation error is the quality measurement's to judge.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from optimise.batches import slice_batch
from optimise.errors import PassFailed
from optimise.passes.base import ExportPass, PassConfig, PassContext
from optimise.passes.positional import named_shape, output_infos, positional_module
from optimise.runtimes.base import TensorInfo
from optimise.runtimes.torchscript_session import SIGNATURE_FILE, flatten_outputs, signature_json
from optimise.source import ModelBundle
from optimise.types import Batch

logger = logging.getLogger(__name__)

PARITY_BATCH = 7  # an odd size no trace is likely to have been specialised to


@dataclass(frozen=True)
class ExportTorchScriptConfig(PassConfig):
    """Settings of the TorchScript export.

    Attributes:
        method: "trace" (records one run; works on most models) or "script" (compiles the
            Python source; keeps control flow, rejects much dynamic Python).
        freeze: inline weights and attributes as constants (`torch.jit.freeze`). TorchScript's
            further `optimize_for_inference` is not applied: its MKL-DNN graphs cannot be saved
            (the file does not load again), and applied at load time it ran the digits CNN 1.8x
            slower (int8: 600x) and MiniLM only 4 % faster.
        atol: largest absolute difference allowed between eager PyTorch and the saved TorchScript.
        int8_dynamic: quantise the Linear layers to int8 (dynamic activations) before the export.
    """

    method: str = "trace"
    freeze: bool = True
    atol: float = 1e-4
    int8_dynamic: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("trace", "script"):
            raise ValueError(f"method must be 'trace' or 'script', got {self.method!r}")
        if self.atol <= 0:
            raise ValueError("atol must be positive")


class ExportTorchScript(ExportPass[ExportTorchScriptConfig]):
    name = "export_torchscript"
    output_format = "torchscript"
    config_type = ExportTorchScriptConfig

    def run(self, module: torch.nn.Module, ctx: PassContext) -> Path:
        bundle = ctx.bundle
        target = ctx.workdir / "model.pt"
        module = positional_module(module.eval(), bundle)
        if self.config.int8_dynamic:
            with self.failures("dynamic int8 failed"), warnings.catch_warnings():
                # Its deprecation notice points to torchao, whose int8 kernels do not run in TorchScript.
                warnings.simplefilter("ignore")
                per_channel = torch.ao.quantization.per_channel_dynamic_qconfig
                module = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear: per_channel})
        with self.failures(f"{self.config.method} failed"):
            with torch.inference_mode(False), torch.no_grad():
                if self.config.method == "trace":
                    example = _tensors(bundle, bundle.latency_inputs)
                    # check_trace off: the parity check below is stricter (two batch sizes, saved file).
                    compiled = torch.jit.trace(module, example, check_trace=False, strict=False)
                else:
                    compiled = torch.jit.script(module)
                compiled.eval()
                if self.config.freeze:
                    compiled = torch.jit.freeze(compiled)
            signature = signature_json(_input_infos(bundle), output_infos(module, bundle))
            torch.jit.save(compiled, str(target), _extra_files={SIGNATURE_FILE: signature})
            loaded = torch.jit.load(str(target), map_location="cpu")
        try:
            self._check_parity(module, loaded, bundle)
        except PassFailed:
            target.unlink(missing_ok=True)  # a wrong artefact must not be picked up by mistake
            raise
        return target

    def _check_parity(
        self, module: torch.nn.Module, loaded: torch.jit.ScriptModule, bundle: ModelBundle
    ) -> None:
        for batch in (bundle.latency_inputs, slice_batch(bundle.eval_inputs, 0, PARITY_BATCH)):
            # The reference is the module handed in (maybe pruned or quantised), run positionally.
            with torch.inference_mode():
                expected = flatten_outputs(module(*_tensors(bundle, batch)))
            # A trace that cannot run another batch size is broken.
            with self.failures(f"TorchScript fails at batch {_rows(batch)}"), torch.inference_mode():
                actual = flatten_outputs(loaded(*_tensors(bundle, batch)))
            if len(actual) < len(expected):
                raise PassFailed(
                    self.name, f"TorchScript returns {len(actual)} outputs, expected {len(expected)}"
                )
            for want, got in zip(expected, actual, strict=False):
                if got.shape != want.shape:
                    raise PassFailed(
                        self.name, f"output shape {got.shape} != PyTorch {want.shape} at batch {_rows(batch)}"
                    )
                rows = _rows(batch)
                diff = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
                if not diff <= self.config.atol:  # also catches NaN
                    raise PassFailed(
                        self.name,
                        f"TorchScript differs from PyTorch by {diff:.2e} > {self.config.atol} at batch {rows}",
                    )


def _tensors(bundle: ModelBundle, batch: Batch) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(batch[name])) for name in bundle.input_names)


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def _input_infos(bundle: ModelBundle) -> list[TensorInfo]:
    return [
        TensorInfo(
            name,
            bundle.latency_inputs[name].dtype.type,
            named_shape(bundle.latency_inputs[name].shape, bundle.dynamic_axes.get(name, {})),
        )
        for name in bundle.input_names
    ]
