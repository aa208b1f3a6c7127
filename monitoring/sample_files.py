"""Saved samples for the offline `drift` command: reading them, and refusing malformed ones.

File layouts (`load_sample`):
- `.npz`: an artefact's reference.npz (`input__<name>`, `output`, `labels`), or a window saved by
  `Window.save_npz` (also `feature__<name>`); token ids of a text model become `n_tokens`.
- `.npy`: one array: a tensor model's inputs (first axis = rows), or embeddings with `--kind embedding`.
- `.csv` / `.parquet`: `out_<j>` columns are the outputs, a `text` column gives `text_chars`; the other
  columns are a tensor model's inputs, or an embedding model's scalar features (`n_tokens`...). A table
  used as the reference names its input columns in the report (an array's are `px_<i>`; a name
  the report also uses for the prediction or a text feature gets " (input)" after it).

Rules. Each broken rule raises ValueError naming the file and the column, and the row of a bad cell
(rows count from 1, after the header); the CLI prints it as one `error:` line and exits with 2.
- A file has rows: an empty file, a header-only CSV, a parquet or an array without rows is an error.
- CSV / parquet: every column but `text` holds numbers. A cell that is not a number, an empty (or NaN)
  cell and an infinite value are errors; nothing is filled in or dropped, since a window of served
  traffic has no gaps (the server refuses NaN): a gap is a broken export. An entirely empty column says
  so. An empty `text` cell is the empty text.
- `.npy` / `.npz`: NaN and infinite values are errors naming the column as the report does (`px_<i>`,
  `out_<j>`, a feature); an `.npz` needs `input__<name>`, `output` or `feature__<name>` arrays of one
  length, may have `labels` (ignored) and nothing else; an `.npy` holds numbers.
- Against the reference (`load_pair`): the input columns (tensor models) and the `out_<j>` columns must
  be the reference's. They are matched by name (an array's columns are named `px_<i>` / `out_<j>`, as in
  the report) and reordered to the reference's order; columns missing from the current file, or not in
  the reference, are an error that lists them. Only when one side is an unnamed array and the other's
  names share nothing with `px_<i>` / `out_<j>` are they matched by position, and then the counts must
  agree.
- A group only one side has (outputs, inputs: an `.npy` holds one array) and a scalar feature only one
  side has (`n_tokens` of a reference.npz against a CSV's `text_chars`) are left out of the verdict and
  listed in the report's `skipped`; no column in common is an error (see `monitoring.drift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift_embeddings import text_features
from monitoring.sample import (
    FEATURE_PREFIX,
    OUTPUT_PREFIX,
    SHOWN_ROWS,
    ReferenceSample,
    Window,
    check_finite,
    column_problem,
    read_npz,
)
from optimise.artefact import ModelKind

TABLES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class _Loaded:
    """A file's `Window` fields and its own column names (None: an array's columns, unnamed)."""

    fields: dict[str, Any]
    inputs: list[str] | None = None
    outputs: list[str] | None = None


def load_sample(path: Path, kind: ModelKind = ModelKind.TENSOR) -> dict[str, Any]:
    """The fields of a `Window` (inputs, outputs, features) read from one file; see the module doc.

    Raises ValueError for a malformed file (module doc: rules)."""
    return _load(path, kind).fields


def load_pair(
    reference: Path, current: Path, model_kind: ModelKind | str | None = None
) -> tuple[ReferenceSample, Window]:
    """The reference and the window to judge; the kind comes from a reference.npz's content, else from
    `model_kind` (default tensor). Raises ValueError for malformed files or columns that do not match."""
    sample, ref = _load_reference(reference, model_kind)
    kind = ModelKind(model_kind) if model_kind is not None else sample.kind
    cur = _load(current, kind)
    return sample, Window(**_aligned(ref, cur, current))


def _load_reference(path: Path, model_kind: ModelKind | str | None) -> tuple[ReferenceSample, _Loaded]:
    if path.suffix.lower() != ".npz":
        loaded = _load(path, ModelKind(model_kind or ModelKind.TENSOR))
        names = tuple(loaded.inputs) if loaded.inputs is not None else None
        return ReferenceSample(name=path.stem, input_names=names, **loaded.fields), loaded
    sample = ReferenceSample.from_npz(path, strict=True)  # named after its manifest
    check_finite(sample, str(path))
    return sample, _Loaded({"outputs": sample.outputs, "inputs": sample.inputs, "features": sample.features})


def _aligned(ref: _Loaded, cur: _Loaded, path: Path) -> dict[str, Any]:
    """The current file's fields with its input and output columns in the reference's order."""
    fields = dict(cur.fields)
    for group, prefix in (("inputs", FEATURE_PREFIX), ("outputs", OUTPUT_PREFIX)):
        ref_array, cur_array = ref.fields.get(group), cur.fields.get(group)
        if ref_array is None or cur_array is None:
            continue  # a group on one side only: skipped and listed by compute_drift
        ref_names, cur_names = getattr(ref, group), getattr(cur, group)
        generated = ref_names is None or cur_names is None
        order = _align(
            _names(cur_names, cur_array, prefix),
            _names(ref_names, ref_array, prefix),
            generated,
            f"{path}: {group[:-1]}",
        )
        flat = np.asarray(cur_array).reshape(len(cur_array), -1)
        fields[group] = cur_array if order == list(range(flat.shape[1])) else flat[:, order]
    return fields


def _names(own: list[str] | None, array: np.ndarray, prefix: str) -> list[str]:
    width = int(np.prod(np.asarray(array).shape[1:], dtype=np.int64))
    return own if own is not None else [f"{prefix}{i}" for i in range(width)]


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN_ROWS} more" if len(names) > SHOWN_ROWS else ""
    return ", ".join(repr(n) for n in names[:SHOWN_ROWS]) + more


def _align(current: list[str], reference: list[str], generated: bool, what: str) -> list[int]:
    """Where each of the reference's columns is in the current file. Raises ValueError listing the
    missing and unexpected columns (or, matched by position, the two counts)."""
    if set(current) == set(reference) and len(current) == len(reference):
        return [current.index(name) for name in reference]
    if generated and not set(current) & set(reference):
        if len(current) == len(reference):
            return list(range(len(current)))  # an unnamed array against other names: by position
        raise ValueError(f"{what} columns: {len(current)} in the file, {len(reference)} in the reference")
    missing = [n for n in reference if n not in current]
    extra = [n for n in current if n not in reference]
    problems = [f"missing {_listed(missing)}"] if missing else []
    problems += [f"unexpected {_listed(extra)}"] if extra else []
    problems = problems or ["a column name appears twice"]
    raise ValueError(f"{what} columns differ from the reference's: {'; '.join(problems)}")


def _load(path: Path, kind: ModelKind) -> _Loaded:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        loaded = _Loaded(read_npz(path, strict=True))
    elif suffix == ".npy":
        loaded = _Loaded(_read_npy(path, kind))
    elif suffix in TABLES:
        loaded = _read_table(path, kind)
    else:
        raise ValueError(f"{path}: expected .npz, .npy, .csv or .parquet")
    window = Window(**loaded.fields)
    if len(window) == 0:
        raise ValueError(f"{path}: no rows")
    if suffix not in TABLES:  # tables were checked cell by cell, with their own column names
        check_finite(window, str(path))
    return loaded


def _read_npy(path: Path, kind: ModelKind) -> dict[str, Any]:
    array = np.load(path)
    if array.ndim == 0 or array.dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: expected an array of numbers with rows on the first axis, got {array.dtype}"
        )
    return {"outputs": array} if kind is ModelKind.EMBEDDING else {"inputs": array}


def _read_table(path: Path, kind: ModelKind) -> _Loaded:
    try:
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file (no header, no rows)") from None
    if len(table) == 0:
        raise ValueError(f"{path}: no rows (only the header)")
    names = [str(c) for c in table.columns]
    table.columns = pd.Index(names)
    numbers = {name: _numeric_column(table[name], name, path) for name in names if name != "text"}
    outputs = [n for n in numbers if n.startswith(OUTPUT_PREFIX)]
    rest = [n for n in numbers if n not in outputs]
    features = {}
    if "text" in table:
        features = text_features(table["text"].fillna("").astype(str).tolist())
    fields: dict[str, Any] = {"outputs": np.column_stack([numbers[n] for n in outputs]) if outputs else None}
    if kind is ModelKind.TENSOR and rest:
        fields["inputs"] = np.column_stack([numbers[n] for n in rest])
        return _Loaded(fields | {"features": features}, inputs=rest, outputs=outputs or None)
    features |= {n: numbers[n] for n in rest}
    return _Loaded(fields | {"features": features}, outputs=outputs or None)


def _numeric_column(values: pd.Series, name: str, path: Path) -> np.ndarray:
    """The column as float64. Raises ValueError naming the column (and the first bad row)."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy() & values.notna().to_numpy())
    if len(bad):
        more = f" ({len(bad) - 1} more cells are not numbers either)" if len(bad) > 1 else ""
        cell = values.iloc[int(bad[0])]
        raise ValueError(f"{path}: column {name!r}, row {int(bad[0]) + 1}: {cell!r} is not a number{more}")
    array = numbers.to_numpy(dtype=np.float64)
    problem = column_problem(array)
    if problem is not None:
        raise ValueError(f"{path}: column {name!r} {problem}")
    return array
