"""Calls the converter script (`convert.py`) in the LiteRT converter environment.

The script's chatter (torchao's missing CUDA kernels, deprecation notices, the converter's op counts)
stays in the subprocess: the build reads only the script's last stdout line, and keeps the tail of
its stderr for the reason when it fails.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from optimise.errors import ConfigError
from optimise.litert.environment import CONVERT_SCRIPT, converter_python

TIMEOUT_S = 1800.0  # MiniLM with four signatures took ~20 s here; a stuck converter must not hang a build


class ConversionFailed(RuntimeError):
    """The converter script ran and reported a failure (the message is its one-line reason)."""


def run_converter(request: dict[str, Any], workdir: Path, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Run one converter task (see `convert.py` for the request's fields) with `workdir` as its working
    directory; returns the script's result object. Raises ConversionFailed with the script's reason,
    or with the command that makes the environment when it is missing and cannot be made here (the
    build's other candidates do not need it)."""
    try:
        python = converter_python()
    except ConfigError as exc:
        raise ConversionFailed(str(exc)) from None
    request_file = workdir / "litert-request.json"
    request_file.write_text(json.dumps(request), encoding="utf-8")
    try:
        done = subprocess.run(
            [str(python), str(CONVERT_SCRIPT), str(request_file)],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConversionFailed(f"the LiteRT converter did not finish within {timeout_s:.0f} s") from None
    finally:
        request_file.unlink(missing_ok=True)
    result = _last_json(done.stdout)
    if result is None:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit {done.returncode}"]
        raise ConversionFailed(f"the LiteRT converter crashed: {tail[0]}")
    if not result.get("ok"):
        raise ConversionFailed(str(result.get("error", "unknown error")))
    return result


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
