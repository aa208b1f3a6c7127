"""The model bundle: what every model source hands to the build step.

A source (a Hugging Face folder, a `pkg.mod:fn` factory, a TorchScript file, a
bundled demo) is turned into one `ModelBundle`. A user's factory returns one
directly, so the demos and user models follow the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from optimise.types import Batch, QualityMetric

if TYPE_CHECKING:
    from optimise.distillation.data import DistillationData

TorchForward = Callable[[torch.nn.Module, Batch], list[np.ndarray]]
FineTune = Callable[[torch.nn.Module, int], None]
DistillationSource = Callable[[], "DistillationData"]


def default_forward(input_names: Sequence[str]) -> TorchForward:
    """Call a module positionally with the named inputs, in order."""

    def forward(module: torch.nn.Module, batch: Batch) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(batch[name]) for name in input_names))
        if isinstance(out, Mapping):  # a dict of named outputs, in its own order
            out = tuple(out.values())
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().cpu().numpy() for o in outputs]

    return forward


@dataclass
class ModelBundle:
    """A PyTorch model in eval mode with the data needed to optimise and judge it.

    Inputs are named numpy arrays whose first axis is the sample axis. The first
    output is the one quality is measured on.
    """

    name: str
    module: torch.nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    latency_inputs: Batch
    """One sample (batch 1) used for latency; tiled for throughput."""
    eval_inputs: Batch
    eval_labels: np.ndarray | None = None
    """Class labels of `eval_inputs`; None means quality is fidelity to FP32."""
    calibration_inputs: Batch | None = None
    """Representative unlabelled inputs for static quantisation, disjoint from eval."""
    forward: TorchForward | None = None
    """How to run `module` on a batch; defaults to a positional call."""
    fine_tune: FineTune | None = None
    """Trains `module` in place for N steps on labelled data (recovery after pruning)."""
    hf_library: str | None = None
    """'transformers' or 'sentence_transformers' when exported through Optimum."""
    hf_task: str | None = None
    transformer_type: str | None = None
    """ORT transformer optimiser model type ('bert', ...); None for other models."""
    preprocessing_dir: Path | None = None
    """Files the artefact needs before inference (a tokenizer), copied into the store."""
    tokenizer: Any = None
    """Text models: the Hugging Face tokenizer that turns texts into `input_names` (distillation)."""
    distillation_data: DistillationSource | None = None
    """Unlabelled inputs a distilled student learns from, made on first call (a corpus may take
    seconds to build); None: distillation needs the user's `--distil-data`."""
    opset: int = 17
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.module.eval()
        if self.forward is None:
            self.forward = default_forward(self.input_names)
        for batch_name, batch in (("latency_inputs", self.latency_inputs), ("eval_inputs", self.eval_inputs)):
            missing = set(self.input_names) - set(batch)
            if missing:
                raise ValueError(f"{batch_name} lacks inputs {sorted(missing)}")
        n_eval = len(next(iter(self.eval_inputs.values())))
        if n_eval == 0:
            raise ValueError("eval_inputs is empty")
        if self.eval_labels is not None and len(self.eval_labels) != n_eval:
            raise ValueError(f"eval_labels has {len(self.eval_labels)} rows, eval_inputs {n_eval}")

    @property
    def max_length(self) -> int | None:
        """Text models: the token limit inputs are cut to (`extra["max_length"]`); None where the
        bundle names none."""
        value = self.extra.get("max_length")
        return int(value) if value else None

    @property
    def quality_metric(self) -> QualityMetric:
        return QualityMetric.COSINE if self.eval_labels is None else QualityMetric.ACCURACY

    def run_torch(self, batch: Batch) -> list[np.ndarray]:
        assert self.forward is not None  # set in __post_init__
        return self.forward(self.module, batch)
