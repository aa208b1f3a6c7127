"""Variants in and out of the BentoML model store.

One saved version holds everything needed to serve and watch the model:
the model file(s) of its format (`model.onnx`, or OpenVINO IR `model.xml` + `model.bin`), `preprocessing/` (tokenizer), `reference.npz` (a sample of
evaluation inputs and the selected model's outputs, for drift monitoring),
`manifest.json` and `report/`; earlier versions are kept.

A version appears in the store only complete (`optimise.staging`): it is
written aside, moved into place with one rename, and only then named `latest`;
a build that fails or is killed adds nothing.

Reading never trusts a version: `versions` reports each with its state,
`resolve` says which version a bare NAME means (the live version recorded with
`record_live`, else the newest usable one), and a broken version is refused with
the reason instead of taking the rest down.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
from bentoml._internal.models.model import MODEL_YAML_FILENAME, ModelContext, ModelInfo, ModelOptions
from bentoml._internal.tag import Tag
from bentoml.exceptions import BentoMLException

from optimise import staging
from optimise.artefact import (
    MANIFEST_FILE,
    PREPROCESSING_DIR,
    REFERENCE_FILE,
    REPORT_DIR,
    ArtefactError,
    Manifest,
    ReferenceData,
    StoredArtefact,
    model_file_names,
    write_manifest,
)
from optimise.artefact.usage import USAGE_FILE, usage_note
from optimise.atomic import replacing
from optimise.errors import StoreError, VersionNotFound
from optimise.live import read_entries, read_record, write_live
from optimise.manifest import build_manifest
from optimise.report import write_report
from optimise.runtimes import open_session
from optimise.store_index import (
    OWNER_LABEL,
    REFUSED_FILE,
    StoredVersion,
    list_versions,
    read_version,
    store_dir,
)

if TYPE_CHECKING:
    from optimise.build import BuildResult

logger = logging.getLogger(__name__)

REFERENCE_ROWS = 1000
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _write_reference(result: BuildResult, target: Path, model: Path) -> None:
    inputs = {name: array[:REFERENCE_ROWS] for name, array in result.bundle.eval_inputs.items()}
    from optimise.evaluate import predict_rows

    winner = result.winner
    session = open_session(
        winner.runtime, model, winner.intra_op_threads, settings=dict(winner.runtime_settings)
    )
    outputs = predict_rows(session, inputs)
    labels = result.bundle.eval_labels
    ReferenceData(inputs, outputs, None if labels is None else labels[:REFERENCE_ROWS]).save(target)


def _copy_preprocessing(result: BuildResult, target: Path) -> None:
    source = result.bundle.preprocessing_dir
    if source is None:
        return
    target.mkdir()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def _fill(root: Path, result: BuildResult, source: str) -> None:
    names = model_file_names(result.winner.format)
    for built, name in zip(result.winner.model_files, names, strict=True):
        shutil.copy2(built, root / name)
    _copy_preprocessing(result, root / PREPROCESSING_DIR)
    _write_reference(result, root / REFERENCE_FILE, root / names[0])
    write_report(result, root / REPORT_DIR)
    write_manifest(root, build_manifest(result, root, names[0], source))


def _model_info(result: BuildResult, tag: Tag) -> ModelInfo:
    """What BentoML's `model.yaml` says about the version: labels and headline metrics."""
    winner = result.winner
    metrics = winner.metrics
    assert metrics is not None  # only measured variants are selected
    labels = {
        "owner": OWNER_LABEL,
        "profile": result.profile.name,
        "variant": winner.id,
        "precision": winner.precision.value,
        "runtime": winner.runtime,
    }
    metadata: dict[str, Any] = {
        "quality": metrics.quality,
        "latency_p50_ms": metrics.latency_p50_ms,
        "size_bytes": metrics.size_bytes,
    }
    context = ModelContext(framework_name="", framework_versions={})  # as `bentoml.models.create` writes
    return ModelInfo(tag, "", labels, ModelOptions(), metadata, context, {}, "v1")


def save(result: BuildResult, source: str) -> str:
    """Store the selected variant as a new version; returns its tag (name:version).

    Raises StoreError when the name is not a valid model name or the store cannot be
    written; nothing is added to the store then.
    """
    try:
        tag = Tag(result.bundle.name, None).make_new_version()
    except ValueError as exc:
        raise StoreError(f"invalid model name {result.bundle.name!r}: {exc}") from None
    info = _model_info(result, tag)
    try:
        with staging.staged_version() as staged:
            _fill(staged, result, source)
            with (staged / MODEL_YAML_FILENAME).open("w", encoding="utf-8") as out:
                info.dump(out)
            staging.publish(staged, store_dir() / tag.name / str(tag.version))
    except OSError as exc:
        raise StoreError(f"cannot write the model store: {exc}") from exc
    return str(tag)


def versions(name: str | None = None) -> list[StoredVersion]:
    """Every leanserve version (of `name`, if given) with its state, usable or broken with the reason.

    Raises StoreError when `name` is not a valid model name.
    """
    return list_versions(name)


def list_models(name: str | None = None) -> list[bentoml.Model]:
    """The usable versions (of `name`, if given), by name then age. Raises StoreError for an invalid name."""
    return [v.model for v in versions(name) if v.ok and v.model is not None]


def _parse(tag: str) -> tuple[str, str | None]:
    """(name, version) of `NAME` or `NAME:VERSION`; `NAME:latest` counts as `NAME`. Raises StoreError."""
    try:
        parsed = Tag.from_str(tag)
    except (ValueError, BentoMLException) as exc:
        raise StoreError(f"invalid model tag {tag!r}: {exc}") from None
    version = None if parsed.version == "latest" else parsed.version
    return parsed.name, version


def choose(stored: list[StoredVersion], live: str | None) -> StoredVersion | None:
    """The version a bare name means among one model's `stored` versions: `live` when it is usable,
    else the newest usable one the closed loop did not refuse; None when there is none."""
    usable = [v for v in stored if v.ok]
    recorded = [v for v in usable if v.version == live]
    if recorded:  # recorded as live by a promotion: a refusal before it does not overrule that
        return recorded[0]
    return max((v for v in usable if v.refused is None), key=lambda v: v.created, default=None)


def resolve(name_or_tag: str) -> str:
    """The NAME:VERSION to use for `name_or_tag`.

    NAME:VERSION is itself. A bare NAME is its recorded live version when that is usable,
    else its newest usable version; unusable versions are skipped with a warning naming them.
    Raises StoreError for a malformed tag or a name without any usable version.
    """
    name, version = _parse(name_or_tag)
    if version is not None:
        return f"{name}:{version}"
    stored = versions(name)
    broken = [v for v in stored if not v.ok]
    if broken:
        reasons = "; ".join(f"{v.version} ({v.problem})" for v in broken)
        logger.warning("skipping unusable versions of %s: %s", name, reasons)
    live = live_version(name)
    chosen = choose(stored, live)
    if chosen is None:
        raise StoreError(f"no usable version of {name!r} in the model store ({store_dir()})")
    if live is not None and chosen.version != live:
        logger.warning("%s:%s, recorded as live, is not usable; using %s", name, live, chosen.tag)
    return chosen.tag


def _version_folder(name: str, version: str) -> Path:
    """The folder of NAME:VERSION, where VERSION may be a unique prefix. Raises StoreError."""
    folder = store_dir() / name
    if (folder / version).is_dir():
        return folder / version
    matches = sorted(folder.glob(f"{version}*/")) if folder.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise StoreError(f"{name}:{version} is ambiguous: {', '.join(m.name for m in matches)}")
    raise VersionNotFound(f"no model '{name}:{version}' in the store ({store_dir()})")


def get_model(tag: str) -> bentoml.Model:
    """The usable version `tag` names (a bare NAME as `resolve` says; a unique version prefix works).

    Raises StoreError for a malformed tag, an unknown version, a broken one (with the reason)
    or one not built by leanserve.
    """
    name, version = resolve(tag).split(":")
    found = read_version(_version_folder(name, version))
    if found is None:
        raise StoreError(f"{tag!r} was not built by leanserve")
    if found.problem is not None or found.model is None:
        raise StoreError(f"{found.tag} is broken: {found.problem}")
    return found.model


def artefact(model: bentoml.Model) -> StoredArtefact:
    """The version's artefact (its manifest read). Raises StoreError naming the version and the field
    when the manifest is missing, unreadable or malformed."""
    try:
        return StoredArtefact.open(Path(model.path))
    except ArtefactError as exc:
        raise StoreError(f"{model.tag}: {exc}") from None


def read_manifest(model: bentoml.Model) -> Manifest:
    """The version's manifest. Raises StoreError when it is missing, unreadable or malformed."""
    return artefact(model).manifest


def verify(model: bentoml.Model) -> list[str]:
    """Files whose sha256 differs from the manifest (empty when the artefact is intact).

    Raises StoreError when the manifest cannot be read.
    """
    return artefact(model).modified_files()


def export(tag: str, directory: Path, overwrite: bool = False) -> list[Path]:
    """Copy the model, manifest and preprocessing files out, for use without leanserve, with a usage
    note (USAGE.md) that shows how to run the model with its runtime alone. Other files in
    `directory` are left alone; files of the same names are replaced only with `overwrite`.

    Raises StoreError for an unknown or broken version, files that differ from their hashes, files
    the export would replace (without `overwrite`), or a directory that cannot be written.
    """
    stored = artefact(get_model(tag))
    broken = stored.modified_files()
    if broken:
        raise StoreError(f"{tag}: files differ from their manifest hashes: {', '.join(broken)}")
    root = stored.root
    sources = [*stored.model_files, root / MANIFEST_FILE, root / REFERENCE_FILE]
    if (root / PREPROCESSING_DIR).is_dir():
        sources += sorted((root / PREPROCESSING_DIR).iterdir())
    note = directory / USAGE_FILE
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"cannot export {tag} to {directory}: it is a file, not a directory")
    targets = [*(directory / s.name for s in sources), note]
    folders = [p.name for p in targets if p.is_dir() and not p.is_symlink()]
    if folders:
        raise StoreError(f"cannot export {tag} to {directory}: {', '.join(folders)} in it is a directory")
    replaced = [p for p in targets if p.exists() or p.is_symlink()]
    if replaced and not overwrite:
        names = ", ".join(p.name for p in replaced)
        raise StoreError(
            f"{directory} already has {names}: choose another directory, or overwrite them (--overwrite)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path in replaced:  # a link is replaced, not written through to what it points at
            path.unlink()
        written = [Path(shutil.copy2(path, directory / path.name)) for path in sources]
        note.write_text(usage_note(stored.manifest, stored.model_path.name), encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot export {tag} to {directory}: {exc}") from exc
    return [*written, note]


def record_live(name: str, version: str, previous: str | None = None) -> str:
    """Record NAME:VERSION as the live choice: what a bare NAME resolves to, after restarts too, and
    `previous` as the version live before it (what a server's rollback goes back to after a restart;
    None: not recorded). A unique prefix of the version works; returns the full tag recorded.

    Raises StoreError for an unknown, broken or foreign version, or a store that cannot be written.
    """
    model = get_model(f"{name}:{version}")
    try:
        write_live(store_dir(), model.tag.name, str(model.tag.version), previous)
    except OSError as exc:
        raise StoreError(f"cannot record {model.tag} as live in {store_dir()}: {exc}") from exc
    return str(model.tag)


def mark_refused(name: str, version: str, reason: str) -> None:
    """Record in NAME:VERSION's folder why the closed loop did not promote it (`REFUSED_FILE`): it is
    listed as refused and a bare NAME never falls back to it. Raises StoreError for an unknown version
    or a store that cannot be written."""
    folder = _version_folder(name, version)
    entry = {"reason": reason, "at": datetime.now(UTC).isoformat()}
    try:
        with replacing(folder / REFUSED_FILE) as out:
            json.dump(entry, out, indent=2)
    except OSError as exc:
        raise StoreError(f"cannot mark {name}:{version} as refused in {folder}: {exc}") from exc


def live_version(name: str) -> str | None:
    """The version of `name` recorded as live, None when none is (the record is not checked here)."""
    return read_record(store_dir()).get(name)


def previous_live_version(name: str, of: str | None = None) -> str | None:
    """The version of `name` recorded as live before the current one, None when none is (not checked);
    with `of`, only while the recorded live version is `of` (one read of the record)."""
    live, previous = read_entries(store_dir()).get(name, (None, None))
    return previous if of is None or live == of else None


def bentoml_home() -> str:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())
