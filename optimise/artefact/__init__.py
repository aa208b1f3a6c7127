"""The stored artefact: what a build writes into a model version and everything else reads back.

One owner of the format: the file names of a version folder, the manifest (`manifest.Manifest`,
frozen dataclasses written as `manifest.json`), the reference sample (`reference.ReferenceData`,
`reference.npz`) and what a served model takes (`ModelKind`). No other module opens these files or
indexes their contents by key; a version folder is read as a whole with `StoredArtefact.open`.
"""

from optimise.artefact.files import (
    MANIFEST_FILE,
    MODEL_FILE,
    PREPROCESSING_DIR,
    REFERENCE_FILE,
    REPORT_DIR,
    TOKENIZER_FILE,
    ArtefactError,
    ModelKind,
    model_file_names,
    sha256_of,
)
from optimise.artefact.manifest import (
    DroppedCandidate,
    Manifest,
    PassRecord,
    SourceRecord,
    TensorSignature,
    TokenizerRecord,
    VariantRecord,
    files_table,
    manifest_name,
    read_manifest,
    read_manifest_data,
    write_manifest,
)
from optimise.artefact.reference import ReferenceData
from optimise.artefact.stored import StoredArtefact

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "PREPROCESSING_DIR",
    "REFERENCE_FILE",
    "REPORT_DIR",
    "TOKENIZER_FILE",
    "ArtefactError",
    "DroppedCandidate",
    "Manifest",
    "ModelKind",
    "PassRecord",
    "ReferenceData",
    "SourceRecord",
    "StoredArtefact",
    "TensorSignature",
    "TokenizerRecord",
    "VariantRecord",
    "files_table",
    "manifest_name",
    "model_file_names",
    "read_manifest",
    "read_manifest_data",
    "sha256_of",
    "write_manifest",
]
