"""The Bento's package list is a subset of the project's pins, never a second copy that drifts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[3]


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(spec).name: str(Requirement(spec).specifier) for spec in project["dependencies"]}


def test_bento_packages_match_the_project_pins() -> None:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    pins = _pins()
    for spec in bentofile["python"]["packages"]:
        requirement = Requirement(spec)
        assert requirement.name in pins, f"{requirement.name} is not a project dependency"
        assert str(requirement.specifier) == pins[requirement.name], requirement.name


def test_bento_builds_offline_and_serves_the_service_module() -> None:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    assert bentofile["python"]["lock_packages"] is False  # locking needs the network
    module, _, attribute = bentofile["service"].partition(":")
    assert (REPO / (module.replace(".", "/") + ".py")).is_file() and attribute
    assert {"minilm:latest", "digits:latest"} <= set(bentofile["models"])


def test_the_bento_installs_every_runtime_and_no_build_only_package() -> None:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    packages = {Requirement(spec).name for spec in bentofile["python"]["packages"]}
    assert {"onnxruntime", "openvino"} <= packages  # what a stored variant may need to run
    assert not packages & {"torch", "nncf", "optimum", "optuna", "onnx", "transformers"}
