"""grugctl's command line: parse, call one domain function, render. Never imports JAX."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from grugctl import __version__
from grugctl.errors import GrugError

T = TypeVar("T")

# Data goes to stdout, messages to stderr; rich already drops colour when the stream is not a TTY.
# User text is printed as written: no markup ([bold]) and no emoji codes (:x:) are interpreted.
NO_COLOR = bool(os.environ.get("NO_COLOR")) or None
out = Console(no_color=NO_COLOR, soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, no_color=NO_COLOR, soft_wrap=True, markup=False, emoji=False, highlight=False)

app = typer.Typer(
    help="Scaffold, diff, run, promote and check experiments against grug_core.\n\n"
    "Example: grugctl archive status",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
archive_app = typer.Typer(
    help="Read and edit archive.yaml, the experiments' paper trail.\n\n"
    "Example: grugctl archive status --json",
    no_args_is_help=True,
    rich_markup_mode=None,
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


def _find(archive_path: Path | None, reading: bool = True) -> Path:
    """The archive.yaml to use; a reading command that finds a half-done command's journal says so (a
    writing one refuses, in the domain, with the same sentence)."""
    from grugctl import archive, transaction

    path = guarded(lambda: archive.find_archive(None, archive_path))
    journal = guarded(lambda: transaction.interrupted(path.parent)) if reading else None
    if journal is not None:
        _warn([transaction.interrupted_sentence(journal)])
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


# ---------------------------------------------------------------- grugctl archive ...


ArchiveOption = Annotated[
    Path | None,
    typer.Option("--archive", help="archive.yaml to use (default: the nearest one up to the git root)."),
]


def _json_out(data: object) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _warn(messages: list[str], prefix: str = "warning") -> None:
    for message in messages:
        err.print(f"{prefix}: {message}", markup=False, highlight=False)


STATUS_STYLE = {"active": "green", "superseded": "yellow", "deleted": "dim"}
MAX_WARNINGS = 20


def _status_line(cells: list[str], widths: list[int], styles: list[str | None]) -> Text:
    line = Text()
    for cell, width, style in zip(cells, widths, styles, strict=True):
        cut = cell if len(cell) <= width else cell[: width - 1] + "…"
        line.append(cut.ljust(width), style=style)
        line.append("  ")
    line.rstrip()
    return line


def _figure(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta_cell(row: dict) -> str:
    if row["delta_val_bpb"] is None:
        return "-"
    return f"{row['delta_val_bpb']:+.4f} {row['verdict']}"


def _status_table(report: dict) -> None:
    headers = [
        "id", "status", "bucket", "file", "introduced", "last known-good", "seeds", "val_bpb",
        "steps→target", "Δ bpb vs starter", "purpose",
    ]  # fmt: skip
    rows = [
        [
            r["id"], r["status"], r["bucket"] or "-", "yes" if r["file_present"] else "missing",
            r["introduced"] or "-", r["last_known_good"] or "-", str(r["seeds"]),
            _figure(r["mean_val_bpb"], 4), _figure(r["mean_steps_to_target"], 0), _delta_cell(r),
            r["purpose"],
        ]
        for r in report["experiments"]
    ]  # fmt: skip
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    if not rows:
        return
    if not out.is_terminal:  # a pipe or file gets whole lines, no colour: plain text is 10x faster than rich
        plain = [None] * len(headers)
        sys.stdout.write("".join(_status_line(row, widths, plain).plain + "\n" for row in [headers, *rows]))
        return
    # A terminal cuts only purpose; `archive show` prints it whole.
    widths[-1] = min(widths[-1], max(10, out.width - sum(widths[:-1]) - 2 * (len(widths) - 1)))
    lines = [_status_line(headers, widths, ["bold"] * len(headers))]
    for row in rows:
        verdict = {"better": "green", "worse": "red"}.get(row[9].split(" ")[-1])
        styles = [
            None,
            STATUS_STYLE[row[1]],
            None,
            "red" if row[3] == "missing" else None,
            *[None] * 5,
            verdict,
        ]
        styles.append(None)
        lines.append(_status_line(row, widths, styles))
    out.print(Text("\n").join(lines))


def _render_status(report: dict) -> None:
    _status_table(report)
    s = report["summary"]
    shown = f"showing {s['shown']} of " if s["shown"] != s["total"] else ""
    plural = lambda n, word: f"{n} {word}{'s' * (n != 1)}"
    out.print(
        f"{shown}{plural(s['total'], 'experiment')}: {s['active']} active, {s['superseded']} superseded, "
        f"{s['deleted']} deleted; {plural(s['warnings'], 'warning')}",
        markup=False,
        highlight=False,
    )
    messages = [w["message"] for w in report["warnings"]]
    if len(messages) > MAX_WARNINGS:  # a broken archive should not bury the table
        more = f"... and {len(messages) - MAX_WARNINGS} more; `grugctl archive status --json` lists all"
        messages = messages[:MAX_WARNINGS] + [more]
    _warn(messages)


@archive_app.command("status")
def archive_status(
    status: str | None = typer.Option(None, "--status", help="Only show: active, superseded or deleted."),
    bucket: str | None = typer.Option(
        None, "--bucket", help="Only show: attention, block, mlp, loss, optimizer or none."
    ),
    sort_by: str = typer.Option(
        "archive", "--sort-by", help="archive (file order), val_bpb, steps_to_target, delta or seeds."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the same facts as JSON on stdout."),
    archive_path: ArchiveOption = None,
) -> None:
    """List experiments with their provenance and results, and warn about anything inconsistent.

    The leaderboard columns count the seeds of each experiment's current code and give its mean val
    bits per byte, mean steps to the target, and the delta in bits per byte against the starter with
    the verdict of `grugctl compare` (alpha 0.01). Warns about missing files, experiment files no
    entry names, deleted entries whose file still exists, and SHAs git does not know.

    Example: grugctl archive status --status active --sort-by val_bpb
    """
    from grugctl import archive, compare

    path = _find(archive_path)

    def report() -> dict:
        loaded = archive.load_archive(path)
        data = archive.status_report(loaded, status=status, bucket=bucket)
        board = compare.leaderboard(loaded, [row["id"] for row in data["experiments"]])
        rows = [row | board[row["id"]] for row in data["experiments"]]
        return data | {"experiments": compare.sort_rows(rows, sort_by)}

    data = guarded(report)
    if as_json:
        _json_out(data)
    else:
        _render_status(data)


@archive_app.command("show")
def archive_show(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment's id."),
    as_json: bool = typer.Option(False, "--json", help="Print the entry as JSON on stdout."),
    archive_path: ArchiveOption = None,
) -> None:
    """Show every field of one experiment, whether its file exists, and its warnings.

    Example: grugctl archive show grugformer-starter --json
    """
    from rich.table import Table

    from grugctl import archive

    path = _find(archive_path)
    data = guarded(lambda: archive.show_report(archive.load_archive(path), experiment_id))
    if as_json:
        _json_out(data)
        return
    table = Table.grid(padding=(0, 2))
    for key, value in data.items():
        if key in ("results", "warnings"):
            continue
        shown = ("yes" if value else "missing") if key == "file_present" else "-" if value is None else value
        table.add_row(Text(key, style="bold"), Text(str(shown)))
    for number, result in enumerate(data["results"], 1):
        table.add_row(
            Text(f"result {number}", style="bold"), Text(", ".join(f"{k}={v}" for k, v in result.items()))
        )
    out.print(table)
    _warn([w["message"] for w in data["warnings"]])


@archive_app.command("set")
def archive_set(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment's id."),
    status: str | None = typer.Option(None, "--status", help="active, superseded or deleted."),
    superseded_by: str | None = typer.Option(
        None, "--superseded-by", help="The successor: an experiment id, core@<sha> or core@pending."
    ),
    purpose: str | None = typer.Option(None, "--purpose", help="One line: what the experiment tries."),
    notes: str | None = typer.Option(None, "--notes", help="Free text."),
    issue: str | None = typer.Option(None, "--issue", help="Issue or pull request (URL or number)."),
    force: bool = typer.Option(False, "--force", help="Allow any status change (e.g. deleted -> active)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
    archive_path: ArchiveOption = None,
) -> None:
    """Edit one experiment's entry; the result is validated before anything is written.

    Status may move active -> superseded | deleted and superseded -> deleted; anything else needs
    --force. Superseded entries need --superseded-by.

    Example: grugctl archive set swiglu-mlp --status superseded --superseded-by core@pending
    """
    from grugctl import archive

    changes = {
        "status": status,
        "superseded_by": superseded_by,
        "purpose": purpose,
        "notes": notes,
        "issue": issue,
    }

    def edit() -> list:
        path = archive.find_archive(None, archive_path)
        return archive.set_entry(path, experiment_id, changes, force=force, dry_run=dry_run)

    changed = guarded(edit)
    verb = "would set" if dry_run else "set"
    for name, old, new in changed:
        old, new = ("(unset)" if v is None else v for v in (old, new))
        out.print(f"{verb} {experiment_id}.{name}: {old} -> {new}", markup=False, highlight=False)
    if not changed:
        out.print(f"{experiment_id}: nothing changed", markup=False, highlight=False)
    if any(name == "status" and new != "active" for name, _, new in changed):
        _warn(["`grugctl archive resolve` fills last_known_good from git"], prefix="hint")


@archive_app.command("resolve")
def archive_resolve(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be filled; write nothing."),
    archive_path: ArchiveOption = None,
) -> None:
    """Fill missing introduced / last_known_good SHAs from git history, and print what was filled.

    introduced is the first commit that added the file; last_known_good (superseded and deleted
    entries) is the newest commit that still had it.

    Example: grugctl archive resolve --dry-run
    """
    from grugctl import archive

    filled, missing = guarded(
        lambda: archive.resolve_archive(archive.find_archive(None, archive_path), dry_run=dry_run)
    )
    verb = "would fill" if dry_run else "filled"
    for entry_id, name, sha in filled:
        out.print(f"{verb} {entry_id}.{name} = {sha}", markup=False, highlight=False)
    out.print(f"{verb} {len(filled)} field(s)", markup=False, highlight=False)
    _warn(missing, prefix="not filled")


@archive_app.command("import-md")
def archive_import_md(
    markdown: Annotated[Path, typer.Argument(metavar="MARKDOWN", help="A marin-style grug-archive.md.")],
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be imported; write nothing."),
    archive_path: ArchiveOption = None,
) -> None:
    """Convert a Markdown archive (### id, - Path:, - Status:, ...; TBD = unknown) into entries.

    Text with no field of its own is kept in notes; sections that cannot be converted are reported.
    Ids already in archive.yaml are refused.

    Example: grugctl archive import-md docs/reports/grug-archive.md --dry-run
    """
    from grugctl import archive

    added, messages = guarded(
        lambda: archive.import_markdown(archive.find_archive(None, archive_path), markdown, dry_run=dry_run)
    )
    verb = "would import" if dry_run else "imported"
    for entry_id in added:
        out.print(f"{verb} {entry_id}", markup=False, highlight=False)
    out.print(f"{verb} {len(added)} experiment(s)", markup=False, highlight=False)
    _warn(messages, prefix="note")


# ---------------------------------------------------------------- grugctl new / diff


@contextlib.contextmanager
def _writing(archive_path: Path | None, what: str, dry_run: bool = False) -> Iterator[None]:
    """Hold the repository's transaction for the whole command (none for a dry run, which only reads);
    a rollback that fails becomes one sentence too."""
    if dry_run:
        yield
        return
    from grugctl import transaction

    path = _find(archive_path, reading=False)
    try:
        with transaction.transaction(path.parent, what):
            yield
    except GrugError as error:
        raise fail(str(error), error.exit_code) from None


def _load_archive(archive_path: Path | None, reading: bool = False):
    from grugctl.archive import load_archive

    path = _find(archive_path, reading)
    return guarded(lambda: load_archive(path))


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
    from grugctl import scaffold

    archive = _load_archive(archive_path)
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
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file instead of stdout.")
    ] = None,
    exit_code: bool = typer.Option(False, "--exit-code", help="Exit 1 when there are changes."),
    archive_path: ArchiveOption = None,
) -> None:
    """Show what an experiment changes, definition by definition, against the core or another experiment.

    Example: grugctl diff rope-scaling --against origin --stat
    """
    from grugctl import codediff, diffrender

    if fmt not in diffrender.FORMATS:
        raise fail(f"unknown format {fmt!r}; use one of {', '.join(diffrender.FORMATS)}.")
    archive = _load_archive(archive_path, reading=True)
    report = guarded(lambda: codediff.diff_experiment(archive, experiment_id, against, bucket))
    color = output is None and fmt == "text" and out.is_terminal and not os.environ.get("NO_COLOR")
    text = diffrender.render(report, fmt, stat=stat, color=color)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as error:
            raise fail(f"cannot write {output} ({error.strerror}); pick another --output path.") from None
        err.print(f"wrote {output}", markup=False, highlight=False)
    if exit_code and codediff.changed(report.changes):
        raise typer.Exit(1)


# ---------------------------------------------------------------- grugctl promote / delete / restore


def _say(text: str = "") -> None:
    out.print(text, markup=False, highlight=False)


def _confirm(question: str, yes: bool) -> None:
    """Ask on a terminal unless --yes; a pipe or CI goes ahead (such invocations are deliberate)."""
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm(question, default=False):
        err.print("nothing changed", markup=False, highlight=False)
        raise typer.Exit(1)


def _render_promote_plan(plan, dry_run: bool) -> None:
    from grugctl.promote import GATE_TESTS_ENV

    verb = "would promote" if dry_run else "promote"
    _say(f"{verb} {plan.id} ({', '.join(plan.buckets)}) into the core: {', '.join(plan.names)}")
    for path, names in plan.modules.items():
        _say(f"  {path}: {', '.join(names)}")
    for path, statements in plan.imports.items():
        _say("\n".join(f"  {path}: add `{s}`" for s in statements))
    if plan.starter_names:
        _say(f"  {plan.starter}: the starter's copies of {', '.join(plan.starter_names)}")
    sha = plan.last_known_good[:12] if plan.last_known_good else "-"
    status = "deleted" if plan.delete else "superseded"
    _say(f"  archive.yaml: {plan.id} {status}, superseded_by core@pending, last_known_good {sha}")
    if plan.delete:
        _say(f"  remove {plan.delete_target}{' (git rm)' if plan.delete_tracked else ''}")
    tests = f"pytest {' '.join(plan.tests)}" if plan.tests else "no core tests"
    narrowed = f" (narrowed by ${GATE_TESTS_ENV})" if plan.narrowed else ""
    _say(f"  gate: {tests}{narrowed}; {plan.starter} --smoke")
    if plan.test_files:
        copies = "".join(f"; {dest} from {source}" for source, dest in plan.shipped)
        _say(f"  tests promoted with it (in the gate and the commit): {', '.join(plan.test_files)}{copies}")
    if plan.stale:
        how = "synced now where they merge cleanly" if plan.sync_all else "`grugctl sync ID` or --sync-all"
        _say(f"  makes stale: {', '.join(plan.stale)} ({how})")
    if plan.commit:
        _say(f"  commit on a new branch {plan.branch}, then record its SHA in archive.yaml (a second commit)")
    _warn(list(plan.warnings))
    if plan.core_diff:
        _say()
        sys.stdout.write(plan.core_diff)
        sys.stdout.flush()
    from grugctl import comparerender

    _say()
    _say("evidence (the speedrun metric against the starter; `grugctl compare` shows more):")
    sys.stdout.write(
        comparerender.text([plan.evidence], color=out.is_terminal and not os.environ.get("NO_COLOR"))
    )
    if plan.waiver is not None:
        _say(f"waived: {plan.waiver} (recorded in archive.yaml as the entry's waiver)")


def _render_promoted(plan, outcome) -> None:
    gate = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome.gate.seconds.items())
    where = "; ".join(f"{', '.join(names)} into {path}" for path, names in plan.modules.items())
    _say(f"promoted {where}; gate passed ({gate})")
    status = "deleted" if plan.delete else "superseded"
    _say(f"archive.yaml: {plan.id} {status}, superseded_by {outcome.superseded_by}")
    for path, tests in plan.covering.items():
        if tests:
            _say(f"lock the new behaviour with a test: {path} is covered by {', '.join(tests)}")
        else:
            _say(f"no test imports {path}: add one that locks the new behaviour")
    if outcome.synced:
        _say(f"synced onto the new core: {', '.join(outcome.synced)}")
    left = [i for i in plan.stale if i not in outcome.synced]
    if left:
        _say(
            f"now stale: {', '.join(left)}; bring them onto the new core with `grugctl sync {' '.join(left)}`"
        )
    if outcome.commit:
        record = f"; its SHA recorded in {outcome.record_commit[:12]}" if outcome.record_commit else ""
        _say(f"committed {outcome.commit[:12]} on branch {plan.branch}{record}")
    else:
        _warn(
            [f"commit, then `grugctl archive set {plan.id} --superseded-by core@<sha>` with its SHA"],
            prefix="hint",
        )
    _warn(list(outcome.warnings))


@app.command()
def promote(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment to promote."),
    only: str | None = typer.Option(None, "--only", help="Promote only these definitions (NAME,NAME...)."),
    bucket: str | None = typer.Option(None, "--bucket", help="Promote only this bucket's definitions."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and core diff; write nothing."),
    delete_after: bool = typer.Option(False, "--delete", help="Also remove the experiment's folder."),
    commit: bool = typer.Option(False, "--commit", help="Commit on a new branch promote/ID."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Proceed with uncommitted changes."),
    sync_all: bool = typer.Option(
        False, "--sync-all", help="Also sync the experiments it makes stale (same transaction and commit)."
    ),
    waive: str | None = typer.Option(
        None, "--waive", help="Promote without a significant win, recording this reason (e.g. systems-only)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive_path: ArchiveOption = None,
) -> None:
    """Splice an experiment's changed definitions into grug_core and the starter, behind a test gate.

    First the evidence: promote refuses (exit 1) unless the experiment's recorded runs are
    significantly better than the starter's on val_bpb at alpha 0.01 (`grugctl compare`); --waive
    "REASON" promotes anyway and records the reason. The gate runs the core tests and the starter's
    --smoke run; if anything fails (or you press Ctrl-C) every touched file is restored byte for byte
    and the command exits 1. Uncommitted edits under tests/ and a test_<id>.py in the experiment's
    folder (copied to tests/test_grugformer_<id>.py) are promoted with it: in the gate and the commit.

    Example: grugctl promote relu-squared --dry-run
    """
    from grugctl import promote as promoting

    # The lock is held from the plan to the last write (git holds index.lock the same way): a plan made
    # while another promotion is mid-gate would splice against that promotion's half-done files.
    with _writing(archive_path, f"grugctl promote {experiment_id}", dry_run):
        archive = _load_archive(archive_path)
        names = (only or "").split(",")
        plan = guarded(
            lambda: promoting.plan_promote(
                archive, experiment_id, only=names, bucket=bucket, allow_dirty=allow_dirty,
                delete=delete_after, commit=commit, waiver=waive, sync_all=sync_all,
            )
        )  # fmt: skip
        _render_promote_plan(plan, dry_run)
        guarded(lambda: promoting.check_evidence(plan))
        if dry_run:
            return
        _confirm(f"Promote {', '.join(plan.names)} from {plan.id} into the core?", yes)
        progress = lambda message: err.print(message, markup=False, highlight=False)
        try:
            outcome = promoting.promote(archive, plan, progress)
        except promoting.GateFailed as error:
            err.print("--- last lines of the failing step's output ---", markup=False, highlight=False)
            err.print(error.tail, markup=False, highlight=False)
            raise fail(str(error), error.exit_code) from None
        except GrugError as error:
            raise fail(str(error), error.exit_code) from None
        except KeyboardInterrupt:
            raise fail(
                "interrupted; every touched file was restored and nothing was promoted.", 130
            ) from None
        _render_promoted(plan, outcome)


def _render_sync(report: dict, dry_run: bool) -> None:
    verb = "would sync" if dry_run else "synced"
    if not report["changes_file"] and report["new_base"] == report["base"]:
        _say(f"{report['id']}: up to date with the core")
        return
    by = {}
    for name, outcome in report["definitions"].items():
        by.setdefault(outcome, []).append(name)
    parts = [f"{outcome} {', '.join(names)}" for outcome, names in by.items()]
    if report["kept"]:
        parts.append(f"kept its own {', '.join(report['kept'])}")
    _say(f"{verb} {report['id']}: {'; '.join(parts) or 'no definition changes'}")
    for item in report["added"]:
        _say(f"  add {item}")
    for item in report["removed"]:
        _say(f"  remove `{item}` (nothing uses it any more)")
    if report["new_base"] != report["base"]:
        _say(f"  archive.yaml: base {report['base']} -> {report['new_base']} (synced_from {report['base']})")
    _warn(report["warnings"])
    if dry_run and report["diff"]:
        sys.stdout.write(report["diff"])


@app.command("sync")
def sync_command(
    experiment_ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="The experiments to sync.")
    ] = None,
    every: bool = typer.Option(False, "--all", help="Sync every active experiment (not the starter)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would change and the diff; write nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Sync files with uncommitted changes."),
    resume: bool = typer.Option(False, "--continue", help="Finish a sync whose conflicts you resolved."),
    abort: bool = typer.Option(False, "--abort", help="Undo a conflicted sync, restoring every byte."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive_path: ArchiveOption = None,
) -> None:
    """Merge the core's changes since an experiment's base into its copies, definition by definition.

    A copy the experiment left alone becomes the core's; its own changes stay; a definition both
    changed is merged line by line, and a conflict leaves markers inside that one definition (exit 1):
    edit it, then `grugctl sync ID --continue`, or `grugctl sync ID --abort` to restore every byte.
    The entry's base advances (the old one kept as synced_from).

    Example: grugctl sync --all --dry-run
    """
    from grugctl import sync

    ids = list(experiment_ids or [])
    if resume or abort:
        if (resume and abort) or dry_run:
            raise fail("--continue and --abort take no --dry-run and not each other; pass one.")
        archive = _load_archive(archive_path)
        waiting = ids or (sync.in_progress(archive.root) if every else [])
        if not waiting:
            raise fail(
                "name the experiment whose sync to finish, e.g. `grugctl sync ID --continue`, or --all."
            )
        for experiment_id in waiting:
            state = guarded(lambda i=experiment_id: sync.finish(archive, i, abort))
            if abort:
                _say(f"aborted the sync of {experiment_id}: {state['path']} is as it was before it")
            else:
                _say(f"synced {experiment_id}: base {state['base']} -> {state['target'][:12]}")
        return
    with _writing(archive_path, "grugctl sync " + (" ".join(ids) or "--all"), dry_run):
        archive = _load_archive(archive_path)
        plans, skipped = guarded(lambda: sync.plan_many(archive, ids, every, allow_dirty))
        reports = [sync.describe(plan) for plan in plans]
        if as_json:
            _json_out({"dry_run": dry_run, "experiments": reports, "skipped": skipped})
        else:
            for report in reports:
                _render_sync(report, dry_run)
            _warn(skipped, prefix="note")
        if dry_run or not any(r["changes_file"] or r["new_base"] != r["base"] for r in reports):
            return
        _confirm(f"Sync {', '.join(p.id for p in plans)}?", yes)
        guarded(lambda: sync.sync(archive, plans))
    conflicted = [p for p in plans if p.conflicts]
    if conflicted:
        for plan in conflicted:
            err.print(
                f"conflict in {plan.id}: {', '.join(plan.conflicts)} in {plan.path}; edit them, then run "
                f"`grugctl sync {plan.id} --continue`, or `grugctl sync {plan.id} --abort` to restore "
                "every byte",
                markup=False, highlight=False,
            )  # fmt: skip
        raise typer.Exit(1)


@app.command("delete")
def delete_command(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment to delete."),
    superseded_by: str | None = typer.Option(
        None, "--superseded-by", help="Its successor: an experiment id, core@<sha> or core@pending."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would happen; write nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive_path: ArchiveOption = None,
) -> None:
    """Remove an experiment's folder (git rm) and mark it deleted, recording its last known good commit.

    `grugctl restore ID` brings it back byte for byte from that commit.

    Example: grugctl delete relu-squared --superseded-by core@pending
    """
    from grugctl import lifecycle

    archive = _load_archive(archive_path)
    plan = guarded(lambda: lifecycle.plan_delete(archive, experiment_id, superseded_by))
    verb = ("would remove", "would mark") if dry_run else ("remove", "mark")
    how = "git rm" if plan.tracked else "not tracked by git"
    _say(f"{verb[0]} {plan.target} ({len(plan.files)} file(s), {how})")
    successor = f", superseded_by {plan.superseded_by}" if plan.superseded_by else ""
    _say(f"{verb[1]} {plan.id} deleted, last_known_good {plan.last_known_good[:12]}{successor}")
    _warn(list(plan.warnings))
    if dry_run:
        return
    _confirm(f"Delete {plan.id}?", yes)
    guarded(lambda: lifecycle.delete(archive, plan))
    _say(f"deleted {plan.id}; `grugctl restore {plan.id}` brings it back from {plan.last_known_good[:12]}")


@app.command("restore")
def restore_command(
    experiment_id: str = typer.Argument(..., metavar="ID", help="A deleted or superseded experiment."),
    as_id: str | None = typer.Option(None, "--as", help="Register it under this new id (origin: ID)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would happen; write nothing."),
    archive_path: ArchiveOption = None,
) -> None:
    """Bring an experiment back, byte for byte, from its last known good commit, and mark it active.

    Example: grugctl restore relu-squared --as relu-squared-again
    """
    from grugctl import lifecycle

    archive = _load_archive(archive_path)
    plan = guarded(lambda: lifecycle.plan_restore(archive, experiment_id, as_id))
    if not dry_run:
        guarded(lambda: lifecycle.restore(archive, plan))
    verb = "would write" if dry_run else "wrote"
    for at_sha, dest, _ in plan.files:
        renamed = f" (was {at_sha})" if at_sha != dest else ""
        _say(f"{verb} {dest}{renamed} from {plan.sha[:12]}")
    verb = ("would register", "would mark") if dry_run else ("registered", "marked")
    if plan.new_id is not None:
        _say(f"{verb[0]} {plan.new_id}: active, origin {plan.id}, base {plan.sha[:12]}")
    else:
        _say(f"{verb[1]} {plan.id} active")
    _warn(list(plan.warnings), prefix="note")


@app.command("recover")
def recover_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be rolled back; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive_path: ArchiveOption = None,
) -> None:
    """Roll back, byte for byte, a command that died halfway (killed, power loss), from its journal.

    Every touched file gets its original bytes back (files it created go), HEAD returns to its branch,
    a branch it created is deleted and the index entries it staged are reset.

    Example: grugctl recover --dry-run
    """
    from grugctl import transaction

    path = _find(archive_path, reading=False)
    report = guarded(lambda: transaction.recover(path.parent, dry_run=True))
    if report is None:
        _say("nothing to recover: no command stopped halfway")
        return
    verb = ("would restore", "would remove") if dry_run else ("restored", "removed")
    _say(f"`{report.what}` (pid {report.pid}, started {report.started}) stopped halfway")
    if not dry_run:
        _confirm("Roll it back?", yes)
        report = guarded(lambda: transaction.recover(path.parent))
        if report is None:
            _say("nothing to recover: another grugctl recovered it meanwhile")
            return
    for rel in report.restored:
        _say(f"{verb[0]} {rel}")
    for rel in report.removed:
        _say(f"{verb[1]} {rel}")
    for step in report.git:
        _say(f"{'would run' if dry_run else 'ran'} {step}")
    if report.failed:
        failed = ", ".join(report.failed)
        raise fail(f"could not roll back {failed}; fix that and run `grugctl recover` again.")
    if not dry_run:
        _say(f"rolled back {len(report.restored) + len(report.removed)} file(s); the journal is gone")


# ---------------------------------------------------------------- grugctl run


def _run_line(done) -> str:
    row = done.row
    if row.get("status") == "failed":
        code = "died" if row["exit_code"] is None else f"exit code {row['exit_code']}"
        where = f"; recorded in {row['record']} with its log tail" if done.recorded else ""
        return f"{done.entry_id} seed {row['seed']} attempt {row['attempt']} FAILED ({code}){where}"
    reached = "target not reached"
    if row["steps_to_target"] is not None:
        tokens, seconds = row["tokens_to_target"], row["time_to_target_s"]
        reached = f"target at step {row['steps_to_target']:.0f} ({tokens:,} tokens, {seconds:.1f} s)"
    pair = f" [pair {row['pair']}]" if row.get("pair") else ""
    where = f"; recorded in {row['record']}" if done.recorded else ""
    return (
        f"{done.entry_id} seed {row['seed']}{pair}: val_bpb {row['val_bpb']:.4f}, {reached}, "
        f"{row['tokens_per_s']:,} tok/s{where}"
    )


@app.command("run")
def run_command(
    entry_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The experiment(s) to train.")],
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps (default: the file's)."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Number of seeds: seed, seed+1, ..."),
    paired: bool = typer.Option(
        False, "--paired", help="Alternate the baseline and each experiment seed by seed on this machine."
    ),
    against: str | None = typer.Option(
        None, "--against", help="The baseline of --paired (default: the starter)."
    ),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny config, 2 steps: checks the file runs."),
    record: bool | None = typer.Option(
        None, "--record/--no-record", help="Record each run (default: yes, except for --smoke runs)."
    ),
    mesh: str | None = typer.Option(
        None, "--mesh", help="Device mesh of each run, e.g. data=4,model=2 (default: every local device)."
    ),
    ray: bool = typer.Option(False, "--ray", help="Run every (experiment, seed) as a task on Ray."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="An existing Ray cluster (implies --ray; default: a new local one)."
    ),
    cpus_per_run: float = typer.Option(1.0, "--cpus-per-run", min=0, help="CPUs each Ray task asks for."),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", min=0, help="GPUs each Ray task asks for."),
    retries: int = typer.Option(0, "--retries", min=0, help="Resubmit a failed Ray task this many times."),
    allow_dirty: bool = typer.Option(
        False, "--allow-dirty", help="Ship an uncommitted tree to Ray (its patch is recorded)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the runs' summary rows as JSON on stdout."),
    archive_path: ArchiveOption = None,
) -> None:
    """Train experiments in child processes; record each run under runs/<id>/ and in archive.yaml.

    Each record holds the code (commit, file and core ids, any uncommitted patch), config, machine,
    mesh, whether the machine ran other runs at once, and curves; `grugctl compare` and `grugctl plot`
    read them. Progress streams on stderr. With --ray every (experiment, seed) is a Ray task, the
    tree ships to the workers, results are recorded as they come back, and failed tasks are recorded
    with their log tail and retried.

    Example: grugctl run relu-squared --seeds 5 --paired --steps 200

    Example: grugctl run relu-squared grugformer-starter --seeds 4 --ray --cpus-per-run 2 --retries 1
    """
    from grugctl import runner

    archive = _load_archive(archive_path)
    show = None if as_json else (lambda done: _say(_run_line(done)))
    common = dict(
        seeds=list(range(seed, seed + seeds)), steps=steps, smoke=smoke, record=record, paired=paired,
        against=against, mesh=mesh, on_finished=show,
    )  # fmt: skip
    ray_only = {
        "--retries": retries != 0, "--allow-dirty": allow_dirty, "--cpus-per-run": cpus_per_run != 1.0,
        "--gpus-per-run": gpus_per_run != 0.0,
    }  # fmt: skip
    if not (ray or ray_address) and any(ray_only.values()):
        given = ", ".join(name for name, used in ray_only.items() if used)
        raise fail(f"{given} only apply to Ray runs; add --ray (or --ray-address ADDRESS)")
    if ray or ray_address:
        from grugctl import rayrun

        options = rayrun.RayOptions(ray_address, cpus_per_run, gpus_per_run, retries, allow_dirty)
        finished = guarded(lambda: rayrun.run_on_ray(archive, entry_ids, options, **common))
    else:
        finished = guarded(lambda: runner.run_experiments(archive, entry_ids, **common))
    if as_json:
        _json_out([{"id": done.entry_id, "recorded": done.recorded, **done.row} for done in finished])
    elif any(done.recorded for done in finished):
        ids = " ".join(dict.fromkeys(done.entry_id for done in finished))
        _warn([f"`grugctl compare {ids}` weighs the evidence; commit runs/ and archive.yaml"], prefix="next")


# ---------------------------------------------------------------- grugctl compare / plot


@app.command("compare")
def compare_command(
    entry_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The experiment(s) to judge.")],
    against: str | None = typer.Option(None, "--against", help="The baseline (default: the starter)."),
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="val_bpb, steps_to_target, tokens_to_target, time_to_target_s, tokens_per_s or val_loss; "
            "repeat for several (default: val_bpb, steps_to_target, time_to_target_s).",
        ),
    ] = None,
    alpha: float = typer.Option(0.01, "--alpha", help="Significance level of the verdict."),
    steps: int | None = typer.Option(None, "--steps", help="Compare runs of this length (default: newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
    as_md: bool = typer.Option(False, "--md", help="Print a Markdown table (for a pull request)."),
    archive_path: ArchiveOption = None,
) -> None:
    """Is an experiment better than its baseline? n, mean ± sd, delta, 95% CI, p and a verdict per metric.

    Paired seeds (`grugctl run ID --paired`) use the paired t-test, other runs Welch's t-test
    (scipy.stats). Smoke runs, other code, step counts or configs, and for wall-time metrics other
    machines, are left out and counted. An inconclusive verdict says how many seeds the observed
    effect would need.

    Example: grugctl compare relu-squared --metric val_bpb --md
    """
    from grugctl import compare, comparerender

    if as_json and as_md:
        raise fail("--json and --md both choose the output; pick one.")
    archive = _load_archive(archive_path, reading=True)
    chosen = tuple(metrics) if metrics else compare.DEFAULT_METRICS
    comparisons = guarded(
        lambda: compare.compare_all(
            archive, entry_ids, against=against, metrics=chosen, alpha=alpha, steps=steps
        )
    )
    if as_json:
        _json_out(compare.as_json(comparisons))
    elif as_md:
        sys.stdout.write(comparerender.markdown(comparisons))
    else:
        color = out.is_terminal and not os.environ.get("NO_COLOR")
        sys.stdout.write(comparerender.text(comparisons, color=color))


@app.command("plot")
def plot_command(
    entry_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The experiment(s) to draw.")],
    metric: str = typer.Option("val_bpb", "--metric", help="val_bpb, val_loss or train_loss."),
    x_axis: str = typer.Option("step", "--x", help="step, tokens or time (training seconds)."),
    out_path: Annotated[
        Path, typer.Option("--out", help="curves.png, or curves.html (the PNG and the compare table).")
    ] = Path("curves.png"),
    steps: int | None = typer.Option(None, "--steps", help="Draw runs of this length (default: newest)."),
    against: str | None = typer.Option(
        None, "--against", help="The HTML table's baseline (default: starter)."
    ),
    archive_path: ArchiveOption = None,
) -> None:
    """Draw loss curves from run records: a mean curve per experiment, a band over its seeds, the target.

    Uses the runs `grugctl compare` would use (current code, one step count and config, no smoke runs).

    Example: grugctl plot relu-squared grugformer-starter --out curves.html
    """
    from grugctl import plot

    archive = _load_archive(archive_path, reading=True)
    curves = guarded(
        lambda: plot.write_plot(
            archive, entry_ids, out_path, metric=metric, x_axis=x_axis, steps=steps, against=against
        )
    )
    drawn = ", ".join(f"{c.entry_id} ({c.seeds} seed{'s' * (c.seeds != 1)})" for c in curves)
    err.print(f"wrote {out_path}: {drawn}", markup=False, highlight=False)


# ---------------------------------------------------------------- grugctl check

# status -> (mark, style, word in the summary line)
CHECK_MARKS = {
    "pass": ("ok", "green", "passed"),
    "warn": ("warn", "yellow", "warned"),
    "fail": ("FAIL", "bold red", "failed"),
    "skip": ("skip", "dim", "skipped"),
}
CHECK_DETAIL_LINES = 40


def _render_check(result) -> None:
    mark, style, _ = CHECK_MARKS[result.status]
    line = Text(f"{mark:<5} ", style=style)
    line.append(f"{result.name:<11} {result.message}")
    out.print(line, highlight=False)
    details = list(result.details)
    if len(details) > CHECK_DETAIL_LINES:  # a long failure should not bury the other checks
        more = f"... and {len(details) - CHECK_DETAIL_LINES} more lines; `grugctl check --json` has them all"
        details = details[:CHECK_DETAIL_LINES] + [more]
    for detail in details:
        out.print(f"        {detail}", markup=False, highlight=False)


@app.command("check")
def check_command(
    fast: bool = typer.Option(False, "--fast", help="Static checks only: no smoke runs, no core tests."),
    fix: bool = typer.Option(False, "--fix", help="First fill missing introduced/last_known_good from git."),
    as_json: bool = typer.Option(False, "--json", help="Print only JSON on stdout (for CI)."),
    archive_path: ArchiveOption = None,
) -> None:
    """Run every repository check before a PR; one line per check.

    schema, tree (files <-> archive.yaml), git (SHAs), contracts (active experiments parse and hold the
    starter's edit surface), buckets (one bucket at a time against the origin), drift, lint (ruff);
    unless --fast also smoke (each active experiment's --smoke run) and core tests (pytest). Drift
    (copies the core has changed since the experiment's base) and `# grug: noverify <reason>`
    opt-outs are warnings: shown, never a failure. Exit 0 when all pass, 1 when any fails, 2 when
    archive.yaml cannot be read.

    Example: grugctl check --fast
    """
    from dataclasses import asdict

    from grugctl import checks

    show = None if as_json else _render_check
    progress = lambda message: err.print(message, markup=False, highlight=False)
    results = guarded(
        lambda: checks.run_checks(archive_path, fast=fast, fix=fix, on_result=show, progress=progress)
    )
    failed = [r.name for r in results if not r.ok]
    if as_json:
        _json_out({"ok": not failed, "fast": fast, "checks": [asdict(r) for r in results]})
    else:
        counts = [(sum(r.status == s for r in results), word) for s, (_, _, word) in CHECK_MARKS.items()]
        summary = ", ".join(f"{n} {word}" for n, word in counts if n)
        _say(f"{len(results)} checks: {summary}" + (f" ({', '.join(failed)})" if failed else ""))
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    sys.exit(app())
