"""Offline drift checks: `drift REFERENCE CURRENT` on saved samples (reference.npz, .npy, .csv, .parquet).

File layouts (`load_sample`):
- `.npz`: an artefact's reference.npz (`input__<name>`, `output`), or a window saved by `Window.save_npz`
  (also `feature__<name>`); token ids of a text model become `n_tokens`.
- `.npy`: one array: a tensor model's inputs (first axis = rows), or embeddings with `--kind embedding`.
- `.csv` / `.parquet`: `out_<j>` columns are the outputs, a `text` column gives `text_chars`; the other
  numeric columns are a tensor model's inputs, or an embedding model's scalar features (`n_tokens`...).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from monitoring.drift import (
    OUTPUT_PREFIX,
    DriftReport,
    ModelKind,
    ReferenceSample,
    Window,
    compute_drift,
    read_npz,
    render_html,
)
from monitoring.drift_embeddings import text_features

app = typer.Typer(help="Drift of served traffic against a model's reference sample.", no_args_is_help=True)


def load_sample(path: Path, kind: ModelKind = ModelKind.TENSOR) -> dict[str, Any]:
    """The fields of a `Window` (inputs, outputs, features) read from one file; see the module doc."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path)
    if suffix == ".npy":
        array = np.load(path)
        return {"outputs": array} if kind is ModelKind.EMBEDDING else {"inputs": array}
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{path}: expected .npz, .npy, .csv or .parquet")
    table = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    outputs = [c for c in table.columns if str(c).startswith(OUTPUT_PREFIX)]
    features = text_features(table["text"].astype(str).tolist()) if "text" in table else {}
    rest = table.drop(columns=[c for c in table.columns if c in outputs or c == "text"])
    rest = rest.select_dtypes("number")
    fields: dict[str, Any] = {"outputs": table[outputs].to_numpy(dtype=np.float64) if outputs else None}
    if kind is ModelKind.TENSOR and len(rest.columns):
        fields["inputs"] = rest.to_numpy(dtype=np.float64)
    else:
        features |= {str(c): rest[c].to_numpy(dtype=np.float64) for c in rest.columns}
    return fields | {"features": features}


def load_pair(
    reference: Path, current: Path, model_kind: ModelKind | str | None = None
) -> tuple[ReferenceSample, Window]:
    """The kind comes from a reference.npz's content, else from `model_kind` (default tensor)."""
    if reference.suffix.lower() == ".npz":
        ref = ReferenceSample.from_npz(reference)
    else:
        kind = ModelKind(model_kind or ModelKind.TENSOR)
        ref = ReferenceSample(name=reference.stem, **load_sample(reference, kind))
    kind = ModelKind(model_kind) if model_kind is not None else ref.kind
    return ref, Window(**load_sample(current, kind))


def drift_from_files(
    reference: Path, current: Path, model_kind: ModelKind | str | None = None, **options: Any
) -> DriftReport:
    """Offline `compute_drift` between two files (`options` go to `compute_drift`)."""
    return compute_drift(*load_pair(reference, current, model_kind), **options)


def _flag(drifted: bool) -> str:
    return "[bold red]DRIFT[/]" if drifted else "[green]ok[/]"


def print_report(report: DriftReport, console: Console, top: int = 10) -> None:
    table = Table(
        title=f"{report.model} ({report.kind}): {report.window_size} rows vs {report.reference_size} "
        f"reference rows, {report.seconds:.2f} s"
    )
    for column in ("check", "method", "score", "verdict"):
        table.add_column(column)
    if report.features:
        table.add_row(
            "dataset drift",
            f"share of drifted features (of {len(report.features)}) >= {report.drift_share:g}",
            f"{report.share_drifted:.3f}",
            _flag(report.dataset_drift),
        )
    for label, drift in (
        ("prediction drift", report.prediction_drift),
        ("embedding drift", report.embedding_drift),
    ):
        if drift is not None:
            table.add_row(label, drift.method, f"{drift.score:.4g}", _flag(drift.drifted))
    drifted = report.drifted_features
    for name in drifted[:top]:
        drift = report.features[name]
        table.add_row(f"  feature {name}", drift.method, f"{drift.score:.4g}", _flag(True))
    if len(drifted) > top:
        table.add_row(f"  ... {len(drifted) - top} more drifted features", "", "", "")
    console.print(table)


@app.callback()
def main() -> None:
    """Model monitoring commands."""


@app.command()
def drift(
    reference: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="reference.npz, .npy, .csv, .parquet")
    ],
    current: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="the window to judge, same formats")
    ],
    html: Annotated[
        Path | None, typer.Option("--html", help="also write Evidently's HTML report here")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the report as JSON instead of a table")
    ] = False,
    kind: Annotated[
        ModelKind | None, typer.Option("--kind", help="how to read .npy/.csv/.parquet (default: tensor)")
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="exit with status 1 on any drift")
    ] = False,
) -> None:
    """Compare a window of traffic with a model's reference sample."""
    try:
        ref, cur = load_pair(reference, current, kind)
        report = compute_drift(ref, cur)
    except (ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, Console())
    if html is not None:
        html.write_text(render_html(ref, cur, report), encoding="utf-8")
        if not as_json:
            typer.echo(f"HTML report written to {html}")
    if fail_on_drift and report.drifted:
        raise typer.Exit(1)


def history(
    model: Annotated[str | None, typer.Argument(help="only this model")] = None,
    audit_log: Annotated[
        Path | None, typer.Option(help="default: $BENTOML_HOME/leanserve-audit.jsonl")
    ] = None,
) -> None:
    """The closed loop's decisions: re-optimisations started, promoted, refused, failed; retraining needed."""
    from monitoring.trigger import audit_log_path, read_audit_log

    path = audit_log or audit_log_path()
    table = Table(title=f"re-optimisation history ({path})")
    for column in ("time", "model", "event", "reason", "live", "candidate", "detail"):
        table.add_column(column, overflow="fold")
    for entry in read_audit_log(path, model):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry["time"])))
        row = [entry.get(k, "") for k in ("model", "event", "reason", "live", "candidate", "detail")]
        table.add_row(when, *map(str, row))
    Console().print(table)


def leanserve() -> None:
    """The `leanserve` console script: the build step's commands plus `drift` and `models history`.

    It lives here because `optimise` may not import `monitoring`; this package may import both.
    """
    from optimise.cli import app as optimise_app
    from optimise.cli import models_app

    optimise_app.command("drift")(drift)
    models_app.command("history")(history)
    optimise_app()


if __name__ == "__main__":
    app()
