"""The names inside a stored version folder, what a served model takes, and the artefact's error."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path

from optimise.errors import StoreError
from optimise.types import FORMAT_SUFFIXES

MANIFEST_FILE = "manifest.json"
MODEL_STEM = "model"
MODEL_FILE = f"{MODEL_STEM}.onnx"  # the model file of an ONNX variant
REFERENCE_FILE = "reference.npz"
PREPROCESSING_DIR = "preprocessing"
TOKENIZER_FILE = f"{PREPROCESSING_DIR}/tokenizer.json"
REPORT_DIR = "report"


def model_file_names(file_format: str) -> tuple[str, ...]:
    """The names a stored model of `file_format` takes in a version folder, the model file first
    (ONNX: model.onnx; OpenVINO IR: model.xml, model.bin). Raises ArtefactError for an unknown format."""
    try:
        return tuple(MODEL_STEM + suffix for suffix in FORMAT_SUFFIXES[file_format])
    except KeyError:
        raise ArtefactError(
            f"unknown model format {file_format!r}; known: {', '.join(FORMAT_SUFFIXES)}"
        ) from None


class ModelKind(StrEnum):
    """What a served model takes and gives, which decides how its traffic is compared for drift."""

    TENSOR = "tensor"  # tensor inputs; class scores (or one value) out
    EMBEDDING = "embedding"  # text in (tokenised by the service, not kept), embeddings out


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes (read in 1 MiB chunks). Raises OSError."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ArtefactError(StoreError):
    """A stored artefact's file is missing, unreadable, or lacks a field (the message names it)."""
