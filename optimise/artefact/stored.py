"""One stored version folder read as a whole: its manifest, and where its files are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optimise.artefact.files import REFERENCE_FILE, REPORT_DIR, ArtefactError, sha256_of
from optimise.artefact.manifest import Manifest, read_manifest
from optimise.artefact.reference import ReferenceData
from optimise.types import model_files


@dataclass(frozen=True, eq=False)
class StoredArtefact:
    """A version folder and its manifest. Paths are absolute; files are hash-checked on request
    (`modified_files`)."""

    root: Path
    manifest: Manifest

    @classmethod
    def open(cls, root: Path) -> StoredArtefact:
        """Read the manifest of the version in `root`. Raises ArtefactError naming what is wrong."""
        return cls(root, read_manifest(root))

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest.model_file

    @property
    def model_files(self) -> tuple[Path, ...]:
        """Every file of the stored model, the model file first (OpenVINO IR: the .xml, then its .bin)."""
        return model_files(self.model_path, self.manifest.selected.format)

    @property
    def tokenizer_path(self) -> Path | None:
        tokenizer = self.manifest.tokenizer
        return None if tokenizer is None else self.root / tokenizer.file

    @property
    def reference_path(self) -> Path:
        return self.root / REFERENCE_FILE

    @property
    def report_path(self) -> Path:
        return self.root / REPORT_DIR / "report.md"

    def modified_files(self) -> list[str]:
        """Files missing or whose sha256 differs from the manifest's (empty when the artefact is intact)."""
        return [
            name
            for name, digest in self.manifest.files.items()
            if not (self.root / name).is_file() or sha256_of(self.root / name) != digest
        ]

    def reference(self) -> ReferenceData:
        """The stored reference sample. Raises ArtefactError when it cannot be read."""
        if not self.reference_path.is_file():
            raise ArtefactError(f"{self.root}: no {REFERENCE_FILE}")
        return ReferenceData.load(self.reference_path)
