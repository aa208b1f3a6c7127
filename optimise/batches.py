"""Batches of named numpy arrays (first axis = samples): slicing, splitting, tiling."""

from __future__ import annotations

import numpy as np

from optimise.runtimes.base import ATTENTION_MASK
from optimise.types import Batch


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return {name: array[start:stop] for name, array in batch.items()}


def iter_batches(batch: Batch, size: int) -> list[Batch]:
    n = len(next(iter(batch.values())))
    return [slice_batch(batch, i, min(i + size, n)) for i in range(0, n, size)]


def trimmed_batches(batch: Batch, size: int, mask_name: str = ATTENTION_MASK) -> list[Batch]:
    """Batches of `size` rows of similar length, each cut to its longest row (rank >= 2 inputs along
    axis 1), where `batch` has a `mask_name` input: right padding costs no compute. Rows come sorted
    by length (stable), not in their order: for aggregates over rows. Without a mask, `iter_batches`.

    Why: a fidelity set padded to the model's length (MiniLM's 258 texts to 128 tokens, ~20 real)
    spends most of a forward pass on padding: a 4-layer student's held-out check in training took
    2.63 s padded and 0.85 s trimmed (median of 5, 2 threads; it runs every 30 s of training).
    """
    mask = batch.get(mask_name)
    if mask is None:
        return iter_batches(batch, size)
    lengths = mask.reshape(len(mask), -1).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        longest = max(1, int(lengths[rows].max()))
        out.append({k: v[rows, :longest] if v.ndim >= 2 else v[rows] for k, v in batch.items()})
    return out


def tile_batch(batch: Batch, size: int) -> Batch:
    """Repeat a batch-1 input `size` times along the sample axis."""
    return {name: np.repeat(array[:1], size, axis=0) for name, array in batch.items()}
