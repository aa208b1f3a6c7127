"""ONNX Runtime behind the session contract (`optimise.runtimes.base`).

The build step measures candidates through this class and the service serves
the winner through it, so what was measured is what is served: same providers,
same thread settings, same graph optimisation level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime as ort

from optimise.runtimes.base import InferenceSession, RuntimeUnavailable, TensorInfo

_ORT_TO_NUMPY: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


# Fused contrib ops make ORT warn about every unused initialiser; errors still show.
ort.set_default_logger_severity(3)


class ProviderUnavailable(RuntimeUnavailable):
    """None of the requested execution providers exists in this ONNX Runtime build."""


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one request stream per session; parallelism is intra-op
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings from fused contrib ops are noise here
    return options


def _tensor_info(args: Sequence[ort.NodeArg]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(a.name, _ORT_TO_NUMPY.get(a.type, np.float32), tuple(a.shape)) for a in args)


class OnnxSession(InferenceSession):
    """An ONNX Runtime inference session with the profile's providers and threads."""

    runtime: ClassVar[str] = "onnxruntime"

    def __init__(
        self,
        model: Path,
        threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        usable = [p for p in providers if p in available_providers()]
        if not usable:
            raise ProviderUnavailable(
                f"none of {list(providers)} is available (this build has {available_providers()})"
            )
        super().__init__(model, threads)
        self._session = ort.InferenceSession(str(model), _session_options(threads), providers=usable)
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self.inputs = _tensor_info(self._session.get_inputs())
        self.outputs = _tensor_info(self._session.get_outputs())

    @property
    def on_cpu_only(self) -> bool:
        return self.providers == ("CPUExecutionProvider",)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model; inputs are cast to the graph's dtypes, extra names are ignored."""
        return list(self._session.run(None, self._prepared(feeds)))
