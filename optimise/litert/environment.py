"""The LiteRT converter environment: a separate virtual environment the build calls as a subprocess.

litert-torch (PyTorch -> .tflite, no TensorFlow) requires `ai-edge-litert[model-utils]`, which pins
`xdsl==0.28.0`, which caps `typing-extensions` below 4.13; pydantic >= 2.12 (and so BentoML) needs
>= 4.14.1 (LiteRT issue 8894). The two cannot share one environment, so the converter lives in its
own, created on first use from `REQUIREMENTS` (measured here: 49 s with pip's cache warm, 2.1 GB;
it brings ai-edge-quantizer, litert-converter, torchao and jax). The build environment keeps only
`ai-edge-litert` without extras, which runs `.tflite` files.

Location: `$LEANSERVE_LITERT_ENV`, else `~/.cache/leanserve-converters/litert-torch-<version>`: outside
`$LEANSERVE_CACHE_DIR`, since it is an installation shared by every build cache, not a build output.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from optimise.errors import ConfigError

ENV_VARIABLE = "LEANSERVE_LITERT_ENV"
LITERT_TORCH_VERSION = "0.10.0"
# Pinned as a set that resolves together (torch is the CPU wheel at this exact version; an unpinned
# torch pulls CUDA). ai-edge-quantizer and litert-converter are what litert-torch 0.10.0 resolves to.
REQUIREMENTS = (
    "torch==2.13.0",
    f"litert-torch=={LITERT_TORCH_VERSION}",
    "ai-edge-quantizer==0.10.0",
    "ai-edge-litert==2.3.0",
    "litert-converter==0.5.0",
)
READY_FILE = ".leanserve-ready"  # written last: a half-made environment is made again
MAKING_FILE = ".leanserve-making"  # written first: the folder is leanserve's to remove
_failed: dict[Path, str] = {}  # a failed making, per process: the next candidate fails at once
CONVERT_SCRIPT = Path(__file__).with_name("convert.py")


def environment_dir() -> Path:
    """Where the converter environment is (or will be made)."""
    configured = os.environ.get(ENV_VARIABLE)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "leanserve-converters" / f"litert-torch-{LITERT_TORCH_VERSION}"


def create_command(directory: Path) -> str:
    """The shell command that makes the environment by hand (for error messages and the README)."""
    return f"python3 -m venv {directory} && {directory}/bin/pip install {' '.join(REQUIREMENTS)}"


def is_ready(directory: Path | None = None) -> bool:
    directory = directory or environment_dir()
    return (directory / READY_FILE).is_file() and (directory / "bin" / "python").exists()


def converter_python(create: bool = True) -> Path:
    """The converter environment's interpreter, making the environment first when it is missing and
    `create` is set. Raises ConfigError naming the command that makes it when it is missing and
    cannot (or may not) be made here."""
    directory = environment_dir()
    if is_ready(directory):
        return directory / "bin" / "python"
    if not create:
        raise ConfigError(
            f"the LiteRT converter environment is missing; make it with: {create_command(directory)}"
        )
    if directory in _failed:
        raise ConfigError(_failed[directory])
    try:
        with _lock(directory):
            if not is_ready(directory):  # another build may have made it while this one waited
                _create(directory)
    except OSError as exc:  # e.g. a location that cannot be written
        _failed[directory] = (
            f"cannot make the LiteRT converter environment ({exc}); make it with: {create_command(directory)}"
        )
        raise ConfigError(_failed[directory]) from None
    except ConfigError as exc:
        _failed[directory] = str(exc)
        raise
    return directory / "bin" / "python"


@contextlib.contextmanager
def _lock(directory: Path) -> Iterator[None]:
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / f".{directory.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create(directory: Path) -> None:
    """Make the environment in `directory`. A folder that is already there is only ever removed when
    this code made it (its `MAKING_FILE` says so); one made by hand with `create_command` is taken
    as it is; anything else there is refused, never deleted."""
    if directory.exists() and any(directory.iterdir()):
        if (directory / MAKING_FILE).is_file():
            shutil.rmtree(directory)  # a making that was interrupted: start again
        elif _has_converter(directory):
            (directory / READY_FILE).write_text("made by hand\n", encoding="utf-8")
            return
        else:
            raise ConfigError(
                f"{directory} exists and is not a LiteRT converter environment; remove it, or set "
                f"{ENV_VARIABLE} to another folder"
            )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MAKING_FILE).write_text("made by leanserve; removed when done\n", encoding="utf-8")
    python = str(directory / "bin" / "python")
    steps = (
        [sys.executable, "-m", "venv", str(directory)],
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            _empty(directory)
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise ConfigError(
                f"cannot make the LiteRT converter environment ({reason}); make it with: {create_command(directory)}"
            )
    (directory / READY_FILE).write_text(" ".join(REQUIREMENTS) + "\n", encoding="utf-8")
    (directory / MAKING_FILE).unlink()


def _has_converter(directory: Path) -> bool:
    python = directory / "bin" / "python"
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import litert_torch, ai_edge_quantizer"], capture_output=True, check=False
    )
    return probe.returncode == 0


def _empty(directory: Path) -> None:
    """Remove what a failed making left: the folder's contents (it held nothing else before)."""
    for item in directory.iterdir():
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
