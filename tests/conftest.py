"""Shared fixtures: a tiny model bundle that every optimisation test can build on."""

from __future__ import annotations

import builtins
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tiny_models import make_tiny_bundle

from optimise.passes.base import PassContext
from optimise.profiles import get_profile
from optimise.source import ModelBundle

_SESSION_DIRS: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    # One model store and one cache for the whole session, never the user's own.
    root = Path(tempfile.mkdtemp(prefix="leanserve-test-"))
    _SESSION_DIRS.append(root)
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    os.environ.setdefault("LEANSERVE_CACHE_DIR", str(root / "cache"))
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    # Tests import openvino and nncf directly too: no usage telemetry from the suite or its servers
    # (see optimise.runtimes.telemetry for the switches).
    os.environ["NNCF_CI"] = "1"
    os.environ["CI"] = "true"


def pytest_unconfigure(config: pytest.Config) -> None:
    for directory in _SESSION_DIRS:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tiny_bundle() -> ModelBundle:
    return make_tiny_bundle()


@pytest.fixture
def tiny_context(tiny_bundle: ModelBundle, tmp_path: Path) -> PassContext:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return PassContext(bundle=tiny_bundle, profile=get_profile("cpu"), workdir=workdir)


@pytest.fixture
def tiny_onnx(tiny_bundle: ModelBundle, tmp_path: Path) -> Path:
    """The tiny bundle exported to ONNX (FP32) through the export pass."""
    from optimise.passes.export_onnx import ExportOnnx, ExportOnnxConfig

    workdir = tmp_path / "export"
    workdir.mkdir()
    ctx = PassContext(bundle=tiny_bundle, profile=get_profile("cpu"), workdir=workdir)
    return ExportOnnx(ExportOnnxConfig()).run(tiny_bundle.module, ctx)


@pytest.fixture
def without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import openvino` fails in this test, as on a machine without the package."""
    real_import = builtins.__import__

    def refuse_openvino(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse_openvino)
