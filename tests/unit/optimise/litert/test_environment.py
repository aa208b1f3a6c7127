"""The converter environment: found, made on first use, or reported with the command that makes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimise.errors import ConfigError
from optimise.litert import environment


def test_the_location_follows_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(environment.ENV_VARIABLE, str(tmp_path / "conv"))
    assert environment.environment_dir() == tmp_path / "conv"
    monkeypatch.delenv(environment.ENV_VARIABLE)
    assert environment.environment_dir().name == f"litert-torch-{environment.LITERT_TORCH_VERSION}"


def test_a_missing_environment_names_the_command_that_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(environment.ENV_VARIABLE, str(tmp_path / "conv"))
    with pytest.raises(
        ConfigError, match=r"make it with: python3 -m venv .*/conv && .*litert-torch==0\.10\.0"
    ):
        environment.converter_python(create=False)


def test_a_failed_install_leaves_nothing_and_names_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(environment.ENV_VARIABLE, str(tmp_path / "conv"))
    monkeypatch.setattr(environment, "REQUIREMENTS", ("leanserve-no-such-package==0.0.1",))
    with pytest.raises(ConfigError, match=r"cannot make the LiteRT converter environment .*make it with"):
        environment.converter_python()
    assert list((tmp_path / "conv").iterdir()) == [] and not environment.is_ready(tmp_path / "conv")


def test_the_made_environment_runs_the_converter() -> None:
    python = environment.converter_python()  # made on first use (a minute with pip's cache warm)
    assert environment.is_ready(python.parent.parent)
    assert environment.CONVERT_SCRIPT.is_file()


def test_a_location_that_cannot_be_written_fails_once_with_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(environment.ENV_VARIABLE, str(blocker / "conv"))  # below a file: no folder here
    with pytest.raises(ConfigError, match=r"cannot make the LiteRT converter environment .*make it with"):
        environment.converter_python()
    calls: list[object] = []
    monkeypatch.setattr(environment, "_create", lambda directory: calls.append(directory))
    with pytest.raises(ConfigError, match="cannot make"):
        environment.converter_python()  # remembered: the next candidate does not try again
    assert calls == []


def test_without_the_environment_tflite_candidates_are_dropped_and_the_rest_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builds import build
    from tiny_models import make_tiny_bundle

    from optimise.runtimes import LITERT, ONNX_RUNTIME
    from optimise.space import SearchSpace

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(environment.ENV_VARIABLE, str(blocker / "conv"))
    space = SearchSpace(runtimes=(ONNX_RUNTIME, LITERT), graph_optimise=(False,))
    result = build(make_tiny_bundle(), space, tmp_path, profile="edge")
    assert {v.runtime for v in result.variants} == {ONNX_RUNTIME}
    reasons = [c.failure or "" for c in result.failures]
    assert reasons and all("make it with: python3 -m venv" in r for r in reasons)


def test_a_folder_of_the_users_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "projects"
    (folder / "thesis").mkdir(parents=True)
    (folder / "thesis" / "notes.txt").write_text("keep me")
    monkeypatch.setenv(environment.ENV_VARIABLE, str(folder))
    with pytest.raises(ConfigError, match=r"exists and is not a LiteRT converter environment; remove it"):
        environment.converter_python()
    assert (folder / "thesis" / "notes.txt").read_text() == "keep me"


def test_an_environment_made_by_hand_is_taken_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "by-hand"
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text("#!/bin/sh\nexit 0\n")  # stands in for an interpreter that imports the converter
    python.chmod(0o755)
    monkeypatch.setenv(environment.ENV_VARIABLE, str(folder))
    monkeypatch.setattr(environment, "_failed", {})
    assert environment.converter_python() == python
    assert environment.is_ready(folder) and python.read_text().startswith("#!/bin/sh")


def test_an_interrupted_making_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / environment.MAKING_FILE).write_text("")
    (folder / "leftover").write_text("")
    monkeypatch.setenv(environment.ENV_VARIABLE, str(folder))
    monkeypatch.setattr(environment, "REQUIREMENTS", ("leanserve-no-such-package==0.0.1",))
    with pytest.raises(ConfigError, match="cannot make"):
        environment.converter_python()
    assert not (folder / "leftover").exists()  # leanserve's own half-made folder was cleared
