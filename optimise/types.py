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


class QualityMetric(StrEnum):
    """How a candidate's quality is scored against the reference model."""

    ACCURACY = "accuracy"  # labelled data: share of correct argmax predictions
    COSINE = "cosine"  # no labels: cosine similarity of outputs to the FP32 reference


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["precisions"] = [p.value for p in self.precisions]
        return data


@dataclass(frozen=True)
class Constraints:
    """The accuracy budget and limits a selected variant must respect."""

    max_accuracy_drop: float = 0.005  # absolute, 0.005 = 0.5 percentage points
    min_cosine: float = 0.99
    max_size_bytes: int | None = None
    latency_slo_ms: float | None = None
    latency_tolerance: float = 0.10
    """Variants within this share of the fastest p50 count as equally fast; the smallest of them wins."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.latency_tolerance < 1.0:
            raise ValueError(f"latency_tolerance must be in [0, 1), got {self.latency_tolerance}")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError(f"max_accuracy_drop must be in [0, 1], got {self.max_accuracy_drop}")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1], got {self.min_cosine}")
        if self.max_size_bytes is not None and self.max_size_bytes <= 0:
            raise ValueError(f"max_size_bytes must be positive, got {self.max_size_bytes}")
        if self.latency_slo_ms is not None and self.latency_slo_ms <= 0:
            raise ValueError(f"latency_slo_ms must be positive, got {self.latency_slo_ms}")


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["quality_metric"] = self.quality_metric.value
        return data


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

    def describe(self) -> str:
        """The passes after the export, e.g. 'graph_optimise -> quantise_dynamic(per_channel=True)'."""
        steps = [p.label() for p in self.passes if not p.name.startswith("export_")]
        return " -> ".join(steps) or "fp32 export"
