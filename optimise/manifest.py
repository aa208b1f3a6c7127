"""What a build records in its artefact's manifest: lineage, settings, metrics, hashes.

`build_manifest` turns a `BuildResult` into the typed `optimise.artefact.Manifest`; the
artefact package owns how it is written and read.
"""

from __future__ import annotations

import importlib.metadata
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from optimise.artefact import (
    MANIFEST_FILE,
    TOKENIZER_FILE,
    DroppedCandidate,
    Manifest,
    ModelKind,
    PassRecord,
    SourceRecord,
    TensorSignature,
    TokenizerRecord,
    VariantRecord,
    sha256_of,
)
from optimise.runtimes import open_session
from optimise.types import Variant

if TYPE_CHECKING:
    from optimise.build import BuildResult

# The package whose version is a runtime's version, where the two names differ.
RUNTIME_PACKAGES = {"torchscript": "torch", "litert": "ai-edge-litert"}

_LIBRARIES = (
    "torch",
    "ai-edge-litert",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "optimum",
    "optimum-onnx",
    "transformers",
    "torch-pruning",
    "optuna",
)


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_of(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    installed = {name: _package_version(name) for name in _LIBRARIES}
    return versions | {name: version for name, version in installed.items() if version}


def _variant_record(variant: Variant, result: BuildResult) -> VariantRecord:
    verdict = result.selection.verdicts.get(variant.id)
    return VariantRecord(
        id=variant.id,
        parent_id=variant.parent_id,
        passes=tuple(PassRecord(p.name, p.settings) for p in variant.passes),
        precision=variant.precision,
        intra_op_threads=variant.intra_op_threads,
        metrics=variant.metrics,
        feasible=verdict.feasible if verdict else None,
        failed_constraints=tuple(verdict.failed) if verdict else (),
        pareto=variant.id in result.selection.pareto_ids,
        format=variant.format,
        runtime=variant.runtime,
        runtime_version=_package_version(RUNTIME_PACKAGES.get(variant.runtime, variant.runtime)),
        runtime_settings=dict(variant.runtime_settings),
        batch_invariant=bool(variant.batch_invariant),
        training=variant.training,
    )


def _package_version(package: str) -> str:
    """The installed version of a runtime's package (each runtime here is named as its package)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _signatures(infos: object) -> tuple[TensorSignature, ...]:
    return tuple(TensorSignature(i.name, i.dtype.__name__, tuple(i.shape)) for i in infos)  # type: ignore[attr-defined]


def build_manifest(result: BuildResult, artefact_dir: Path, model_file: str, source: str) -> Manifest:
    """The manifest of the artefact written in `artefact_dir` (every file there is hashed)."""
    bundle = result.bundle
    winner = result.winner
    session = open_session(winner.runtime, artefact_dir / model_file, settings=dict(winner.runtime_settings))
    files = file_hashes(artefact_dir)
    extra = dict(bundle.extra)
    max_length = extra.pop("max_length", None)
    tokenizer = None
    if TOKENIZER_FILE in files:
        if max_length is None:
            raise ValueError(f"{bundle.name}: a text source must say its max_length")
        tokenizer = TokenizerRecord(TOKENIZER_FILE, int(max_length))
    return Manifest(
        name=bundle.name,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=SourceRecord(
            spec=source,
            description=bundle.description,
            quality_metric=bundle.quality_metric,
            hf_library=bundle.hf_library,
            transformer_type=bundle.transformer_type,
            extra=extra,
        ),
        kind=ModelKind.EMBEDDING if tokenizer else ModelKind.TENSOR,
        model_file=model_file,
        inputs=_signatures(session.inputs),
        outputs=_signatures(session.outputs),
        profile=result.profile,
        constraints=result.constraints,
        reference_quality=result.reference.value,
        selected=_variant_record(result.winner, result),
        candidates=tuple(_variant_record(v, result) for v in result.variants),
        dropped_candidates=tuple(
            DroppedCandidate(tuple(p.label() for p in c.recipe.passes), c.failure or "")
            for c in result.failures
        ),
        calibration_fidelity=result.calibration_fidelity(),
        build_seconds=round(result.seconds, 2),
        library_versions=library_versions(),
        files=files,
        tokenizer=tokenizer,
        serving=result.serving,
    )
