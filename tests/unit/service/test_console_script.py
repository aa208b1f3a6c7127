"""The `leanserve` console script: every package's commands, composed in the top layer."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import typer
from click.testing import Result
from typer.core import TyperGroup
from typer.testing import CliRunner

from optimise.cli import app as build_app
from service.cli import build_cli, unbindable


def test_help_lists_every_command_of_every_package() -> None:
    cli = typer.main.get_command(build_cli())
    assert isinstance(cli, TyperGroup)
    assert set(cli.commands) == {"optimise", "profiles", "drift", "serve", "models"}
    models = cli.commands["models"]
    assert isinstance(models, TyperGroup)
    assert set(models.commands) == {"list", "show", "export", "promote", "history"}
    result = CliRunner().invoke(build_cli(), ["--help"])
    assert result.exit_code == 0 and "serve" in result.output and "drift" in result.output


def test_composing_leaves_the_build_steps_own_app_alone() -> None:
    build_cli()
    build_cli()  # twice: nothing is registered twice either
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in build_app.registered_commands]
    assert names == ["optimise", "profiles"]
    assert [g.name for g in build_app.registered_groups] == ["models"]
    models = build_app.registered_groups[0].typer_instance
    assert models is not None
    assert [c.name for c in models.registered_commands] == ["list", "show", "export", "promote"]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process listens on (here: a socket of the test's own)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _serve(monkeypatch: pytest.MonkeyPatch, http_port: int, grpc_port: int) -> Result:
    # `serve` writes its options into the environment; these restore it afterwards.
    monkeypatch.setenv("LEANSERVE_GRPC_PORT", "0")
    monkeypatch.setenv("LEANSERVE_GRPC_HOST", "127.0.0.1")
    command = ["serve", "--host", "127.0.0.1", "--port", str(http_port), "--grpc-port", str(grpc_port)]
    return CliRunner().invoke(build_cli(), command)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_taken_http_port_is_one_error_line_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, held_port: int
) -> None:
    # It was BentoML's 200-line traceback, after a line saying the models were being served.
    result = _serve(monkeypatch, held_port, 0)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: cannot listen for HTTP on 127.0.0.1:{held_port}: Address already in use"
    )


def test_a_taken_grpc_port_is_one_error_line_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, held_port: int
) -> None:
    # Every worker failed its start-up on it and was restarted, forever, never ready.
    result = _serve(monkeypatch, _free_port(), held_port)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: cannot listen for gRPC on 127.0.0.1:{held_port}: Address already in use"
    )


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        # The same port: each passed the check alone, then every worker failed its gRPC bind, forever.
        ("same", "error: HTTP and gRPC cannot share port {port}: give --grpc-port another one"),
        (("--port", "70000"), "Invalid value for '--port'"),  # it listened on 70000 - 65536
        (("--port", "-1"), "Invalid value for '--port'"),
        (("--grpc-port", "70000"), "Invalid value for '--grpc-port'"),  # named the variable
    ],
)
def test_ports_a_server_cannot_take_are_refused_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, ports: object, message: str
) -> None:
    monkeypatch.setenv("LEANSERVE_GRPC_PORT", "0")
    monkeypatch.setenv("LEANSERVE_GRPC_HOST", "127.0.0.1")
    port = _free_port()
    if ports == "same":
        result = _serve(monkeypatch, port, port)
    else:
        assert isinstance(ports, tuple)
        result = CliRunner().invoke(build_cli(), ["serve", "--host", "127.0.0.1", *ports])
    assert result.exit_code == 2
    assert message.format(port=port) in " ".join(result.output.split()), result.output


def test_a_port_is_free_to_bind_when_nothing_holds_it() -> None:
    assert unbindable("127.0.0.1", _free_port()) is None
    assert unbindable("no-such-interface.invalid", 80) is not None
