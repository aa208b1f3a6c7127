"""LiteRT behind the session contract: names from model.io.json, rows on the signature that fits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_models import make_tiny_bundle, make_tiny_text_bundle

from optimise.runtimes import LITERT, RuntimeUnavailable, open_session
from optimise.runtimes.litert_session import LiteRtSession


def test_the_tensors_have_the_models_names_and_a_dynamic_batch(tiny_tflite: Path) -> None:
    session = open_session(LITERT, tiny_tflite, threads=2)
    assert session.runtime == LITERT and session.threads == 2 and session.on_cpu_only
    assert session.input_names == ("features",) and session.output_names == ("logits",)
    assert session.inputs[0].shape == ("batch", 16) and session.inputs[0].dtype is np.float32
    bundle = make_tiny_bundle()
    np.testing.assert_allclose(
        session.run(bundle.eval_inputs)[0], bundle.run_torch(bundle.eval_inputs)[0], atol=1e-5
    )


def test_text_rows_run_on_the_shortest_signature_that_holds_them(tiny_text_tflite: Path) -> None:
    session = LiteRtSession(tiny_text_tflite)
    assert session.lengths == (4, 8, 12)
    assert session.inputs[0].dtype is np.int32  # the converter's ids; int64 feeds are cast
    bundle = make_tiny_text_bundle()
    expected_tokens, expected_pooled = bundle.run_torch(bundle.eval_inputs)
    tokens, pooled = session.run(bundle.eval_inputs)
    np.testing.assert_allclose(pooled, expected_pooled, atol=1e-5)
    assert tokens.shape == expected_tokens.shape  # per-token outputs at the batch's width
    np.testing.assert_allclose(tokens, expected_tokens, atol=1e-5)


def test_a_row_gets_the_same_answer_alone_and_in_a_batch(tiny_text_tflite: Path) -> None:
    session = LiteRtSession(tiny_text_tflite)
    batch = make_tiny_text_bundle().eval_inputs
    together = session.run(batch)[1]
    for row in range(5):
        length = int(batch["attention_mask"][row].sum())
        alone = session.run({k: v[row : row + 1, :length] for k, v in batch.items()})[1]  # its own width
        np.testing.assert_array_equal(alone, together[row : row + 1])


def test_a_row_longer_than_every_signature_is_refused(tiny_text_tflite: Path) -> None:
    ids = np.ones((1, 20), dtype=np.int64)
    with pytest.raises(ValueError, match="a row of 20 tokens is longer than the longest signature"):
        LiteRtSession(tiny_text_tflite).run({"input_ids": ids, "attention_mask": ids})


def test_a_missing_package_is_named(tiny_tflite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(RuntimeUnavailable, match="the ai-edge-litert package is not installed"):
        open_session(LITERT, tiny_tflite)


def test_a_file_without_its_tensor_names_is_refused(tiny_tflite: Path, tmp_path: Path) -> None:
    alone = Path(shutil.copy(tiny_tflite, tmp_path / "model.tflite"))
    with pytest.raises(ValueError, match=r"has no model\.io\.json"):
        LiteRtSession(alone)


def test_a_file_litert_cannot_read_fails_when_opened(tiny_tflite: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model.tflite"
    broken.write_bytes(b"not a flatbuffer" * 8)
    shutil.copy(tiny_tflite.with_suffix(".io.json"), tmp_path / "model.io.json")
    with pytest.raises(ValueError):
        LiteRtSession(broken)


def test_opening_and_running_a_session_writes_nothing_to_stderr(tiny_tflite: Path) -> None:
    script = (
        "import sys\nfrom pathlib import Path\nfrom optimise.runtimes.litert_session import LiteRtSession\n"
        "import numpy as np\n"
        "LiteRtSession(Path(sys.argv[1])).run({'features': np.zeros((2, 16), np.float32)})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_tflite)], capture_output=True, text=True, check=True
    )
    assert done.stderr == ""  # LiteRT's delegate notice is dropped, nothing else was said


@pytest.mark.parametrize("value", [3.4e38, np.inf, np.nan])
def test_nan_inside_a_dynamic_range_int8_file_reaches_the_outputs_and_the_session_runs_on(
    normed_dynamic_tflite: Path, value: float
) -> None:
    # Unlike PyTorch's dynamic int8 Linear (which raises, see test_runtime_contract), LiteRT carries the
    # non-finite values to the outputs, where the data plane's check answers them as a 422.
    session = open_session(LITERT, normed_dynamic_tflite)
    name = session.input_names[0]
    assert not np.isfinite(session.run({name: np.full((2, 16), value, np.float32)})[0]).any()
    assert np.isfinite(session.run({name: np.ones((2, 16), np.float32)})[0]).all()
