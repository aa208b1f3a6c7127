"""Variants in and out of the BentoML model store.

One saved version holds everything needed to serve and watch the model:
`model.onnx`, `preprocessing/` (tokenizer), `reference.npz` (a sample of
evaluation inputs and the selected model's outputs, for drift monitoring),
`manifest.json` and `report/`. BentoML writes a version in a temporary folder
and moves it into the store only when complete, so a failed build leaves no
half-written version; earlier versions are kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

from optimise.errors import StoreError
from optimise.manifest import MANIFEST_NAME, build_manifest, sha256_of
from optimise.report import write_report
from optimise.runtime import OnnxSession

if TYPE_CHECKING:
    from optimise.build import BuildResult

MODEL_FILE = "model.onnx"
PREPROCESSING_DIR = "preprocessing"
REFERENCE_FILE = "reference.npz"
REFERENCE_ROWS = 1000
OWNER_LABEL = "leanserve"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _write_reference(result: BuildResult, target: Path, model: Path) -> None:
    inputs = {name: array[:REFERENCE_ROWS] for name, array in result.bundle.eval_inputs.items()}
    from optimise.evaluate import predict_rows

    outputs = predict_rows(OnnxSession(model, result.winner.intra_op_threads), inputs)
    arrays: dict[str, Any] = {f"input__{name}": array for name, array in inputs.items()}
    arrays["output"] = outputs
    if result.bundle.eval_labels is not None:
        arrays["labels"] = result.bundle.eval_labels[:REFERENCE_ROWS]
    np.savez_compressed(target, **arrays)


def _copy_preprocessing(result: BuildResult, target: Path) -> None:
    source = result.bundle.preprocessing_dir
    if source is None:
        return
    target.mkdir()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def _fill(root: Path, result: BuildResult, source: str) -> None:
    shutil.copy2(result.winner.artefact, root / MODEL_FILE)
    _copy_preprocessing(result, root / PREPROCESSING_DIR)
    _write_reference(result, root / REFERENCE_FILE, root / MODEL_FILE)
    write_report(result, root / "report")
    manifest = build_manifest(result, root, MODEL_FILE, source)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")


def save(result: BuildResult, source: str) -> str:
    """Store the selected variant as a new version; returns its tag (name:version)."""
    winner = result.winner
    metrics = winner.metrics
    assert metrics is not None
    labels = {
        "owner": OWNER_LABEL,
        "profile": result.profile.name,
        "variant": winner.id,
        "precision": winner.precision.value,
    }
    metadata = {
        "quality": metrics.quality,
        "latency_p50_ms": metrics.latency_p50_ms,
        "size_bytes": metrics.size_bytes,
    }
    try:
        with bentoml.models.create(result.bundle.name, labels=labels, metadata=metadata) as model:
            try:
                _fill(Path(model.path), result, source)
            except BaseException:
                # BentoML keeps an unsaved version in a temporary folder; don't leak it.
                shutil.rmtree(model.path, ignore_errors=True)
                raise
    except OSError as exc:
        raise StoreError(f"cannot write the model store: {exc}") from exc
    return str(model.tag)


def list_models(name: str | None = None) -> list[bentoml.Model]:
    try:
        stored = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:  # BentoML raises for a name it has never stored
        return []
    models = [m for m in stored if m.info.labels.get("owner") == OWNER_LABEL]
    return sorted(models, key=lambda m: (m.tag.name, m.info.creation_time))


def get_model(tag: str) -> bentoml.Model:
    try:
        model = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise StoreError(f"no model {tag!r} in the store ({bentoml_home()})") from None
    except ValueError as exc:  # a malformed tag
        raise StoreError(f"invalid model tag {tag!r}: {exc}") from None
    if model.info.labels.get("owner") != OWNER_LABEL:
        raise StoreError(f"{tag!r} was not built by leanserve")
    return model


def read_manifest(model: bentoml.Model) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(model.path_of(MANIFEST_NAME)).read_text(encoding="utf-8"))
    return data


def verify(model: bentoml.Model) -> list[str]:
    """Files whose sha256 differs from the manifest (empty when the artefact is intact)."""
    root = Path(model.path)
    expected: dict[str, str] = read_manifest(model)["files"]
    return [
        name
        for name, digest in expected.items()
        if not (root / name).is_file() or sha256_of(root / name) != digest
    ]


def export(tag: str, directory: Path) -> list[Path]:
    """Copy the model, manifest and preprocessing files out, for use without leanserve."""
    model = get_model(tag)
    broken = verify(model)
    if broken:
        raise StoreError(f"{tag}: files differ from their manifest hashes: {', '.join(broken)}")
    root = Path(model.path)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in (MODEL_FILE, MANIFEST_NAME, REFERENCE_FILE):
        written.append(Path(shutil.copy2(root / name, directory / name)))
    if (root / PREPROCESSING_DIR).is_dir():
        for item in sorted((root / PREPROCESSING_DIR).iterdir()):
            written.append(Path(shutil.copy2(item, directory / item.name)))
    return written


def bentoml_home() -> str:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())
