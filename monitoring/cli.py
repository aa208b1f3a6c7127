"""Offline drift checks: `drift REFERENCE CURRENT` on saved samples (reference.npz, .npy, .csv, .parquet),
and `models history`, the closed loop's audit log.

The file layouts, and the rules that make a malformed file an error (exit status 2, one `error:` line
naming the file, the column and the row) rather than a quiet verdict, are in `monitoring.sample_files`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from monitoring.audit import audit_log_path, describe_time, read_audit_log
from monitoring.drift import DriftReport, compute_drift, render_html
from monitoring.sample_files import load_pair, load_sample
from optimise.artefact import ModelKind
from optimise.console import console as stdout

__all__ = ["app", "drift", "history", "load_pair", "load_sample"]

HISTORY_COLUMNS = ("time", "model", "event", "reason", "live", "candidate", "run started", "detail")
UNBOUNDED_WIDTH = 100_000
"""Columns of `models history` when its output is not a terminal: no entry is folded."""


app = typer.Typer(help="Drift of served traffic against a model's reference sample.", no_args_is_help=True)


def _flag(drifted: bool) -> str:
    return "[bold red]DRIFT[/]" if drifted else "[green]ok[/]"


def print_report(report: DriftReport, console: Console, top: int = 10) -> None:
    distinct = "" if report.distinct_inputs is None else f", {report.distinct_inputs} distinct inputs"
    table = Table(
        title=f"{report.model} ({report.kind}): {report.window_size} rows vs {report.reference_size} "
        f"reference rows{distinct}, {report.seconds:.2f} s"
    )
    for column in ("check", "method", "score", "verdict"):
        table.add_column(column)
    if report.not_judged is not None:
        table.add_row("window", report.not_judged, "", "[yellow]not judged[/]")
    if report.features:
        table.add_row(
            "dataset drift",
            f"share of drifted features (of {len(report.features)}) >= {report.dataset_drift_threshold:g}",
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
    for name, why in report.skipped.items():
        table.add_row(f"  {name}", why, "", "[yellow]skipped[/]")
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
        print_report(report, stdout)
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
    """The closed loop's decisions: re-optimisations started, promoted, refused, failed, interrupted (the
    server stopped), abandoned (the server was killed; closed at the next start); retraining needed."""
    path = audit_log or audit_log_path()
    rows = [_history_row(entry) for entry in read_audit_log(path, model)]
    if not rows:
        stdout.print(
            f"no re-optimisation recorded{f' for {model}' if model else ''} in {path}",
            highlight=False,
            soft_wrap=True,
        )
        return
    table = Table(title=f"re-optimisation history ({path})")
    for i, column in enumerate(HISTORY_COLUMNS):
        # Version tags are copied whole; the other cells may fold in a narrow terminal.
        whole = column in ("live", "candidate")
        widest = max(len(row[i]) for row in rows)
        table.add_column(column, overflow="fold", min_width=widest if whole else None)
    for row in rows:
        table.add_row(*row)
    # Not a terminal (a pipe, a file): one line per entry, however long, for grep and the like.
    (stdout if sys.stdout.isatty() else Console(width=UNBOUNDED_WIDTH)).print(table)


def _history_row(entry: dict[str, Any]) -> list[str]:
    started = describe_time(float(entry["started"])) if "started" in entry else ""
    named = [str(entry.get(k, "")) for k in ("model", "event", "reason", "live", "candidate")]
    return [describe_time(float(entry["time"])), *named, started, str(entry.get("detail", ""))]


if __name__ == "__main__":
    app()
