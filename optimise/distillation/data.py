"""What a student learns from: unlabelled inputs, read from a user's file or made from the bundle.

Text models learn from texts (one per line), tensor models from a `.npz` of named
inputs shaped like the model's (first axis: samples), with true labels under
`labels` where the user has them. A file is checked before anything is built:
missing, empty, binary or too small is a `ConfigError` naming the cause.

Inputs a server recorded (its window of recent traffic, a `.npz` of the model's
inputs: token ids for text models) are added to that data by `with_live_rows`,
repeated to a share of it: the student sees the traffic it will serve, and the
corpus keeps it general.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimise.errors import ConfigError
from optimise.types import Batch

MIN_TEXTS = 1_000
"""Fewer texts than this cannot move a student past its layer-dropped start (measured on MiniLM)."""
MIN_ROWS = 256
"""Fewer tensor rows than a few batches overfit the student to them."""
MIN_LIVE_ROWS = 50
"""Recorded inputs below this are too few to weight a student towards (the server's window holds up to
1,000; its drift verdicts start at 200)."""
LIVE_SHARE = 0.1
"""Share of the distillation data the recorded inputs make up once added (`with_live_rows`)."""
LABELS_KEY = "labels"
NO_LABEL = -1
"""The label of a row without one (recorded inputs added to labelled data)."""
_BINARY_PROBE = 8192


@dataclass(frozen=True)
class DistillationData:
    """Unlabelled inputs for a student: texts (text models) or named arrays (tensor models).

    Attributes:
        texts: one input per item, for models the bundle tokenises; None for tensor models.
        inputs: named arrays [N, ...] for tensor models; None for text models.
        labels: true class labels [N] where present (classifiers; `NO_LABEL` for a row without),
            else None.
        source: where the data came from, for the report (e.g. 'traffic.txt, 24,000 texts').
        digest: sha256 of the content: part of the trained student's cache key.
        token_ids: text models: inputs already tokenised (recorded traffic), each the token ids of its
            real tokens, special tokens included; learnt from after `texts`.
    """

    texts: tuple[str, ...] | None
    inputs: Batch | None
    labels: np.ndarray | None
    source: str
    digest: str
    token_ids: tuple[tuple[int, ...], ...] | None = None

    @property
    def size(self) -> int:
        if self.inputs is not None:
            return len(next(iter(self.inputs.values())))
        return len(self.texts or ()) + len(self.token_ids or ())


def token_data(rows: list[tuple[int, ...]], source: str) -> DistillationData:
    """Tokenised texts (token ids of the real tokens per row) as distillation data for a text model."""
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return DistillationData(None, None, None, f"{source}, {len(rows):,} token rows", digest, tuple(rows))


def with_live_rows(
    base: DistillationData, live: DistillationData, share: float = LIVE_SHARE
) -> DistillationData:
    """`base` with the recorded rows `live` added, repeated (whole copies, at least one) until they make
    up about `share` of the result: 1,000 rows beside a 178,000-line corpus are added 20 times.

    Text data takes token rows (`token_data`), tensor data the same named inputs; where only one side
    has labels, the other's rows are labelled `NO_LABEL`. Raises ConfigError when the two cannot be
    joined."""
    repeats = max(1, round(share * base.size / ((1 - share) * live.size)))
    source = f"{base.source} + {live.size:,} recorded rows x{repeats}"
    digest = hashlib.sha256(f"{base.digest}+{live.digest}x{repeats}".encode()).hexdigest()
    if base.inputs is None:
        if live.token_ids is None:
            raise ConfigError("recorded inputs for a text model must be token ids (input_ids)")
        rows = (*(base.token_ids or ()), *(live.token_ids * repeats))
        return DistillationData(base.texts, None, None, source, digest, rows)
    if live.inputs is None or set(live.inputs) != set(base.inputs):
        raise ConfigError(f"recorded inputs must hold the model's inputs {sorted(base.inputs)}")
    inputs = {
        name: np.concatenate([base.inputs[name], *[live.inputs[name]] * repeats]) for name in base.inputs
    }
    labels = None
    if base.labels is not None or live.labels is not None:
        base_labels = base.labels if base.labels is not None else np.full(base.size, NO_LABEL, np.int64)
        live_labels = live.labels if live.labels is not None else np.full(live.size, NO_LABEL, np.int64)
        labels = np.concatenate([base_labels.astype(np.int64), *[live_labels.astype(np.int64)] * repeats])
    return DistillationData(None, inputs, labels, source, digest)


def texts_data(texts: list[str], source: str) -> DistillationData:
    """Texts as distillation data; the digest covers every line in order."""
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    return DistillationData(tuple(texts), None, None, f"{source}, {len(texts):,} texts", digest)


def tensor_data(inputs: Batch, labels: np.ndarray | None, source: str) -> DistillationData:
    """Named arrays (and labels) as distillation data; the digest covers names, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels).tobytes())
    rows = len(next(iter(inputs.values())))
    return DistillationData(None, inputs, labels, f"{source}, {rows:,} rows", digest.hexdigest())


def read_text_file(path: Path, minimum: int = MIN_TEXTS) -> DistillationData:
    """One text per line (blank lines skipped). Raises ConfigError for a missing, binary, non-UTF-8,
    empty or too-small file."""
    raw = _read_bytes(path)
    if b"\x00" in raw[:_BINARY_PROBE]:
        raise ConfigError(f"distillation data {path} is binary, not text (one text per line)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"distillation data {path} is not UTF-8 text (byte {exc.start})") from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise ConfigError(f"distillation data {path} holds no text")
    if len(texts) < minimum:
        raise ConfigError(
            f"distillation data {path} holds {len(texts):,} texts; distillation needs {minimum:,}"
        )
    return texts_data(texts, path.name)


def read_token_file(path: Path, vocab_size: int, minimum: int = MIN_LIVE_ROWS) -> DistillationData:
    """A `.npz` of a text model's token inputs, as a server records them: `input_ids` [N, L] (integers
    below `vocab_size`) and optionally `attention_mask` [N, L] (0 marks padding, dropped). Raises
    ConfigError for a missing or unreadable file, missing or malformed ids, ids outside the vocabulary,
    or fewer than `minimum` rows with a real token."""
    arrays = _load_npz(path)
    ids = arrays.get("input_ids")
    if ids is None:
        raise ConfigError(f"distillation data {path} lacks 'input_ids' (a text model's recorded inputs)")
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ConfigError(f"distillation data {path}: 'input_ids' must be integer token ids [rows, tokens]")
    mask = arrays.get("attention_mask", np.ones_like(ids))
    if mask.shape != ids.shape:
        raise ConfigError(
            f"distillation data {path}: 'attention_mask' has shape {mask.shape}, 'input_ids' {ids.shape}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ConfigError(
            f"distillation data {path}: token ids run from {ids.min()} to {ids.max()}, "
            f"the model's vocabulary from 0 to {vocab_size - 1}"
        )
    rows = [tuple(int(t) for t in row[m != 0]) for row, m in zip(ids, mask, strict=True)]
    rows = [row for row in rows if row]
    if len(rows) < minimum:
        raise ConfigError(
            f"distillation data {path} holds {len(rows):,} rows with a token (of {len(ids):,}); "
            f"distillation needs {minimum:,}"
        )
    return token_data(rows, path.name)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    raw = _read_bytes(path)  # existence and emptiness, with the same messages as text
    if not raw.startswith(b"PK"):  # numpy would blame pickled data for any file that is not a zip
        raise ConfigError(f"distillation data {path} is not a readable .npz (a NumPy zip archive, np.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zip / npy errors come in many types
        raise ConfigError(f"distillation data {path} is not a readable .npz: {exc}") from None


def read_npz_file(
    path: Path,
    input_names: tuple[str, ...],
    dtypes: dict[str, np.dtype],
    minimum: int = MIN_ROWS,
    row_shapes: dict[str, tuple[int | None, ...]] | None = None,
) -> DistillationData:
    """A `.npz` with one array per model input (and optionally `labels`). Raises ConfigError for a
    missing or unreadable file, a missing input, a row shape other than `row_shapes[name]` (None:
    any size on that axis), ragged row counts or too few rows."""
    arrays = _load_npz(path)
    missing = [name for name in input_names if name not in arrays]
    if missing:
        raise ConfigError(
            f"distillation data {path} lacks input {missing[0]!r} (the model takes {list(input_names)})"
        )
    scalars = [name for name in (*input_names, LABELS_KEY) if name in arrays and arrays[name].ndim == 0]
    if scalars:
        raise ConfigError(f"distillation data {path}: {scalars[0]!r} is a single value, not rows")
    for name in input_names:
        if arrays[name].dtype.kind not in "biuf":
            raise ConfigError(f"distillation data {path}: {name!r} holds {arrays[name].dtype}, not numbers")
        if arrays[name].dtype.kind == "f" and not np.isfinite(arrays[name]).all():
            raise ConfigError(f"distillation data {path}: {name!r} holds NaN or infinite values")
    if LABELS_KEY in arrays:
        labels = arrays[LABELS_KEY]
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels < 0).any():
            raise ConfigError(
                f"distillation data {path}: 'labels' must be one non-negative integer class per row"
            )
    for name, expected in (row_shapes or {}).items():
        actual = arrays[name].shape[1:]
        fits = len(actual) == len(expected) and all(
            e is None or e == a for e, a in zip(expected, actual, strict=False)
        )
        if not fits:
            shown = tuple("any" if e is None else e for e in expected)
            raise ConfigError(
                f"distillation data {path}: rows of {name!r} have shape {actual}, the model takes {shown}"
            )
    rows = {name: len(arrays[name]) for name in (*input_names, LABELS_KEY) if name in arrays}
    if len(set(rows.values())) != 1:
        raise ConfigError(f"distillation data {path} has different row counts per array: {rows}")
    count = next(iter(rows.values()))
    if count < minimum:
        raise ConfigError(f"distillation data {path} holds {count:,} rows; distillation needs {minimum:,}")
    inputs = {name: arrays[name].astype(dtypes[name], copy=False) for name in input_names}
    classes = arrays[LABELS_KEY].astype(np.int64) if LABELS_KEY in arrays else None
    return tensor_data(inputs, classes, path.name)


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise ConfigError(f"distillation data {path} is a folder, not a file")
    if not path.exists():
        raise ConfigError(f"distillation data {path} does not exist")
    if not path.is_file():  # a device, a pipe: reading it could block or never end
        raise ConfigError(f"distillation data {path} is not a regular file")
    raw = path.read_bytes()
    if not raw.strip():
        raise ConfigError(f"distillation data {path} is empty")
    return raw
