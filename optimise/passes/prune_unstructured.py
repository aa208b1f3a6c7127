"""Unstructured magnitude pruning: zero the smallest weights of Linear/Conv layers.

The zeros make the model compress better; dense kernels run it at the same speed,
so this pass makes no speed claim (the evaluator reports the compressed size).
The input module is never changed: the pass prunes a deep copy.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch

from optimise.errors import PassFailed
from optimise.passes.base import PassConfig, PassContext, TorchPass

logger = logging.getLogger(__name__)

LAYER_TYPES: dict[str, tuple[type[torch.nn.Module], ...]] = {
    "Linear": (torch.nn.Linear,),
    "Conv": (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d),
}


@dataclass(frozen=True)
class PruneUnstructuredConfig(PassConfig):
    """Settings of unstructured L1 pruning.

    Attributes:
        amount: share of the selected weights set to zero, in (0, 1).
        scope: "global" ranks all selected weights together (layers lose different shares;
            usually more accurate), "layer" prunes `amount` of every layer.
        layer_types: which layers are pruned: "Linear" and/or "Conv" (1d/2d/3d); weights only, not biases.
        fine_tune_steps: training steps run with the mask held fixed, when the bundle has a
            `fine_tune` hook (0 = none).
    """

    amount: float = 0.5
    scope: str = "global"
    layer_types: tuple[str, ...] = ("Linear", "Conv")
    fine_tune_steps: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.layer_types, list):  # from JSON/YAML
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if not 0.0 < self.amount < 1.0:
            raise ValueError(f"amount must be in (0, 1), got {self.amount}")
        if self.scope not in ("global", "layer"):
            raise ValueError(f"scope must be 'global' or 'layer', got {self.scope!r}")
        unknown = set(self.layer_types) - set(LAYER_TYPES)
        if not self.layer_types or unknown:
            raise ValueError(f"layer_types must be a non-empty subset of {sorted(LAYER_TYPES)}")
        if self.fine_tune_steps < 0:
            raise ValueError("fine_tune_steps must be >= 0")


def prunable_layers(
    module: torch.nn.Module, layer_types: tuple[str, ...] = tuple(LAYER_TYPES)
) -> list[torch.nn.Module]:
    classes = tuple(cls for name in layer_types for cls in LAYER_TYPES[name])
    return [m for m in module.modules() if isinstance(m, classes) and isinstance(m.weight, torch.Tensor)]


def sparsity(module: torch.nn.Module, layer_types: tuple[str, ...] = tuple(LAYER_TYPES)) -> float:
    """Share of exactly-zero weights over the Linear/Conv weight tensors of `module`."""
    weights = [
        w for layer in prunable_layers(module, layer_types) if isinstance(w := layer.weight, torch.Tensor)
    ]
    total = sum(w.numel() for w in weights)
    if total == 0:
        return 0.0
    zeros = sum(int(torch.count_nonzero(w == 0)) for w in weights)
    return zeros / total


class PruneUnstructured(TorchPass[PruneUnstructuredConfig]):
    name = "prune_unstructured"
    config_type = PruneUnstructuredConfig

    def run(self, module: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        from torch.nn.utils import prune

        cfg = self.config
        pruned = copy.deepcopy(module)  # never touch the caller's (or the bundle's) module
        layers = prunable_layers(pruned, cfg.layer_types)
        if not layers:
            raise PassFailed(self.name, f"the model has no {'/'.join(cfg.layer_types)} layers to prune")
        before = sparsity(pruned, cfg.layer_types)
        with torch.no_grad():
            if cfg.scope == "global":
                prune.global_unstructured(
                    [(layer, "weight") for layer in layers],
                    pruning_method=prune.L1Unstructured,
                    amount=cfg.amount,
                )
            else:
                for layer in layers:
                    prune.l1_unstructured(layer, "weight", amount=cfg.amount)
        self._fine_tune(pruned, ctx)
        for layer in layers:
            prune.remove(layer, "weight")  # weight = weight_orig * mask, a plain parameter again
        pruned.eval()
        after = sparsity(pruned, cfg.layer_types)
        logger.info("prune_unstructured: weight sparsity %.1f%% -> %.1f%%", 100 * before, 100 * after)
        return pruned

    def _fine_tune(self, pruned: torch.nn.Module, ctx: PassContext) -> None:
        steps = self.config.fine_tune_steps
        if steps == 0:
            return
        if ctx.bundle.fine_tune is None:
            logger.warning(
                "prune_unstructured: bundle %r has no fine_tune; skipping %d steps", ctx.bundle.name, steps
            )
            return
        # While pruned, each layer trains `weight_orig` and a forward pre-hook multiplies in the
        # fixed mask, so pruned weights stay zero through training.
        try:
            with self.failures("fine-tuning failed"):
                ctx.bundle.fine_tune(pruned, steps)
        finally:
            pruned.eval()
