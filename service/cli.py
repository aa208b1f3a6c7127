"""`leanserve serve`, and the `leanserve` console script composed from every package's commands.

The console script lives here, in the top layer, because only `service` may import both
`optimise` (the build step's commands) and `monitoring` (drift and the closed loop's history).

`serve` runs BentoML's server in this process rather than handing over to `bentoml serve`:
BentoML empties `$BENTOML_HOME/prometheus_multiproc_dir` when a server starts, so a second
server on the same store would wipe the first one's metrics. Each `leanserve serve` gives its
workers a metrics directory of its own (`$BENTOML_HOME/leanserve-metrics/<pid>`), removed when
it exits; directories left by a killed server are removed by the next start.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

if TYPE_CHECKING:
    from service.settings import ServiceSettings

app = typer.Typer(help="Serve stored models.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)
METRICS_DIRS = "leanserve-metrics"
# glibc gives every thread that allocates its own heap arena and rarely returns their memory;
# a server's many request threads then hold memory long after a burst. Two arenas bound that.
MALLOC_ARENAS = "2"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def instance_metrics_dir(home: Path) -> Path:
    """A fresh metrics directory for this process; those of servers that are gone are removed."""
    parent = home / METRICS_DIRS
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.iterdir():
        if stale.name.isdigit() and not _pid_alive(int(stale.name)):
            shutil.rmtree(stale, ignore_errors=True)
    mine = parent / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    return mine


def _check_settings() -> ServiceSettings:
    from service.settings import ServiceSettings

    try:
        return ServiceSettings()
    except ValidationError as exc:
        for error in exc.errors(include_input=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            if "LEANSERVE_" not in message:
                field = "_".join(str(part) for part in error["loc"]).upper()
                message = f"LEANSERVE_{field}: {message}"
            _error_line(message)
        raise typer.Exit(code=2) from None


def unbindable(host: str, port: int) -> str | None:
    """Why a server could not listen on `host`:`port` now (e.g. "Address already in use"), or None.

    Checked before BentoML starts: its own failed bind is a long traceback, and a gRPC port
    taken by another process made every worker fail its start-up and restart, forever."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"unknown interface ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As the servers bind: a port left in TIME_WAIT by a stopped server is free to them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _check_ports(host: str, port: int, settings: ServiceSettings) -> None:
    """Exit 2 with one error line per listener that cannot bind (the HTTP one, the gRPC one)."""
    listeners = [("HTTP", host, port)]
    if settings.grpc_port == port:
        _refuse(f"HTTP and gRPC cannot share port {port}: give --grpc-port another one")
    if settings.grpc_port:
        listeners.append(("gRPC", settings.grpc_host, settings.grpc_port))
    failed = False
    for protocol, where, number in listeners:
        reason = unbindable(where, number)
        if reason is not None:
            _error_line(f"cannot listen for {protocol} on {_address(where, number)}: {reason}")
            failed = True
    if failed:
        raise typer.Exit(code=2)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _error_line(message: str) -> None:
    # Plain text: "[::1]" is not markup and ":-1:" not an emoji.
    errors.print("[bold red]error:[/] ", end="", highlight=False)
    errors.print(message, markup=False, emoji=False, highlight=False, soft_wrap=True)


def _refuse(message: str) -> NoReturn:
    _error_line(message)
    raise typer.Exit(code=2)


@app.command()
def serve(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="HTTP port (REST, OIP v2 REST, admin, /metrics)")
    ] = 3000,
    grpc_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="OIP v2 gRPC port (default 8001; 0: no gRPC)")
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="comma-separated tags to serve (default minilm,digits)")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="interface to bind (default 0.0.0.0); gRPC's too, unless LEANSERVE_GRPC_HOST is set"
        ),
    ] = None,
) -> None:
    """Serve the stored models with BentoML (REST, OIP v2 REST and gRPC) until SIGTERM or Ctrl-C.

    Other settings: LEANSERVE_* variables (see the README). The server and its workers stop together.
    """
    if grpc_port is not None:
        os.environ["LEANSERVE_GRPC_PORT"] = str(grpc_port)
    if host is not None:  # a server kept to one interface keeps gRPC there too
        os.environ.setdefault("LEANSERVE_GRPC_HOST", host)
    host = host or "0.0.0.0"
    if models is not None:
        os.environ["LEANSERVE_MODELS"] = models
    settings = _check_settings()
    _check_ports(host, port, settings)
    os.environ.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENAS)  # read by each worker at its start
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli as bentoml_cli

    metrics_dir = instance_metrics_dir(Path(BentoMLContainer.bentoml_home.get()))
    BentoMLContainer.prometheus_multiproc_dir.set(str(metrics_dir))
    grpc = f"gRPC on {_address(settings.grpc_host, settings.grpc_port)}" if settings.grpc_port else "gRPC off"
    console.print(
        f"serving {os.environ.get('LEANSERVE_MODELS', 'minilm,digits')} on http://{_address(host, port)} ({grpc})",
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=True,  # one line in a log, however long the tags
    )
    command = ["serve", "service.app:LeanServe", "--host", host, "--port", str(port)]
    try:
        bentoml_cli.main(args=command, prog_name="bentoml", standalone_mode=False)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def build_cli() -> typer.Typer:
    """The `leanserve` command line: the build step's commands (`optimise`, `profiles`, `models ...`),
    monitoring's (`drift`, `models history`) and `serve`, each owned by its package and composed
    here without changing any package's own Typer app."""
    from monitoring.cli import drift, history
    from optimise.cli import app as build_app
    from optimise.models_cli import models_app

    cli = typer.Typer(help=build_app.info.help, no_args_is_help=True)
    cli.registered_commands = list(build_app.registered_commands)  # optimise, profiles
    cli.command("drift")(drift)
    cli.command("serve")(serve)
    models = typer.Typer(help=models_app.info.help, no_args_is_help=True)
    models.registered_commands = list(models_app.registered_commands)  # list, show, export, promote
    models.command("history")(history)
    cli.add_typer(models, name="models")
    return cli


def leanserve() -> None:
    """The `leanserve` console script."""
    build_cli()()


if __name__ == "__main__":
    leanserve()
