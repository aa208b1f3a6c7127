"""Batches of named arrays: trimmed batches cut padding and keep every row once."""

from __future__ import annotations

import numpy as np

from optimise.batches import iter_batches, trimmed_batches


def _padded(lengths: list[int], width: int = 8) -> dict[str, np.ndarray]:
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
    ids = np.arange(len(lengths) * width, dtype=np.int64).reshape(len(lengths), width) * mask
    return {"input_ids": ids, "attention_mask": mask, "row": np.arange(len(lengths))}


def test_trimmed_batches_cut_each_batch_to_its_longest_row() -> None:
    batches = trimmed_batches(_padded([5, 1, 3, 2, 8]), size=2)
    assert [b["attention_mask"].shape for b in batches] == [(2, 2), (2, 5), (1, 8)]
    assert [b["row"].tolist() for b in batches] == [[1, 3], [2, 0], [4]]
    assert all(b["attention_mask"][:, -1].any() for b in batches)  # no column of padding alone


def test_trimmed_batches_keep_every_real_token_of_every_row() -> None:
    inputs = _padded([5, 1, 3, 2, 8, 0])
    batches = trimmed_batches(inputs, size=4)
    for batch in batches:
        for ids, mask, row in zip(batch["input_ids"], batch["attention_mask"], batch["row"], strict=True):
            length = int(inputs["attention_mask"][row].sum())
            assert mask.sum() == length
            np.testing.assert_array_equal(ids[:length], inputs["input_ids"][row, :length])
    assert sorted(np.concatenate([b["row"] for b in batches]).tolist()) == list(range(6))
    assert batches[0]["attention_mask"].shape[1] >= 1  # a row of only padding keeps one column


def test_inputs_without_a_mask_are_batched_as_they_are() -> None:
    inputs = {"pixels": np.zeros((5, 3, 2), dtype=np.float32)}
    trimmed, plain = trimmed_batches(inputs, size=2), iter_batches(inputs, 2)
    assert [b["pixels"].shape for b in trimmed] == [b["pixels"].shape for b in plain]
