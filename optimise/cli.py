"""`leanserve`: optimise models, list profiles, inspect and export stored models."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimise.errors import OptimiseError
from optimise.types import Constraints

# BentoML reports usage by default; a build step has no business phoning home.
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

app = typer.Typer(
    help="Optimise PyTorch models for a hardware target, then serve and watch them.", no_args_is_help=True
)
models_app = typer.Typer(
    help="Inspect and export optimised models in the BentoML model store.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
# Wide enough for the summary table when stdout is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 180)
errors = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def cache_dir() -> Path:
    return Path(os.environ.get("LEANSERVE_CACHE_DIR", Path.home() / ".cache" / "leanserve"))


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
    rounds: Annotated[int, typer.Option(help="interleaved measurement rounds")] = 5,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Search pass pipelines, measure every candidate on the profile, store the fastest that keeps quality."""
    _configure_logging(verbose)
    from optimise import build, store
    from optimise.profiles import get_profile
    from optimise.search import SearchSettings, default_storage
    from optimise.sources import load_source, replace_calibration

    try:
        constraints = Constraints(
            max_accuracy_drop=max_accuracy_drop / 100,
            min_cosine=min_cosine,
            max_size_bytes=int(max_size_mb * 1e6) if max_size_mb is not None else None,
        )
        target = get_profile(profile)
        build.check_profile_runs_here(target)
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
        with tempfile.TemporaryDirectory(prefix="leanserve-build-") as scratch, _trial_progress() as progress:
            task = progress.add_task(f"{bundle.name}: searching", total=None)

            def on_trial(candidate: object) -> None:
                progress.advance(task)

            result = build.optimise(
                bundle, target, constraints, settings, Path(scratch), on_trial=on_trial, rounds=rounds
            )
            progress.update(task, description=f"{bundle.name}: storing")
            tag = store.save(result, model)
    except (OptimiseError, ValueError) as exc:
        raise _fail(exc) from exc
    if tag_file is not None:
        tag_file.write_text(tag, encoding="utf-8")
    _print_summary(result, tag)


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Exporter tracer warnings and library notices would bury the summary table.
        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        logging.getLogger("optimum").setLevel(logging.ERROR)


def _trial_progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} trials"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip


def _print_summary(result: object, tag: str) -> None:
    from optimise.build import BuildResult
    from optimise.report import HEADERS, candidate_rows

    assert isinstance(result, BuildResult)
    table = Table(title=f"{result.bundle.name} on {result.profile.name} ({result.seconds:.0f} s)")
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for row in candidate_rows(result):
        style = "bold green" if row[0] == result.winner.id else None
        table.add_row(*row, style=style)
    console.print(table)
    for candidate in result.failures:
        console.print(f"[yellow]dropped[/] {candidate.failure}", highlight=False)
    console.print(f"stored [bold]{tag}[/] ({result.winner.describe()})")


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="HTTP port (REST, OIP v2 REST, admin, /metrics)")] = 3000,
    grpc_port: Annotated[int | None, typer.Option(help="OIP v2 gRPC port (default 8001)")] = None,
    models: Annotated[
        str | None, typer.Option(help="comma-separated tags to serve (default minilm,digits)")
    ] = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "0.0.0.0",
) -> None:
    """Serve the stored models with BentoML (REST, OIP v2 REST and gRPC). Other settings: LEANSERVE_* variables."""
    import shutil

    env = dict(os.environ)
    if grpc_port is not None:
        env["LEANSERVE_GRPC_PORT"] = str(grpc_port)
    if models is not None:
        env["LEANSERVE_MODELS"] = models
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or "bentoml"
    command = [bentoml, "serve", "service.app:LeanServe", "--host", host, "--port", str(port)]
    console.print(
        f"serving {env.get('LEANSERVE_MODELS', 'minilm,digits')} on http://{host}:{port}", highlight=False
    )
    os.execvpe(command[0], command, env)  # the server replaces this process: signals reach it directly


@app.command()
def profiles() -> None:
    """List the hardware profiles."""
    from optimise.profiles import list_profiles
    from optimise.runtime import available_providers

    table = Table(title="hardware profiles")
    for column in (
        "name",
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
            ", ".join(p.execution_providers),
            precisions,
            str(p.intra_op_threads),
            budget,
            p.isa,
            runs,
            p.description,
        )
    console.print(table)


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="only versions of this model")] = None,
) -> None:
    """List stored models and versions."""
    from optimise import store

    table = Table(title=f"models in {store.bentoml_home()}")
    for column in ("tag", "created", "profile", "variant", "precision", "quality", "p50 ms", "bytes"):
        table.add_column(column)
    for m in store.list_models(name):
        labels, meta = m.info.labels, m.info.metadata
        table.add_row(
            str(m.tag), m.info.creation_time.strftime("%Y-%m-%d %H:%M:%S"), labels.get("profile", ""),
            labels.get("variant", ""), labels.get("precision", ""), _number(meta.get("quality"), "{:.4f}"),
            _number(meta.get("latency_p50_ms"), "{:.2f}"), _number(meta.get("size_bytes"), "{:.0f}"),
        )  # fmt: skip
    console.print(table)


def _number(value: object, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, (int, float)) else "-"


@models_app.command("show")
def models_show(tag: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")]) -> None:
    """Show a stored model's selected variant, lineage and report."""
    from optimise import store

    try:
        model = store.get_model(tag)
        manifest = store.read_manifest(model)
    except OptimiseError as exc:
        raise _fail(exc) from exc
    selected = manifest["selected"]
    console.print(
        f"[bold]{model.tag}[/] from {manifest['source']['spec']} on profile {manifest['profile']['name']}"
    )
    console.print(f"selected {selected['id']}: {' -> '.join(p['name'] for p in selected['passes'])}")
    console.print(selected["metrics"])
    broken = store.verify(model)
    console.print("files intact (sha256)" if not broken else f"[red]modified files:[/] {', '.join(broken)}")
    console.print(f"report: {model.path_of('report/report.md')}")


@models_app.command("export")
def models_export(
    tag: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    directory: Annotated[
        Path, typer.Argument(help="where to write model.onnx, manifest.json and preprocessing")
    ],
) -> None:
    """Copy a stored model out so it can be used without leanserve."""
    from optimise import store

    try:
        written = store.export(tag, directory)
    except OptimiseError as exc:
        raise _fail(exc) from exc
    for path in written:
        console.print(str(path))


if __name__ == "__main__":
    app()
