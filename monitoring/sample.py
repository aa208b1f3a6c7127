"""What a drift check compares: rows of traffic (`Window`), the build's reference sample, and their checks.

Columns are named as the drift report names them: `px_<i>` for the i-th flattened input value, `out_<j>`
for the j-th output value, and the per-row scalar features by their own names (`n_tokens`...). Rows are
counted from 1 in every message.

Distinct inputs: a window holding one input repeated is one client, not a population, and says nothing
about drift. `row_digests` gives each row a 64-bit digest of its input (a text, a tensor row's bytes; the
outputs' bytes when a window has no inputs) and `count_distinct` counts them.
The served window digests each row as it keeps it (8 bytes a row, the texts themselves are not kept);
a window read from files counts its rows when asked (`Window.distinct_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import numpy as np

from monitoring.drift_embeddings import principal_axes, text_features
from optimise.artefact import ArtefactError, ModelKind, ReferenceData, manifest_name

FEATURE_PREFIX = "px_"
OUTPUT_PREFIX = "out_"
SHOWN_ROWS = 5  # rows listed in an error message before "and N more"


@dataclass(frozen=True, kw_only=True, eq=False)
class Window:
    """Rows of traffic: inputs (tensor models), outputs, and per-row scalar features.

    `distinct_inputs` is the number of distinct inputs among the rows when whoever built the window
    counted them (the served window digests texts it does not keep); None: count from the rows."""

    outputs: np.ndarray | None = None
    inputs: np.ndarray | None = None
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    distinct_inputs: int | None = None

    def __post_init__(self) -> None:
        arrays = [a for a in (self.outputs, self.inputs, *self.features.values()) if a is not None]
        if not arrays or len({len(a) for a in arrays}) != 1:
            raise ValueError(f"a window needs arrays of one length, got {[len(a) for a in arrays]}")

    def __len__(self) -> int:
        return len(next(a for a in (self.outputs, self.inputs, *self.features.values()) if a is not None))

    @property
    def kind(self) -> ModelKind:
        return ModelKind.TENSOR if self.inputs is not None else ModelKind.EMBEDDING

    @classmethod
    def text(
        cls, embeddings: np.ndarray, texts: Sequence[str] | None = None, token_counts: Any = None, **kw: Any
    ) -> Self:
        """A text model's rows; `texts`, when given, also count the distinct inputs."""
        if texts is not None and "distinct_inputs" not in kw:
            kw["distinct_inputs"] = count_distinct(row_digests(texts))
        return cls(outputs=embeddings, features=text_features(texts, token_counts), **kw)

    def distinct_rows(self) -> int:
        """Distinct inputs among the rows: as counted when built, else distinct input (or output) rows."""
        if self.distinct_inputs is not None:
            return self.distinct_inputs
        rows = self.inputs if self.inputs is not None else self.outputs
        if rows is None:
            rows = np.column_stack([np.asarray(v).reshape(len(self), -1) for v in self.features.values()])
        return count_distinct(row_digests(rows))

    def columns(self) -> dict[str, np.ndarray]:
        """Every value column, named as in the report: px_<i> (flattened inputs), out_<j>, features."""
        columns: dict[str, np.ndarray] = {}
        for prefix, array in ((FEATURE_PREFIX, self.inputs), (OUTPUT_PREFIX, self.outputs)):
            if array is not None:
                flat = np.asarray(array).reshape(len(array), -1)
                columns |= {f"{prefix}{i}": flat[:, i] for i in range(flat.shape[1])}
        return columns | {k: np.asarray(v).reshape(-1) for k, v in self.features.items()}

    def save_npz(self, path: Path) -> None:
        """In reference.npz's layout (the inputs as one input, `x`), with the features."""
        inputs = {} if self.inputs is None else {"x": self.inputs}
        ReferenceData(inputs, self.outputs, features=dict(self.features)).save(path)


@dataclass(frozen=True, kw_only=True, eq=False)
class ReferenceSample(Window):
    name: str = "model"
    input_names: tuple[str, ...] | None = None
    """The names of the flattened input columns where the reference file has its own (a CSV's
    header), used by the drift report for both sides; None: `px_<i>`."""

    @classmethod
    def from_npz(cls, path: Path, name: str | None = None, strict: bool = False) -> ReferenceSample:
        """A stored artefact's reference.npz (its model name from the manifest beside it, if any)."""
        name = name or manifest_name(path.parent)
        return cls(name=name or path.parent.name or path.stem, **read_npz(path, strict))

    @cached_property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and principal axes of the even reference rows (see `monitoring.drift`)."""
        assert self.outputs is not None
        return principal_axes(self.outputs.reshape(len(self.outputs), -1)[0::2])


def read_npz(path: Path, strict: bool = False) -> dict[str, Any]:
    """The fields of a `Window` from an .npz in reference.npz's layout (`optimise.artefact.ReferenceData`):
    inputs flattened and joined in name order, outputs, features; a text model's token ids become
    `n_tokens`.

    Raises ValueError naming the file when it has none of those arrays, when they differ in rows, or
    (`strict`) when it has arrays of other names."""
    try:
        stored = ReferenceData.load(path, allow_other=not strict)
    except ArtefactError as exc:
        raise ValueError(str(exc)) from None
    inputs, features = dict(stored.inputs), dict(stored.features)
    if "input_ids" in inputs:  # a text model: keep the token counts, not the tokens
        if "attention_mask" in inputs:
            features.setdefault("n_tokens", inputs["attention_mask"].sum(axis=1).astype(np.float64))
        inputs = {}
    flat = [inputs[k].reshape(len(inputs[k]), -1) for k in sorted(inputs)]
    return {
        "outputs": stored.outputs,
        "inputs": np.concatenate(flat, axis=1) if flat else None,
        "features": features,
    }


# -- distinct inputs ----------------------------------------------------------------------------
def _text_key(row: Any) -> Any:
    """A text, or a row of several texts, as one hashable value."""
    if isinstance(row, str | bytes):
        return row
    return tuple(np.asarray(row, dtype=object).ravel().tolist())


def row_digests(rows: np.ndarray | Sequence[Any]) -> np.ndarray:
    """One 64-bit digest (int64) per row (first axis = rows): of a text (or a row of texts), else of the
    row's bytes. Python's hash (SipHash): salted per process, so digests are compared only within one
    process; equal rows of one dtype get equal digests, and a collision needs about 2**32 rows."""
    array = rows if isinstance(rows, np.ndarray) else np.asarray(rows, dtype=object)
    if array.dtype == object:
        return np.fromiter((hash(_text_key(r)) for r in array), dtype=np.int64, count=len(array))
    data = np.ascontiguousarray(array).reshape(len(array), -1)
    width, raw = data.shape[1] * data.itemsize, data.tobytes()
    hashes = (hash(raw[i : i + width]) for i in range(0, len(raw), width or 1))
    return np.fromiter(hashes, dtype=np.int64, count=len(array))


def count_distinct(digests: np.ndarray) -> int:
    return len(np.unique(digests))


# -- value checks -------------------------------------------------------------------------------
def _rows(indices: np.ndarray) -> str:
    """'row 4' or 'rows 6, 7, 8, 9, 10 and 3 more' (counted from 1)."""
    shown = ", ".join(str(int(i) + 1) for i in indices[:SHOWN_ROWS])
    more = f" and {len(indices) - SHOWN_ROWS} more" if len(indices) > SHOWN_ROWS else ""
    return f"row{'s' if len(indices) > 1 else ''} {shown}{more}"


def column_problem(values: np.ndarray) -> str | None:
    """What is wrong with one numeric column (empty, missing or infinite values), or None."""
    data = np.asarray(values, dtype=np.float64)
    if not len(data):
        return None
    missing = np.flatnonzero(np.isnan(data))
    if len(missing) == len(data):
        return f"is empty: no value in any of its {len(data)} rows"
    if len(missing):
        return f"has {len(missing)} missing (empty or NaN) value{'s' * (len(missing) > 1)} ({_rows(missing)})"
    infinite = np.flatnonzero(np.isinf(data))
    if len(infinite):
        return f"has {len(infinite)} infinite value{'s' * (len(infinite) > 1)} ({_rows(infinite)})"
    return None


def check_finite(sample: Window, label: str) -> None:
    """Raise ValueError naming `label` and the first column with a missing or infinite value."""
    arrays = [a for a in (sample.inputs, sample.outputs, *sample.features.values()) if a is not None]
    if all(np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in arrays):
        return  # the usual case: one pass per array, no per-column work
    for name, column in sample.columns().items():
        problem = column_problem(column)
        if problem is not None:
            raise ValueError(f"{label}: column {name} {problem}")
