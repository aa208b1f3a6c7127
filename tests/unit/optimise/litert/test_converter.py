"""The call into the converter environment: its result, its failures, its quiet."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimise.litert.converter import ConversionFailed, run_converter


def test_a_failing_task_reports_the_scripts_reason(tmp_path: Path) -> None:
    with pytest.raises(ConversionFailed, match="FileNotFoundError"):
        run_converter(
            {
                "task": "convert",
                "output": "x.tflite",
                "signatures": {"s": {"program": "missing.pt2", "sample": "missing.npz"}},
            },
            tmp_path,
        )
    assert list(tmp_path.iterdir()) == []  # the request file is gone too


def test_an_unknown_task_is_a_failure_not_a_hang(tmp_path: Path) -> None:
    with pytest.raises(ConversionFailed, match="KeyError"):
        run_converter({"task": "compile"}, tmp_path)
