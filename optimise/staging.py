"""Versions written aside, then moved into the model store whole.

A version is written in a staging folder beside the store
(`<store>/../.leanserve-staging/`: on the same filesystem, so one rename moves
it in, and outside the store, since any folder inside it that is not a version
breaks BentoML's own listing), and only then named `latest`. A build killed
half-way leaves at most a staging folder named after its process
(`optimise.scratch`); the next save removes it once that process is gone, and
nothing that reads the store ever looks there.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bentoml._internal.models.model import MODEL_YAML_FILENAME

from optimise.atomic import replacing
from optimise.scratch import clean_stale, owned_dir
from optimise.store_index import store_dir

logger = logging.getLogger(__name__)

STAGING_DIR = ".leanserve-staging"
STAGE_KIND = "leanserve-stage"


def staging_dir() -> Path:
    """Where versions are written before they enter the store: beside it, on the same filesystem."""
    return store_dir().resolve().parent / STAGING_DIR


@contextmanager
def staged_version() -> Iterator[Path]:
    """An empty staging folder owned by this process, removed when the block ends unless published.

    Clears first what killed builds left in the staging area. Raises OSError when it cannot be made.
    """
    clean_stale(staging_dir(), STAGE_KIND)
    with owned_dir(STAGE_KIND, staging_dir()) as staged:
        yield staged


def publish(staged: Path, target: Path) -> None:
    """Move a complete version into the store with one rename, then name it `latest`. Raises OSError."""
    target.parent.mkdir(exist_ok=True)
    staged.chmod(target.parent.stat().st_mode & 0o777)  # mkdtemp made it private
    try:
        staged.rename(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_in(staged, target)
    _write_latest(target)


def _copy_in(staged: Path, target: Path) -> None:
    """The fallback when the store is a mount of its own: copy, `model.yaml` last (no rename can cross)."""
    logger.warning("%s is on another filesystem than the store: copying, not renaming", staged)
    try:
        shutil.copytree(staged, target, ignore=shutil.ignore_patterns(MODEL_YAML_FILENAME))
        shutil.copy2(staged / MODEL_YAML_FILENAME, target / MODEL_YAML_FILENAME)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _write_latest(version: Path) -> None:
    """Point BentoML's `latest` file of the model at `version`, replacing it in one step."""
    with replacing(version.parent / "latest") as out:
        out.write(version.name)
