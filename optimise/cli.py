"""The build step's commands: `optimise` and `profiles` (the `models` commands are in `models_cli`)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimise.cache import cache_root
from optimise.console import console, fail
from optimise.errors import ConfigError, OptimiseError
from optimise.models_cli import models_app, promote_version
from optimise.serving_search import (
    DEFAULT_CONCURRENCY,
    DEFAULT_P99_MS,
    DEFAULT_REQUEST_CORES,
    DEFAULT_REQUEST_CPU_MS,
    DEFAULT_SECONDS,
    ServingTarget,
)
from optimise.types import Constraints

# BentoML reports usage by default; a build step has no business phoning home.
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

app = typer.Typer(
    help="Optimise PyTorch models for a hardware target, then serve and watch them.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
BUILD_KIND = "leanserve-build"  # the build's scratch folders in the system temp dir


class SelectBy(StrEnum):
    """What picks the stored variant among those inside the quality budget."""

    LATENCY = "latency"  # the fastest at batch 1 (the search's measurements)
    THROUGHPUT = "throughput"  # the most requests/s under load within the p99 bound (the serving stage's)


DEFAULT_DISTIL_TIME_S = 1200.0  # all students together; a 4-layer MiniLM student reached 0.9365 in 900 s


def cache_dir() -> Path:
    return cache_root()


@app.command()
def optimise(
    model: Annotated[
        str, typer.Option(help="minilm, digits, a transformer folder, a TorchScript file or pkg.mod:fn")
    ],
    profile: Annotated[str, typer.Option(help="hardware profile (see `leanserve profiles`)")] = "cpu",
    max_accuracy_drop: Annotated[
        float, typer.Option(help="largest accuracy drop allowed, in percentage points")
    ] = 0.5,
    min_cosine: Annotated[
        float, typer.Option(help="smallest mean cosine to the FP32 model (no labels)")
    ] = 0.99,
    max_size_mb: Annotated[float | None, typer.Option(help="largest artefact size in MB")] = None,
    time_budget: Annotated[
        float | None, typer.Option(help="stop starting trials after this many seconds")
    ] = None,
    trials: Annotated[int | None, typer.Option(help="stop after this many trials")] = None,
    sampler: Annotated[str, typer.Option(help="auto, grid, tpe or nsga2")] = "auto",
    seed: Annotated[int, typer.Option(help="sampler seed; give each worker of a shared study its own")] = 0,
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage URL (default: SQLite in the cache)")
    ] = None,
    study_name: Annotated[str | None, typer.Option(help="share one study between workers")] = None,
    example_inputs: Annotated[Path | None, typer.Option(help=".npz of example inputs (TorchScript)")] = None,
    eval_data: Annotated[
        Path | None, typer.Option(help=".npz with labels (TorchScript) or a text file")
    ] = None,
    calibration_data: Annotated[
        Path | None, typer.Option(help="text file for a transformer's calibration")
    ] = None,
    calibration_inputs: Annotated[
        Path | None,
        typer.Option(help=".npz of recent inputs that replace the calibration set (recalibration)"),
    ] = None,
    tag_file: Annotated[Path | None, typer.Option(help="write the stored model's tag to this file")] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote/--no-promote",
            help="record the stored version as the model's live one, what NAME serves from the next start",
        ),
    ] = True,
    rounds: Annotated[int, typer.Option(help="interleaved measurement rounds", min=1)] = 5,
    distil: Annotated[
        bool | None,
        typer.Option(
            "--distil/--no-distil",
            help="train distilled students (default: when --min-cosine admits them, at most 0.97)",
        ),
    ] = None,
    distil_time: Annotated[
        float | None,
        typer.Option(
            help="seconds of training for all students together, apart from --time-budget [default: 1200]",
        ),
    ] = None,
    student: Annotated[
        list[str] | None,
        typer.Option(
            "--student",
            help="a student to distil instead of the defaults (repeatable; implies --distil): "
            "layers=N[,prune_ratio=R][,layer_choice=fidelity|spread] or width=W",
        ),
    ] = None,
    distil_steps: Annotated[
        int | None,
        typer.Option(
            help="train each student this many steps (deterministic; a longer-trained cached one is reused)",
        ),
    ] = None,
    distil_data: Annotated[
        Path | None,
        typer.Option(help="unlabelled inputs for students (implies --distil): text, one per line, or .npz"),
    ] = None,
    distil_live: Annotated[
        Path | None,
        typer.Option(
            help="inputs a server recorded (.npz of the model's inputs; token ids for text models), added "
            "to the distillation data at a tenth of it (implies --distil)",
        ),
    ] = None,
    serve_concurrency: Annotated[
        int,
        typer.Option(
            help="serving stage: concurrent clients to measure serving settings with; 0 skips the stage",
            min=0,
        ),
    ] = DEFAULT_CONCURRENCY,
    serve_p99_ms: Annotated[
        float,
        typer.Option(
            help="serving stage: p99 latency bound, in ms, of the settings it may choose", min=0.001
        ),
    ] = DEFAULT_P99_MS,
    serve_request_cores: Annotated[
        int,
        typer.Option(
            help="serving stage: cores left to the request path when batching; parallel batches use the rest",
            min=0,
        ),
    ] = DEFAULT_REQUEST_CORES,
    serve_request_cpu_ms: Annotated[
        float,
        typer.Option(
            help="serving stage: the server's own CPU work per request outside the model, in ms", min=0
        ),
    ] = DEFAULT_REQUEST_CPU_MS,
    serve_seconds: Annotated[
        float, typer.Option(help="serving stage: seconds of load per setting", min=0.05)
    ] = DEFAULT_SECONDS,
    select_by: Annotated[
        SelectBy,
        typer.Option(
            help="latency: the fastest variant at batch 1 is stored; throughput: the finalist serving the "
            "most requests/s within --serve-p99-ms"
        ),
    ] = SelectBy.LATENCY,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Search pass pipelines, measure every candidate on the profile, store the fastest that keeps quality,
    with the serving settings that answer the most requests/s under load."""
    _configure_logging(verbose)
    from optimise import build, store
    from optimise.distillation import policy
    from optimise.litert import environment as litert_environment
    from optimise.profiles import get_profile
    from optimise.runtimes import LITERT
    from optimise.scratch import clean_stale, owned_dir
    from optimise.search import SearchSettings, default_storage
    from optimise.sources import load_source, replace_calibration
    from optimise.space import default_space, student_settings

    try:
        if distil_time is not None and not (math.isfinite(distil_time) and distil_time >= 1):
            raise ValueError(
                f"--distil-time must be a finite number of seconds, at least 1, got {distil_time}"
            )
        if distil_steps is not None and distil_steps < 1:
            raise ValueError(f"--distil-steps must be at least 1, got {distil_steps}")
        if max_size_mb is not None and not (math.isfinite(max_size_mb) and max_size_mb > 0):
            raise ValueError(f"--max-size-mb must be a positive, finite number of MB, got {max_size_mb}")
        if student and distil is False:
            raise ValueError("--student asks for distillation, --no-distil refuses it: drop one of them")
        for name in student or ():
            student_settings(name)  # a name that is no student stops the run before the model loads
        constraints = Constraints(
            max_accuracy_drop=max_accuracy_drop / 100,
            min_cosine=min_cosine,
            max_size_bytes=int(max_size_mb * 1e6) if max_size_mb is not None else None,
        )
        target = get_profile(profile)
        build.check_profile_runs_here(target)
        serving = (
            ServingTarget(
                serve_concurrency,
                serve_p99_ms,
                serve_seconds,
                request_cores=serve_request_cores,
                request_cpu_ms=serve_request_cpu_ms,
                select_variant=select_by is SelectBy.THROUGHPUT,
            )
            if serve_concurrency > 0
            else None
        )
        if serving is None and select_by is SelectBy.THROUGHPUT:
            raise ValueError("--select-by throughput needs the serving stage: --serve-concurrency above 0")
        settings = SearchSettings(
            n_trials=trials,
            time_budget_s=time_budget,
            storage=storage or default_storage(cache_dir()),
            study_name=study_name,
            sampler=sampler,
            seed=seed,
        )
        with console.status(f"loading {model}"):
            bundle = load_source(model, example_inputs, eval_data, calibration_data)
            if calibration_inputs is not None:
                replace_calibration(bundle, calibration_inputs)
            if distil_data is not None:
                with _naming_option("--distil-data"):
                    user_data = policy.read_user_data(bundle, distil_data)
                bundle.distillation_data = lambda: user_data
            if distil_live is not None:
                with _naming_option("--distil-live"):
                    live_data = policy.read_live_data(bundle, distil_live)
                policy.add_live_rows(bundle, live_data)
        # Data of the user's own is a request to distil, unless --no-distil says otherwise.
        own_data = distil_data is not None or distil_live is not None
        forced = distil if distil is not None else (True if own_data else None)
        decision = policy.decide(bundle, constraints, forced, tuple(student or ()))
        if decision.students:
            with console.status("reading the distillation data"):
                policy.resolve_data(bundle)
        space = policy.with_students(
            default_space(bundle), decision.students, distil_time or DEFAULT_DISTIL_TIME_S, distil_steps
        )
        if LITERT in (space.for_profile(target).runtimes or ()) and not litert_environment.is_ready():
            with console.status("making the LiteRT converter environment (once: about a minute, 2.1 GB)"):
                build.prepare_litert()
        clean_stale(Path(tempfile.gettempdir()), BUILD_KIND)  # what killed builds left behind
        with owned_dir(BUILD_KIND) as scratch, _trial_progress() as progress, _distil_progress():
            task = progress.add_task(f"{bundle.name}: searching", total=None)

            def on_trial(candidate: object) -> None:
                progress.advance(task)

            result = build.optimise(
                bundle,
                target,
                constraints,
                settings,
                scratch,
                space=space,
                on_trial=on_trial,
                rounds=rounds,
                serving=serving,
            )
            progress.update(task, description=f"{bundle.name}: storing")
            tag = store.save(result, model)
    except (OptimiseError, ValueError) as exc:
        raise fail(exc) from exc
    if tag_file is not None:
        tag_file.write_text(tag, encoding="utf-8")
    _print_summary(result, tag)
    if decision.note is not None:
        console.print(f"[yellow]skipped[/] {decision.note}", highlight=False)
    if not decision.students and (distil_time is not None or distil_steps is not None):
        console.print(
            "[yellow]ignored[/] --distil-time / --distil-steps: no students were trained", highlight=False
        )
    if promote:
        promote_version(tag)
    else:
        console.print(
            f"not promoted (--no-promote): `leanserve models promote {tag}` makes it what "
            f"{tag.partition(':')[0]!r} serves",
            highlight=False,
        )


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Exporter tracer warnings and library notices would bury the summary table.
        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        # optimum configures its own root logger at first use (level WARNING): set it through its API.
        from optimum.utils import logging as optimum_logging

        optimum_logging.set_verbosity_error()


@contextlib.contextmanager
def _naming_option(option: str) -> Iterator[None]:
    """Errors about a file an option gave start with the option (the file's own message follows)."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc}") from None


@contextlib.contextmanager
def _distil_progress() -> Iterator[None]:
    """Show the students' training progress (steps, loss, held-out quality) at any verbosity."""
    progress_logger = logging.getLogger("optimise.distillation.progress")
    handler = _ConsoleHandler()
    progress_logger.addHandler(handler)
    progress_logger.setLevel(logging.INFO)
    progress_logger.propagate = False
    try:
        yield
    finally:
        progress_logger.removeHandler(handler)
        progress_logger.propagate = True


class _ConsoleHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        console.print(record.getMessage(), highlight=False)


def _trial_progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} trials"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip


def _print_summary(result: object, tag: str) -> None:
    from optimise.build import BuildResult
    from optimise.report import (
        HEADERS,
        RUNTIME_HEADERS,
        SERVING_HEADERS,
        candidate_rows,
        format_and_runtime,
        runtime_rows,
        serving_rows,
    )

    assert isinstance(result, BuildResult)
    table = Table(title=f"{result.bundle.name} on {result.profile.name} ({result.seconds:.0f} s)")
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for row in candidate_rows(result):
        style = "bold green" if row[0] == result.winner.id else None
        table.add_row(*row, style=style)
    console.print(table)
    runtimes = Table(title="runtimes side by side")
    for header in RUNTIME_HEADERS:
        runtimes.add_column(header, overflow="fold")
    for row in runtime_rows(result):
        runtimes.add_row(*row)
    console.print(runtimes)
    for note in result.profile.runtime_notes:
        console.print(f"[yellow]skipped[/] {note}", highlight=False)
    # One line per reason: a missing converter drops every TFLite candidate alike.
    for reason, count in Counter(c.failure for c in result.failures).items():
        times = f" ({count} candidates)" if count > 1 else ""
        console.print(f"[yellow]dropped[/]{times} {reason}", highlight=False)
    winner = result.winner
    if result.serving is not None:
        serving = Table(title=f"serving settings at concurrency {result.serving.concurrency}")
        for header in SERVING_HEADERS:
            serving.add_column(header, overflow="fold")
        for row in serving_rows(result):
            serving.add_row(*row, style="bold green" if row[-1] == "chosen" else None)
        console.print(serving)
    console.print(
        f"stored [bold]{tag}[/] ({format_and_runtime(winner)}: {winner.describe()}): {result.selection.reason}"
    )
    if result.serving is not None:
        console.print(
            f"serving settings: {result.serving.settings.describe()}: {result.serving.reason}",
            highlight=False,
        )
    else:
        console.print(
            "[yellow]skipped[/] the serving stage (--serve-concurrency 0): the service's defaults apply",
            highlight=False,
        )


@app.command()
def profiles() -> None:
    """List the hardware profiles."""
    from optimise.profiles import list_profiles
    from optimise.runtimes.ort_session import available_providers

    table = Table(title="hardware profiles")
    for column in (
        "name",
        "runtimes",
        "providers",
        "precisions",
        "threads",
        "size budget",
        "isa",
        "runs here",
        "description",
    ):
        table.add_column(column)
    here = set(available_providers())
    for p in list_profiles():
        budget = f"{p.max_size_bytes / 2**20:.0f} MiB" if p.max_size_bytes else "-"
        runs = "yes" if here & set(p.execution_providers) else "no"
        precisions = ", ".join(x.value for x in p.precisions)
        table.add_row(
            p.name,
            "\n".join([", ".join(p.runtimes), *p.runtime_notes]),
            ", ".join(p.execution_providers),
            precisions,
            str(p.intra_op_threads),
            budget,
            p.isa,
            runs,
            p.description,
        )
    console.print(table)


if __name__ == "__main__":
    app()
