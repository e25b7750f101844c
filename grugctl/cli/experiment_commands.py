"""grugctl new and grugctl diff."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from grugctl.cli.common import ArchiveOption, app, err, fail, guarded, load_archive_for, out


@app.command()
def new(
    idea: str = typer.Argument(..., help="The idea's name; it becomes the experiment id, e.g. rope-scaling."),
    bucket: str | None = typer.Option(None, "--bucket", help="attention, mlp, block, loss or optimizer."),
    purpose: str | None = typer.Option(None, "--purpose", help="One sentence: what the experiment tries."),
    from_id: str | None = typer.Option(None, "--from", help="Copy this experiment instead of the starter."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be created; write nothing."),
    archive_path: ArchiveOption = None,
) -> None:
    """Scaffold an experiment from the starter (or --from ID) and register it in archive.yaml.

    Example: grugctl new rope-scaling --bucket attention --purpose "Scale RoPE theta with length."
    """
    from grugctl.experiments import scaffold

    archive = load_archive_for(archive_path)
    guarded(lambda: scaffold.check_new(archive, idea, bucket, from_id))
    if purpose is None and dry_run:
        purpose = "(give it with --purpose)"
    elif purpose is None and sys.stdin.isatty():
        purpose = typer.prompt("Purpose (one sentence: what does this experiment try?)")
    plan = guarded(lambda: scaffold.plan_new(archive, idea, purpose, bucket, from_id))
    if not dry_run:
        guarded(lambda: scaffold.create(archive, plan))
    verb = ("would create", "would register") if dry_run else ("created", "registered")
    say = lambda text="": out.print(text, markup=False, highlight=False)
    say(f"{verb[0]} {plan.path} (copied from {plan.origin})")
    say(f"{verb[1]} {plan.id}: active, bucket {plan.bucket or 'none'}, base {plan.base[:12]}")
    say(f"purpose: {plan.purpose}")
    if dry_run:
        say("its header:")
        say("\n".join(f"    {line}" if line else "" for line in plan.header.splitlines()))
    say()
    say("next:")
    if not plan.surface:
        say(f"  edit  {plan.path} ({plan.origin} holds no copies of core definitions to edit)")
    elif plan.bucket is not None:
        names = ", ".join(plan.surface.get(plan.bucket, [])) or f"(none: {plan.origin} copies none)"
        say(f"  edit  {names} in {plan.path} (the {plan.bucket} bucket's edit surface)")
    else:
        groups = "; ".join(f"{b}: {', '.join(names)}" for b, names in plan.surface.items())
        say(f"  edit  one bucket's definitions in {plan.path} ({groups})")
    say(f"  run   grugctl run {plan.id}  (or: python {plan.path})")
    say(f"  diff  grugctl diff {plan.id}")


@app.command()
def diff(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment to diff."),
    against: str = typer.Option(
        "core", "--against", help="core, origin (its origin as of its base commit) or another experiment id."
    ),
    bucket: str | None = typer.Option(None, "--bucket", help="Show only this bucket's definitions."),
    stat: bool = typer.Option(False, "--stat", help="One line per changed definition with +/- counts."),
    fmt: str = typer.Option("text", "--format", help="text, json, md (a PR comment) or html (side by side)."),
    as_json: bool = typer.Option(False, "--json", help="The same as --format json."),
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file instead of stdout.")
    ] = None,
    exit_code: bool = typer.Option(False, "--exit-code", help="Exit 1 when there are changes."),
    archive_path: ArchiveOption = None,
) -> None:
    """Show what an experiment changes, definition by definition, against the core or another experiment.

    Example: grugctl diff rope-scaling --against origin --stat
    """
    from grugctl import codediff
    from grugctl.experiments import diffrender

    if as_json and fmt not in ("text", "json"):
        raise fail(f"--json and --format {fmt} ask for two formats; pass one of them.")
    fmt = "json" if as_json else fmt
    if fmt not in diffrender.FORMATS:
        raise fail(f"unknown format {fmt!r}; use one of {', '.join(diffrender.FORMATS)}.")
    archive = load_archive_for(archive_path, reading=True)
    report = guarded(lambda: codediff.diff_experiment(archive, experiment_id, against, bucket))
    color = output is None and fmt == "text" and out.is_terminal and not os.environ.get("NO_COLOR")
    text = diffrender.render(report, fmt, stat=stat, color=color)
    if fmt == "text":
        for note in diffrender.terminal_notes(report):
            err.print(note, markup=False, highlight=False)
    if output is None:
        sys.stdout.write(text)
    else:
        from grugctl.transaction import write_bytes

        try:
            write_bytes(output, text.encode("utf-8"))  # atomic, as plot's --out: never half a report
        except OSError as error:
            raise fail(f"cannot write {output} ({error.strerror}); pick another --output path.") from None
        err.print(f"wrote {output}", markup=False, highlight=False)
    if exit_code and codediff.changed(report.changes):
        raise typer.Exit(1)
