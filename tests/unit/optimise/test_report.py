"""The report's rows: every runtime side by side, each row naming its file format and runtime."""

from __future__ import annotations

from pathlib import Path

from builds import build
from tiny_models import make_tiny_bundle

from optimise.report import HEADERS, RUNTIME_HEADERS, candidate_rows, runtime_rows, write_report
from optimise.runtimes import ONNX_RUNTIME, TORCHSCRIPT
from optimise.select import Verdict
from optimise.space import SearchSpace
from optimise.types import Precision


def test_rows_name_format_and_runtime_and_every_runtime_gets_a_row(tmp_path: Path) -> None:
    space = SearchSpace(
        runtimes=(ONNX_RUNTIME, TORCHSCRIPT), precisions=(Precision.FP32,), graph_optimise=(False,)
    )
    result = build(make_tiny_bundle(), space, tmp_path)
    rows = candidate_rows(result)
    assert all(len(row) == len(HEADERS) for row in rows)
    assert {row[1] for row in rows} == {"onnx on onnxruntime", "torchscript"}
    side_by_side = runtime_rows(result)
    assert len(side_by_side[0]) == len(RUNTIME_HEADERS)
    assert sorted(row[0] for row in side_by_side) == ["onnx on onnxruntime", "torchscript"]
    report = (write_report(result, tmp_path / "report")).read_text()
    assert "| torchscript |" in report and "| onnx on onnxruntime |" in report
    # A runtime with nothing inside the constraints keeps its row, named the same way.
    for v in result.variants:
        if v.runtime == TORCHSCRIPT:
            result.selection.verdicts[v.id] = Verdict(v.id, ("size",))
    assert ["torchscript", "none inside the constraints"] in [row[:2] for row in runtime_rows(result)]
