"""OpenVINO behind the session contract (`optimise.runtimes.base`).

A model (OpenVINO IR `.xml` with its `.bin`, or ONNX, which OpenVINO reads directly) compiled for
the CPU with the profile's threads, the latency hint and one stream: batch-1 latency, as the build
measures it. OpenVINO runs FP32 graphs in bf16 on CPUs that have it unless told otherwise, so the
inference precision is a setting: f32 by default, so that an FP32 candidate stays FP32.

An infer request is not safe to share between threads: each calling thread gets its own.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from optimise.runtimes.base import InferenceSession, RuntimeUnavailable, TensorInfo

DEVICE = "CPU"
DEFAULT_SETTINGS: Mapping[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailable(f"the openvino package is not installed ({exc})") from None
    return openvino


def _shape(port: Any) -> tuple[int | str | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())


class OpenVinoSession(InferenceSession):
    """A model compiled by OpenVINO for the CPU with `threads` inference threads.

    `settings` are OpenVINO CPU properties added to (and overriding) the defaults: the latency
    hint, one stream, f32 inference precision. Raises RuntimeUnavailable without the package."""

    runtime: ClassVar[str] = "openvino"

    def __init__(self, model: Path, threads: int = 1, settings: Mapping[str, str] | None = None) -> None:
        ov = _openvino()
        super().__init__(model, threads)
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads),
            **self.settings,
        }
        core = ov.Core()
        self._compiled = core.compile_model(core.read_model(str(model)), DEVICE, config)
        self.inputs = tuple(
            TensorInfo(p.any_name, p.get_element_type().to_dtype().type, _shape(p))
            for p in self._compiled.inputs
        )
        self.outputs = tuple(
            TensorInfo(p.any_name, p.get_element_type().to_dtype().type, _shape(p))
            for p in self._compiled.outputs
        )
        self._requests = threading.local()

    @property
    def on_cpu_only(self) -> bool:
        return True

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model; inputs are cast to the graph's dtypes, extra names are ignored."""
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        results = request.infer(self._prepared(feeds))
        # The request owns its output buffers and reuses them on the next call: copy them out.
        return [np.array(results[port]) for port in self._compiled.outputs]
