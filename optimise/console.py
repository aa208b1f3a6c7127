"""Console output shared by the command line's commands (the build step's and monitoring's)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

# Wide enough for the summary table when stdout is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 180)
errors = Console(stderr=True)


def fail(exc: Exception) -> typer.Exit:
    """Print `exc` as one error line on stderr; the exit to raise (code 2: a user error)."""
    # The message is text, not markup: "[rows, tokens]" or a path with brackets must print as it is.
    errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def number(value: object, pattern: str) -> str:
    """`value` formatted with `pattern`, or `-` when it is not a number."""
    return pattern.format(value) if isinstance(value, (int, float)) else "-"
