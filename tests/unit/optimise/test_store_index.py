import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bentoml
import pytest

from optimise.errors import StoreError
from optimise.store_index import list_versions, read_version, store_dir

MakeVersion = Callable[..., Path]  # the `make_version` fixture (tests/unit/optimise/conftest.py)


def test_the_store_in_use_is_the_one_bentoml_uses(private_store: Path) -> None:
    assert store_dir() == private_store


def test_a_complete_version_is_ok(make_version: MakeVersion) -> None:
    folder = make_version("digits")
    (found,) = list_versions()
    assert found.ok and found.problem is None and found.path == folder
    assert found.tag == f"digits:{folder.name}" and found.model is not None


def _edit_manifest(folder: Path, change: Callable[[dict[str, Any]], object]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: (f / "model.yaml").write_text("name: [unclosed\n"), "invalid YAML in model.yaml at line"),
        (lambda f: (f / "model.yaml").unlink(), "no model.yaml"),
        (lambda f: (f / "model.yaml").write_text("- a list\n"), "cannot read model.yaml"),
        (lambda f: (f / "model.yaml").write_text("labels: {}\n"), "cannot read model.yaml: KeyError"),
        (lambda f: (f / "model.yaml").write_bytes(b"\xff\xfe\x00"), "cannot read model.yaml"),
        (lambda f: ((f / "model.yaml").unlink(), (f / "model.yaml").mkdir()), "IsADirectoryError"),
        (lambda f: (f / "manifest.json").unlink(), "incomplete: no manifest.json"),
        (lambda f: (f / "manifest.json").write_text("{"), "incomplete: cannot read manifest.json"),
        (lambda f: (f / "manifest.json").write_text("[]"), "incomplete: manifest.json has no table"),
        (lambda f: (f / "model.onnx").unlink(), "incomplete: missing model.onnx"),
        (
            lambda f: _edit_manifest(f, lambda m: m["selected"].pop("precision")),
            "'selected.precision' is missing",
        ),
        (lambda f: _edit_manifest(f, lambda m: m.update(kind="audio")), "field 'kind' must be one of"),
    ],
)
def test_a_damaged_version_is_broken_with_the_reason_and_the_others_still_list(
    make_version: MakeVersion, damage: object, reason: str
) -> None:
    good = make_version("digits")
    bad = make_version("digits")
    other_model = make_version("minilm")
    damage(bad)  # type: ignore[operator]
    states = {v.path: v for v in list_versions()}
    assert states[good].ok and states[other_model].ok
    assert not states[bad].ok and reason in str(states[bad].problem)
    assert {v.path for v in list_versions("digits")} == {good, bad}


def test_bentoml_itself_fails_on_the_first_damaged_version(make_version: MakeVersion) -> None:
    """Why leanserve reads each version itself."""
    (make_version("digits") / "model.yaml").write_text("name: [unclosed\n")
    with pytest.raises(Exception):  # noqa: B017  (a YAML parser error from deep inside BentoML)
        bentoml.models.list()
    assert len(list_versions()) == 1


def test_a_model_yaml_naming_another_version_is_broken(make_version: MakeVersion) -> None:
    first, second = make_version("digits"), make_version("digits")
    (second / "model.yaml").write_text((first / "model.yaml").read_text())
    assert f"names digits:{first.name}" in str(read_version(second).problem)  # type: ignore[union-attr]


def test_versions_of_other_tools_folders_and_files_that_are_not_versions_are_left_out(
    make_version: MakeVersion, private_store: Path
) -> None:
    ours = make_version("digits")
    make_version("digits", owner="someone-else")
    (private_store / "digits" / "latest").write_text(ours.name)
    (private_store / "digits" / ".hidden").mkdir()
    (private_store / ".not-a-model").mkdir()
    (private_store / "leanserve-live.json").write_text("{}")
    assert [v.path for v in list_versions()] == [ours]


def test_a_name_never_stored_lists_nothing_and_an_invalid_name_is_an_error(
    make_version: MakeVersion,
) -> None:
    make_version("digits")
    assert list_versions("never-stored") == []
    assert [v.name for v in list_versions("DIGITS")] == ["digits"]
    with pytest.raises(StoreError, match="invalid model name"):
        list_versions("bad name")


def test_a_version_without_a_readable_date_sorts_first(make_version: MakeVersion) -> None:
    older, newer = make_version("digits"), make_version("digits")
    (newer / "model.yaml").write_text(":")
    assert [v.path for v in list_versions("digits")] == [newer, older]


def test_a_date_without_a_time_zone_still_sorts(make_version: MakeVersion) -> None:
    older, newer = make_version("digits"), make_version("digits")
    text = (newer / "model.yaml").read_text()
    (newer / "model.yaml").write_text(text.replace("+00:00", ""))
    assert [v.path for v in list_versions("digits")] == [older, newer]
    assert all(v.ok for v in list_versions("digits"))
