"""TorchScript on PyTorch's own runtime (libtorch's interpreter) behind the session contract.

A TorchScript file keeps no input names or dtypes, so the export writes them into the file as an
extra file (`SIGNATURE_FILE`, JSON: inputs and outputs with name, numpy dtype and shape, None for a
dynamic axis); `torch.jit.load` ignores it, so the file stays a plain TorchScript module for users.

PyTorch's intra-op thread count is one setting for the whole process (`torch.set_num_threads`), not
one per session: `threads_per_session` is False, so the service does not open a one-thread twin
beside it (that would change the count of every session), and `run` restores the session's count
when something else in the process changed it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from optimise.runtimes.base import InferenceSession, NonFiniteActivations, RuntimeUnavailable, TensorInfo

SIGNATURE_FILE = "leanserve_signature.json"


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"the torch package is not installed ({exc}); TorchScript variants need PyTorch to run"
        ) from None
    return torch


def signature_json(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> str:
    """The JSON the export stores beside the TorchScript graph (see `SIGNATURE_FILE`)."""
    return json.dumps({"inputs": [i.to_dict() for i in inputs], "outputs": [o.to_dict() for o in outputs]})


def flatten_outputs(out: Any) -> list[np.ndarray]:
    """The tensors of a TorchScript (or eager) output, in order: a tensor, a tuple/list, or the dict of
    a Hugging Face model, nested any way."""
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, Sequence):
        return [array for item in out for array in flatten_outputs(item)]
    return []


class TorchScriptSession(InferenceSession):
    """A TorchScript file loaded on the CPU. Raises RuntimeUnavailable without torch, and ValueError
    for a file without the signature the export writes."""

    runtime: ClassVar[str] = "torchscript"
    threads_per_session: ClassVar[bool] = False

    def __init__(self, model: Path, threads: int = 1) -> None:
        torch = _torch()
        super().__init__(model, threads)
        extra = {SIGNATURE_FILE: ""}
        self._module = torch.jit.load(str(model), map_location="cpu", _extra_files=extra)
        self._module.eval()
        if not extra[SIGNATURE_FILE]:
            raise ValueError(f"{model} has no {SIGNATURE_FILE}: it was not written by leanserve's export")
        signature = json.loads(extra[SIGNATURE_FILE])
        self.inputs = tuple(TensorInfo.from_dict(e) for e in signature["inputs"])
        self.outputs = tuple(TensorInfo.from_dict(e) for e in signature["outputs"])
        self._torch = torch
        torch.set_num_threads(threads)

    @property
    def on_cpu_only(self) -> bool:
        return True

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the module on the inputs in signature order; outputs as the signature names them."""
        torch = self._torch
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        tensors = [torch.from_numpy(array) for array in self._prepared(feeds).values()]
        try:
            with torch.inference_mode():
                outputs = flatten_outputs(self._module(*tensors))
        except RuntimeError as exc:
            # PyTorch's dynamic int8 Linear quantises each input by its range and refuses one holding
            # NaN ("In ChooseQuantizationParams, min should be less than or equal to max").
            if "ChooseQuantizationParams" in str(exc):
                raise NonFiniteActivations(
                    "the inputs drove values inside the model to NaN or infinity (a dynamically "
                    "quantised layer cannot quantise them)"
                ) from exc
            raise
        return outputs[: len(self.outputs)]
