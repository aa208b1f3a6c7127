"""The `leanserve` console script: every package's commands, composed in the top layer."""

from __future__ import annotations

import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from optimise.cli import app as build_app
from service.cli import build_cli


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
