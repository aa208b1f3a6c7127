"""Runs inside the LiteRT converter environment (see `optimise.litert.environment`), never in the
build's own: it imports only torch, litert-torch, ai-edge-quantizer and numpy.

    python convert.py REQUEST.json

REQUEST (JSON) is one of
    {"task": "convert", "output": "model.tflite",
     "signatures": {"<name>": {"program": "<name>.pt2", "sample": "<name>.npz"}, ...}}
        one `.tflite` with one fixed-shape signature per entry: each ExportedProgram (torch.export,
        saved by the build) is lowered with its sample inputs (arrays arg0, arg1, ... in positional
        order); several signatures share the weights.
    {"task": "quantise", "input": "model.tflite", "output": "int8.tflite", "mode": "dynamic" | "static",
     "calibration": {"<signature>": "calibration.npz"}}
        ai-edge-quantizer: "dynamic" = int8 weights, float activations (dynamic_wi8_afp32); "static" =
        int8 weights and activations from the calibration rows (static_wi8_ai8), inputs and outputs
        kept float32 so callers feed the same arrays as to the float model.

The last line of stdout is a JSON object: {"ok": true, "seconds": ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # progress lines would mix with the result
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _arrays(path: str) -> list[Any]:
    import numpy as np

    with np.load(path) as data:
        return [data[f"arg{i}"] for i in range(len(data.files))]


def convert(request: dict[str, Any]) -> None:
    import litert_torch
    import torch

    converter = litert_torch.Converter()
    for name, signature in request["signatures"].items():
        module = torch.export.load(signature["program"]).module()
        module.training = False  # an unlifted ExportedProgram module has no working .eval()
        args = tuple(torch.from_numpy(a) for a in _arrays(signature["sample"]))
        converter.signature(name, module, args)
    converter.convert().export(request["output"])


def quantise(request: dict[str, Any]) -> None:
    from ai_edge_quantizer import quantizer, recipe

    mode = request["mode"]
    if mode == "dynamic":
        chosen = quantizer.Quantizer(request["input"], recipe.dynamic_wi8_afp32())
        chosen.quantize().export_model(request["output"], overwrite=True)
        return
    if mode != "static":
        raise ValueError(f"unknown quantisation mode {mode!r}")
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    chosen = quantizer.Quantizer(request["input"], recipe.static_wi8_ai8())
    for op in (TFLOperationName.INPUT, TFLOperationName.OUTPUT):  # float in and out, int8 inside
        chosen.update_quantization_recipe(".*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    interpreter = Interpreter(model_path=request["input"])
    samples: dict[str, list[dict[str, Any]]] = {}
    for signature, path in request["calibration"].items():
        runner = interpreter.get_signature_runner(signature)
        details = runner.get_input_details()
        # args_0, args_1, ... by number: listed by name, args_10 would come before args_2
        names = sorted(
            interpreter.get_signature_list()[signature]["inputs"], key=lambda n: int(n.rsplit("_", 1)[-1])
        )
        arrays = _arrays(path)
        samples[signature] = [
            {n: a[row : row + 1].astype(details[n]["dtype"]) for n, a in zip(names, arrays, strict=True)}
            for row in range(len(arrays[0]))
        ]
    calibration = chosen.calibrate(samples)
    chosen.quantize(calibration).export_model(request["output"], overwrite=True)


def main() -> int:
    start = time.perf_counter()
    try:
        request = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
        {"convert": convert, "quantise": quantise}[request["task"]](request)
    except Exception as exc:  # the build reads the reason from the last line
        message = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {message[0] if message else ''}"
        print(json.dumps({"ok": False, "error": reason}))
        return 1
    print(json.dumps({"ok": True, "seconds": round(time.perf_counter() - start, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
