"""grugctl check: every repository check in one command."""

from __future__ import annotations

import typer
from rich.text import Text

from grugctl.cli.common import ArchiveOption, app, err, guarded, json_out, out, say

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
    dry_run: bool = typer.Option(
        False, "--dry-run", help="With --fix: say what it would fill; write nothing."
    ),
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

    Example: grugctl check --fast --fix --dry-run
    """
    from dataclasses import asdict

    from grugctl import checks

    show = None if as_json else _render_check
    progress = lambda message: err.print(message, markup=False, highlight=False)
    results = guarded(
        lambda: checks.run_checks(
            archive_path, fast=fast, fix=fix, dry_run=dry_run, on_result=show, progress=progress
        )
    )
    failed = [r.name for r in results if not r.ok]
    if as_json:
        json_out({"ok": not failed, "fast": fast, "checks": [asdict(r) for r in results]})
    else:
        counts = [(sum(r.status == s for r in results), word) for s, (_, _, word) in CHECK_MARKS.items()]
        summary = ", ".join(f"{n} {word}" for n, word in counts if n)
        say(f"{len(results)} checks: {summary}" + (f" ({', '.join(failed)})" if failed else ""))
    if failed:
        raise typer.Exit(1)
