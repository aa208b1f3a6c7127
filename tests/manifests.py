"""Manifests for tests that need one without a build."""

from __future__ import annotations

from optimise.artefact import (
    Manifest,
    ModelKind,
    PassRecord,
    SourceRecord,
    TensorSignature,
    VariantRecord,
)
from optimise.profiles import get_profile
from optimise.types import Constraints, Precision, QualityMetric


def small_manifest(name: str, files: dict[str, str]) -> Manifest:
    """A complete manifest of a one-candidate FP32 build, for versions made without a build."""
    selected = VariantRecord("v0", None, (PassRecord("export_onnx"),), Precision.FP32, 1, None, True)
    return Manifest(
        name=name,
        created_at="2026-01-01T00:00:00+00:00",
        source=SourceRecord("tests:fake", "a fake version", QualityMetric.ACCURACY),
        kind=ModelKind.TENSOR,
        model_file="model.onnx",
        inputs=(TensorSignature("x", "float32", ("batch", 4)),),
        outputs=(TensorSignature("y", "float32", ("batch", 2)),),
        profile=get_profile("cpu"),
        constraints=Constraints(),
        reference_quality=1.0,
        selected=selected,
        candidates=(selected,),
        dropped_candidates=(),
        calibration_fidelity=None,
        build_seconds=0.0,
        library_versions={},
        files=files,
    )
