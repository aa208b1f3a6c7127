"""The manifest stored beside every artefact, as frozen dataclasses: lineage, settings, metrics, hashes.

It answers "where did this model come from and how good was it" without leanserve: every
candidate's passes and metrics, the profile, the constraints, the library versions, and the
sha256 of every file in the artefact. `manifest.json` is its JSON form (`Manifest.to_json` /
`Manifest.from_json`); schema 1 manifests written before `kind`, `tokenizer` and a variant's
`format` / `runtime` existed read with those fields derived (see `from_json`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from optimise.artefact.files import MANIFEST_FILE, TOKENIZER_FILE, ArtefactError, ModelKind
from optimise.errors import one_line
from optimise.types import (
    Constraints,
    HardwareProfile,
    Precision,
    QualityMetric,
    QuantisationDefaults,
    ServingChoice,
    ServingSettings,
    ServingTrial,
    StudentTraining,
    VariantMetrics,
)

SCHEMA_VERSION = 1
E = TypeVar("E")
T = TypeVar("T")
ONNX_FORMAT = "onnx"
ONNX_RUNTIME = "onnxruntime"


@dataclass(frozen=True)
class TensorSignature:
    """One input or output of the stored model file: ONNX name, numpy dtype name, shape (a str for a
    named dynamic axis)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class PassRecord:
    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantRecord:
    """One measured candidate, as stored: lineage, precision, threads, metrics, verdict; the file
    `format` it was written in and the `runtime` that measured it (and will serve it)."""

    id: str
    parent_id: str | None
    passes: tuple[PassRecord, ...]
    precision: Precision
    intra_op_threads: int
    metrics: VariantMetrics | None
    feasible: bool | None
    failed_constraints: tuple[str, ...] = ()
    pareto: bool = False
    format: str = ONNX_FORMAT
    runtime: str = ONNX_RUNTIME
    runtime_version: str = ""  # of the runtime that measured it ("" in manifests from before)
    runtime_settings: Mapping[str, str] = field(default_factory=dict)  # e.g. OpenVINO CPU properties
    batch_invariant: bool = False
    """Whether it answered a row the same alone and in a padded batch when measured (only then may a
    service batch it: dynamic int8 scales activations per call, so a row's answer would depend on its
    neighbours). Manifests from before the measurement derive it from the precision."""
    training: StudentTraining | None = None
    """A distilled student's training (steps, seconds); None for a variant of the model itself."""


@dataclass(frozen=True)
class SourceRecord:
    """Where the model came from: the source spec as given, and what the source said of itself."""

    spec: str
    description: str
    quality_metric: QualityMetric
    hf_library: str | None = None
    transformer_type: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # e.g. model_type of a transformer


@dataclass(frozen=True)
class TokenizerRecord:
    """The tokenizer stored with a text model, and the longest input (in tokens) the model was built for."""

    file: str
    max_tokens: int


@dataclass(frozen=True)
class DroppedCandidate:
    passes: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Manifest:
    name: str
    created_at: str  # ISO 8601, UTC
    source: SourceRecord
    kind: ModelKind
    model_file: str
    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]
    profile: HardwareProfile
    constraints: Constraints
    reference_quality: float  # of the FP32 reference model, in `source.quality_metric`
    selected: VariantRecord
    candidates: tuple[VariantRecord, ...]
    dropped_candidates: tuple[DroppedCandidate, ...]
    calibration_fidelity: float | None  # the winner's mean cosine to FP32 on the calibration inputs
    build_seconds: float
    library_versions: Mapping[str, str]
    files: Mapping[str, str]  # path inside the version folder -> sha256
    tokenizer: TokenizerRecord | None = None
    serving: ServingChoice | None = None  # the build's serving stage; None in older manifests or when skipped
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as manifest.json."""
        selected, *_ = _variants_json((self.selected,))
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "created_at": self.created_at,
            "kind": self.kind.value,
            "source": {
                "spec": self.source.spec,
                "description": self.source.description,
                "hf_library": self.source.hf_library,
                "transformer_type": self.source.transformer_type,
                "quality_metric": self.source.quality_metric.value,
                **self.source.extra,
            },
            "model_file": self.model_file,
            "signature": {"inputs": _signatures_json(self.inputs), "outputs": _signatures_json(self.outputs)},
            "profile": self.profile.to_dict(),
            "constraints": asdict(self.constraints),
            "reference_quality": {
                "metric": self.source.quality_metric.value,
                "value": self.reference_quality,
            },
            "tokenizer": asdict(self.tokenizer) if self.tokenizer else None,
            "selected": selected,
            "candidates": _variants_json(self.candidates),
            "dropped_candidates": [
                {"passes": list(d.passes), "reason": d.reason} for d in self.dropped_candidates
            ],
            "calibration_fidelity": self.calibration_fidelity,
            "build_seconds": self.build_seconds,
            "library_versions": dict(self.library_versions),
            "files": dict(self.files),
            "serving": self.serving.to_dict() if self.serving else None,
        }

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        """Read a manifest's JSON object. Raises ArtefactError naming the first missing or malformed field.

        Older schema-1 manifests: `kind` is derived from a stored tokenizer file, `tokenizer.max_tokens`
        from `source.max_length`, a variant's `format` / `runtime` are ONNX on ONNX Runtime.
        """
        root = _Fields(data, "")
        files = root.mapping("files")
        source = root.sub("source")
        known_source = {
            "spec",
            "description",
            "hf_library",
            "transformer_type",
            "quality_metric",
            "max_length",
        }
        source_record = SourceRecord(
            spec=source.text("spec"),
            description=source.text("description", ""),
            quality_metric=source.enum("quality_metric", QualityMetric),
            hf_library=source.optional_text("hf_library"),
            transformer_type=source.optional_text("transformer_type"),
            extra={k: str(v) for k, v in source.data.items() if k not in known_source},
        )
        tokenizer = _tokenizer(root, source, files)
        kind = root.enum("kind", ModelKind) if "kind" in root.data else None
        signature = root.sub("signature")
        return cls(
            schema_version=root.integer("schema_version"),
            name=root.text("name"),
            created_at=root.text("created_at", ""),
            source=source_record,
            kind=kind or (ModelKind.EMBEDDING if tokenizer else ModelKind.TENSOR),
            model_file=root.text("model_file"),
            inputs=tuple(_signature(s) for s in signature.items("inputs")),
            outputs=tuple(_signature(s) for s in signature.items("outputs")),
            profile=_profile(root.sub("profile")),
            constraints=root.build("constraints", Constraints),
            reference_quality=root.sub("reference_quality").number("value"),
            selected=_variant(root.sub("selected")),
            candidates=tuple(_variant(v) for v in root.items("candidates")),
            dropped_candidates=tuple(
                DroppedCandidate(tuple(str(p) for p in d.array("passes")), d.text("reason"))
                for d in root.items("dropped_candidates")
            ),
            calibration_fidelity=root.optional_number("calibration_fidelity"),
            build_seconds=root.number("build_seconds", 0.0),
            library_versions={str(k): str(v) for k, v in root.mapping("library_versions", {}).items()},
            files={str(k): str(v) for k, v in files.items()},
            tokenizer=tokenizer,
            serving=_serving(root.sub("serving")) if root.data.get("serving") is not None else None,
        )


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write `manifest` as `folder/manifest.json`; returns its path. Raises OSError."""
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_json(), indent=2, default=str), encoding="utf-8")
    return path


def read_manifest(folder: Path) -> Manifest:
    """The manifest of the version in `folder`. Raises ArtefactError when it is missing, unreadable, or
    lacks a field (named in the message)."""
    return Manifest.from_json(read_manifest_data(folder))


def files_table(data: object) -> dict[str, str]:
    """A manifest's table of files (path -> sha256) alone, from its JSON data: enough to tell whether a
    version folder is complete before the rest is read. Raises ArtefactError when the table is missing."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ArtefactError(f"{MANIFEST_FILE} has no table of files")
    return {str(k): str(v) for k, v in data["files"].items()}


def manifest_name(folder: Path) -> str | None:
    """The model name the manifest in `folder` records, None when there is no readable manifest or name
    (for a reference sample found beside it; the rest of the manifest is not checked)."""
    try:
        data = read_manifest_data(folder)
    except ArtefactError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def read_manifest_data(folder: Path) -> object:
    """The JSON data of the manifest in `folder`, unchecked (see `Manifest.from_json`, `files_table`).
    Raises ArtefactError when it is missing or is not JSON."""
    try:
        return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtefactError(f"no {MANIFEST_FILE}") from None
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"cannot read {MANIFEST_FILE}: {one_line(exc)}") from None


# -- JSON out ------------------------------------------------------------------------------------
def _signatures_json(signatures: tuple[TensorSignature, ...]) -> list[dict[str, Any]]:
    return [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in signatures]


def _variants_json(variants: tuple[VariantRecord, ...]) -> list[dict[str, Any]]:
    return [
        {
            "id": v.id,
            "parent_id": v.parent_id,
            "passes": [{"name": p.name, "settings": dict(p.settings)} for p in v.passes],
            "precision": v.precision.value,
            "intra_op_threads": v.intra_op_threads,
            "format": v.format,
            "runtime": v.runtime,
            "runtime_version": v.runtime_version,
            "runtime_settings": dict(v.runtime_settings),
            "batch_invariant": v.batch_invariant,
            "training": asdict(v.training) if v.training else None,
            "metrics": v.metrics.to_dict() if v.metrics else None,
            "feasible": v.feasible,
            "failed_constraints": list(v.failed_constraints),
            "pareto": v.pareto,
        }
        for v in variants
    ]


# -- JSON in -------------------------------------------------------------------------------------
_REQUIRED: Any = object()


class _Fields:
    """Typed reads of one JSON object; every error names the field's dotted path."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ArtefactError(f"{MANIFEST_FILE}: {path or 'the manifest'} is not a JSON object")
        self.data: dict[str, Any] = data
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _REQUIRED:
            raise ArtefactError(f"{MANIFEST_FILE}: field {self._name(key)!r} is missing")
        return default

    def _wrong(self, key: str, expected: str) -> ArtefactError:
        return ArtefactError(
            f"{MANIFEST_FILE}: field {self._name(key)!r} must be {expected}, not {self.data[key]!r:.60}"
        )

    def text(self, key: str, default: Any = _REQUIRED) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def number(self, key: str, default: Any = _REQUIRED) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(key, "a number")
        return float(value)

    def optional_flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, bool):
            raise self._wrong(key, "true or false")
        return value

    def optional_number(self, key: str) -> float | None:
        return None if self.data.get(key) is None else self.number(key)

    def integer(self, key: str, default: Any = _REQUIRED) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer")
        return value

    def enum(self, key: str, kind: type[E]) -> E:
        value = self._get(key, _REQUIRED)
        try:
            return kind(value)  # type: ignore[call-arg]
        except ValueError:
            raise self._wrong(key, f"one of {[e.value for e in kind]}") from None  # type: ignore[attr-defined]

    def mapping(self, key: str, default: Any = _REQUIRED) -> dict[str, Any]:
        value = self._get(key, default)
        if not isinstance(value, dict):
            raise self._wrong(key, "a JSON object")
        return value

    def array(self, key: str, default: Any = _REQUIRED) -> list[Any]:
        value = self._get(key, default)
        if not isinstance(value, list | tuple):  # a list in JSON; a tuple in an unwritten manifest
            raise self._wrong(key, "a list")
        return list(value)

    def sub(self, key: str) -> _Fields:
        return _Fields(self.mapping(key), self._name(key))

    def items(self, key: str) -> list[_Fields]:
        return [_Fields(item, f"{self._name(key)}[{i}]") for i, item in enumerate(self.array(key, []))]

    def build(self, key: str, kind: type[T]) -> T:
        """`kind(**the object)`, for a dataclass stored with `asdict`."""
        try:
            return kind(**self.mapping(key))
        except (TypeError, ValueError) as exc:
            raise ArtefactError(f"{MANIFEST_FILE}: field {self._name(key)!r}: {one_line(exc)}") from None


def _signature(fields: _Fields) -> TensorSignature:
    shape = tuple(d if isinstance(d, int | str) or d is None else str(d) for d in fields.array("shape"))
    return TensorSignature(fields.text("name"), fields.text("dtype"), shape)


def _variant(fields: _Fields) -> VariantRecord:
    metrics = fields.data.get("metrics")
    precision = fields.enum("precision", Precision)
    invariant = fields.optional_flag("batch_invariant")
    if invariant is None:  # written before it was measured: dynamic int8 was the one kind that is not
        invariant = precision is not Precision.INT8_DYNAMIC
    return VariantRecord(
        id=fields.text("id"),
        parent_id=fields.optional_text("parent_id"),
        passes=tuple(PassRecord(p.text("name"), p.mapping("settings", {})) for p in fields.items("passes")),
        precision=precision,
        intra_op_threads=fields.integer("intra_op_threads"),
        metrics=_metrics(fields.sub("metrics")) if metrics is not None else None,
        feasible=fields.data.get("feasible"),
        failed_constraints=tuple(str(c) for c in fields.array("failed_constraints", [])),
        pareto=bool(fields.data.get("pareto", False)),
        format=fields.text("format", ONNX_FORMAT),
        runtime=fields.text("runtime", ONNX_RUNTIME),
        runtime_version=fields.text("runtime_version", ""),
        runtime_settings={str(k): str(v) for k, v in fields.mapping("runtime_settings", {}).items()},
        batch_invariant=invariant,
        training=_training(fields.sub("training")) if fields.data.get("training") is not None else None,
    )


def _training(fields: _Fields) -> StudentTraining:
    return StudentTraining(fields.integer("steps"), fields.number("seconds"))


def _metrics(fields: _Fields) -> VariantMetrics:
    data = dict(fields.data)
    try:
        data["quality_metric"] = QualityMetric(str(data.get("quality_metric")))
        data["latency_p50_rounds_ms"] = tuple(fields.array("latency_p50_rounds_ms", []))
        return VariantMetrics(**data)
    except (TypeError, ValueError) as exc:
        raise ArtefactError(f"{MANIFEST_FILE}: field {fields.path!r}: {one_line(exc)}") from None


def _serving(fields: _Fields) -> ServingChoice:
    try:
        trials = tuple(
            ServingTrial(**{**t.data, "settings": t.build("settings", ServingSettings)})
            for t in fields.items("trials")
        )
        return ServingChoice(
            variant_id=fields.text("variant_id"),
            settings=fields.build("settings", ServingSettings),
            concurrency=fields.integer("concurrency"),
            p99_bound_ms=fields.optional_number("p99_bound_ms"),
            seconds_per_trial=fields.number("seconds_per_trial"),
            reason=fields.text("reason", ""),
            trials=trials,
            request_cpu_ms=fields.number("request_cpu_ms", 0.0),
            request_cores=fields.integer("request_cores", 0),
            select_variant=bool(fields.data.get("select_variant", False)),
        )
    except (TypeError, ValueError) as exc:
        raise ArtefactError(f"{MANIFEST_FILE}: field {fields.path!r}: {one_line(exc)}") from None


def _profile(fields: _Fields) -> HardwareProfile:
    data = dict(fields.data)
    try:
        data["execution_providers"] = tuple(fields.array("execution_providers"))
        data["precisions"] = tuple(Precision(p) for p in fields.array("precisions"))
        data["runtimes"] = tuple(fields.array("runtimes", [ONNX_RUNTIME]))
        data["runtime_notes"] = tuple(fields.array("runtime_notes", []))
        data["quantisation"] = QuantisationDefaults(**fields.mapping("quantisation", {}))
        return HardwareProfile(**data)
    except (TypeError, ValueError) as exc:
        raise ArtefactError(f"{MANIFEST_FILE}: field {fields.path!r}: {one_line(exc)}") from None


def _tokenizer(root: _Fields, source: _Fields, files: Mapping[str, Any]) -> TokenizerRecord | None:
    if root.data.get("tokenizer") is not None:
        stored = root.sub("tokenizer")
        return TokenizerRecord(stored.text("file"), stored.integer("max_tokens"))
    if TOKENIZER_FILE not in files:
        return None
    try:  # schema 1 before `tokenizer`: the source recorded the limit as a string
        return TokenizerRecord(TOKENIZER_FILE, int(source.text("max_length")))
    except ValueError:
        raise ArtefactError(f"{MANIFEST_FILE}: field 'source.max_length' must be a whole number") from None
