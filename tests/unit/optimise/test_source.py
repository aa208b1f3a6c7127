"""The bundle's default way to run its module."""

from __future__ import annotations

import numpy as np
import torch

from optimise.source import default_forward


class _Named(torch.nn.Module):
    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": features * 2, "features": features}


def test_outputs_come_back_in_order_whether_a_tensor_a_tuple_or_a_dict() -> None:
    batch = {"features": np.ones((2, 3), dtype=np.float32)}
    forward = default_forward(("features",))
    logits, features = forward(_Named(), batch)
    np.testing.assert_array_equal(logits, 2 * batch["features"])
    np.testing.assert_array_equal(features, batch["features"])
    (single,) = forward(torch.nn.Identity(), batch)
    np.testing.assert_array_equal(single, batch["features"])
