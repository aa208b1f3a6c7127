"""The failure policy every pass gets from `apply` (and `failures`) in the base class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from optimise.errors import ConfigError, PassFailed
from optimise.passes.base import OnnxPass, PassConfig, PassContext


@dataclass(frozen=True)
class _RaisingConfig(PassConfig):
    error: Exception | None = None
    stage: str = ""


class _Raising(OnnxPass[_RaisingConfig]):
    """Raises the configured error, inside a named stage when `stage` is set."""

    name = "raising"
    config_type = _RaisingConfig

    def run(self, model: Path, ctx: PassContext) -> Path:
        if self.config.stage:
            with self.failures(self.config.stage):
                self._work(model)
        return self._work(model)

    def _work(self, model: Path) -> Path:
        if self.config.error is not None:
            raise self.config.error
        return model


def _apply(tiny_context: PassContext, error: Exception | None, stage: str = "") -> Path:
    return _Raising(_RaisingConfig(error, stage)).apply(tiny_context.workdir / "in.onnx", tiny_context)


def test_a_pass_that_succeeds_returns_its_result(tiny_context: PassContext) -> None:
    assert _apply(tiny_context, None) == tiny_context.workdir / "in.onnx"


def test_an_unexpected_exception_becomes_pass_failed(tiny_context: PassContext) -> None:
    error = RuntimeError("kernel missing\nsecond line")
    with pytest.raises(PassFailed) as caught:
        _apply(tiny_context, error)
    assert caught.value.pass_name == "raising"
    assert caught.value.reason == "RuntimeError: kernel missing"
    assert str(caught.value) == "raising: RuntimeError: kernel missing"
    assert caught.value.__cause__ is error


def test_a_stage_prefix_names_where_the_pass_failed(tiny_context: PassContext) -> None:
    with pytest.raises(PassFailed) as caught:
        _apply(tiny_context, ValueError("bad shape"), stage="export failed")
    assert str(caught.value) == "raising: export failed: ValueError: bad shape"


@pytest.mark.parametrize("stage", ["", "export failed"])
def test_pass_failed_passes_through_unchanged(tiny_context: PassContext, stage: str) -> None:
    error = PassFailed("raising", "no fusion matched")
    with pytest.raises(PassFailed) as caught:
        _apply(tiny_context, error, stage)
    assert caught.value is error  # not wrapped a second time
    assert str(caught.value) == "raising: no fusion matched"
    assert str(caught.value).count("raising") == 1


@pytest.mark.parametrize("stage", ["", "export failed"])
def test_a_user_error_stops_the_run(tiny_context: PassContext, stage: str) -> None:
    error = ConfigError("unknown calibration method")
    with pytest.raises(ConfigError) as caught:
        _apply(tiny_context, error, stage)
    assert caught.value is error
