"""Distillation data files: every unusable file is a one-line ConfigError naming the cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimise.distillation.data import read_npz_file, read_text_file, tensor_data, texts_data
from optimise.errors import ConfigError

DTYPES = {"pixels": np.dtype(np.float32)}


def _texts(path: Path, count: int) -> Path:
    path.write_text("\n".join(f"text number {i}" for i in range(count)) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"  \n\n \t\n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is binary"),
        (b"caf\xe9 au lait\n", "not UTF-8"),
        (b"only\nthree\nlines\n", "holds 3 texts; distillation needs 1,000"),
    ],
)
def test_unusable_text_files_are_user_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "traffic.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_text_file(path)


def test_a_text_file_is_read_one_text_per_line(tmp_path: Path) -> None:
    data = read_text_file(_texts(tmp_path / "traffic.txt", 1_200))
    assert data.size == 1_200 and data.texts is not None and data.texts[0] == "text number 0"
    assert data.source == "traffic.txt, 1,200 texts"
    assert data.digest == read_text_file(_texts(tmp_path / "again.txt", 1_200)).digest
    assert data.digest != texts_data([*data.texts[1:], "x"], "other").digest


def test_an_npz_is_checked_against_the_model_inputs(tmp_path: Path) -> None:
    path = tmp_path / "inputs.npz"
    np.savez(path, other=np.zeros((300, 4)))
    with pytest.raises(ConfigError, match="lacks input 'pixels'"):
        read_npz_file(path, ("pixels",), DTYPES)
    np.savez(path, pixels=np.zeros((300, 64)), labels=np.zeros(299, np.int64))
    with pytest.raises(ConfigError, match="different row counts"):
        read_npz_file(path, ("pixels",), DTYPES)
    np.savez(path, pixels=np.zeros((10, 64)))
    with pytest.raises(ConfigError, match="holds 10 rows; distillation needs 256"):
        read_npz_file(path, ("pixels",), DTYPES)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match=r"not a readable \.npz"):
        read_npz_file(tmp_path / "broken.npz", ("pixels",), DTYPES)


def test_an_npz_with_labels_keeps_them_and_casts_inputs(tmp_path: Path) -> None:
    path = tmp_path / "inputs.npz"
    np.savez(path, pixels=np.ones((300, 64), dtype=np.float64), labels=np.arange(300) % 10)
    data = read_npz_file(path, ("pixels",), DTYPES)
    assert data.inputs is not None and data.inputs["pixels"].dtype == np.float32
    assert data.labels is not None and data.labels.dtype == np.int64 and data.size == 300
    assert data.digest == tensor_data(data.inputs, data.labels, "again").digest


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pixels": np.float32(1)}, "is a single value"),
        ({"pixels": np.full((300, 64), np.nan, np.float32)}, "NaN or infinite"),
        ({"pixels": np.array([["abc"] * 64] * 300)}, "not numbers"),
        ({"pixels": np.zeros((300, 64)), "labels": np.full(300, -1)}, "one non-negative integer class"),
        (
            {"pixels": np.zeros((300, 64)), "labels": np.zeros((300, 2), np.int64)},
            "one non-negative integer class",
        ),
        ({"pixels": np.zeros((300, 64)), "labels": np.zeros(300)}, "one non-negative integer class"),
    ],
)
def test_npz_values_the_model_cannot_learn_from_are_user_errors(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match=message):
        read_npz_file(path, ("pixels",), DTYPES)
