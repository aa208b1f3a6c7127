"""The bundled demos end to end: build, select, store, export, and use without leanserve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from optimise import store
from optimise.build import optimise
from optimise.cli import app
from optimise.evaluate import cosine_per_sample
from optimise.profiles import get_profile
from optimise.search import SearchSettings
from optimise.sources import load_source
from optimise.space import SearchSpace
from optimise.types import Constraints, Precision

pytestmark = pytest.mark.slow


def test_minilm_int8_keeps_fidelity_and_shrinks_and_runs_from_an_export(tmp_path: Path) -> None:
    bundle = load_source("minilm")
    assert len(bundle.eval_labels or []) == 0 and len(bundle.eval_inputs["input_ids"]) >= 200
    space = SearchSpace(
        graph_optimise=(True,), precisions=(Precision.FP32, Precision.INT8_DYNAMIC), per_channel=(True,)
    )
    result = optimise(
        bundle, get_profile("cpu"), Constraints(), SearchSettings(sampler="grid"), tmp_path, space, rounds=2
    )

    winner, reference = result.winner.metrics, result.variants[0].metrics
    assert winner is not None and reference is not None
    assert result.winner.precision is Precision.INT8_DYNAMIC
    assert winner.quality >= 0.99
    assert reference.size_bytes / winner.size_bytes >= 3.5

    tag = store.save(result, "minilm")
    out = tmp_path / "export"
    store.export(tag, out)
    _check_export_matches_sentence_transformers(out, bundle.module)


def _check_export_matches_sentence_transformers(directory: Path, model: object) -> None:
    """Only onnxruntime and tokenizers: what a user without leanserve has."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(128)
    tokenizer.enable_padding()
    texts = ["A short sentence.", "Wie spät ist es?", "SELECT * FROM users WHERE id = 42;"]
    encodings = tokenizer.encode_batch(texts)
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    names = {i.name for i in session.get_inputs()}
    embeddings = session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    expected = model.encode(texts)  # type: ignore[attr-defined]
    assert embeddings.shape == (3, 384)
    assert cosine_per_sample(embeddings, expected).min() >= 0.97


def test_digits_through_the_cli_is_smaller_and_keeps_accuracy() -> None:
    result = CliRunner().invoke(
        app, ["optimise", "--model", "digits", "--time-budget", "20", "--rounds", "2"]
    )
    assert result.exit_code == 0, result.output
    tag = result.output.split("stored ")[1].split()[0]
    manifest = store.read_manifest(store.get_model(tag))
    selected = manifest.selected.metrics
    fp32 = next(c for c in manifest.candidates if len(c.passes) == 1).metrics
    assert selected is not None and fp32 is not None
    assert manifest.reference_quality - selected.quality <= 0.005
    assert manifest.selected.feasible
    smallest_feasible = min(c.metrics.size_bytes for c in manifest.candidates if c.feasible and c.metrics)
    assert fp32.size_bytes / smallest_feasible >= 3.0
