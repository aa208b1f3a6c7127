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
        "outputs = session.run(None, feeds)  # feeds: {{input name: numpy array}}",
    ),
    "openvino": (
        "openvino",
        "import openvino as ov\n"
        "compiled = ov.Core().compile_model('{model}', 'CPU')\n"
        "outputs = compiled(feeds)  # feeds: {{input name: numpy array}}",
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
        "from ai_edge_litert.interpreter import Interpreter\n"
        "interpreter = Interpreter(model_path='{model}', num_threads=1)\n"
        "# One fixed-shape signature per input shape (model.io.json lists them and maps the file's\n"
        "# tensor names args_0, ... and output_0, ... to the names below); batch 1.\n"
        "runner = interpreter.get_signature_runner('{signature}')\n"
        "outputs = runner(**{{f'args_{{i}}': feeds[name] for i, name in enumerate(INPUT_NAMES)}})",
    ),
}


def _tensor(signature: TensorSignature) -> str:
    shape = ", ".join(str(d) if d is not None else "?" for d in signature.shape)
    return f"- `{signature.name}`: {signature.dtype} [{shape}]"


def usage_note(manifest: Manifest, model_file: str) -> str:
    """Markdown: what the model takes and gives, and the few lines that run it with its runtime."""
    runtime = manifest.selected.runtime
    package, loader = _LOADERS.get(runtime, _LOADERS["onnxruntime"])
    signature = "serving_default"
    if manifest.tokenizer is not None:
        signature = f"s{manifest.tokenizer.max_tokens}"
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
        f"INPUT_NAMES = {[s.name for s in manifest.inputs]!r}",
        loader.format(model=model_file, signature=signature),
        "```",
        "",
    ]
    return "\n".join(lines)
