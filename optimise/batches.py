"""Batches of named numpy arrays (first axis = samples): slicing, splitting, tiling."""

from __future__ import annotations

import numpy as np

from optimise.types import Batch


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return {name: array[start:stop] for name, array in batch.items()}


def iter_batches(batch: Batch, size: int) -> list[Batch]:
    n = len(next(iter(batch.values())))
    return [slice_batch(batch, i, min(i + size, n)) for i in range(0, n, size)]


def tile_batch(batch: Batch, size: int) -> Batch:
    """Repeat a batch-1 input `size` times along the sample axis."""
    return {name: np.repeat(array[:1], size, axis=0) for name, array in batch.items()}
