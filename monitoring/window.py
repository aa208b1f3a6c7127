"""A bounded, sampled window of live traffic, cheap enough for the request path."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monitoring.sample import Window, count_distinct, row_digests

_FEATURE = "feature:"  # buffer names of the per-row features, beside "inputs" and "outputs"


class SampleWindow:
    """The last `capacity` sampled rows, in preallocated arrays: memory stays fixed whatever the traffic.

    `add` keeps each row with probability `rate` (a seeded generator, so a replay keeps the same rows) and
    costs a few numpy copies under a lock; `snapshot` copies the rows out, oldest first. Each kept row's
    input is digested (8 bytes a row, see `monitoring.sample`), so a snapshot counts its distinct inputs
    even for text models, whose texts the window does not keep.
    """

    def __init__(self, capacity: int, rate: float = 1.0, seed: int = 0) -> None:
        if capacity < 1 or not 0.0 <= rate <= 1.0:
            raise ValueError(f"need capacity >= 1 and 0 <= rate <= 1, got {capacity}, {rate}")
        self.capacity, self.rate = capacity, rate
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._buffers: dict[str, np.ndarray] = {}
        self._digests = np.zeros(capacity, dtype=np.int64)
        self._next = self._size = self.seen = 0

    def add(
        self,
        inputs: np.ndarray | None,
        outputs: np.ndarray | None,
        features: Mapping[str, Any] | None = None,
        keys: np.ndarray | Sequence[Any] | None = None,
    ) -> int:
        """Sample rows of one request (first axis = rows); returns how many were kept.

        `keys` say what each row's input was when `inputs` are not kept (a text model's texts); without
        them the distinct inputs are counted on `inputs`, else on `outputs`."""
        named = {"inputs": inputs, "outputs": outputs} | {
            f"{_FEATURE}{k}": v for k, v in (features or {}).items()
        }
        arrays = {k: np.asarray(v) for k, v in named.items() if v is not None}
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"inputs, outputs and features need one row count, got {sorted(lengths)}")
        rows = lengths.pop()
        identity = _identity(keys if keys is not None else inputs if inputs is not None else outputs, arrays)
        if len(identity) != rows:
            raise ValueError(f"keys need one row per input row: got {len(identity)} for {rows}")
        with self._lock:
            self.seen += rows
            keep = np.flatnonzero(self._rng.random(rows) < self.rate)[-self.capacity :]
            if not len(keep):
                return 0
            if not self._buffers:
                self._buffers = {
                    k: np.empty((self.capacity, *v.shape[1:]), v.dtype) for k, v in arrays.items()
                }
            if arrays.keys() != self._buffers.keys() or any(
                v.shape[1:] != self._buffers[k].shape[1:] for k, v in arrays.items()
            ):
                raise ValueError("rows differ in names or shapes from the window's first rows")
            slots = (self._next + np.arange(len(keep))) % self.capacity
            for k, v in arrays.items():
                self._buffers[k][slots] = v[keep]
            self._digests[slots] = row_digests(identity[keep])
            self._next = int(slots[-1] + 1) % self.capacity
            self._size = min(self._size + len(keep), self.capacity)
            return len(keep)

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """The rows kept and their input digests (fixed once the first rows arrived)."""
        return sum(b.nbytes for b in self._buffers.values()) + self._digests.nbytes

    def snapshot(self) -> Window:
        with self._lock:
            order = (self._next - self._size + np.arange(self._size)) % self.capacity
            rows = {k: v[order] for k, v in self._buffers.items()}
            distinct = count_distinct(self._digests[order])
        if not rows:
            raise ValueError("the window is empty")
        features = {k.removeprefix(_FEATURE): v for k, v in rows.items() if k.startswith(_FEATURE)}
        return Window(
            inputs=rows.get("inputs"),
            outputs=rows.get("outputs"),
            features=features,
            distinct_inputs=distinct,
        )


def _identity(rows: np.ndarray | Sequence[Any] | None, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """What tells one input from another: the given rows (texts stay Python strings), else every array."""
    if rows is None:
        return np.column_stack([v.reshape(len(v), -1) for v in arrays.values()])
    return rows if isinstance(rows, np.ndarray) else np.asarray(rows, dtype=object)
