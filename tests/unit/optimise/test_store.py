import json
import uuid
from pathlib import Path

import bentoml
import numpy as np
import pytest
from test_build import build_tiny

from optimise import store
from optimise.build import BuildResult
from optimise.errors import StoreError
from optimise.runtime import OnnxSession


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    result = build_tiny(tmp_path_factory.mktemp("build"))
    result.bundle.name = f"tiny-{uuid.uuid4().hex[:8]}"  # one model name per test module
    return result


def test_saved_version_holds_model_manifest_reference_and_report(built: BuildResult) -> None:
    tag = store.save(built, "tiny_models:build")
    model = store.get_model(tag)
    root = Path(model.path)
    for name in ("model.onnx", "manifest.json", "reference.npz", "report/report.md", "report/pareto.png"):
        assert (root / name).is_file(), name
    manifest = store.read_manifest(model)
    assert manifest["selected"]["id"] == built.winner.id == model.info.labels["variant"]
    assert len(manifest["candidates"]) == len(built.variants)
    assert set(manifest["files"]) >= {"model.onnx", "reference.npz", "report/report.md"}
    assert manifest["library_versions"]["onnxruntime"]
    assert manifest["signature"]["inputs"][0]["name"] == "features"
    assert store.verify(model) == []
    with np.load(root / "reference.npz") as reference:
        assert reference["input__features"].shape[0] == reference["output"].shape[0] == 64


def test_versions_accumulate_and_are_listed(built: BuildResult) -> None:
    first = store.save(built, "tiny_models:build")
    second = store.save(built, "tiny_models:build")
    tags = [str(m.tag) for m in store.list_models(built.bundle.name)]
    assert first in tags and second in tags and first != second


def test_a_name_never_stored_lists_nothing(built: BuildResult) -> None:
    store.save(built, "tiny_models:build")  # the store exists, the name does not
    assert store.list_models(f"never-{uuid.uuid4().hex[:8]}") == []


def test_export_writes_a_self_contained_copy(built: BuildResult, tmp_path: Path) -> None:
    tag = store.save(built, "tiny_models:build")
    written = store.export(tag, tmp_path / "out")
    assert {p.name for p in written} == {"model.onnx", "manifest.json", "reference.npz"}
    session = OnnxSession(tmp_path / "out" / "model.onnx")
    outputs = session.run(built.bundle.latency_inputs)[0]
    assert outputs.shape == (1, 4)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["name"] == built.bundle.name


def test_tampered_artefact_is_detected_and_not_exported(built: BuildResult, tmp_path: Path) -> None:
    tag = store.save(built, "tiny_models:build")
    model = store.get_model(tag)
    Path(model.path, "model.onnx").write_bytes(b"tampered")
    assert store.verify(model) == ["model.onnx"]
    with pytest.raises(StoreError, match=r"model\.onnx"):
        store.export(tag, tmp_path / "out")


def test_a_failure_while_saving_leaves_no_version(
    built: BuildResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {str(m.tag) for m in bentoml.models.list()}

    def broken_report(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_report", broken_report)
    with pytest.raises(StoreError, match="disk full"):
        store.save(built, "tiny_models:build")
    assert {str(m.tag) for m in bentoml.models.list()} == before


def test_unknown_and_malformed_tags_are_user_errors() -> None:
    with pytest.raises(StoreError, match="no model"):
        store.get_model("does-not-exist:v1")
    with pytest.raises(StoreError):
        store.get_model("bad tag with spaces")
