"""grugctl archive status / show / set / resolve / import-md."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from grugctl.cli.common import ArchiveOption, archive_app, find_archive_path, guarded, json_out, out, warn

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


def _size_cell(row: dict) -> str:
    """The size, and for a swept experiment the values compared (its best against the starter's)."""
    size = row["size"] or "-"
    return f"{size} at {row['tuned']}" if row.get("tuned") else size


def _status_table(report: dict) -> None:
    headers = [
        "id", "status", "bucket", "file", "introduced", "last known-good", "seeds", "size", "val_bpb",
        "steps→target", "Δ bpb vs starter", "purpose",
    ]  # fmt: skip
    rows = [
        [
            r["id"], r["status"], r["bucket"] or "-", "yes" if r["file_present"] else "missing",
            r["introduced"] or "-", r["last_known_good"] or "-", str(r["seeds"]), _size_cell(r),
            _figure(r["mean_val_bpb"], 4), _figure(r["mean_steps_to_target"], 0), _delta_cell(r),
            r["purpose"],
        ]
        for r in report["experiments"]
    ]  # fmt: skip
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    if not rows:
        return
    if not out.is_terminal:  # a pipe or file gets whole lines, no colour, and no rich Text at all
        # (plain strings: 0.13 s less on a 1,000-entry archive than rich Text's .plain, bench/cli.py)
        line = lambda row: "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write("".join(line(row).rstrip() + "\n" for row in [headers, *rows]))
        return
    # A terminal cuts only purpose; `archive show` prints it whole.
    widths[-1] = min(widths[-1], max(10, out.width - sum(widths[:-1]) - 2 * (len(widths) - 1)))
    lines = [_status_line(headers, widths, ["bold"] * len(headers))]
    for row in rows:
        verdict = {"better": "green", "worse": "red"}.get(row[10].split(" ")[-1])
        styles = [
            None,
            STATUS_STYLE[row[1]],
            None,
            "red" if row[3] == "missing" else None,
            *[None] * 6,
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
    warn(messages)


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

    The leaderboard columns count the seeds of each experiment's current code at its newest size and
    give its mean val bits per byte, mean steps to the target, and the delta in bits per byte against
    the starter at the same size with the verdict of `grugctl compare` (alpha 0.01). Warns about
    missing files, experiment files no entry names, deleted entries whose file still exists, and SHAs
    git does not know.

    Example: grugctl archive status --status active --sort-by val_bpb
    """
    from grugctl import archive
    from grugctl.evidence import compare

    path = find_archive_path(archive_path)

    def report() -> dict:
        loaded = archive.load_archive(path)
        data = archive.status_report(loaded, status=status, bucket=bucket)
        board = compare.leaderboard(loaded, [row["id"] for row in data["experiments"]])
        rows = [row | board[row["id"]] for row in data["experiments"]]
        return data | {"experiments": compare.sort_rows(rows, sort_by)}

    data = guarded(report)
    if as_json:
        json_out(data)
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
    from grugctl import archive

    path = find_archive_path(archive_path)
    data = guarded(lambda: archive.show_report(archive.load_archive(path), experiment_id))
    if as_json:
        json_out(data)
        return
    rows = []
    for key, value in data.items():
        if key in ("results", "warnings"):
            continue
        shown = ("yes" if value else "missing") if key == "file_present" else "-" if value is None else value
        rows.append((key, str(shown)))
    for number, result in enumerate(data["results"], 1):
        rows.append((f"result {number}", ", ".join(f"{k}={v}" for k, v in result.items())))
    # Plain lines, not a rich table: piped output is never cut or padded to the terminal's width.
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        first, *more = value.split("\n")
        line = Text(key, style="bold")
        line.append(f"{' ' * (width - len(key) + 2)}{first}".rstrip())
        out.print(line)
        for continued in more:
            out.print(f"{' ' * (width + 2)}{continued}".rstrip())
    warn([w["message"] for w in data["warnings"]])


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
        warn(["`grugctl archive resolve` fills last_known_good from git"], prefix="hint")


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
    warn(missing, prefix="not filled")


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
    warn(messages, prefix="note")
