"""Pass registry: names used in `PassSpec` mapped to their classes.

Imports are lazy so that listing passes or validating a spec does not load
every optimisation library.
"""

from __future__ import annotations

import importlib
from typing import Any

from optimise.errors import ConfigError
from optimise.passes.base import Pass
from optimise.types import PassSpec

_REGISTRY: dict[str, str] = {
    "prune_structured": "optimise.passes.prune_structured:PruneStructured",
    "prune_unstructured": "optimise.passes.prune_unstructured:PruneUnstructured",
    "distil": "optimise.passes.distil:Distil",
    "export_onnx": "optimise.passes.export_onnx:ExportOnnx",
    "export_torchscript": "optimise.passes.export_torchscript:ExportTorchScript",
    "export_tflite": "optimise.passes.export_tflite:ExportTflite",
    "graph_optimise": "optimise.passes.graph_optimise:GraphOptimise",
    "quantise_dynamic": "optimise.passes.quantise_dynamic:QuantiseDynamic",
    "quantise_static": "optimise.passes.quantise_static:QuantiseStatic",
    "fp16": "optimise.passes.fp16:Fp16",
    "convert_openvino": "optimise.passes.convert_openvino:ConvertOpenVino",
    "quantise_nncf": "optimise.passes.quantise_nncf:QuantiseNncf",
    "quantise_litert": "optimise.passes.quantise_litert:QuantiseLiteRt",
}


def pass_class(name: str) -> type[Pass[Any]]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown pass {name!r}; known: {', '.join(_REGISTRY)}") from None
    module_name, class_name = target.split(":")
    cls: type[Pass[Any]] = getattr(importlib.import_module(module_name), class_name)
    return cls


def build_pass(spec: PassSpec) -> Pass[Any]:
    return pass_class(spec.name).from_spec(spec)
