"""The offline `drift` command (a unique basename: tests/unit/optimise has a test_cli.py), and what it
runs, `compute_drift` on `load_pair`, on CSV, Parquet, .npy and reference.npz files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from monitoring.cli import app
from monitoring.drift import compute_drift
from monitoring.sample_files import load_pair
from optimise.artefact import ModelKind

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
    report = compute_drift(*load_pair(tmp_path / "reference.npy", tmp_path / "current.npy"))
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
    report = compute_drift(*load_pair(tmp_path / "reference.csv", tmp_path / "current.csv", "embedding"))
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


def test_models_history_piped_keeps_each_entry_on_one_line(tmp_path: Path) -> None:
    """Piped into a file or `grep`, a terminal's 80 columns folded every cell over several lines."""
    import json

    from monitoring.cli import history

    detail = "fidelity to FP32 on the build's own calibration set (no recent inputs kept) " * 3
    entry = {"time": 1.0, "model": "digits", "event": "refused", "reason": "data-drift"}
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps(entry | {"detail": detail, "live": "v1", "candidate": "v2"}) + "\n")
    app = typer.Typer()
    app.command()(history)
    result = CliRunner().invoke(app, ["--audit-log", str(log)])
    assert result.exit_code == 0, result.output
    assert any(detail.strip() in line and "data-drift" in line for line in result.output.splitlines())


def test_models_history_without_entries_says_so(tmp_path: Path) -> None:
    from monitoring.cli import history

    app = typer.Typer()
    app.command()(history)
    result = CliRunner().invoke(app, ["digits", "--audit-log", str(tmp_path / "audit.jsonl")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"no re-optimisation recorded for digits in {tmp_path / 'audit.jsonl'}"


# -- malformed inputs: each an error naming the file and the column (exit 2), never a quiet pass ------
def _frame(rows: int = 80, seed: int = 0, columns: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(size=(rows, columns)), columns=[f"px_{i}" for i in range(columns)])
    return table.assign(out_0=rng.normal(size=rows), out_1=rng.normal(size=rows))


def _error(*paths: Path) -> str:
    """The one `error:` line of a run that must fail with exit status 2."""
    result = runner.invoke(app, ["drift", *map(str, paths)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def reference_csv(tmp_path: Path) -> Path:
    _frame().to_csv(tmp_path / "reference.csv", index=False)
    return tmp_path / "reference.csv"


def test_an_empty_column_is_an_error_not_a_column_without_drift(tmp_path: Path, reference_csv: Path) -> None:
    table = _frame(seed=1)
    table["px_2"] = np.nan
    table.to_csv(tmp_path / "current.csv", index=False)
    message = _error(reference_csv, tmp_path / "current.csv")
    assert "current.csv: column 'px_2' is empty: no value in any of its 80 rows" in message


def test_empty_cells_are_an_error_with_their_count_and_rows(tmp_path: Path, reference_csv: Path) -> None:
    table = _frame(seed=1)
    table.loc[[3, 4, 9], "px_1"] = np.nan
    table.to_csv(tmp_path / "current.csv", index=False)
    message = _error(reference_csv, tmp_path / "current.csv")
    assert "column 'px_1' has 3 missing (empty or NaN) values (rows 4, 5, 10)" in message


def test_a_non_numeric_cell_names_its_column_and_row(tmp_path: Path, reference_csv: Path) -> None:
    table = _frame(seed=1).astype(object)
    table.loc[5, "px_3"] = "abc"
    table.to_csv(tmp_path / "current.csv", index=False)
    message = _error(reference_csv, tmp_path / "current.csv")
    assert "column 'px_3', row 6: 'abc' is not a number" in message and "differ in size" not in message


def test_infinite_values_are_errors(tmp_path: Path, reference_csv: Path) -> None:
    table = _frame(seed=1)
    table.loc[3, "out_1"] = np.inf
    table.to_csv(tmp_path / "current.csv", index=False)
    assert "column 'out_1' has 1 infinite value (row 4)" in _error(reference_csv, tmp_path / "current.csv")


def test_files_without_rows_are_errors(tmp_path: Path, reference_csv: Path) -> None:
    _frame().iloc[:0].to_csv(tmp_path / "header.csv", index=False)
    assert "header.csv: no rows (only the header)" in _error(reference_csv, tmp_path / "header.csv")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    assert "empty.csv: empty file" in _error(reference_csv, tmp_path / "empty.csv")
    _frame().iloc[:0].to_parquet(tmp_path / "none.parquet")
    assert "none.parquet: no rows" in _error(reference_csv, tmp_path / "none.parquet")
    np.save(tmp_path / "none.npy", np.zeros((0, 4)))
    assert "none.npy: no rows" in _error(tmp_path / "none.npy", tmp_path / "none.npy")


def test_columns_missing_or_unexpected_against_the_reference(tmp_path: Path, reference_csv: Path) -> None:
    _frame(seed=1).drop(columns=["px_2"]).to_csv(tmp_path / "missing.csv", index=False)
    message = _error(reference_csv, tmp_path / "missing.csv")
    assert "missing.csv: input columns differ from the reference's: missing 'px_2'" in message
    _frame(seed=1).assign(extra=1.0).to_csv(tmp_path / "extra.csv", index=False)
    assert "input columns differ from the reference's: unexpected 'extra'" in _error(
        reference_csv, tmp_path / "extra.csv"
    )
    _frame(seed=1).drop(columns=["out_1"]).to_csv(tmp_path / "outputs.csv", index=False)
    assert "output columns differ from the reference's: missing 'out_1'" in _error(
        reference_csv, tmp_path / "outputs.csv"
    )


def test_the_report_names_a_tables_columns_as_the_file_does(tmp_path: Path) -> None:
    # They were reported as px_0, px_1...: the user had to count columns to know which one drifted.
    names = {f"px_{i}": name for i, name in enumerate(["age", "income", "visits", "score"])}
    _frame().rename(columns=names).to_csv(tmp_path / "reference.csv", index=False)
    shifted = _frame(seed=1).rename(columns=names)
    shifted["income"] += 3.0
    shifted[list(reversed(shifted.columns))].to_csv(tmp_path / "current.csv", index=False)
    result = runner.invoke(
        app, ["drift", str(tmp_path / "reference.csv"), str(tmp_path / "current.csv"), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["features"]) == ["age", "income", "visits", "score"]
    assert [name for name, drift in report["features"].items() if drift["drifted"]] == ["income"]
    # An input column named like the report's prediction keeps its name, marked as the input.
    clashing = {"age": "prediction"}
    pd.read_csv(tmp_path / "reference.csv").rename(columns=clashing).to_csv(
        tmp_path / "ref2.csv", index=False
    )
    pd.read_csv(tmp_path / "current.csv").rename(columns=clashing).to_csv(tmp_path / "cur2.csv", index=False)
    report = compute_drift(*load_pair(tmp_path / "ref2.csv", tmp_path / "cur2.csv"))
    assert list(report.features) == ["prediction (input)", "income", "visits", "score"]
    assert report.prediction_drift is not None  # the model's own prediction, from the out_<j> columns


def test_columns_are_matched_by_name_whatever_their_order(tmp_path: Path, reference_csv: Path) -> None:
    table = _frame(seed=1)
    table.to_csv(tmp_path / "current.csv", index=False)
    table[list(reversed(table.columns))].to_parquet(tmp_path / "reversed.parquet")
    same = compute_drift(*load_pair(reference_csv, tmp_path / "current.csv"))
    reordered = compute_drift(*load_pair(reference_csv, tmp_path / "reversed.parquet"))
    assert list(reordered.features) == ["px_0", "px_1", "px_2", "px_3"]
    assert {k: v.score for k, v in reordered.features.items()} == {
        k: v.score for k, v in same.features.items()
    }


def test_a_parquet_with_text_or_empty_columns_is_refused(tmp_path: Path, reference_csv: Path) -> None:
    _frame(seed=1).assign(px_1="x").to_parquet(tmp_path / "text.parquet")
    assert "column 'px_1', row 1: 'x' is not a number (79 more" in _error(
        reference_csv, tmp_path / "text.parquet"
    )
    _frame(seed=1).assign(px_1=None).to_parquet(tmp_path / "empty.parquet")
    assert "column 'px_1' is empty" in _error(reference_csv, tmp_path / "empty.parquet")


def test_npy_of_the_wrong_width_or_with_nan(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "reference.npz", input__pixels=rng.random((100, 1, 8, 8)))
    np.save(tmp_path / "narrow.npy", rng.random((50, 63)))
    message = _error(tmp_path / "reference.npz", tmp_path / "narrow.npy")
    assert "narrow.npy: input columns differ from the reference's: missing 'px_63'" in message
    holes = rng.random((50, 64))
    holes[[2, 3], 5] = np.nan
    np.save(tmp_path / "holes.npy", holes)
    assert "holes.npy: column px_5 has 2 missing (empty or NaN) values (rows 3, 4)" in _error(
        tmp_path / "reference.npz", tmp_path / "holes.npy"
    )
    np.save(tmp_path / "words.npy", np.array([["a"] * 64] * 3))
    assert "words.npy: expected an array of numbers" in _error(
        tmp_path / "reference.npz", tmp_path / "words.npy"
    )
    np.save(tmp_path / "good.npy", rng.random((50, 1, 8, 8)))
    assert len(compute_drift(*load_pair(tmp_path / "reference.npz", tmp_path / "good.npy")).features) == 64


def test_npz_without_the_expected_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "reference.npz", input__pixels=rng.random((100, 16)), labels=np.zeros(100))
    np.savez_compressed(tmp_path / "other.npz", x=rng.random((50, 16)))
    assert "other.npz: unexpected arrays 'x'" in _error(tmp_path / "reference.npz", tmp_path / "other.npz")
    np.savez_compressed(
        tmp_path / "ragged.npz", input__pixels=rng.random((50, 16)), output=rng.random((49, 2))
    )
    assert "ragged.npz: arrays differ in rows: input__pixels 50, output 49" in _error(
        tmp_path / "reference.npz", tmp_path / "ragged.npz"
    )
    np.savez_compressed(tmp_path / "nothing.npz")
    assert "nothing.npz: no input__<name>, output or feature__<name> arrays" in _error(
        tmp_path / "reference.npz", tmp_path / "nothing.npz"
    )


def test_unnamed_arrays_meet_other_names_by_position(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "reference.npz", input__pixels=rng.random((100, 3)))
    pd.DataFrame(rng.random((50, 3)), columns=["a", "b", "c"]).to_csv(tmp_path / "named.csv", index=False)
    assert list(compute_drift(*load_pair(tmp_path / "reference.npz", tmp_path / "named.csv")).features) == [
        "px_0",
        "px_1",
        "px_2",
    ]
    pd.DataFrame(rng.random((50, 2)), columns=["a", "b"]).to_csv(tmp_path / "narrow.csv", index=False)
    assert "input columns: 2 in the file, 3 in the reference" in _error(
        tmp_path / "reference.npz", tmp_path / "narrow.csv"
    )


def test_groups_only_one_side_has_are_listed_as_skipped(tmp_path: Path, reference_csv: Path) -> None:
    _frame(seed=1).drop(columns=["out_0", "out_1"]).to_csv(tmp_path / "inputs.csv", index=False)
    result = runner.invoke(app, ["drift", str(reference_csv), str(tmp_path / "inputs.csv"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped"] == {"outputs": "not in the window"} and report["prediction_drift"] is None
    table = runner.invoke(
        app, ["drift", str(reference_csv), str(tmp_path / "inputs.csv")], env={"COLUMNS": "200"}
    )
    assert "skipped" in table.output and "not in the window" in table.output


def test_an_empty_text_cell_is_the_empty_text(tmp_path: Path) -> None:
    from monitoring.cli import load_sample

    pd.DataFrame({"text": ["hello", None, "a b c"], "out_0": [0.1, 0.2, 0.3]}).to_csv(
        tmp_path / "texts.csv", index=False
    )
    fields = load_sample(tmp_path / "texts.csv", ModelKind.EMBEDDING)
    assert fields["features"]["text_chars"].tolist() == [5.0, 0.0, 5.0]


def test_a_report_is_printed_to_the_console_it_is_given(tmp_path: Path, reference_csv: Path) -> None:
    import io

    from rich.console import Console

    from monitoring.cli import print_report

    _frame(seed=1).to_csv(tmp_path / "current.csv", index=False)
    written = io.StringIO()
    print_report(compute_drift(*load_pair(reference_csv, tmp_path / "current.csv")), Console(file=written))
    assert "dataset drift" in written.getvalue()
