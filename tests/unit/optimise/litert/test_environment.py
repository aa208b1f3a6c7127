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
    assert not (tmp_path / "conv").exists() and not environment.is_ready(tmp_path / "conv")


def test_the_made_environment_runs_the_converter() -> None:
    python = environment.converter_python()  # made on first use (a minute with pip's cache warm)
    assert environment.is_ready(python.parent.parent)
    assert environment.CONVERT_SCRIPT.is_file()
