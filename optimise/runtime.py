"""The one ONNX Runtime session wrapper.

The build step measures candidates through this class and the service serves
the winner through it, so what was measured is what is served: same providers,
same thread settings, same graph optimisation level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

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


class ProviderUnavailable(RuntimeError):
    """None of the requested execution providers exists in this ONNX Runtime build."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: type[np.generic]
    shape: tuple[int | str | None, ...]


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


class OnnxSession:
    """An ONNX Runtime inference session with the profile's providers and threads."""

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
        self.path = model
        self.threads = threads
        self._session = ort.InferenceSession(str(model), _session_options(threads), providers=usable)
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self.inputs = _tensor_info(self._session.get_inputs())
        self.outputs = _tensor_info(self._session.get_outputs())

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model; inputs are cast to the graph's dtypes, extra names are ignored."""
        prepared = {i.name: np.ascontiguousarray(feeds[i.name], dtype=i.dtype) for i in self.inputs}
        return list(self._session.run(None, prepared))
