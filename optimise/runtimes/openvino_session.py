"""OpenVINO behind the session contract (`optimise.runtimes.base`).

A model (OpenVINO IR `.xml` with its `.bin`, or ONNX, which OpenVINO reads directly) compiled for
the CPU with the profile's threads, the latency hint and one stream: batch-1 latency, as the build
measures it. OpenVINO runs FP32 graphs in bf16 on CPUs that have it unless told otherwise, so the
inference precision is a setting: f32 by default, so that an FP32 candidate stays FP32.

Sequence buckets (the `sequence_buckets` setting, e.g. "16,32,64,128"): OpenVINO's CPU plugin is
markedly faster on a static input shape. Measured on the MiniLM sentence transformer (INT8 via
NNCF), one row of 128 tokens, 2 threads: static [1,128] ran 5.8-5.9 ms p50, the same model with
dynamic shapes 6.7-7.3 ms (static is about 20 % faster); a static length with a dynamic batch
[-1,128] gained almost nothing (6.7 ms). So besides the dynamic model, one model per bucket is
compiled with every rank-2 input fixed to [1, bucket] (about 0.5 s of compile per bucket), and a
single row is zero-padded to the smallest bucket that holds it. Padding is harmless only where it is
masked, hence the `attention_mask` requirement: its zeros mask the padding (and for BERT-like
models token id 0 is [PAD]). The padded tokens are computed too, so buckets should lie close together
(powers of two). Per-token outputs are cut back to the row's length. Several rows, or a row longer
than the largest bucket, run on the dynamic model. Two costs, measured on MiniLM int8: the static
[1, 128] kernel answers up to 6 % of the largest value off the dynamic one, so a bucketed variant is not
batch-invariant; and each compiled copy holds ~70 MB.

OpenVINO's usage telemetry is off while openvino is imported (`telemetry.telemetry_off`).

An infer request is not safe to share between threads: each calling thread gets its own, one per
compiled model.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from optimise.runtimes.base import ATTENTION_MASK, InferenceSession, RuntimeUnavailable, TensorInfo
from optimise.runtimes.telemetry import telemetry_off

DEVICE = "CPU"
DEFAULT_SETTINGS: Mapping[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}
SEQUENCE_BUCKETS = "sequence_buckets"  # lower case: the session's own setting, not an OpenVINO property


def _openvino() -> Any:
    try:
        with telemetry_off():  # `import openvino` itself reports usage (see optimise.runtimes.telemetry)
            import openvino
    except ImportError as exc:
        raise RuntimeUnavailable(f"the openvino package is not installed ({exc})") from None
    return openvino


def _shape(port: Any) -> tuple[int | str | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())


def _rank(port: Any) -> int | None:
    rank = port.get_partial_shape().rank
    return rank.get_length() if rank.is_static else None


def parse_sequence_buckets(value: str) -> tuple[int, ...]:
    """The bucket lengths in `value`, a comma-separated string of increasing positive ints."""
    expected = (
        f"{SEQUENCE_BUCKETS} must be increasing positive integers separated by commas, e.g. '16,32,64,128'"
    )
    try:
        buckets = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise ValueError(f"{expected}; got {value!r}") from None
    if any(b <= 0 for b in buckets):
        raise ValueError(f"{expected}; got {value!r}, which has a length <= 0")
    if any(a >= b for a, b in pairwise(buckets)):
        raise ValueError(f"{expected}; got {value!r}, which does not increase")
    return buckets


class OpenVinoSession(InferenceSession):
    """A model compiled by OpenVINO for the CPU with `threads` inference threads.

    `settings` are OpenVINO CPU properties added to (and overriding) the defaults: the latency
    hint, one stream, f32 inference precision; all of them are kept in `self.settings`, which the
    manifest records. `streams` > 1 compiles for that many CPU streams of `threads` threads each: with
    one stream, runs from several threads queue behind each other (one 1-thread stream on 2 cores:
    ~650 rows/s from 1 or 2 callers; two streams: ~1,190 rows/s from 2 callers). One setting is the session's own: `sequence_buckets`, a comma-separated string
    of increasing lengths ("16,32,64,128"); with it, a single row no longer than the largest bucket
    runs on a model compiled for the static shape [1, bucket] (about 20 % faster on MiniLM, see the
    module docstring), which needs a rank-2 `attention_mask` input (ValueError otherwise).
    Raises RuntimeUnavailable without the package."""

    runtime: ClassVar[str] = "openvino"

    def __init__(
        self, model: Path, threads: int = 1, settings: Mapping[str, str] | None = None, streams: int = 1
    ) -> None:
        ov = _openvino()
        super().__init__(model, threads)
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        properties = {k: v for k, v in self.settings.items() if k != SEQUENCE_BUCKETS}
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": str(streams),
            "INFERENCE_NUM_THREADS": str(threads * streams),  # OpenVINO's count is for all streams
            **properties,
        }
        buckets_setting = self.settings.get(SEQUENCE_BUCKETS)
        self.buckets = parse_sequence_buckets(buckets_setting) if buckets_setting is not None else ()
        core = ov.Core()
        graph = core.read_model(str(model))
        self._mask, self._sequence_inputs = self._padded_inputs(graph) if self.buckets else ("", ())
        self._static: dict[int, Any] = {}
        for bucket in self.buckets:
            fixed = graph.clone()
            fixed.reshape({name: [1, bucket] for name in self._sequence_inputs})
            self._static[bucket] = core.compile_model(fixed, DEVICE, config)
        self._compiled = core.compile_model(graph, DEVICE, config)
        self.inputs = tuple(
            TensorInfo(p.any_name, p.get_element_type().to_dtype().type, _shape(p))
            for p in self._compiled.inputs
        )
        self.outputs = tuple(
            TensorInfo(p.any_name, p.get_element_type().to_dtype().type, _shape(p))
            for p in self._compiled.outputs
        )
        self._requests = threading.local()

    def _padded_inputs(self, graph: Any) -> tuple[str, tuple[str, ...]]:
        """The attention mask's name and the rank-2 inputs to pad; refuses a model whose padding
        nothing would mask."""
        masks = [p for p in graph.inputs if ATTENTION_MASK in p.get_names()]
        if not masks or _rank(masks[0]) != 2:
            found = ", ".join(f"{p.any_name} (rank {_rank(p)})" for p in graph.inputs)
            raise ValueError(
                f"{SEQUENCE_BUCKETS} needs an input named {ATTENTION_MASK!r} of rank 2 [batch, sequence] "
                f"to mask the padding; {self.path} has: {found}"
            )
        return masks[0].any_name, tuple(p.any_name for p in graph.inputs if _rank(p) == 2)

    @property
    def on_cpu_only(self) -> bool:
        return True

    def bucket(self, feeds: Mapping[str, np.ndarray]) -> int | None:
        """The bucket length a run on `feeds` is padded to; None when it runs on the dynamic model."""
        if not self.buckets:
            return None
        rows, length = np.shape(feeds[self._mask])
        if rows != 1 or length > self.buckets[-1]:
            return None
        return next(b for b in self.buckets if b >= length)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model; inputs are cast to the graph's dtypes, extra names are ignored."""
        prepared = self._prepared(feeds)
        bucket = self.bucket(prepared)
        if bucket is None:
            return self._infer(None, prepared)
        length = prepared[self._mask].shape[1]
        for name in self._sequence_inputs:
            prepared[name] = np.pad(prepared[name], ((0, 0), (0, bucket - prepared[name].shape[1])))
        outputs = self._infer(bucket, prepared)
        # Per-token outputs ([1, bucket, ...]) come back for the padded length: cut to the row's.
        return [o[:, :length].copy() if o.ndim >= 3 and o.shape[1] == bucket else o for o in outputs]

    def profiling_info(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        """OpenVINO's per-operation counters (`ProfilingInfo`: node type, kernel, time) of this
        thread's last run of the compiled model `feeds` go to; empty unless the session was opened
        with the setting PERF_COUNT=YES and has run on this thread."""
        requests: dict[int | None, Any] = getattr(self._requests, "by_bucket", {})
        request = requests.get(self.bucket(self._prepared(feeds)))
        return list(request.profiling_info) if request is not None else []

    def _infer(self, bucket: int | None, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        compiled = self._compiled if bucket is None else self._static[bucket]
        requests: dict[int | None, Any] | None = getattr(self._requests, "by_bucket", None)
        if requests is None:
            requests = self._requests.by_bucket = {}
        request = requests.get(bucket)
        if request is None:
            request = requests[bucket] = compiled.create_infer_request()
        results = request.infer(inputs)
        # The request owns its output buffers and reuses them on the next call: copy them out.
        return [np.array(results[port]) for port in compiled.outputs]
