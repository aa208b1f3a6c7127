"""Distillation data files: every unusable file is a one-line ConfigError naming the cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimise.distillation.data import (
    NO_LABEL,
    read_npz_file,
    read_text_file,
    read_token_file,
    tensor_data,
    texts_data,
    with_live_rows,
)
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


# --- recorded inputs (a server's window) ---------------------------------------------------------


def _token_npz(path: Path, rows: int, **extra: np.ndarray) -> Path:
    ids = np.tile(np.array([[101, 7592, 2088, 102, 0, 0]], np.int64), (rows, 1))
    ids[:, 1] += np.arange(rows)  # distinct rows
    mask = (ids != 0).astype(np.int64)
    np.savez(path, **{"input_ids": ids, "attention_mask": mask, **extra})
    return path


def test_recorded_token_ids_drop_their_padding(tmp_path: Path) -> None:
    data = read_token_file(_token_npz(tmp_path / "live.npz", 60), vocab_size=30522)
    assert data.token_ids is not None and data.size == 60 and data.texts is None
    assert data.token_ids[0] == (101, 7592, 2088, 102) and data.token_ids[1] == (101, 7593, 2088, 102)
    assert data.digest == read_token_file(_token_npz(tmp_path / "again.npz", 60), 30522).digest


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pixels": np.zeros((60, 4))}, "lacks 'input_ids'"),
        ({"input_ids": np.zeros((60, 4), np.float32)}, "integer token ids"),
        ({"input_ids": np.zeros(60, np.int64)}, "integer token ids"),
        (
            {"input_ids": np.ones((60, 4), np.int64), "attention_mask": np.ones((60, 3))},
            "'attention_mask' has",
        ),
        ({"input_ids": np.full((60, 4), 40_000, np.int64)}, "the model's vocabulary from 0 to 30521"),
        ({"input_ids": np.full((60, 4), -1, np.int64)}, "token ids run from -1"),
        (
            {"input_ids": np.ones((49, 4), np.int64)},
            "holds 49 rows with a token .of 49.; distillation needs 50",
        ),
        (
            {"input_ids": np.ones((60, 4), np.int64), "attention_mask": np.zeros((60, 4))},
            "0 rows with a token .of 60",
        ),
    ],
)
def test_unusable_recorded_inputs_are_user_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "live.npz", **arrays)
    with pytest.raises(ConfigError, match=message):
        read_token_file(tmp_path / "live.npz", vocab_size=30522)


def test_recorded_rows_join_a_corpus_at_a_tenth_of_it(tmp_path: Path) -> None:
    corpus = texts_data([f"line {i}" for i in range(1_800)], "corpus")
    live = read_token_file(_token_npz(tmp_path / "live.npz", 100), vocab_size=30522)
    joined = with_live_rows(corpus, live)
    assert joined.texts == corpus.texts and joined.token_ids == live.token_ids * 2  # type: ignore[operator]
    assert joined.size == 2_000 and "100 recorded rows x2" in joined.source
    assert joined.digest not in {corpus.digest, live.digest}
    assert with_live_rows(texts_data(["a"] * 10, "small"), live).token_ids == live.token_ids  # at least once


def test_a_file_that_is_not_a_zip_archive_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "t.npz").write_text("a text file renamed\n")
    with pytest.raises(ConfigError, match=r"is not a readable \.npz \(a NumPy zip archive") as raised:
        read_token_file(tmp_path / "t.npz", vocab_size=10)
    assert "pickle" not in str(raised.value)


def test_labelled_recorded_rows_keep_their_labels() -> None:
    base = tensor_data({"pixels": np.zeros((900, 4), np.float32)}, None, "unlabelled")
    live = tensor_data(
        {"pixels": np.ones((100, 4), np.float32)}, np.full(100, 3, np.int64), "labelled window"
    )
    joined = with_live_rows(base, live)
    assert (
        joined.labels is not None
        and (joined.labels[:900] == NO_LABEL).all()
        and (joined.labels[900:] == 3).all()
    )


def test_recorded_rows_added_to_labelled_tensors_carry_no_label() -> None:
    base = tensor_data({"pixels": np.zeros((900, 4), np.float32)}, np.ones(900, np.int64), "train split")
    live = tensor_data({"pixels": np.ones((100, 4), np.float32)}, None, "window")
    joined = with_live_rows(base, live)
    assert joined.inputs is not None and joined.labels is not None
    assert joined.size == 1_000 and joined.inputs["pixels"][900:].min() == 1
    assert (joined.labels[:900] == 1).all() and (joined.labels[900:] == NO_LABEL).all()
    with pytest.raises(ConfigError, match="must be token ids"):
        with_live_rows(texts_data(["a"], "texts"), live)
    with pytest.raises(ConfigError, match="must hold the model's inputs"):
        with_live_rows(base, tensor_data({"other": np.ones((100, 4), np.float32)}, None, "x"))
