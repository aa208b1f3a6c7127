"""Export the PyTorch module to ONNX, with dynamic axes and a parity check.

Hugging Face models go through Optimum's exporter (its graphs are the ones ONNX
Runtime's transformer fusions recognise); everything else through the
TorchScript-based `torch.onnx.export` (dynamo=False) for the same reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from optimise.batches import slice_batch
from optimise.errors import PassFailed
from optimise.passes.base import ExportPass, PassConfig, PassContext
from optimise.runtimes.ort_session import OnnxSession
from optimise.source import ModelBundle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOnnxConfig(PassConfig):
    """Settings of the ONNX export.

    Attributes:
        atol: largest absolute difference allowed between PyTorch and ONNX Runtime outputs.
        parity_batch: batch size of the second parity check (proves the batch axis is dynamic).
    """

    atol: float = 1e-3
    parity_batch: int = 7

    def __post_init__(self) -> None:
        if self.atol <= 0:
            raise ValueError("atol must be positive")
        if self.parity_batch < 2:
            raise ValueError("parity_batch must be at least 2")


class ExportOnnx(ExportPass[ExportOnnxConfig]):
    name = "export_onnx"
    output_format = "onnx"
    config_type = ExportOnnxConfig

    def run(self, module: torch.nn.Module, ctx: PassContext) -> Path:
        bundle = ctx.bundle
        target = ctx.workdir / "model.onnx"
        with self.failures("export failed"):
            if bundle.hf_library is not None:
                _export_with_optimum(module, bundle, ctx.workdir)
            else:
                _export_with_torch(module, bundle, target)
            _keep_outputs(target, bundle.output_names)
        self._check_parity(module, bundle, target)
        return target

    def _check_parity(self, module: torch.nn.Module, bundle: ModelBundle, model: Path) -> None:
        session = OnnxSession(model, threads=1)
        assert bundle.forward is not None
        for batch in (bundle.latency_inputs, slice_batch(bundle.eval_inputs, 0, self.config.parity_batch)):
            expected = bundle.forward(module, batch)[0]
            actual = session.run(batch)[0]
            if actual.shape != expected.shape:
                raise PassFailed(self.name, f"output shape {actual.shape} != PyTorch {expected.shape}")
            diff = float(np.max(np.abs(actual - expected)))
            if diff > self.config.atol:
                raise PassFailed(
                    self.name, f"ONNX output differs from PyTorch by {diff:.2e} > {self.config.atol}"
                )


def _export_with_torch(module: torch.nn.Module, bundle: ModelBundle, target: Path) -> None:
    args = tuple(torch.from_numpy(bundle.latency_inputs[name]) for name in bundle.input_names)
    torch.onnx.export(
        module,
        args,
        str(target),
        input_names=list(bundle.input_names),
        output_names=list(bundle.output_names),
        dynamic_axes=bundle.dynamic_axes,
        opset_version=bundle.opset,
        dynamo=False,
    )


def _export_with_optimum(module: torch.nn.Module, bundle: ModelBundle, workdir: Path) -> None:
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_export_from_model(
        module,
        output=workdir,
        opset=bundle.opset,
        task=bundle.hf_task,
        library_name=bundle.hf_library,
        do_validation=False,  # parity is checked below, against the bundle's own data
    )


def _keep_outputs(model: Path, names: tuple[str, ...]) -> None:
    """Drop graph outputs the bundle does not name (e.g. per-token states)."""
    proto = onnx.load(str(model))
    present = [o.name for o in proto.graph.output]
    missing = [n for n in names if n not in present]
    if missing:
        raise PassFailed("export_onnx", f"exported graph has no outputs {missing}; it has {present}")
    if present == list(names):
        return
    kept = [next(o for o in proto.graph.output if o.name == n) for n in names]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    onnx.save(proto, str(model))
