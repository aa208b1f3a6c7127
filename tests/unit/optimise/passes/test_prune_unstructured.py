import copy
import dataclasses
import logging
from typing import Any

import numpy as np
import pytest
import torch

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.prune_unstructured import PruneUnstructured, PruneUnstructuredConfig, sparsity
from optimise.source import ModelBundle
from optimise.types import PassSpec


def _prune(module: torch.nn.Module, ctx: PassContext, **settings: object) -> torch.nn.Module:
    return PruneUnstructured(PruneUnstructuredConfig(**settings)).apply(module, ctx)  # type: ignore[arg-type]


def _linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_sparsity_counts_zero_weights_only() -> None:
    layer = torch.nn.Linear(4, 5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.weight[:2] = 0.0  # 8 of 20 weights
        layer.bias.zero_()  # biases are not counted
    assert sparsity(torch.nn.Sequential(layer, torch.nn.ReLU())) == pytest.approx(0.4)
    assert sparsity(torch.nn.ReLU()) == 0.0


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("amount", [0.3, 0.7])
def test_requested_sparsity_is_reached(scope: str, amount: float, tiny_context: PassContext) -> None:
    pruned = _prune(tiny_context.bundle.module, tiny_context, amount=amount, scope=scope)
    assert sparsity(pruned) == pytest.approx(amount, abs=0.01)
    if scope == "layer":
        for layer in _linears(pruned):
            assert float((layer.weight == 0).float().mean()) == pytest.approx(amount, abs=0.01)
    # Pruning is permanent: plain parameters again, no masks or hooks left.
    assert set(pruned.state_dict()) == set(tiny_context.bundle.module.state_dict())
    assert all(not layer._forward_pre_hooks for layer in _linears(pruned))


def test_the_input_module_is_untouched(tiny_context: PassContext) -> None:
    module = tiny_context.bundle.module
    before = copy.deepcopy(module.state_dict())
    pruned = _prune(module, tiny_context, amount=0.5)
    assert pruned is not module
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert sparsity(module) == 0.0
    assert not module.training and not pruned.training


def test_moderate_pruning_keeps_outputs_close(tiny_context: PassContext) -> None:
    bundle = tiny_context.bundle
    pruned = _prune(bundle.module, tiny_context, amount=0.3)
    assert bundle.forward is not None
    reference = bundle.run_torch(bundle.eval_inputs)[0]
    actual = bundle.forward(pruned, bundle.eval_inputs)[0]
    assert not np.array_equal(actual, reference)
    assert np.mean(actual.argmax(1) == reference.argmax(1)) >= 0.8


def test_layer_types_select_what_is_pruned(tiny_context: PassContext) -> None:
    with pytest.raises(PassFailed, match="no Conv layers"):
        _prune(tiny_context.bundle.module, tiny_context, layer_types=("Conv",))
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)).eval()
    conv(torch.zeros(1, 2, 5, 5))  # materialise the lazy layer
    pruned = _prune(conv, tiny_context, layer_types=("Conv",), amount=0.5)
    assert sparsity(pruned, ("Conv",)) == pytest.approx(0.5, abs=0.02)
    assert sparsity(pruned, ("Linear",)) == 0.0


def _tiny_fine_tune(module: torch.nn.Module, steps: int) -> None:
    """A few SGD steps towards random targets: moves every weight that is free to move."""
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.SGD(module.parameters(), lr=0.1)
    module.train()
    for _ in range(steps):
        optimiser.zero_grad()
        features = torch.randn(8, 16, generator=generator)
        loss = torch.nn.functional.mse_loss(module(features), torch.randn(8, 4, generator=generator))
        loss.backward()
        optimiser.step()
    module.eval()


def test_fine_tuning_keeps_the_mask(tiny_context: PassContext) -> None:
    bundle = dataclasses.replace(tiny_context.bundle, fine_tune=_tiny_fine_tune)
    ctx = dataclasses.replace(tiny_context, bundle=bundle)
    plain = _prune(bundle.module, ctx, amount=0.5)
    tuned = _prune(bundle.module, ctx, amount=0.5, fine_tune_steps=5)
    for before, after in zip(_linears(plain), _linears(tuned), strict=True):
        assert torch.equal(before.weight == 0, after.weight == 0)  # same zeros
        assert not torch.equal(before.weight, after.weight)  # but trained
    assert sparsity(tuned) == pytest.approx(0.5, abs=0.01)
    assert not tuned.training


def test_fine_tune_steps_without_a_hook_are_skipped(
    tiny_context: PassContext, tiny_bundle: ModelBundle, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="optimise.passes.prune_unstructured"):
        pruned = _prune(tiny_bundle.module, tiny_context, amount=0.5, fine_tune_steps=3)
    assert "no fine_tune" in caplog.text
    assert sparsity(pruned) == pytest.approx(0.5, abs=0.01)


def test_bad_settings_are_a_user_error() -> None:
    bad: list[dict[str, Any]] = [
        {"amount": 0.0},
        {"amount": 1.0},
        {"scope": "channel"},
        {"layer_types": ["Embedding"]},
        {"layer_types": []},
        {"fine_tune_steps": -1},
    ]
    for settings in bad:
        with pytest.raises(ConfigError, match="prune_unstructured"):
            build_pass(PassSpec("prune_unstructured", settings))
    built = build_pass(PassSpec("prune_unstructured", {"layer_types": ["Linear"]}))
    assert built.config.layer_types == ("Linear",)
