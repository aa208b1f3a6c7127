import copy
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import bentoml
import numpy as np
import pytest
from builds import build, openvino_int8_build, with_more_calibration_rows
from test_build import build_tiny
from tiny_models import make_tiny_bundle

from optimise import staging, store
from optimise.build import BuildResult
from optimise.errors import StoreError
from optimise.runtimes.openvino_session import OpenVinoSession
from optimise.runtimes.ort_session import OnnxSession
from optimise.space import SearchSpace


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
    assert manifest.selected.id == built.winner.id == model.info.labels["variant"]
    assert len(manifest.candidates) == len(built.variants)
    assert set(manifest.files) >= {"model.onnx", "reference.npz", "report/report.md"}
    assert manifest.library_versions["onnxruntime"]
    assert manifest.inputs[0].name == "features"
    assert store.verify(model) == []
    with np.load(root / "reference.npz") as reference:
        assert reference["input__features"].shape[0] == reference["output"].shape[0] == 64


@pytest.fixture(scope="module")
def built_openvino(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    bundle = with_more_calibration_rows(make_tiny_bundle())
    bundle.name = f"tiny-ov-{uuid.uuid4().hex[:8]}"
    return openvino_int8_build(bundle, tmp_path_factory.mktemp("build-ov"))


def test_an_openvino_version_stores_and_exports_both_ir_files(
    built_openvino: BuildResult, tmp_path: Path
) -> None:
    tag = store.save(built_openvino, "tiny_models:build")
    stored = store.artefact(store.get_model(tag))
    manifest = stored.manifest
    assert manifest.model_file == "model.xml"
    assert [p.name for p in stored.model_files] == ["model.xml", "model.bin"]
    assert {"model.xml", "model.bin"} <= set(manifest.files)  # both hashed
    assert (manifest.selected.format, manifest.selected.runtime) == ("openvino", "openvino")
    assert manifest.selected.runtime_version and manifest.library_versions["nncf"]
    assert manifest.selected.runtime_settings == {"INFERENCE_PRECISION_HINT": "f32"}
    assert manifest.selected.batch_invariant is True
    assert manifest.inputs[0].name == "features"
    assert store.verify(store.get_model(tag)) == []
    written = store.export(tag, tmp_path / "out")
    assert {p.name for p in written} == {
        "model.xml",
        "model.bin",
        "manifest.json",
        "reference.npz",
        "USAGE.md",
    }
    exported = OpenVinoSession(tmp_path / "out" / "model.xml").run(built_openvino.bundle.latency_inputs)[0]
    with np.load(stored.reference_path) as reference:
        assert reference["output"].shape[1] == exported.shape[1] == 4


def test_a_missing_weights_file_breaks_an_openvino_version(built_openvino: BuildResult) -> None:
    tag = store.save(built_openvino, "tiny_models:build")
    model = store.get_model(tag)
    (Path(model.path) / "model.bin").unlink()
    assert store.verify(model) == ["model.bin"]


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
    assert {p.name for p in written} == {"model.onnx", "manifest.json", "reference.npz", "USAGE.md"}
    assert "ort.InferenceSession('model.onnx')" in (tmp_path / "out" / "USAGE.md").read_text()
    session = OnnxSession(tmp_path / "out" / "model.onnx")
    outputs = session.run(built.bundle.latency_inputs)[0]
    assert outputs.shape == (1, 4)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["name"] == built.bundle.name


def test_export_never_replaces_a_users_files_unless_told_to(built: BuildResult, tmp_path: Path) -> None:
    # It wrote over any model.onnx, manifest.json... already in the directory, without a word.
    tag = store.save(built, "tiny_models:build")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the user's own model")
    (out / "notes.txt").write_text("kept")
    with pytest.raises(StoreError, match=r"already has model\.onnx: choose another directory, or overwrite"):
        store.export(tag, out)
    assert (out / "model.onnx").read_bytes() == b"the user's own model"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "notes.txt"]  # nothing half-written
    store.export(tag, out, overwrite=True)
    assert (out / "model.onnx").read_bytes() != b"the user's own model" and (out / "notes.txt").is_file()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError, match="a-file: it is a file, not a directory"):
        store.export(tag, tmp_path / "a-file", overwrite=True)
    (tmp_path / "folder" / "model.onnx").mkdir(parents=True)  # it was written inside, at folder/model.onnx/
    with pytest.raises(StoreError, match=r"model\.onnx in it is a directory"):
        store.export(tag, tmp_path / "folder", overwrite=True)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "manifest.json").symlink_to(out / "notes.txt")
    store.export(tag, tmp_path / "linked", overwrite=True)
    assert (out / "notes.txt").read_text() == "kept"  # the link was replaced, not written through


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


# --- a version appears whole ----------------------------------------------------------------------


def test_a_version_is_written_aside_and_appears_in_the_store_only_complete(
    built: BuildResult, private_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Path, list[str]]] = []
    real_report = store.write_report

    def report_and_look(result: BuildResult, target: Path) -> None:
        real_report(result, target)
        seen.append((target.parent, [v.tag for v in store.versions()]))

    monkeypatch.setattr(store, "write_report", report_and_look)
    tag = store.save(built, "tiny_models:build")
    ((staged, listed_meanwhile),) = seen
    assert staged.parent == staging.staging_dir() and listed_meanwhile == []
    assert not staged.exists() and list(staging.staging_dir().iterdir()) == []
    (saved,) = store.versions()
    assert saved.tag == tag and saved.ok
    assert (private_store / built.bundle.name / "latest").read_text() == tag.split(":")[1]


def test_a_failure_while_saving_leaves_nothing_in_the_store_or_the_staging_area(
    built: BuildResult, private_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_report(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_report", broken_report)
    with pytest.raises(StoreError, match="disk full"):
        store.save(built, "tiny_models:build")
    assert store.versions() == [] and list(staging.staging_dir().iterdir()) == []


def test_an_invalid_model_name_is_a_store_error(built: BuildResult, private_store: Path) -> None:
    built_copy = copy.copy(built)
    built_copy.bundle = copy.copy(built.bundle)
    built_copy.bundle.name = "Not A Name!"
    with pytest.raises(StoreError, match="invalid model name"):
        store.save(built_copy, "tiny_models:build")


# --- broken versions --------------------------------------------------------------------------------


@pytest.fixture
def three(built: BuildResult, private_store: Path) -> list[str]:
    """Three versions of the tiny model in a private store, oldest first."""
    return [store.save(built, "tiny_models:build") for _ in range(3)]


def break_yaml(tag: str) -> None:
    name, version = tag.split(":")
    (store.store_dir() / name / version / "model.yaml").write_text("name: [unclosed\n")


def test_a_broken_version_is_refused_with_the_reason_and_the_others_still_load(
    three: list[str], tmp_path: Path
) -> None:
    break_yaml(three[1])
    with pytest.raises(StoreError, match=r"is broken: invalid YAML in model\.yaml at line \d"):
        store.get_model(three[1])
    with pytest.raises(StoreError, match="is broken"):
        store.export(three[1], tmp_path / "out")
    assert [str(m.tag) for m in store.list_models()] == [three[0], three[2]]
    assert store.verify(store.get_model(three[2])) == []


def test_a_bare_name_skips_broken_versions_and_says_which(
    three: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    name = three[0].split(":")[0]
    assert store.resolve(name) == three[2]  # nothing recorded: the newest
    break_yaml(three[2])
    Path(store.get_model(three[1]).path, "manifest.json").unlink()
    assert store.resolve(name) == store.resolve(f"{name}:latest") == three[0]
    assert three[2].split(":")[1] in caplog.text and three[1].split(":")[1] in caplog.text
    assert "incomplete: no manifest.json" in caplog.text
    break_yaml(three[0])
    with pytest.raises(StoreError, match="no usable version"):
        store.resolve(name)


def test_a_tag_with_a_version_resolves_to_itself_and_prefixes_are_expanded_on_get(
    three: list[str],
) -> None:
    assert store.resolve(three[0]) == three[0]
    assert store.resolve("any:thing") == "any:thing"
    name, version = three[0].split(":")
    assert str(store.get_model(f"{name}:{version[:-2]}").tag) == three[0]
    with pytest.raises(StoreError, match="no model"):
        store.get_model(f"{name}:zzzz")
    with pytest.raises(StoreError, match="invalid model tag"):
        store.resolve("bad tag:")


# --- the live record ---------------------------------------------------------------------------------


def test_the_recorded_live_version_wins_over_the_newest(three: list[str]) -> None:
    name, version = three[0].split(":")
    assert store.live_version(name) is None
    assert store.record_live(name, version[:6]) == three[0]  # a unique prefix is expanded
    assert store.live_version(name) == version
    assert store.resolve(name) == three[0]


def test_the_live_choice_survives_a_restart(three: list[str], private_store: Path) -> None:
    name, version = three[1].split(":")
    store.record_live(name, version)
    code = f"from optimise import store; print(store.resolve({name!r}))"
    env = dict(os.environ, BENTOML_HOME=str(private_store.parent))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120
    )
    assert done.stdout.strip().splitlines()[-1] == three[1]


def test_a_broken_live_version_falls_back_to_the_newest_usable_one(
    three: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    name, version = three[1].split(":")
    store.record_live(name, version)
    break_yaml(three[1])
    assert store.resolve(name) == three[2]
    assert f"{three[1]}, recorded as live, is not usable" in caplog.text


def test_only_a_usable_stored_version_can_be_recorded_as_live(three: list[str]) -> None:
    name, version = three[2].split(":")
    break_yaml(three[2])
    with pytest.raises(StoreError, match="is broken"):
        store.record_live(name, version)
    with pytest.raises(StoreError, match="no model"):
        store.record_live(name, "nosuchversion")
    with pytest.raises(StoreError, match="invalid model tag"):
        store.record_live(name, "")
    assert store.live_version(name) is None


def _run_plain(script: str, cwd: Path) -> str:
    """`script` in a fresh interpreter that imports no leanserve module: what a user would run."""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("runtime", ["torchscript", "litert"])
def test_torchscript_and_tflite_versions_export_files_their_runtime_loads(
    runtime: str, tmp_path: Path
) -> None:
    bundle = with_more_calibration_rows(make_tiny_bundle())
    bundle.name = f"tiny-{runtime}-{uuid.uuid4().hex[:8]}"
    (tmp_path / "build").mkdir()
    result = build(
        bundle,
        SearchSpace(runtimes=(runtime,)),
        tmp_path / "build",
        runtime,
        profile="edge" if runtime == "litert" else "cpu",
    )
    tag = store.save(result, "tiny_models:build")
    stored = store.artefact(store.get_model(tag))
    assert stored.manifest.selected.runtime == runtime and stored.manifest.selected.runtime_version
    written = {p.name for p in store.export(tag, tmp_path / "out")}
    np.save(tmp_path / "out" / "features.npy", bundle.eval_inputs["features"][:3])
    if runtime == "torchscript":
        assert written == {"model.pt", "manifest.json", "reference.npz", "USAGE.md"}
        script = (
            "import numpy as np, torch\n"
            "m = torch.jit.load('model.pt')\n"
            "print(m(torch.from_numpy(np.load('features.npy'))).argmax(1).tolist())"
        )
    else:
        assert written == {"model.tflite", "model.io.json", "manifest.json", "reference.npz", "USAGE.md"}
        script = (
            "import numpy as np\n"
            "from ai_edge_litert.interpreter import Interpreter\n"
            "run = Interpreter(model_path='model.tflite').get_signature_runner('serving_default')\n"
            "rows = np.load('features.npy')\n"
            "print([int(run(args_0=rows[i : i + 1])['output_0'].argmax()) for i in range(3)])"
        )
    note = (tmp_path / "out" / "USAGE.md").read_text()
    snippet = note.split("```python\n", 1)[1].split("```", 1)[0]
    assert "outputs" in _run_plain(snippet + "print('outputs', len(outputs))\n", tmp_path / "out")
    expected = bundle.run_torch({"features": bundle.eval_inputs["features"][:3]})[0].argmax(1).tolist()
    assert _run_plain(script, tmp_path / "out").strip() == str(expected)


def test_a_version_the_closed_loop_refused_is_listed_so_and_never_the_newest_fallback(
    make_version: Callable[..., Path],
) -> None:
    older, newer = make_version("digits"), make_version("digits")
    store.mark_refused("digits", newer.name, "refused by the closed loop: shadow agreement 0.5000 < 0.98")
    states = {v.version: v.refused for v in store.versions("digits")}
    assert states == {
        older.name: None,
        newer.name: "refused by the closed loop: shadow agreement 0.5000 < 0.98",
    }
    assert store.resolve("digits") == f"digits:{older.name}"  # the newest usable one that was not refused
    assert store.get_model(f"digits:{newer.name}")  # named explicitly, it still loads
    store.record_live("digits", newer.name)  # a promotion overrules the refusal
    assert store.resolve("digits") == f"digits:{newer.name}"
    (newer / "leanserve-refused.json").write_text("{torn")
    assert {v.version: v.refused for v in store.versions("digits")}[newer.name] == (
        "refused (unreadable leanserve-refused.json)"
    )
    with pytest.raises(StoreError, match="no model 'digits:nosuch'"):
        store.mark_refused("digits", "nosuch", "x")
