"""Hugging Face transformer folders (plain `transformers` or sentence-transformers).

Quality is fidelity: the cosine between the candidate's outputs and the FP32
PyTorch model's on a text set. Texts are padded to one fixed length so that
calibration batches are never ragged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from optimise.distillation.data import DistillationData, texts_data
from optimise.errors import SourceError, one_line
from optimise.source import ModelBundle, TorchForward
from optimise.types import Batch

# Model families ONNX Runtime's transformer optimiser knows how to fuse.
_FUSABLE = {"bert": "bert", "distilbert": "bert", "roberta": "bert", "xlm-roberta": "bert", "mpnet": "bert"}


def _tokenise(tokenizer: object, texts: Sequence[str], max_length: int) -> Batch:
    encoded = tokenizer(  # type: ignore[operator]
        list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    return {name: np.asarray(array, dtype=np.int64) for name, array in encoded.items()}


def _sentence_transformer_forward(module: torch.nn.Module, batch: Batch) -> list[np.ndarray]:
    features = {name: torch.from_numpy(array) for name, array in batch.items()}
    with torch.inference_mode():
        return [module(features)["sentence_embedding"].numpy()]


def _transformer_forward(module: torch.nn.Module, batch: Batch) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(**{name: torch.from_numpy(array) for name, array in batch.items()})
    return [out.last_hidden_state.numpy()]


def _longest_sample(batch: Batch) -> Batch:
    """Batch-1 latency input: the sample with the most real tokens (the full length if any fills it)."""
    index = int(np.argmax(batch["attention_mask"].sum(axis=1)))
    return {name: array[index : index + 1] for name, array in batch.items()}


def load_hf_folder(
    path: Path,
    eval_texts: Sequence[str],
    calibration_texts: Sequence[str],
    name: str | None = None,
    max_length: int = 128,
) -> ModelBundle:
    """Load a transformer folder offline and pair it with the texts that judge it."""
    if not (path / "config.json").is_file():
        raise SourceError(f"{path} is not a Hugging Face model folder (no config.json)")
    if not eval_texts:
        raise SourceError("a transformer needs evaluation texts to measure fidelity")
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        module, library, output, forward = _load_module(path)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot load {path}: {one_line(exc)}") from exc
    eval_inputs = _tokenise(tokenizer, eval_texts, max_length)
    dynamic = {n: {0: "batch_size", 1: "sequence_length"} for n in eval_inputs}
    return ModelBundle(
        name=name or path.name,
        module=module,
        input_names=tuple(eval_inputs),
        output_names=(output,),
        dynamic_axes=dynamic,
        latency_inputs=_longest_sample(eval_inputs),
        eval_inputs=eval_inputs,
        calibration_inputs=_tokenise(tokenizer, calibration_texts, max_length) if calibration_texts else None,
        forward=forward,
        hf_library=library,
        hf_task="feature-extraction",
        transformer_type=_FUSABLE.get(config.model_type),
        preprocessing_dir=path,
        tokenizer=tokenizer,
        distillation_data=functools.partial(corpus_data, (*eval_texts, *calibration_texts)),
        description=f"{config.model_type} from {path}, fidelity on {len(eval_texts)} texts",
        extra={"max_length": str(max_length), "model_type": config.model_type},
    )


def corpus_data(protected: Sequence[str]) -> DistillationData:
    """The offline text corpus (see `optimise.distillation.corpus`), without the texts that judge or
    calibrate the model."""
    from optimise.cache import cache_root
    from optimise.distillation.corpus import build_corpus

    info = build_corpus(cache_root(), protected)
    texts = info.path.read_text(encoding="utf-8").splitlines()
    return texts_data(texts, f"offline corpus {info.path.name} ({', '.join(info.per_source)})")


def _load_module(path: Path) -> tuple[torch.nn.Module, str, str, TorchForward]:
    if (path / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return st, "sentence_transformers", "sentence_embedding", _sentence_transformer_forward
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, local_files_only=True)
    return model, "transformers", "last_hidden_state", _transformer_forward
