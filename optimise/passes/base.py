"""The pass contract.

A pass has a typed, self-validating config and one `run` method. Torch passes
change the PyTorch module before export; ONNX passes read one ONNX file and
write another into their own working directory. A bad setting raises
`ConfigError` when the config is made.

Callers run a pass through `apply`, which holds the failure policy of every
pass (see `Pass.failures`): a pass that cannot build its candidate ends in
`PassFailed`, which drops that candidate only; a user error (`OptimiseError`)
stops the run. `run` itself just does the work and may raise anything.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, final

import torch

from optimise.errors import ConfigError, OptimiseError, PassFailed, one_line
from optimise.source import ModelBundle
from optimise.types import HardwareProfile, PassSpec, StudentTraining


@dataclass(frozen=True)
class PassConfig:
    """Base of every pass config; subclasses validate in `__post_init__`."""


ConfigT = TypeVar("ConfigT", bound=PassConfig)


@dataclass(frozen=True)
class PassContext:
    """What a pass may read besides its input: the model's data, the target, a scratch dir."""

    bundle: ModelBundle
    profile: HardwareProfile
    workdir: Path


class Pass(ABC, Generic[ConfigT]):
    name: ClassVar[str]
    config_type: ClassVar[type[PassConfig]]

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @classmethod
    def from_spec(cls, spec: PassSpec) -> Pass[Any]:
        try:
            config = cls.config_type(**spec.settings)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid settings for pass {spec.name!r}: {exc}") from exc
        return cls(config)  # type: ignore[arg-type]

    @final
    @contextlib.contextmanager
    def failures(self, prefix: str = "") -> Iterator[None]:
        """The failure policy of a pass, for the block it wraps.

        `PassFailed` (a reason the pass gave itself) and `OptimiseError` (a user
        error, which stops the run) pass through unchanged; any other exception
        becomes `PassFailed(self.name, "<prefix>: <Type>: <first line>")`, which
        drops this candidate only. `apply` wraps all of `run` without a prefix; a
        pass wraps a stage of its own to name it (e.g. `prefix="export failed"`).
        """
        try:
            yield
        except (PassFailed, OptimiseError):
            raise
        except Exception as exc:  # the one place an unexpected pass failure becomes PassFailed
            reason = f"{prefix}: {one_line(exc)}" if prefix else one_line(exc)
            raise PassFailed(self.name, reason) from exc


class TorchPass(Pass[ConfigT]):
    """Changes the PyTorch module (pruning, distillation) before export."""

    def training(self) -> StudentTraining | None:
        """What the last `apply` trained, for passes that train a student (None: nothing)."""
        return None

    @final
    def apply(self, module: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        """Run the pass under the failure policy (see `Pass.failures`)."""
        with self.failures():
            return self.run(module, ctx)

    @abstractmethod
    def run(self, module: torch.nn.Module, ctx: PassContext) -> torch.nn.Module: ...


class OnnxPass(Pass[ConfigT]):
    """Reads a model file (ONNX, or OpenVINO IR after `convert_openvino`) and returns the path of a
    new one inside `ctx.workdir`; a pass that changes the format declares it in
    `optimise.pipeline.FORMAT_OF_PASS`."""

    @final
    def apply(self, model: Path, ctx: PassContext) -> Path:
        """Run the pass under the failure policy (see `Pass.failures`)."""
        with self.failures():
            return self.run(model, ctx)

    @abstractmethod
    def run(self, model: Path, ctx: PassContext) -> Path: ...


class ExportPass(Pass[ConfigT]):
    """Turns the PyTorch module into a deployable file inside `ctx.workdir`."""

    output_format: ClassVar[str]  # the file format it writes (see `FORMAT_RUNTIMES`)

    @final
    def apply(self, module: torch.nn.Module, ctx: PassContext) -> Path:
        """Run the pass under the failure policy (see `Pass.failures`)."""
        with self.failures():
            return self.run(module, ctx)

    @abstractmethod
    def run(self, module: torch.nn.Module, ctx: PassContext) -> Path: ...
