"""The session contract every runtime implements: named, typed inputs and outputs; run; threads.

The build measures candidates through it and the service serves the winner through it, so what
was measured is what is served. One implementation per runtime (`ort_session`, `openvino_session`);
`optimise.runtimes.open_session` picks one by the name a manifest records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ATTENTION_MASK = "attention_mask"
"""The input that marks a text model's real tokens (1) and its padding (0), by its conventional name:
what lets a row be padded to a batch's length, or cut back to its own, without changing its answer."""


class RuntimeUnavailable(RuntimeError):
    """The runtime (its package, or the device or execution provider asked for) is not on this machine."""


class NonFiniteActivations(ValueError):
    """A run whose inputs drove a value inside the model to NaN or infinity where the runtime cannot
    carry one on (a dynamically quantised layer must measure its input's range to quantise it). The
    other runtimes carry such values through to the outputs; either way the inputs are outside what
    the model can represent, not a fault of the runtime."""


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, numpy dtype, shape (a str or None for a dynamic axis)."""

    name: str
    dtype: type[np.generic]
    shape: tuple[int | str | None, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"name", "dtype" (numpy's name), "shape" (a list)}; what model files carry
        beside runtimes that keep no names (TorchScript's extra file, LiteRT's model.io.json)."""
        return {"name": self.name, "dtype": np.dtype(self.dtype).name, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> TensorInfo:
        """The inverse of `to_dict`."""
        return cls(entry["name"], np.dtype(entry["dtype"]).type, tuple(entry["shape"]))


class InferenceSession(ABC):
    """A loaded model on one runtime. `run` may be called from several threads at once."""

    runtime: ClassVar[str]  # the name a manifest records: "onnxruntime", "openvino", "torchscript", "litert"
    threads_per_session: ClassVar[bool] = True
    """Whether two sessions in one process can run with different thread counts (False for PyTorch,
    whose intra-op thread count is process-wide)."""

    def __init__(self, model: Path, threads: int) -> None:
        self.path = model
        self.threads = threads
        self.inputs: tuple[TensorInfo, ...] = ()
        self.outputs: tuple[TensorInfo, ...] = ()

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    @abstractmethod
    def on_cpu_only(self) -> bool:
        """Whether it runs on the CPU alone (then its thread count is what sets its speed)."""

    def _prepared(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's inputs from `feeds`, cast to their dtypes and contiguous; extra names ignored."""
        return {i.name: np.ascontiguousarray(feeds[i.name], dtype=i.dtype) for i in self.inputs}

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model on `feeds` (by input name); the outputs in `self.outputs` order."""
