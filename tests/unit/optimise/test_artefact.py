"""The stored artefact's one owner: the manifest and the reference sample written and read back typed."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_build import build_tiny

from optimise import store
from optimise.artefact import (
    MANIFEST_FILE,
    ArtefactError,
    Manifest,
    ModelKind,
    ReferenceData,
    StoredArtefact,
    manifest_name,
    read_manifest,
)
from optimise.types import HardwareProfile, Precision, StudentTraining


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> StoredArtefact:
    result = build_tiny(tmp_path_factory.mktemp("build"))
    result.bundle.name = f"tiny-{uuid.uuid4().hex[:8]}"
    return store.artefact(store.get_model(store.save(result, "tiny_models:build")))


@pytest.fixture
def written(stored: StoredArtefact) -> dict[str, Any]:
    return json.loads((stored.root / MANIFEST_FILE).read_text(encoding="utf-8"))


def test_a_stored_manifest_reads_back_typed(stored: StoredArtefact) -> None:
    manifest = stored.manifest
    assert isinstance(manifest.profile, HardwareProfile) and manifest.profile.name == "cpu"
    assert isinstance(manifest.selected.precision, Precision)
    assert (manifest.selected.format, manifest.selected.runtime) == ("onnx", "onnxruntime")
    assert manifest.kind is ModelKind.TENSOR and manifest.tokenizer is None
    assert stored.model_path.is_file() and stored.tokenizer_path is None
    assert manifest.selected.metrics is not None and manifest.selected.metrics.size_bytes > 0
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_a_students_training_round_trips_and_an_older_manifest_has_none(written: dict[str, Any]) -> None:
    assert Manifest.from_json(written).selected.training is None  # the model itself, no student
    written["selected"]["training"] = {"steps": 2211, "seconds": 900.4}
    manifest = Manifest.from_json(written)
    assert manifest.selected.training == StudentTraining(2211, 900.4)
    assert Manifest.from_json(manifest.to_json()) == manifest
    del written["selected"]["training"]  # written before the field existed
    assert Manifest.from_json(written).selected.training is None


def test_an_older_text_manifest_derives_kind_tokenizer_and_runtime(written: dict[str, Any]) -> None:
    """Schema 1 as written before `kind`, `tokenizer` and a variant's format / runtime existed."""
    older = copy.deepcopy(written)
    for key in ("kind", "tokenizer"):
        older.pop(key)
    for variant in (older["selected"], *older["candidates"]):
        variant.pop("format")
        variant.pop("runtime")
    older["source"]["max_length"] = "96"
    older["files"]["preprocessing/tokenizer.json"] = "0" * 64
    manifest = Manifest.from_json(older)
    assert manifest.kind is ModelKind.EMBEDDING
    assert manifest.tokenizer is not None and manifest.tokenizer.max_tokens == 96
    assert manifest.selected.runtime == "onnxruntime"
    assert "max_length" not in manifest.source.extra


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: m["selected"].pop("precision"), "field 'selected.precision' is missing"),
        (
            lambda m: m["selected"].update(intra_op_threads="two"),
            "'selected.intra_op_threads' must be an integer",
        ),
        (lambda m: m["selected"].update(precision="int3"), "'selected.precision' must be one of"),
        (lambda m: m["profile"].pop("execution_providers"), "field 'profile.execution_providers' is missing"),
        (lambda m: m["candidates"][0].pop("id"), "field 'candidates[0].id' is missing"),
        (lambda m: m.update(source=[]), "field 'source' must be a JSON object"),
        (lambda m: m["constraints"].update(min_cosine=7), "field 'constraints'"),
        (
            lambda m: m["selected"].update(training={"steps": "many"}),
            "'selected.training.steps' must be an integer",
        ),
    ],
)
def test_a_malformed_manifest_names_the_field(written: dict[str, Any], damage: Any, message: str) -> None:
    damage(written)
    with pytest.raises(ArtefactError, match=r"manifest\.json") as raised:
        Manifest.from_json(written)
    assert message in str(raised.value)


def test_a_store_version_with_a_malformed_manifest_is_refused_naming_it(
    stored: StoredArtefact, written: dict[str, Any], tmp_path: Path
) -> None:
    written["selected"].pop("id")
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(written), encoding="utf-8")
    with pytest.raises(ArtefactError, match=r"'selected\.id' is missing"):
        read_manifest(tmp_path)
    assert manifest_name(tmp_path) == stored.manifest.name  # the name alone still reads
    assert manifest_name(tmp_path / "nowhere") is None


def test_reference_data_round_trips_and_reads_strictly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = ReferenceData(
        {"pixels": rng.random((5, 64), dtype=np.float32)},
        rng.random((5, 10), dtype=np.float32),
        np.arange(5),
        {"n_tokens": np.arange(5, dtype=np.float64)},
    )
    data.save(tmp_path / "reference.npz")
    back = ReferenceData.load(tmp_path / "reference.npz")
    assert back.outputs is not None and back.labels is not None
    np.testing.assert_array_equal(back.inputs["pixels"], data.inputs["pixels"])
    np.testing.assert_array_equal(back.outputs, np.asarray(data.outputs))
    np.testing.assert_array_equal(back.features["n_tokens"], np.arange(5))
    assert len(back.head(2).inputs["pixels"]) == 2

    np.savez(tmp_path / "other.npz", output=np.zeros((3, 2)), x=np.zeros(3))
    assert ReferenceData.load(tmp_path / "other.npz").outputs is not None  # other arrays ignored
    with pytest.raises(ArtefactError, match="unexpected arrays 'x'"):
        ReferenceData.load(tmp_path / "other.npz", allow_other=False)
    np.savez(tmp_path / "ragged.npz", output=np.zeros((3, 2)), input__x=np.zeros((4, 2)))
    with pytest.raises(ArtefactError, match="arrays differ in rows: input__x 4, output 3"):
        ReferenceData.load(tmp_path / "ragged.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ArtefactError, match=r"cannot read it as \.npz"):
        ReferenceData.load(tmp_path / "text.npz")
