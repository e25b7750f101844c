"""grugctl's command line: parse, call one domain function, render. Never imports JAX."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from grugctl import __version__
from grugctl.errors import GrugError

T = TypeVar("T")

# Data goes to stdout, messages to stderr; rich already drops colour when the stream is not a TTY.
out = Console(no_color=bool(os.environ.get("NO_COLOR")) or None, soft_wrap=True)
err = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None, soft_wrap=True)

app = typer.Typer(
    help="Scaffold, diff, run, promote and check experiments against grug_core.\n\n"
    "Example: grugctl archive status",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
archive_app = typer.Typer(
    help="Read and edit archive.yaml, the experiments' paper trail.\n\nExample: grugctl archive status --json",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(archive_app, name="archive")


def fail(message: str, exit_code: int = 2) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(exit_code)


def guarded(action: Callable[[], T]) -> T:
    """Run a domain call; a GrugError becomes one line on stderr and its exit code."""
    try:
        return action()
    except GrugError as error:
        raise fail(str(error), error.exit_code) from None


def version_callback(value: bool) -> None:
    if value:
        out.print(f"grugctl {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Scaffold, diff, run, promote and check experiments against grug_core."""


if __name__ == "__main__":
    sys.exit(app())
