"""The OpenVINO session's sequence buckets, on a real masked model, and telemetry switched off."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tiny_models import MASKED_VOCAB as VOCAB
from tiny_models import MASKED_WIDTH, export_masked_mean_pooling

from optimise.runtimes.openvino_session import OpenVinoSession, parse_sequence_buckets
from optimise.runtimes.telemetry import telemetry_off

WIDTH = MASKED_WIDTH
BUCKETS = {"sequence_buckets": "4,8,16"}


@pytest.fixture(scope="module")
def masked_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_masked_mean_pooling(tmp_path_factory.mktemp("masked") / "masked.onnx")


@pytest.fixture(scope="module")
def dynamic(masked_onnx: Path) -> OpenVinoSession:
    return OpenVinoSession(masked_onnx, threads=1)


@pytest.fixture(scope="module")
def bucketed(masked_onnx: Path) -> OpenVinoSession:
    return OpenVinoSession(masked_onnx, threads=1, settings=BUCKETS)


def _feeds(rows: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(1, VOCAB, size=(rows, length))
    return {"input_ids": ids, "attention_mask": np.ones((rows, length), dtype=np.int64)}


@pytest.mark.parametrize(("length", "bucket"), [(1, 4), (4, 4), (5, 8), (16, 16)])
def test_a_single_row_runs_padded_to_its_bucket_and_answers_as_the_dynamic_model(
    dynamic: OpenVinoSession, bucketed: OpenVinoSession, length: int, bucket: int
) -> None:
    feeds = _feeds(1, length)
    assert bucketed.bucket(feeds) == bucket
    (tokens, sentence), (expected_tokens, expected_sentence) = bucketed.run(feeds), dynamic.run(feeds)
    assert tokens.shape == expected_tokens.shape == (1, length, WIDTH)  # cut back from the bucket
    np.testing.assert_allclose(tokens, expected_tokens, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sentence, expected_sentence, rtol=1e-6, atol=1e-6)


def test_the_mask_is_what_makes_the_padding_harmless(dynamic: OpenVinoSession) -> None:
    feeds = _feeds(1, 5)
    padded_ids = np.pad(feeds["input_ids"], ((0, 0), (0, 3)))
    unmasked = dynamic.run({"input_ids": padded_ids, "attention_mask": np.ones((1, 8), np.int64)})[1]
    assert not np.allclose(unmasked, dynamic.run(feeds)[1], atol=1e-3)


@pytest.mark.parametrize(("rows", "length"), [(3, 5), (1, 20)])
def test_several_rows_or_a_row_longer_than_the_largest_bucket_run_on_the_dynamic_model(
    dynamic: OpenVinoSession, bucketed: OpenVinoSession, rows: int, length: int
) -> None:
    feeds = _feeds(rows, length)
    assert bucketed.bucket(feeds) is None
    for answer, expected in zip(bucketed.run(feeds), dynamic.run(feeds), strict=True):
        assert answer.shape == expected.shape
        np.testing.assert_allclose(answer, expected, rtol=1e-6, atol=1e-6)


def test_runs_from_several_threads_each_get_their_own_answer(bucketed: OpenVinoSession) -> None:
    rows = [_feeds(1 + i % 2, 3 + 3 * i, seed=i) for i in range(6)] * 5
    alone = [bucketed.run(row)[0] for row in rows]
    with ThreadPoolExecutor(4) as callers:
        together = list(callers.map(lambda row: bucketed.run(row)[0], rows))
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one, other)


def test_streams_let_runs_from_several_threads_proceed_side_by_side(masked_onnx: Path) -> None:
    # With one stream OpenVINO queues runs from several threads behind each other; two one-thread
    # streams (the serving setting parallel_sessions=2) run two at once. Timing is left to benchmarks.
    session = OpenVinoSession(masked_onnx, threads=1, settings=BUCKETS, streams=2)
    compiled = [session._compiled, *session._static.values()]
    assert {int(c.get_property("NUM_STREAMS")) for c in compiled} == {min(2, os.cpu_count() or 1)}
    assert {c.get_property("INFERENCE_NUM_THREADS") for c in compiled} == {2}
    rows = [_feeds(1, 3 + i, seed=i) for i in range(8)] * 4
    with ThreadPoolExecutor(4) as callers:
        together = list(callers.map(lambda row: session.run(row)[0], rows))
    alone = OpenVinoSession(masked_onnx)
    for row, answer in zip(rows, together, strict=True):
        np.testing.assert_allclose(answer, alone.run(row)[0], rtol=1e-5, atol=1e-6)


def test_the_settings_keep_the_buckets_for_the_manifest(bucketed: OpenVinoSession) -> None:
    assert bucketed.settings == {"INFERENCE_PRECISION_HINT": "f32", "sequence_buckets": "4,8,16"}
    assert bucketed.buckets == (4, 8, 16)


def test_bucket_lengths_are_read_from_a_comma_separated_string() -> None:
    assert parse_sequence_buckets("16, 32,64,128") == (16, 32, 64, 128)


@pytest.mark.parametrize("value", ["", "a", "4,x", "4.5", "8,4", "4,4", "0,4", "-4,8", "4,,8"])
def test_malformed_buckets_are_refused(masked_onnx: Path, value: str) -> None:
    with pytest.raises(ValueError, match="sequence_buckets must be increasing positive integers"):
        OpenVinoSession(masked_onnx, settings={"sequence_buckets": value})


def test_buckets_on_a_model_without_an_attention_mask_are_refused(tiny_onnx: Path) -> None:
    with pytest.raises(ValueError, match=r"needs an input named 'attention_mask' of rank 2.*features"):
        OpenVinoSession(tiny_onnx, settings=BUCKETS)


def test_telemetry_is_off_inside_the_block_and_the_environment_is_restored_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "false")  # monkeypatch restores both variables after the test
    monkeypatch.delenv("NNCF_CI", raising=False)
    with telemetry_off():
        with telemetry_off():
            assert os.environ["CI"] == "true" and os.environ["NNCF_CI"] == "1"
        assert os.environ["CI"] == "true"
    assert os.environ["CI"] == "false" and "NNCF_CI" not in os.environ


def test_the_sessions_import_of_openvino_sends_nothing_writes_nothing_and_leaves_the_env(
    tmp_path: Path,
) -> None:
    # A fresh interpreter: `import openvino` is what first configures telemetry.
    script = (
        "import os\n"
        "from optimise.runtimes.openvino_session import _openvino\n"
        "_openvino()\n"
        "import openvino_telemetry\n"
        "print(openvino_telemetry.Telemetry().consent, os.environ.get('CI'), os.environ.get('NNCF_CI'))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI")} | {
        "HOME": str(tmp_path)
    }
    root = Path(__file__).resolve().parents[4]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=environment, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False None None"
    assert list(tmp_path.iterdir()) == []  # no ~/intel client id or stats file


def test_performance_counters_name_the_operations_of_the_last_run(masked_onnx: Path) -> None:
    session = OpenVinoSession(masked_onnx, settings={**BUCKETS, "PERF_COUNT": "YES"})
    row = {"input_ids": np.ones((1, 5), np.int64), "attention_mask": np.ones((1, 5), np.int64)}
    assert session.profiling_info(row) == []  # nothing has run on this thread yet
    session.run(row)
    counters = session.profiling_info(row)
    assert counters and all(c.real_time.total_seconds() >= 0 for c in counters)
    assert {c.node_type for c in counters} & {"Gather", "ReduceSum", "Divide", "Multiply", "MatMul"}
