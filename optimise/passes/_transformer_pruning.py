"""Structured pruning of BERT-style encoders with Torch-Pruning.

Only the inside of each encoder layer shrinks: the FFN intermediate neurons and,
optionally, whole attention heads. The hidden size (embeddings, LayerNorms, every
layer's output) is left alone, so pooling, heads on top and the exported
signature stay the same. A plain global ratio prunes the hidden size too and
raised IndexError on MiniLM with torch-pruning 1.6, hence the per-layer recipe.

Parts are found by shape, not by class: a self-attention module has `query`,
`key`, `value` Linear layers and `num_attention_heads`; an encoder layer has
`intermediate.dense`. That covers transformers' BertModel (eager and SDPA
attention) and the BertModel inside a SentenceTransformer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderParts:
    attention: list[Any]
    """Self-attention modules (query / key / value / num_attention_heads)."""
    ffn: list[torch.nn.Linear]
    """FFN up-projections; pruning their outputs also shrinks the down-projections' inputs."""


def find_encoder_parts(module: torch.nn.Module) -> EncoderParts:
    attention = [m for m in module.modules() if _is_self_attention(m)]
    ffn: list[torch.nn.Linear] = [_ffn(m) for m in module.modules() if _has_ffn(m)]
    if not attention or not ffn:
        raise ValueError(
            f"found {len(attention)} self-attention and {len(ffn)} FFN layers; not a BERT encoder"
        )
    return EncoderParts(attention=attention, ffn=ffn)


def _is_self_attention(m: torch.nn.Module) -> bool:
    layers = (getattr(m, name, None) for name in ("query", "key", "value"))
    return all(isinstance(layer, torch.nn.Linear) for layer in layers) and hasattr(m, "num_attention_heads")


def _has_ffn(m: torch.nn.Module) -> bool:
    return isinstance(getattr(getattr(m, "intermediate", None), "dense", None), torch.nn.Linear)


def _ffn(m: Any) -> torch.nn.Linear:  # Any: submodules are typed `Tensor | Module`
    layer: torch.nn.Linear = m.intermediate.dense
    return layer


def _qkv(attention: Any) -> tuple[torch.nn.Linear, torch.nn.Linear, torch.nn.Linear]:
    return attention.query, attention.key, attention.value


def prune_bert_encoder(
    module: torch.nn.Module,
    *,
    ratio: float,
    prune_heads: bool,
    example_inputs: Any,
    forward_fn: Callable[[torch.nn.Module, Any], Any] | None,
    importance: Any,
    round_to: int | None,
) -> None:
    """Prune `ratio` of the FFN neurons (and of the heads) of every encoder layer, in place."""
    parts = find_encoder_parts(module)
    # Everything not named here gets ratio 0: the hidden size is never pruned.
    ratios: dict[torch.nn.Module, float] = dict.fromkeys(parts.ffn, ratio)
    num_heads: dict[torch.nn.Module, int] = {}
    for attention in parts.attention:
        for layer in _qkv(attention):
            num_heads[layer] = int(attention.num_attention_heads)
            if prune_heads:  # a non-zero q/k/v ratio is what lets the head ranking run
                ratios[layer] = ratio
    pruner = tp.pruner.BasePruner(
        module,
        example_inputs,
        importance=importance,
        pruning_ratio=0.0,
        pruning_ratio_dict=ratios,
        num_heads=num_heads,
        prune_num_heads=prune_heads,
        prune_head_dims=False,  # keep the head size: heads go whole or not at all
        head_pruning_ratio=ratio if prune_heads else 0.0,
        round_to=round_to,
        forward_fn=forward_fn,
    )
    pruner.step()
    _sync_attention(parts, pruner.num_heads)
    _sync_config(module, parts)


def _sync_attention(parts: EncoderParts, num_heads: dict[torch.nn.Module, int]) -> None:
    """transformers' attention reshapes with these attributes; make them match the new weights."""
    for attention in parts.attention:
        query = _qkv(attention)[0]
        heads = num_heads[query]
        attention.num_attention_heads = heads
        attention.all_head_size = query.out_features
        attention.attention_head_size = query.out_features // heads


def _sync_config(module: torch.nn.Module, parts: EncoderParts) -> None:
    """Record the new sizes in the HF config(s) where every layer agrees (a config has one value).

    The head size no longer equals hidden_size / num_attention_heads after head pruning.
    """
    heads = {int(a.num_attention_heads) for a in parts.attention}
    widths = {layer.out_features for layer in parts.ffn}
    logger.info("encoder now has heads %s and FFN widths %s per layer", sorted(heads), sorted(widths))
    configs = {id(c): c for m in module.modules() if (c := getattr(m, "config", None)) is not None}
    for config in configs.values():
        if len(heads) == 1 and hasattr(config, "num_attention_heads"):
            config.num_attention_heads = next(iter(heads))
        if len(widths) == 1 and hasattr(config, "intermediate_size"):
            config.intermediate_size = next(iter(widths))
