"""The usage note `leanserve models export` writes beside an exported model (USAGE.md): how to run
that file with its runtime alone, without leanserve."""

from __future__ import annotations

from optimise.artefact.manifest import Manifest, TensorSignature

USAGE_FILE = "USAGE.md"

_LOADERS = {
    "onnxruntime": (
        "onnxruntime",
        "import onnxruntime as ort\n"
        "session = ort.InferenceSession('{model}')\n"
        "outputs = session.run(None, feeds)",
    ),
    "openvino": (
        "openvino",
        "import openvino as ov\n"
        "compiled = ov.Core().compile_model('{model}', 'CPU')\n"
        "outputs = compiled(feeds)",
    ),
    "torchscript": (
        "torch",
        "import torch\n"
        "module = torch.jit.load('{model}').eval()\n"
        "with torch.inference_mode():\n"
        "    outputs = module(*(torch.from_numpy(feeds[name]) for name in INPUT_NAMES))",
    ),
    "litert": (
        "ai-edge-litert",
        "# LiteRT logs one INFO line at its first run; TF_CPP_MIN_LOG_LEVEL=1 in the environment hides it.\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "interpreter = Interpreter(model_path='{model}', num_threads=1)\n"
        "print(interpreter.get_signature_list())  # one fixed-shape signature per input shape\n"
        "runner = interpreter.get_signature_runner('{signature}')\n"
        "# Batch 1, and exactly the signature's shape{length_note}; the file names its tensors\n"
        "# args_0, args_1, ... in INPUT_NAMES order and output_0, ... (model.io.json maps them).\n"
        "outputs = runner(**{{f'args_{{i}}': feeds[name] for i, name in enumerate(INPUT_NAMES)}})\n"
        "first = outputs['output_0']",
    ),
}


def _tensor(signature: TensorSignature) -> str:
    shape = ", ".join(str(d) if d is not None else "?" for d in signature.shape)
    return f"- `{signature.name}`: {signature.dtype} [{shape}]"


def _example_feeds(manifest: Manifest) -> str:
    """A runnable `feeds = {...}` of zeros: batch 1, text models at their token limit."""
    tokens = manifest.tokenizer.max_tokens if manifest.tokenizer is not None else 1
    entries = []
    for signature in manifest.inputs:
        shape = [d if isinstance(d, int) else 1 for d in signature.shape]
        if len(shape) == 2 and manifest.tokenizer is not None:
            shape[1] = tokens
        entries.append(f"{signature.name!r}: np.zeros({tuple(shape)!r}, np.{signature.dtype})")
    return "feeds = {" + ", ".join(entries) + "}  # your data here, in these shapes and dtypes"


def usage_note(manifest: Manifest, model_file: str) -> str:
    """Markdown: what the model takes and gives, and the few lines that run it with its runtime."""
    runtime = manifest.selected.runtime
    package, loader = _LOADERS.get(runtime, _LOADERS["onnxruntime"])
    signature, length_note = "serving_default", ""
    if manifest.tokenizer is not None:
        signature = f"s{manifest.tokenizer.max_tokens}"
        length_note = f" (pad the tokens to {manifest.tokenizer.max_tokens} with zeros, mask 0)"
    lines = [
        f"# {manifest.name}: {model_file} ({manifest.selected.precision.value}, {runtime})",
        "",
        f"Built by leanserve from `{manifest.source.spec}`; `manifest.json` holds its measurements.",
        "",
        "Inputs:",
        *(_tensor(s) for s in manifest.inputs),
        "",
        "Outputs:",
        *(_tensor(s) for s in manifest.outputs),
        "",
    ]
    if manifest.tokenizer is not None:
        lines += [
            f"Text goes through `tokenizer.json` (Hugging Face `tokenizers`), at most "
            f"{manifest.tokenizer.max_tokens} tokens; `attention_mask` marks the real tokens.",
            "",
        ]
    lines += [
        f"Run it with `pip install {package}`:",
        "",
        "```python",
        "import numpy as np",
        f"INPUT_NAMES = {[s.name for s in manifest.inputs]!r}",
        _example_feeds(manifest),
        loader.format(model=model_file, signature=signature, length_note=length_note),
        "```",
        "",
    ]
    return "\n".join(lines)
