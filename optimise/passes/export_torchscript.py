"""Export the PyTorch module to TorchScript, for targets that serve TorchScript.

Tracing records one run on the batch-1 latency input, so anything data- or
shape-dependent can silently be baked in; the parity check therefore also runs a
batch of 7 rows and drops the candidate when the outputs differ.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimise.batches import slice_batch
from optimise.errors import PassFailed
from optimise.passes.base import ExportPass, PassConfig, PassContext
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
        optimize_for_inference: freeze the module (inline weights and attributes) and run
            TorchScript's inference optimisations (conv/bn folding, op fusion).
        atol: largest absolute difference allowed between eager PyTorch and the saved TorchScript.
    """

    method: str = "trace"
    optimize_for_inference: bool = True
    atol: float = 1e-4

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
        target = ctx.workdir / "model.ts"
        module.eval()
        with self.failures(f"{self.config.method} failed"):
            with torch.inference_mode(False), torch.no_grad():
                if self.config.method == "trace":
                    example = _tensors(bundle, bundle.latency_inputs)
                    # check_trace off: the parity check below is stricter (two batch sizes, saved file).
                    compiled = torch.jit.trace(module, example, check_trace=False, strict=False)
                else:
                    compiled = torch.jit.script(module)
                compiled.eval()
                if self.config.optimize_for_inference:
                    compiled = torch.jit.optimize_for_inference(torch.jit.freeze(compiled))
            torch.jit.save(compiled, str(target))
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
        assert bundle.forward is not None  # set in ModelBundle.__post_init__
        for batch in (bundle.latency_inputs, slice_batch(bundle.eval_inputs, 0, PARITY_BATCH)):
            # The reference is the module handed in (maybe pruned), run the bundle's way.
            expected = bundle.forward(module, batch)
            # A trace that cannot run another batch size is broken.
            with self.failures(f"TorchScript fails at batch {_rows(batch)}"), torch.inference_mode():
                actual = _flatten(loaded(*_tensors(bundle, batch)))
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


def _flatten(out: Any) -> list[np.ndarray]:
    """Tensors of a traced output (tensor, tuple/list, or dict of a Hugging Face model), in order."""
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, Sequence):
        return [array for item in out for array in _flatten(item)]
    return []
