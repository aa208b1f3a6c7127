"""Frozen value types shared by the build step.

These are plain data: the search, the passes, the store and the service all
exchange them, so none of them carries behaviour beyond validation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]
"""One batch of named model inputs, as ONNX Runtime takes them."""

FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "openvino": (".xml", ".bin"),  # OpenVINO IR: the graph, then its weights
    "torchscript": (".pt",),
    "tflite": (".tflite", ".io.json"),  # LiteRT: the model, then its tensors' names (see litert_session)
}
"""The file formats a variant can be written in, and the suffixes of the files that make one model
(the first names the model; the others sit beside it with the same stem)."""


def model_files(model: Path, file_format: str) -> tuple[Path, ...]:
    """Every file of the model named by `model` in `file_format`: `model`, then the files its format
    keeps beside it (OpenVINO IR: the .bin of the .xml). An unknown format is `model` alone."""
    suffixes = FORMAT_SUFFIXES.get(file_format, (model.suffix,))
    return (model, *(model.with_suffix(s) for s in suffixes[1:]))


class QualityMetric(StrEnum):
    """How a candidate's quality is scored against the reference model."""

    ACCURACY = "accuracy"  # labelled data: share of correct argmax predictions
    COSINE = "cosine"  # no labels: cosine similarity of outputs to the FP32 reference


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"  # FP32 weights computed in bfloat16 by the runtime (OpenVINO's precision hint)
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"


@dataclass(frozen=True)
class QuantisationDefaults:
    """Quantisation settings that run fast on one instruction set."""

    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: needed on AVX2 without VNNI to avoid saturation
    signed_weights: bool = True  # S8 weights; unsigned ran at half speed on VNNI/AMX here


@dataclass(frozen=True)
class HardwareProfile:
    """A deployment target: where and how the chosen variant will run."""

    name: str
    description: str
    execution_providers: tuple[str, ...]
    precisions: tuple[Precision, ...]
    intra_op_threads: int
    throughput_batch_size: int = 32
    max_size_bytes: int | None = None
    isa: str = "generic"
    quantisation: QuantisationDefaults = field(default_factory=QuantisationDefaults)
    runtimes: tuple[str, ...] = ("onnxruntime",)
    """The runtimes whose candidates the search builds and measures for this target."""
    runtime_notes: tuple[str, ...] = ()
    """Why a runtime is not searched here (e.g. 'openvino: not installed'), for the report."""
    bf16: bool = False
    """The CPU computes bf16 natively (AVX512_BF16 or AMX): OpenVINO may run FP32 graphs in bf16."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["precisions"] = [p.value for p in self.precisions]
        data["runtimes"] = list(self.runtimes)
        data["runtime_notes"] = list(self.runtime_notes)
        return data


@dataclass(frozen=True)
class Constraints:
    """The accuracy budget and limits a selected variant must respect."""

    max_accuracy_drop: float = 0.005  # absolute, 0.005 = 0.5 percentage points
    min_cosine: float = 0.99
    min_length_cosine: float = 0.9
    """Smallest cosine to FP32 allowed at any one sequence length (text models): a kernel path a
    runtime takes at one length only can be wrong there while the mean over natural texts holds."""
    max_size_bytes: int | None = None
    latency_slo_ms: float | None = None
    latency_tolerance: float = 0.10
    """Variants within this share of the fastest p50 count as equally fast; the smallest of them wins."""
    latency_tolerance_ms: float = 0.05
    """Variants within this many milliseconds of the fastest p50 count as equally fast too: a gap a
    served request cannot notice (the server's own overhead per request is several times larger)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.latency_tolerance < 1.0:
            raise ValueError(f"latency_tolerance must be in [0, 1), got {self.latency_tolerance}")
        if self.latency_tolerance_ms < 0.0:
            raise ValueError(f"latency_tolerance_ms must be >= 0, got {self.latency_tolerance_ms}")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError(f"max_accuracy_drop must be in [0, 1], got {self.max_accuracy_drop}")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1], got {self.min_cosine}")
        if not -1.0 <= self.min_length_cosine <= 1.0:
            raise ValueError(f"min_length_cosine must be in [-1, 1], got {self.min_length_cosine}")
        if self.max_size_bytes is not None and self.max_size_bytes <= 0:
            raise ValueError(f"max_size_bytes must be positive, got {self.max_size_bytes}")
        if self.latency_slo_ms is not None and self.latency_slo_ms <= 0:
            raise ValueError(f"latency_slo_ms must be positive, got {self.latency_slo_ms}")


@dataclass(frozen=True)
class ServingSettings:
    """How the service runs a variant under concurrent requests: the build's serving stage measures
    and picks them (`optimise.serving_search`), the manifest records them, `LEANSERVE_*` overrides."""

    threads: int
    """Intra-op threads of a run with nothing else in flight (a lone request)."""
    parallel_sessions: int = 1
    """Runs in flight at once (requests, or merged batches when batching); under load each runs on one
    thread (OpenVINO: one CPU stream each)."""
    batch_max_rows: int = 1
    """Most rows of concurrent requests merged into one run (batch-invariant variants only); 1: none."""
    batch_wait_ms: float = 0.0
    """How long a batch waits for more requests after its first, at most; 0: it takes what queued."""

    def __post_init__(self) -> None:
        for name in ("threads", "parallel_sessions", "batch_max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must not be negative, got {self.batch_wait_ms}")

    @property
    def batching(self) -> bool:
        return self.batch_max_rows > 1

    def describe(self) -> str:
        """e.g. '2 threads, 1 parallel, batch 32 rows / 0 ms' or '1 thread, 2 parallel, no batching'."""
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}, {self.parallel_sessions} parallel"
        if not self.batching:
            return f"{threads}, no batching"
        return f"{threads}, batch {self.batch_max_rows} rows / {self.batch_wait_ms:g} ms"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServingTrial:
    """One variant under one `ServingSettings`, measured with `concurrency` closed-loop clients sending
    one-row requests back to back (`optimise.serving_search`)."""

    variant_id: str
    settings: ServingSettings
    requests_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    errors: int = 0
    """Requests that raised (a setting with errors is never chosen)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServingChoice:
    """The build's serving stage: every trial, and the settings chosen for the stored variant."""

    variant_id: str
    """The variant `settings` were chosen for (the stored one)."""
    settings: ServingSettings
    concurrency: int
    p99_bound_ms: float | None
    seconds_per_trial: float
    reason: str
    """One sentence on why `settings` won, e.g. 'most requests/s with p99 <= 100 ms: 1,103/s, p99 41 ms'."""
    trials: tuple[ServingTrial, ...]
    request_cpu_ms: float = 0.0
    """The server's own CPU work per request the clients did around each call."""
    request_cores: int = 0
    """Cores left to the request path: parallel sessions were searched up to the threads less these."""
    select_variant: bool = False
    """Whether the stage chose the stored variant (`--select-by throughput`), not only its settings."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PassSpec:
    """One pass applied to build a variant: its name and its settings."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # settings is a dict; specs key the build cache
        return hash((self.name, json.dumps(self.settings, sort_keys=True, default=str)))

    def label(self) -> str:
        if not self.settings:
            return self.name
        args = ",".join(f"{k}={v}" for k, v in sorted(self.settings.items()))
        return f"{self.name}({args})"


@dataclass(frozen=True)
class VariantMetrics:
    """What was measured for one variant on one profile."""

    latency_p50_ms: float
    latency_p95_ms: float
    throughput_per_s: float
    size_bytes: int
    compressed_size_bytes: int
    quality: float  # accuracy, or mean cosine to the reference
    quality_min: float | None  # minimum cosine (COSINE metric only)
    quality_metric: QualityMetric
    build_seconds: float
    latency_p50_spread_ms: float = 0.0
    """Run-to-run spread of the p50: interquartile range of the per-round p50s (0.0 in older manifests)."""
    latency_p50_rounds_ms: tuple[float, ...] = ()
    """The p50 of each measurement round, in ms, in round order (all variants of one build share the
    rounds, so two variants' round-by-round differences cancel the machine's common noise)."""
    length_cosine_min: float | None = None
    """Smallest cosine to FP32 over one probe row of every sequence length (text models only; None
    for others and older manifests), and the length where it was found, in tokens."""
    length_cosine_min_at: int | None = None
    recall_at_10: float | None = None
    """Neighbour agreement with the FP32 model on the evaluation set (embeddings only): for each
    sample, the share of its 10 nearest neighbours (cosine) that are also its 10 nearest under FP32,
    averaged. None for classifiers, sets too small, and older manifests."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["quality_metric"] = self.quality_metric.value
        return data


@dataclass(frozen=True)
class StudentTraining:
    """What a distilled student was trained for: optimiser steps and seconds, counted across resumes.
    A cached student trained longer than a build asks for is reused as it is, so this, not the
    `distil` pass's `time_s`, says what the variant learnt."""

    steps: int
    seconds: float

    def describe(self) -> str:
        return f"trained {self.steps:,} steps in {self.seconds:.0f} s"


@dataclass(frozen=True)
class Variant:
    """A built candidate: its lineage, its artefact and (once measured) its metrics."""

    id: str
    parent_id: str | None
    passes: tuple[PassSpec, ...]
    artefact: Path
    precision: Precision
    intra_op_threads: int
    metrics: VariantMetrics | None = None
    format: str = "onnx"  # of the artefact file
    runtime: str = "onnxruntime"  # that measures it, and serves it
    runtime_settings: tuple[tuple[str, str], ...] = ()
    """Session settings the runtime opens it with (OpenVINO: CPU properties), as sorted pairs."""
    batch_invariant: bool | None = None
    """Whether a row gets the same answer alone and in a padded batch (None: not measured)."""
    training: StudentTraining | None = None
    """For a distilled student: the training it had (None for a variant of the model itself)."""

    @property
    def model_files(self) -> tuple[Path, ...]:
        """Every file of the model: `artefact` and the files beside it its format needs."""
        return model_files(self.artefact, self.format)

    def describe(self) -> str:
        """The passes after the export and the session settings, e.g. 'graph_optimise ->
        quantise_dynamic(per_channel=True)' or 'convert_openvino [INFERENCE_PRECISION_HINT=bf16]'."""
        # An export is named only when it does more than export (TorchScript's int8_dynamic).
        steps = [self._label(p) for p in self.passes if not p.name.startswith("export_") or p.settings]
        text = " -> ".join(steps) or "fp32 export"
        if self.runtime_settings:
            text += " [" + ", ".join(f"{k}={v}" for k, v in self.runtime_settings) + "]"
        return text

    def _label(self, spec: PassSpec) -> str:
        if spec.name == "distil" and self.training is not None:
            return f"{spec.label()} {{{self.training.describe()}}}"
        return spec.label()
