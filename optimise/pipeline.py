"""Build one candidate from a recipe: torch passes, an export, file passes (ONNX, OpenVINO IR).

Intermediate artefacts are cached by the prefix of passes that made them, so
ten recipes that share "prune 25% -> export" export once. Every pass runs in a
fresh directory of its own (also its working directory, since some quantisers
write scratch files there) under the run's scratch root, which the caller
removes when the run ends.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import ExportPass, OnnxPass, PassContext, TorchPass
from optimise.runtimes import LITERT, ONNX_RUNTIME, OPENVINO, TORCHSCRIPT
from optimise.source import ModelBundle
from optimise.types import HardwareProfile, PassSpec, Precision, StudentTraining, Variant

logger = logging.getLogger(__name__)

# The runtime that measures (and serves) each file format.
FORMAT_RUNTIMES = {"onnx": ONNX_RUNTIME, "openvino": OPENVINO, "torchscript": TORCHSCRIPT, "tflite": LITERT}
# File passes that write another format than they read.
FORMAT_OF_PASS: dict[str, str] = {"convert_openvino": "openvino", "quantise_nncf": "openvino"}

_PRECISION_OF_PASS = {
    "quantise_dynamic": Precision.INT8_DYNAMIC,
    "quantise_static": Precision.INT8_STATIC,
    "quantise_nncf": Precision.INT8_STATIC,
    "fp16": Precision.FP16,
}
PRECISION_HINT = "INFERENCE_PRECISION_HINT"  # OpenVINO's: the precision its CPU plugin computes in


def _precision_of(spec: PassSpec) -> Precision | None:
    """The precision a file pass leaves, None for passes that keep it."""
    if spec.name == "quantise_litert":  # one pass, two kinds of int8
        return Precision.INT8_STATIC if spec.settings.get("mode") == "static" else Precision.INT8_DYNAMIC
    return _PRECISION_OF_PASS.get(spec.name)


@dataclass(frozen=True)
class Recipe:
    """Which passes build a candidate, in order, the threads it runs with, and the session settings
    its runtime opens it with (sorted pairs; OpenVINO: CPU properties and `sequence_buckets`)."""

    torch_passes: tuple[PassSpec, ...]
    export: PassSpec
    onnx_passes: tuple[PassSpec, ...]
    threads: int
    runtime_settings: tuple[tuple[str, str], ...] = ()

    @property
    def passes(self) -> tuple[PassSpec, ...]:
        return (*self.torch_passes, self.export, *self.onnx_passes)

    @property
    def format(self) -> str:
        """The file format the recipe ends in: its export's, unless a later pass converts it."""
        export = build_pass(self.export)
        assert isinstance(export, ExportPass)
        converted = [f for f in (FORMAT_OF_PASS.get(p.name) for p in self.onnx_passes) if f is not None]
        return converted[-1] if converted else export.output_format

    @property
    def runtime(self) -> str:
        """The runtime that runs the recipe's file. Raises ConfigError for a format none runs yet."""
        runtime = FORMAT_RUNTIMES.get(self.format)
        if runtime is None:
            raise ConfigError(
                f"no runtime measures {self.format} files yet (runtimes run: {sorted(FORMAT_RUNTIMES)})"
            )
        return runtime

    @property
    def precision(self) -> Precision:
        if self.export.settings.get("int8_dynamic"):  # an export that quantises (TorchScript)
            return Precision.INT8_DYNAMIC
        found = [precision for p in self.onnx_passes if (precision := _precision_of(p)) is not None]
        if found:
            return found[-1]
        return Precision.BF16 if dict(self.runtime_settings).get(PRECISION_HINT) == "bf16" else Precision.FP32


def variant_id(
    passes: tuple[PassSpec, ...], threads: int | None = None, settings: tuple[tuple[str, str], ...] = ()
) -> str:
    """A stable short id: the same passes and settings always get the same id."""
    parts: list[object] = [[p.name, p.settings] for p in passes] + [threads]
    if settings:  # ids of variants without session settings stay as they were
        parts.append([list(pair) for pair in settings])
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


class CandidateBuilder:
    """Builds recipes for one bundle and profile, reusing shared prefixes."""

    def __init__(self, bundle: ModelBundle, profile: HardwareProfile, scratch: Path) -> None:
        self.bundle = bundle
        self.profile = profile
        self.scratch = scratch
        self._modules: dict[tuple[PassSpec, ...], torch.nn.Module] = {(): bundle.module}
        self._files: dict[tuple[PassSpec, ...], Path] = {}
        self._seconds: dict[tuple[PassSpec, ...], float] = {(): 0.0}
        self._training: dict[tuple[PassSpec, ...], StudentTraining | None] = {(): None}
        self._failed: dict[tuple[PassSpec, ...], PassFailed] = {}

    def prepare(self, torch_passes: tuple[PassSpec, ...]) -> str | None:
        """Run the torch passes now (e.g. train a student before the search's clock starts) and keep
        the module for the recipes that start with them; returns the failure reason, if any."""
        try:
            self._module_after(torch_passes)
        except PassFailed as exc:
            return str(exc)
        return None

    def build(self, recipe: Recipe) -> tuple[Variant, float]:
        """Return the variant (unmeasured) and its build time, counting cached steps at their cost."""
        module = self._module_after(recipe.torch_passes)
        prefix = (*recipe.torch_passes, recipe.export)
        path = self._files.get(prefix) or self._run_file_pass(prefix, recipe.export, module)
        for index, spec in enumerate(recipe.onnx_passes):
            prefix = (*recipe.torch_passes, recipe.export, *recipe.onnx_passes[: index + 1])
            path = self._files.get(prefix) or self._run_file_pass(prefix, spec, path)
        parent = recipe.passes[:-1]
        variant = Variant(
            id=variant_id(recipe.passes, recipe.threads, recipe.runtime_settings),
            parent_id=variant_id(parent, recipe.threads) if parent else None,
            passes=recipe.passes,
            artefact=path,
            precision=recipe.precision,
            intra_op_threads=recipe.threads,
            format=recipe.format,
            runtime=recipe.runtime,
            runtime_settings=recipe.runtime_settings,
            training=self._training[recipe.torch_passes],
        )
        return variant, self._seconds[recipe.passes]

    def _module_after(self, torch_passes: tuple[PassSpec, ...]) -> torch.nn.Module:
        if torch_passes in self._modules:
            return self._modules[torch_passes]
        if torch_passes in self._failed:  # a pass that failed (a student's training) is not rerun
            raise self._failed[torch_passes]
        module = self._module_after(torch_passes[:-1])
        spec = torch_passes[-1]
        step = build_pass(spec)
        if not isinstance(step, TorchPass):
            raise TypeError(f"{spec.name} is not a torch pass")
        start = time.perf_counter()
        try:
            with self._pass_dir(spec) as workdir:
                result = step.apply(copy.deepcopy(module), self._context(workdir))
        except PassFailed as exc:
            self._failed[torch_passes] = exc
            raise
        self._seconds[torch_passes] = self._seconds[torch_passes[:-1]] + time.perf_counter() - start
        self._modules[torch_passes] = result
        self._training[torch_passes] = step.training() or self._training[torch_passes[:-1]]
        return result

    def _run_file_pass(
        self, prefix: tuple[PassSpec, ...], spec: PassSpec, source: torch.nn.Module | Path
    ) -> Path:
        step = build_pass(spec)
        start = time.perf_counter()
        with self._pass_dir(spec) as workdir:
            if isinstance(step, ExportPass) and isinstance(source, torch.nn.Module):
                path = step.apply(source, self._context(workdir))
            elif isinstance(step, OnnxPass) and isinstance(source, Path):
                path = step.apply(source, self._context(workdir))
            else:
                raise TypeError(f"pass {spec.name} cannot follow {type(source).__name__}")
        self._seconds[prefix] = self._seconds[prefix[:-1]] + time.perf_counter() - start
        self._files[prefix] = path
        return path

    @contextlib.contextmanager
    def _pass_dir(self, spec: PassSpec) -> Iterator[Path]:
        workdir = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=self.scratch))
        try:
            with contextlib.chdir(workdir):
                yield workdir
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)  # a failed pass leaves nothing behind
            raise

    def _context(self, workdir: Path) -> PassContext:
        return PassContext(bundle=self.bundle, profile=self.profile, workdir=workdir)
