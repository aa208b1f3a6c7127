"""TorchScript files with example inputs (and optional labelled data) from .npz files.

`--example-inputs` holds one array per model input, named as the inputs are
named, first axis = samples. `--eval-data` holds the same names plus an
optional `labels` array; without it the examples are the evaluation set and
quality is fidelity to the TorchScript model itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from optimise.errors import SourceError, one_line
from optimise.source import ModelBundle
from optimise.types import Batch

LABELS_KEY = "labels"


def read_npz(path: Path, what: str) -> Batch:
    if not path.is_file():
        raise SourceError(f"{what} file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:
        raise SourceError(f"cannot read {what} file {path}: {exc}") from exc
    if not arrays:
        raise SourceError(f"{what} file {path} holds no arrays")
    return arrays


def load_torchscript(model: Path, example_inputs: Path | None, eval_data: Path | None = None) -> ModelBundle:
    if example_inputs is None:
        raise SourceError("a TorchScript model needs --example-inputs (an .npz with one array per input)")
    try:
        module = torch.jit.load(str(model), map_location="cpu")
    except Exception as exc:
        raise SourceError(f"cannot load TorchScript file {model}: {one_line(exc)}") from exc
    examples = read_npz(example_inputs, "example inputs")
    evaluation = read_npz(eval_data, "evaluation data") if eval_data else dict(examples)
    labels = evaluation.pop(LABELS_KEY, None)
    names = tuple(examples)
    if set(evaluation) != set(names):
        raise SourceError(
            f"evaluation data names {sorted(evaluation)} differ from example inputs {sorted(names)}"
        )
    try:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(examples[n][:1]) for n in names))
    except Exception as exc:
        raise SourceError(f"{model} fails on its example inputs: {one_line(exc)}") from exc
    n_outputs = len(out) if isinstance(out, (tuple, list)) else 1
    outputs = tuple(f"output_{i}" for i in range(n_outputs))
    return ModelBundle(
        name=model.stem,
        module=module,
        input_names=names,
        output_names=outputs,
        dynamic_axes={n: {0: "batch"} for n in (*names, *outputs)},
        latency_inputs={n: a[:1] for n, a in examples.items()},
        eval_inputs=evaluation,
        eval_labels=labels,
        calibration_inputs=examples if eval_data else None,
        description=f"TorchScript {model.name}",
    )
