"""LiteRT (TensorFlow Lite) behind the session contract: `ai-edge-litert`'s interpreter with XNNPACK.

litert-torch converts only fixed shapes (a dynamic batch or sequence axis fails inside its lowering,
and `resize_tensor_input` fails on the converted files), so a `.tflite` here holds one signature per
fixed shape: batch 1, and for text models one per sequence length ("length buckets", e.g. 16, 32,
64, 128), the weights shared between them. A batch runs row by row; a text row is cut to its own
length (the last 1 of its attention mask) and zero-padded to the smallest bucket that holds it, which
the mask hides. Per-token outputs come back at the batch's width. Rows run alone, so a row's answer
does not depend on its batch.

The file's own signature names its tensors `args_0`, `output_0`, ...; the export writes the model's
names, dtypes and shapes and each signature's mapping beside it (`IO_SUFFIX`, JSON).

An interpreter is not safe to share between threads: each calling thread gets its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from optimise.runtimes.base import ATTENTION_MASK, InferenceSession, RuntimeUnavailable, TensorInfo

T = TypeVar("T")
IO_SUFFIX = ".io.json"  # model.tflite -> model.io.json


def interpreter_class() -> Any:
    """LiteRT's `Interpreter`. Raises RuntimeUnavailable without ai-edge-litert."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise RuntimeUnavailable(f"the ai-edge-litert package is not installed ({exc})") from None
    return Interpreter


# LiteRT prints this at INFO when the first interpreter of a process first runs (XNNPACK is applied
# then), to the native stderr, whatever TF_CPP_MIN_LOG_LEVEL says once the process runs: a line a
# user can do nothing about.
_DELEGATE_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
_first_run = threading.Lock()
_notice_passed = False


def new_interpreter(model: Path, threads: int) -> Any:
    """An interpreter for `model` with `threads` threads (XNNPACK applies by default)."""
    return interpreter_class()(model_path=str(model), num_threads=threads)


def _quiet_first(run: Callable[[], T]) -> T:
    """`run()`; the first time in a process with the native stderr captured and passed on without the
    delegate notice."""
    global _notice_passed
    if _notice_passed:
        return run()
    with _first_run:
        if _notice_passed:
            return run()
        with _native_stderr_without(_DELEGATE_NOTICE):
            result = run()
        _notice_passed = True
        return result


@contextlib.contextmanager
def _native_stderr_without(notice: bytes) -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured:
                if not line.startswith(notice):
                    os.write(2, line)


@dataclass(frozen=True)
class Signature:
    """One fixed-shape entry point of the file: its name, the sequence length it takes (None for
    models without one), and the file's tensor names for the model's inputs and outputs."""

    name: str
    length: int | None
    inputs: dict[str, str]
    outputs: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"length": self.length, "inputs": self.inputs, "outputs": self.outputs}


def io_json(inputs: list[TensorInfo], outputs: list[TensorInfo], signatures: list[Signature]) -> str:
    """The JSON the export writes beside a `.tflite` (see `IO_SUFFIX`)."""
    return json.dumps(
        {
            "inputs": [i.to_dict() for i in inputs],
            "outputs": [o.to_dict() for o in outputs],
            "signatures": {s.name: s.to_dict() for s in signatures},
        },
        indent=1,
    )


class LiteRtSession(InferenceSession):
    """A `.tflite` file on LiteRT's interpreter (XNNPACK) with `threads` threads. Raises
    RuntimeUnavailable without ai-edge-litert, ValueError for a file without its `.io.json`."""

    runtime: ClassVar[str] = "litert"

    def __init__(self, model: Path, threads: int = 1) -> None:
        interpreter_class()  # a missing package fails here, before any file is read
        super().__init__(model, threads)
        io_file = model.with_suffix(IO_SUFFIX)
        if not io_file.is_file():
            raise ValueError(f"{model} has no {io_file.name}: it was not written by leanserve's export")
        io = json.loads(io_file.read_text(encoding="utf-8"))
        self.inputs = tuple(TensorInfo.from_dict(e) for e in io["inputs"])
        self.outputs = tuple(TensorInfo.from_dict(e) for e in io["outputs"])
        self.signatures = sorted(
            (Signature(name, s["length"], s["inputs"], s["outputs"]) for name, s in io["signatures"].items()),
            key=lambda s: s.length or 0,
        )
        self._local = threading.local()
        self._runners()  # load once here, so a broken file fails now and not at the first request

    @property
    def on_cpu_only(self) -> bool:
        return True

    @property
    def lengths(self) -> tuple[int, ...]:
        """The sequence lengths the file has signatures for (empty for models without one)."""
        return tuple(s.length for s in self.signatures if s.length is not None)

    def _runners(self) -> dict[str, Any]:
        runners: dict[str, Any] | None = getattr(self._local, "runners", None)
        if runners is None:
            interpreter = new_interpreter(self.path, self.threads)
            runners = {s.name: interpreter.get_signature_runner(s.name) for s in self.signatures}
            self._local.runners = runners
        return runners

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run every row alone on the signature that fits it; outputs stacked in row order. Raises
        ValueError for an empty batch or a row longer than every signature."""
        return _quiet_first(lambda: self._run(feeds))

    def _run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        prepared = self._prepared(feeds)
        rows = len(next(iter(prepared.values())))
        if rows == 0:
            raise ValueError("an empty batch: at least one row is needed")
        answers = [self._run_row({n: a[i : i + 1] for n, a in prepared.items()}) for i in range(rows)]
        return [np.concatenate([answer[k] for answer in answers]) for k in range(len(self.outputs))]

    def _run_row(self, row: dict[str, np.ndarray]) -> list[np.ndarray]:
        signature, width = self._signature_for(row)
        if signature.length is not None:
            row = {n: _fit(a, signature.length) if a.ndim == 2 else a for n, a in row.items()}
        answer = self._runners()[signature.name](**{signature.inputs[n]: a for n, a in row.items()})
        outputs = [answer[signature.outputs[o.name]] for o in self.outputs]
        if signature.length is None:
            return outputs
        # Per-token outputs (a dynamic axis 1) go back to the batch's width.
        return [
            _fit(o, width) if _per_token(info) else o for o, info in zip(outputs, self.outputs, strict=True)
        ]

    def _signature_for(self, row: dict[str, np.ndarray]) -> tuple[Signature, int]:
        if not self.lengths:
            return self.signatures[0], 0
        width = max(a.shape[1] for a in row.values() if a.ndim == 2)
        mask = row.get(ATTENTION_MASK)
        used = width if mask is None else int(np.flatnonzero(mask[0]).max(initial=-1)) + 1
        for signature in self.signatures:
            if signature.length is not None and signature.length >= used:
                return signature, width
        raise ValueError(f"a row of {used} tokens is longer than the longest signature ({self.lengths[-1]})")


def _per_token(info: TensorInfo) -> bool:
    return len(info.shape) >= 2 and not isinstance(info.shape[1], int)


def _fit(array: np.ndarray, length: int) -> np.ndarray:
    """`array` cut or zero-padded along axis 1 to `length`."""
    if array.shape[1] >= length:
        return array[:, :length]
    pad = [(0, 0)] * array.ndim
    pad[1] = (0, length - array.shape[1])
    return np.pad(array, pad)
