"""`leanserve models`: list, show, export and promote the versions in the model store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from optimise.console import console, fail, number
from optimise.errors import OptimiseError, StoreError

if TYPE_CHECKING:
    from optimise.store_index import StoredVersion

COLUMNS = (
    "tag",
    "state",
    "created",
    "profile",
    "variant",
    "runtime",
    "precision",
    "quality",
    "p50 ms",
    "bytes",
)
models_app = typer.Typer(
    help="Inspect, export and promote optimised models in the BentoML model store.", no_args_is_help=True
)


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="only versions of this model")] = None,
) -> None:
    """List stored models and versions: live (what NAME serves), ok, refused by the closed loop or
    broken (with the reason)."""
    from optimise import store

    try:
        stored = store.versions(name)
        if name is not None and not stored:
            raise StoreError(f"no versions of {name!r} in the model store ({store.store_dir()})")
    except OptimiseError as exc:
        raise fail(exc) from exc
    table = Table(title=f"models in {store.bentoml_home()}")
    for column in COLUMNS:
        table.add_column(column)
    states = _states(stored)
    for v in stored:
        if v.model is None:
            table.add_row(v.tag, states[v.tag], *["-"] * (len(COLUMNS) - 2))
            continue
        labels, meta = v.model.info.labels, v.model.info.metadata
        table.add_row(
            v.tag, states[v.tag], v.created.strftime("%Y-%m-%d %H:%M:%S"), labels.get("profile", ""),
            labels.get("variant", ""), labels.get("runtime", "onnxruntime"), labels.get("precision", ""),
            number(meta.get("quality"), "{:.4f}"),
            number(meta.get("latency_p50_ms"), "{:.2f}"), number(meta.get("size_bytes"), "{:.0f}"),
        )  # fmt: skip
    console.print(table)
    for v in stored:
        if not v.ok:
            console.print(f"[red]broken[/] {v.tag}: {v.problem}", highlight=False, soft_wrap=True)
        elif states[v.tag] == "refused":
            console.print(f"[yellow]refused[/] {v.tag}: {v.refused}", highlight=False, soft_wrap=True)


def _states(stored: list[StoredVersion]) -> dict[str, str]:
    """`broken`, `refused` (built by the closed loop and not promoted), `ok`, or `live` for the version
    a bare NAME serves (`live (newest)` when no usable live version is recorded), by tag."""
    from optimise import store

    states = {v.tag: "broken" if not v.ok else "refused" if v.refused is not None else "ok" for v in stored}
    for model_name in {v.name for v in stored}:
        live = store.live_version(model_name)
        chosen = store.choose([v for v in stored if v.name == model_name], live)
        if chosen is not None:
            states[chosen.tag] = "live" if chosen.version == live else "live (newest)"
    return states


@models_app.command("show")
def models_show(tag: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")]) -> None:
    """Show a stored model's selected variant, lineage and report."""
    from optimise import store
    from optimise.report import metrics_lines
    from optimise.store_index import refusal

    try:
        model = store.get_model(tag)
        artefact = store.artefact(model)
        broken = artefact.modified_files()
    except OptimiseError as exc:
        raise fail(exc) from exc
    manifest, selected = artefact.manifest, artefact.manifest.selected
    console.print(f"[bold]{model.tag}[/] from {manifest.source.spec} on profile {manifest.profile.name}")
    refused = refusal(Path(model.path))  # this version's marker only, not the whole store's listing
    if refused is not None:
        console.print(f"[yellow]refused[/]: {refused}", highlight=False, soft_wrap=True)
    console.print(
        f"selected {selected.id} ({selected.format} on {selected.runtime} {selected.runtime_version}): "
        f"{' -> '.join(p.name for p in selected.passes)}"
    )
    if selected.training is not None:
        console.print(f"distilled student: {selected.training.describe()}", highlight=False)
    if selected.runtime_settings:
        settings = ", ".join(f"{k}={v}" for k, v in selected.runtime_settings.items())
        console.print(f"session settings: {settings}", highlight=False)
    console.print(
        "batch-invariant: rows of concurrent requests may be merged"
        if selected.batch_invariant
        else "not batch-invariant: served row by row"
    )
    stage = manifest.serving
    if stage is not None and stage.variant_id == selected.id:
        console.print(f"serving settings: {stage.settings.describe()} ({stage.reason})", highlight=False)
    else:
        console.print("serving settings: not measured (the service's defaults apply)", highlight=False)
    for line in metrics_lines(selected.metrics) if selected.metrics else ["not measured"]:
        console.print(line, highlight=False)
    console.print("files intact (sha256)" if not broken else f"[red]modified files:[/] {', '.join(broken)}")
    console.print(f"report: {artefact.report_path}")


@models_app.command("export")
def models_export(
    tag: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    directory: Annotated[
        Path,
        typer.Argument(
            help="where to write the model file(s) of its format, manifest.json and preprocessing"
        ),
    ],
    overwrite: Annotated[
        bool, typer.Option(help="replace files of the same names already in DIRECTORY")
    ] = False,
) -> None:
    """Copy a stored model out so it can be used without leanserve."""
    from optimise import store

    try:
        written = store.export(tag, directory, overwrite=overwrite)
    except OptimiseError as exc:
        raise fail(exc) from exc
    for path in written:
        console.print(str(path))


@models_app.command("promote")
def models_promote(
    tag: Annotated[str, typer.Argument(help="NAME:VERSION (a unique prefix of the version works)")],
) -> None:
    """Record a stored version as the live one of its model: NAME serves it from the next start."""
    name, _, version = tag.partition(":")
    if not version:
        raise fail(ValueError(f"give the version to promote: {name}:VERSION (see `leanserve models list`)"))
    promote_version(tag)


def promote_version(tag: str) -> None:
    """Record NAME:VERSION as its model's live version and say so; exits with code 2 when refused."""
    from optimise import store

    name, _, version = tag.partition(":")
    try:
        before = store.resolve(name).partition(":")[2]  # what NAME served until now: a rollback's target
    except OptimiseError:
        before = None
    try:
        recorded = store.record_live(name, version, previous=before)
    except OptimiseError as exc:
        raise fail(exc) from exc
    console.print(f"live version of {name}: [bold]{recorded}[/] (served as {name!r} from the next start)")
