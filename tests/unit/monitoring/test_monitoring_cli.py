"""The offline `drift` command (a unique basename: tests/unit/optimise has a test_cli.py) and `drift_from_files` on CSV, Parquet, .npy and reference.npz files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from monitoring.cli import app, drift_from_files

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
runner = CliRunner()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.target))
    pixels = (data.images / 16.0).reshape(-1, 64)[order]
    logits = 3 * np.eye(10)[data.target[order]] + rng.normal(0, 0.3, (len(order), 10))
    return pixels, logits


def _table(pixels: np.ndarray, logits: np.ndarray) -> pd.DataFrame:
    columns = {f"px_{i}": pixels[:, i] for i in range(pixels.shape[1])}
    return pd.DataFrame(columns | {f"out_{j}": logits[:, j] for j in range(logits.shape[1])})


def test_csv_files_without_drift(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, logits = digits
    _table(pixels[:900], logits[:900]).to_csv(tmp_path / "reference.csv", index=False)
    _table(pixels[900:], logits[900:]).to_csv(tmp_path / "current.csv", index=False)
    result = runner.invoke(app, ["drift", str(tmp_path / "reference.csv"), str(tmp_path / "current.csv")])
    assert result.exit_code == 0, result.output
    assert "dataset drift" in result.output and "prediction drift" in result.output
    assert "897 rows vs 900" in result.output


def test_json_and_html_for_a_brightness_shift(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, logits = digits
    pixels = pixels[:, 18:46:2]  # 14 pixels: Evidently's HTML takes ~0.1 s a column
    _table(pixels[:900], logits[:900]).to_parquet(tmp_path / "reference.parquet")
    _table(np.clip(pixels[900:] + 0.15, 0, 1), logits[900:]).to_csv(tmp_path / "current.csv", index=False)
    args = ["drift", str(tmp_path / "reference.parquet"), str(tmp_path / "current.csv"), "--json"]
    result = runner.invoke(app, [*args, "--html", str(tmp_path / "report.html"), "--fail-on-drift"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["dataset_drift"] is True and report["share_drifted"] > 0.9
    assert report["prediction_drift"]["drifted"] is False
    assert "leanserve-drift-summary" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_npy_inputs_only(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, _ = digits
    np.save(tmp_path / "reference.npy", pixels[:900].reshape(-1, 1, 8, 8))
    np.save(tmp_path / "current.npy", pixels[900:].reshape(-1, 1, 8, 8))
    report = drift_from_files(tmp_path / "reference.npy", tmp_path / "current.npy")
    assert len(report.features) == 64 and report.prediction_drift is None and not report.dataset_drift


def test_reference_npz_of_a_text_model_against_npy_embeddings(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    mask = (np.arange(128)[None, :] < rng.integers(4, 60, 600)[:, None]).astype(np.int64)
    embeddings = rng.normal(size=(600, 384)).astype(np.float32)
    np.savez_compressed(
        tmp_path / "reference.npz", input__input_ids=mask, input__attention_mask=mask, output=embeddings
    )
    shifted = rng.normal(size=(300, 384)).astype(np.float32)
    shifted[:, :40] += 0.3
    np.save(tmp_path / "current.npy", shifted)
    result = runner.invoke(
        app, ["drift", str(tmp_path / "reference.npz"), str(tmp_path / "current.npy"), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "embedding" and report["features"] == {}
    assert report["embedding_drift"]["drifted"] is True


def test_embedding_csv_with_text_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for name, rows, words in (("reference.csv", 400, 3), ("current.csv", 200, 30)):
        table = pd.DataFrame(rng.normal(size=(rows, 16)), columns=[f"out_{j}" for j in range(16)])
        table["text"] = [" ".join(["word"] * int(n)) for n in rng.integers(1, words, rows)]
        table.to_csv(tmp_path / name, index=False)
    report = drift_from_files(tmp_path / "reference.csv", tmp_path / "current.csv", "embedding")
    assert list(report.features) == ["text_chars"] and report.dataset_drift
    assert report.embedding_drift is not None


def test_bad_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("1,2\n", encoding="utf-8")
    result = runner.invoke(app, ["drift", str(tmp_path / "a.txt"), str(tmp_path / "a.txt")])
    assert result.exit_code == 2 and "expected .npz, .npy, .csv or .parquet" in result.output
    missing = runner.invoke(app, ["drift", str(tmp_path / "nope.csv"), str(tmp_path / "a.txt")])
    assert missing.exit_code == 2


def test_models_history_lists_the_audit_log(tmp_path: Path) -> None:
    import json

    from monitoring.cli import history

    log = tmp_path / "audit.jsonl"
    entries = [
        {
            "time": 1.0,
            "model": "digits",
            "event": "started",
            "reason": "data-drift",
            "detail": "share 0.9",
            "live": "v1",
        },
        {
            "time": 2.0,
            "model": "digits",
            "event": "refused",
            "reason": "data-drift",
            "detail": "shadow 0.8",
            "live": "v1",
        },
        {
            "time": 3.0,
            "model": "minilm",
            "event": "promoted",
            "reason": "manual",
            "detail": "ok",
            "live": "v7",
        },
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    app = typer.Typer()
    app.command()(history)
    result = CliRunner().invoke(app, ["digits", "--audit-log", str(log)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "refused" in result.output and "shadow 0.8" in result.output and "minilm" not in result.output
