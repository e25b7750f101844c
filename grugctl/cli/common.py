"""What every command shares: the consoles (data on stdout, messages on stderr), the Typer apps, one-line
errors, the archive option, confirmation and the repository transaction around a writing command."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from grugctl import __version__
from grugctl.errors import GrugError

T = TypeVar("T")

# Data goes to stdout, messages to stderr; rich already drops colour when the stream is not a TTY.
# User text is printed as written: no markup ([bold]) and no emoji codes (:x:) are interpreted.
NO_COLOR = bool(os.environ.get("NO_COLOR")) or None
out = Console(no_color=NO_COLOR, soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, no_color=NO_COLOR, soft_wrap=True, markup=False, emoji=False, highlight=False)

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    help="Scaffold, diff, run, promote and check experiments against grug_core.\n\n"
    "Example: grugctl archive status\n\n"
    "Shell completion: grugctl --install-completion (or --show-completion bash to see the script).",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
)
archive_app = typer.Typer(
    help="Read and edit archive.yaml, the experiments' paper trail.\n\n"
    "Example: grugctl archive status --json",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
)
app.add_typer(archive_app, name="archive")


def fail(message: str, exit_code: int = 2) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(exit_code)


def guarded(action: Callable[[], T]) -> T:
    """Run a domain call; a GrugError (or an OS error nothing caught) becomes one line on stderr and its
    exit code."""
    from grugctl.transaction import os_error

    try:
        return action()
    except GrugError as error:
        raise fail(str(error), error.exit_code) from None
    except OSError as error:
        raise fail(str(os_error(error, "use"))) from None


def find_archive_path(archive_path: Path | None, reading: bool = True) -> Path:
    """The archive.yaml to use; a reading command that finds a half-done command's journal says so (a
    writing one refuses, in the domain, with the same sentence)."""
    from grugctl import archive, transaction

    path = guarded(lambda: archive.find_archive(None, archive_path))
    journal = guarded(lambda: transaction.interrupted(path.parent)) if reading else None
    if journal is not None:
        warn([transaction.interrupted_sentence(journal)])
    return path


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


ArchiveOption = Annotated[
    Path | None,
    typer.Option("--archive", help="archive.yaml to use (default: the nearest one up to the git root)."),
]


def json_out(data: object) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def warn(messages: list[str], prefix: str = "warning") -> None:
    for message in messages:
        err.print(f"{prefix}: {message}", markup=False, highlight=False)


@contextlib.contextmanager
def writing(archive_path: Path | None, what: str, dry_run: bool = False) -> Iterator[None]:
    """Hold the repository's transaction for the whole command (none for a dry run, which only reads);
    a rollback that fails becomes one sentence too."""
    if dry_run:
        yield
        return
    from grugctl import transaction

    path = find_archive_path(archive_path, reading=False)
    try:
        with transaction.transaction(path.parent, what):
            yield
    except GrugError as error:
        raise fail(str(error), error.exit_code) from None


def load_archive_for(archive_path: Path | None, reading: bool = False):
    from grugctl.archive import load_archive

    path = find_archive_path(archive_path, reading)
    return guarded(lambda: load_archive(path))


def say(text: str = "") -> None:
    out.print(text, markup=False, highlight=False)


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal unless --yes. Without a terminal nobody can answer, so the command refuses:
    a script that means it says --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise fail(f"no terminal to answer '{question}'; pass --yes to go ahead (nothing changed)")
    if not typer.confirm(question, default=False):
        err.print("nothing changed", markup=False, highlight=False)
        raise typer.Exit(1)
