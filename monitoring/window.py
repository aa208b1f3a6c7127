"""A bounded, sampled window of live traffic, cheap enough for the request path."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from monitoring.drift import Window


class SampleWindow:
    """The last `capacity` sampled rows, in preallocated arrays: memory stays fixed whatever the traffic.

    `add` keeps each row with probability `rate` (a seeded generator, so a replay keeps the same rows) and
    costs a few numpy copies under a lock; `snapshot` copies the rows out, oldest first.
    """

    def __init__(self, capacity: int, rate: float = 1.0, seed: int = 0) -> None:
        if capacity < 1 or not 0.0 <= rate <= 1.0:
            raise ValueError(f"need capacity >= 1 and 0 <= rate <= 1, got {capacity}, {rate}")
        self.capacity, self.rate = capacity, rate
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._buffers: dict[str, np.ndarray] = {}
        self._next = self._size = self.seen = 0

    def add(
        self, inputs: np.ndarray | None, outputs: np.ndarray | None, features: Mapping[str, Any] | None = None
    ) -> int:
        """Sample rows of one request (first axis = rows); returns how many were kept."""
        named = {"inputs": inputs, "outputs": outputs} | {
            f"feature__{k}": v for k, v in (features or {}).items()
        }
        arrays = {k: np.asarray(v) for k, v in named.items() if v is not None}
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"inputs, outputs and features need one row count, got {sorted(lengths)}")
        rows = lengths.pop()
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
            self._next = int(slots[-1] + 1) % self.capacity
            self._size = min(self._size + len(keep), self.capacity)
            return len(keep)

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buffers.values())

    def snapshot(self) -> Window:
        with self._lock:
            order = (self._next - self._size + np.arange(self._size)) % self.capacity
            rows = {k: v[order] for k, v in self._buffers.items()}
        if not rows:
            raise ValueError("the window is empty")
        features = {k.removeprefix("feature__"): v for k, v in rows.items() if k.startswith("feature__")}
        return Window(inputs=rows.get("inputs"), outputs=rows.get("outputs"), features=features)
