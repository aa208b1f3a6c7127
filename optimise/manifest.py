"""The manifest stored beside every artefact: lineage, settings, metrics, hashes.

It answers "where did this model come from and how good was it" without
leanserve: every candidate's passes and metrics, the profile, the constraints,
the library versions, and the sha256 of every file in the artefact.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimise.runtime import OnnxSession
from optimise.types import Variant

if TYPE_CHECKING:
    from optimise.build import BuildResult

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
_LIBRARIES = (
    "torch",
    "onnx",
    "onnxruntime",
    "optimum",
    "optimum-onnx",
    "transformers",
    "torch-pruning",
    "optuna",
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_of(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _variant_entry(variant: Variant, result: BuildResult) -> dict[str, Any]:
    verdict = result.selection.verdicts.get(variant.id)
    return {
        "id": variant.id,
        "parent_id": variant.parent_id,
        "passes": [{"name": p.name, "settings": p.settings} for p in variant.passes],
        "precision": variant.precision.value,
        "intra_op_threads": variant.intra_op_threads,
        "metrics": variant.metrics.to_dict() if variant.metrics else None,
        "feasible": verdict.feasible if verdict else None,
        "failed_constraints": list(verdict.failed) if verdict else [],
        "pareto": variant.id in result.selection.pareto_ids,
    }


def _io_signature(model: Path) -> dict[str, list[dict[str, Any]]]:
    session = OnnxSession(model)

    def describe(infos: Any) -> list[dict[str, Any]]:
        return [{"name": i.name, "dtype": i.dtype.__name__, "shape": list(i.shape)} for i in infos]

    return {"inputs": describe(session.inputs), "outputs": describe(session.outputs)}


def build_manifest(result: BuildResult, artefact_dir: Path, model_file: str, source: str) -> dict[str, Any]:
    bundle = result.bundle
    return {
        "schema_version": SCHEMA_VERSION,
        "name": bundle.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "spec": source,
            "description": bundle.description,
            "hf_library": bundle.hf_library,
            "transformer_type": bundle.transformer_type,
            "quality_metric": bundle.quality_metric.value,
            **bundle.extra,
        },
        "model_file": model_file,
        "signature": _io_signature(artefact_dir / model_file),
        "profile": result.profile.to_dict(),
        "constraints": asdict(result.constraints),
        "reference_quality": {"metric": result.reference.metric.value, "value": result.reference.value},
        "selected": _variant_entry(result.winner, result),
        "candidates": [_variant_entry(v, result) for v in result.variants],
        "dropped_candidates": [
            {"passes": [p.label() for p in c.recipe.passes], "reason": c.failure} for c in result.failures
        ],
        "calibration_fidelity": result.calibration_fidelity(),
        "build_seconds": round(result.seconds, 2),
        "library_versions": library_versions(),
        "files": file_hashes(artefact_dir),
    }
