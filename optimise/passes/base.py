"""The pass contract.

A pass has a typed, self-validating config and one `run` method. Torch passes
change the PyTorch module before export; ONNX passes read one ONNX file and
write another into their own working directory. A pass that cannot build its
candidate raises `PassFailed`; a bad setting raises `ConfigError` when the
config is made.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch

from optimise.errors import ConfigError
from optimise.source import ModelBundle
from optimise.types import HardwareProfile, PassSpec


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


class TorchPass(Pass[ConfigT]):
    """Changes the PyTorch module (pruning, distillation) before export."""

    @abstractmethod
    def run(self, module: torch.nn.Module, ctx: PassContext) -> torch.nn.Module: ...


class OnnxPass(Pass[ConfigT]):
    """Reads an ONNX file and returns the path of a new one inside `ctx.workdir`."""

    @abstractmethod
    def run(self, model: Path, ctx: PassContext) -> Path: ...


class ExportPass(Pass[ConfigT]):
    """Turns the PyTorch module into a deployable file inside `ctx.workdir`."""

    @abstractmethod
    def run(self, module: torch.nn.Module, ctx: PassContext) -> Path: ...
