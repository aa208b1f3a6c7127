"""Runtimes: one session contract (`base.InferenceSession`), one implementation per runtime.

A stored variant is (format, runtime); `open_session` opens its file with the runtime its manifest
records. A runtime whose package is missing raises `RuntimeUnavailable` naming the package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from optimise.runtimes.base import (
    ATTENTION_MASK,
    InferenceSession,
    NonFiniteActivations,
    RuntimeUnavailable,
    TensorInfo,
)
from optimise.types import Variant

ONNX_RUNTIME = "onnxruntime"
OPENVINO = "openvino"
TORCHSCRIPT = "torchscript"
LITERT = "litert"
RUNTIMES = (ONNX_RUNTIME, OPENVINO, TORCHSCRIPT, LITERT)


def open_session(
    runtime: str,
    model: Path,
    threads: int = 1,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    settings: Mapping[str, str] | None = None,
    streams: int = 1,
) -> InferenceSession:
    """`model` loaded by `runtime` with `threads` threads per run (ONNX Runtime: on `providers`;
    OpenVINO: on the CPU with `settings`; TorchScript: PyTorch on the CPU; LiteRT: its interpreter with
    XNNPACK). `streams`: runs that proceed side by side when called from several threads; only
    OpenVINO needs to be told (CPU streams), the others run concurrent calls side by side anyway.
    Raises RuntimeUnavailable for an unknown runtime or a missing package."""
    if runtime == ONNX_RUNTIME:
        from optimise.runtimes.ort_session import OnnxSession

        return OnnxSession(model, threads, providers)
    if runtime == OPENVINO:
        from optimise.runtimes.openvino_session import OpenVinoSession

        return OpenVinoSession(model, threads, settings, streams)
    if runtime == TORCHSCRIPT:
        from optimise.runtimes.torchscript_session import TorchScriptSession

        return TorchScriptSession(model, threads)
    if runtime == LITERT:
        from optimise.runtimes.litert_session import LiteRtSession

        return LiteRtSession(model, threads)
    raise RuntimeUnavailable(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")


def open_variant(variant: Variant, providers: Sequence[str] = ("CPUExecutionProvider",)) -> InferenceSession:
    """A built variant's file opened as the build measures it: its runtime, threads and session
    settings (ONNX Runtime on `providers`). Raises RuntimeUnavailable as `open_session` does."""
    return open_session(
        variant.runtime, variant.artefact, variant.intra_op_threads, providers, dict(variant.runtime_settings)
    )


__all__ = [
    "ATTENTION_MASK",
    "LITERT",
    "ONNX_RUNTIME",
    "OPENVINO",
    "RUNTIMES",
    "TORCHSCRIPT",
    "InferenceSession",
    "NonFiniteActivations",
    "RuntimeUnavailable",
    "TensorInfo",
    "open_session",
    "open_variant",
]
