"""What the model store holds: every version folder with its state, read without trusting it.

BentoML's own listing stops at the first version it cannot read (invalid YAML
in a `model.yaml` raises out of `bentoml.models.list()`). Here each version is
read on its own, so a broken one is reported with the reason and the others
list and load as before. A version is usable ("ok") when its `model.yaml` reads
and names its folder, every file its manifest lists is present, and the manifest reads with
every field; hashes are checked when a version is loaded, not here. A usable version the
closed loop built and did not promote (refused by its gate, failed, interrupted) carries the
reason in `leanserve-refused.json` beside its files: it is listed as refused and never becomes
what a bare NAME means by being the newest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bentoml
import yaml
from bentoml._internal.models.model import MODEL_YAML_FILENAME, Model
from bentoml._internal.tag import validate_tag_str

from optimise.artefact import ArtefactError, Manifest, files_table, read_manifest_data
from optimise.errors import StoreError, one_line

logger = logging.getLogger(__name__)

OWNER_LABEL = "leanserve"
REFUSED_FILE = "leanserve-refused.json"
"""In a version folder: why the closed loop did not promote the version (`{"reason": ..., "at": ...}`)."""
UNKNOWN_TIME = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class StoredVersion:
    """One version folder: usable when `problem` is None, broken otherwise (and `problem` says why)."""

    name: str
    version: str
    path: Path
    created: datetime
    model: bentoml.Model | None = None
    problem: str | None = None
    refused: str | None = None
    """Why the closed loop did not promote this version (`REFUSED_FILE`), None for any other."""

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def ok(self) -> bool:
        return self.problem is None


def store_dir() -> Path:
    """The model store in use: `$BENTOML_HOME/models`, or a Bento's own store while serving one."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store.get()._path)  # the store has no public path


def is_tag_part(text: str) -> bool:
    """Whether `text` is a valid BentoML model name or version (folders of other shapes are not versions)."""
    try:
        validate_tag_str(text)
    except ValueError:
        return False
    return True


def _read_model(folder: Path) -> Model:
    """BentoML's view of a version folder. Raises StoreError with the reason it cannot be read."""
    try:
        # Parsed here first: BentoML logs a YAML error at ERROR level before raising it.
        yaml.safe_load((folder / MODEL_YAML_FILENAME).read_text(encoding="utf-8"))
        return Model.from_path(folder)
    except FileNotFoundError:
        raise StoreError(f"no {MODEL_YAML_FILENAME}") from None
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise StoreError(f"invalid YAML in {MODEL_YAML_FILENAME}{where}: {exc.problem}") from None
    except Exception as exc:  # any error of BentoML's parser on a hand-edited file means unreadable
        raise StoreError(f"cannot read {MODEL_YAML_FILENAME}: {one_line(exc)}") from None


def _missing_files(folder: Path) -> str | None:
    """Why the version cannot be used (its files incomplete, or its manifest unreadable), or None."""
    try:
        data = read_manifest_data(folder)
        listed = files_table(data)
    except ArtefactError as exc:
        return f"incomplete: {exc}"
    missing = sorted(name for name in listed if not (folder / name).is_file())
    if missing:
        return f"incomplete: missing {', '.join(missing)}"
    try:
        Manifest.from_json(data)  # every field, as loading will read it
    except ArtefactError as exc:
        return str(exc)
    return None


def read_version(folder: Path) -> StoredVersion | None:
    """The version stored in `folder` (`<store>/<name>/<version>`) and its state.

    None when it reads but was stored by something other than leanserve. Never raises
    for a damaged version: the damage is the `problem`.
    """
    name, version = folder.parent.name, folder.name
    try:
        model = _read_model(folder)
    except StoreError as exc:  # no date to go by: it sorts first
        return StoredVersion(name, version, folder, UNKNOWN_TIME, problem=str(exc))
    if model.info.labels.get("owner") != OWNER_LABEL:
        return None
    created = model.info.creation_time
    if created.tzinfo is None:  # a hand-edited date: compare it as UTC rather than fail the sort
        created = created.replace(tzinfo=UTC)
    if str(model.tag) != f"{name}:{version}":
        return StoredVersion(
            name, version, folder, created, model, f"{MODEL_YAML_FILENAME} names {model.tag} instead"
        )
    return StoredVersion(name, version, folder, created, model, _missing_files(folder), refusal(folder))


def refusal(folder: Path) -> str | None:
    """The reason recorded in the folder's `REFUSED_FILE`, None without one (an unreadable one still
    marks the version refused: it was written for a reason)."""
    path = folder / REFUSED_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"refused (unreadable {REFUSED_FILE})"
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason if isinstance(reason, str) and reason else f"refused (no reason in {REFUSED_FILE})"


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and is_tag_part(p.name))
    except OSError as exc:
        logger.warning("cannot list %s: %s", folder, exc)
        return []


def list_versions(name: str | None = None) -> list[StoredVersion]:
    """Every leanserve version in the store (of `name` only, if given), usable or not, by name then age.

    Raises StoreError when `name` is not a valid model name.
    """
    root = store_dir()
    name = name.lower() if name is not None else None  # as BentoML spells names
    if name is not None and not is_tag_part(name):
        raise StoreError(f"invalid model name {name!r}")
    folders = [root / name] if name is not None else _subfolders(root)
    found = [read_version(v) for folder in folders if folder.is_dir() for v in _subfolders(folder)]
    return sorted((v for v in found if v is not None), key=lambda v: (v.name, v.created, v.version))
