"""Renders a codediff.DiffReport as text (optionally coloured), a --stat summary, JSON, Markdown for a
PR comment, or a one-page side-by-side HTML report. Returns strings; never prints."""

from __future__ import annotations

import difflib
import html
import json
import re

from grugctl.codediff import (
    CHANGED,
    STATUSES,
    UNCHANGED,
    Change,
    DiffReport,
    changed,
    changed_buckets,
)

FORMATS = ("text", "json", "md", "html")

_ANSI = {"bold": "1", "red": "31", "green": "32", "yellow": "33", "cyan": "36", "dim": "2"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_ANSI[style]}m{text}\x1b[0m" if color else text


def _title(report: DiffReport) -> str:
    return f"grugctl diff {report.experiment} against {report.base}"


def _where(change: Change) -> str:
    bits = [f"bucket {change.bucket or '-'}", change.status]
    if change.module:
        bits.append(f"{change.module}.py")
    return " · ".join(bits)


def summary(report: DiffReport) -> str:
    counts = {s: 0 for s in STATUSES}
    for change in report.changes:
        counts[change.status] += 1
    if not changed(report.changes):
        return f"no changes against {report.base} ({counts[UNCHANGED]} definitions unchanged)"
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s] or s in (CHANGED, UNCHANGED)]
    buckets = changed_buckets(report.changes)
    return ", ".join(parts) + (f"; buckets: {', '.join(buckets)}" if buckets else "")


def _footer(report: DiffReport, color: bool) -> list[str]:
    return [summary(report)]


def terminal_notes(report: DiffReport) -> list[str]:
    """What the text and --stat formats leave to stderr (data on stdout, messages on stderr); the JSON,
    Markdown and HTML documents carry these themselves."""
    notes = [f"warning: {w}" for w in report.warnings]
    if report.closest is not None:
        notes.append(
            f"note: closest existing experiment: {report.closest[0]} ({report.closest[1]} changed lines)"
        )
    return notes


def render_text(report: DiffReport, color: bool = False) -> str:
    lines = [_paint(f"{_title(report)}  ({report.path})", "bold", color), ""]
    for change in changed(report.changes):
        lines.append(
            _paint(f"── {change.name}  [{_where(change)}]  +{change.added} -{change.removed}", "bold", color)
        )
        for line in change.diff:
            if line.startswith(("+++", "---")):
                lines.append(_paint(line, "dim", color))
            elif line.startswith("+"):
                lines.append(_paint(line, "green", color))
            elif line.startswith("-"):
                lines.append(_paint(line, "red", color))
            elif line.startswith("@@"):
                lines.append(_paint(line, "cyan", color))
            else:
                lines.append(line)
        lines.append("")
    return "\n".join(lines + _footer(report, color)) + "\n"


def render_stat(report: DiffReport, color: bool = False) -> str:
    rows = changed(report.changes)
    width = max([len(c.name) for c in rows] + [4])
    lines = []
    for change in rows:
        counts = " ".join(
            part
            for part in (
                _paint(f"+{change.added}", "green", color) if change.added else "",
                _paint(f"-{change.removed}", "red", color) if change.removed else "",
            )
            if part
        )
        lines.append(f" {change.name:<{width}}  {change.bucket or '-':<9}  {change.status:<15} | {counts}")
    return "\n".join(lines + _footer(report, color)) + "\n"


def to_json(report: DiffReport) -> dict:
    return {
        "experiment": report.experiment,
        "path": report.path,
        "against": report.against,
        "base": report.base,
        "changed": len(changed(report.changes)),
        "buckets": changed_buckets(report.changes),
        "warnings": list(report.warnings),
        "closest": None
        if report.closest is None
        else {"id": report.closest[0], "changed_lines": report.closest[1]},
        "definitions": [
            {
                "name": c.name,
                "status": c.status,
                "bucket": c.bucket,
                "module": c.module,
                "added": c.added,
                "removed": c.removed,
                "diff": "\n".join(c.diff),
            }
            for c in report.changes
        ],
    }


def render_json(report: DiffReport) -> str:
    return json.dumps(to_json(report), indent=2) + "\n"


def _fence(text: str) -> str:
    # A fence longer than any backtick run inside, so a diff holding ``` cannot close it early.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_md(report: DiffReport, stat: bool = False) -> str:
    lines = [f"### `{_title(report)}`", "", f"Experiment file: `{report.path}`", ""]
    rows = changed(report.changes)
    if rows:
        lines += ["| definition | bucket | status | + | − |", "|---|---|---|---:|---:|"]
        lines += [f"| `{c.name}` | {c.bucket or '–'} | {c.status} | {c.added} | {c.removed} |" for c in rows]
        lines.append("")
    lines += [summary(report), ""]
    lines += [f"> **Warning:** {w}\n" for w in report.warnings]
    if report.closest is not None:
        lines += [
            f"Closest existing experiment: `{report.closest[0]}` ({report.closest[1]} changed lines).",
            "",
        ]
    if not stat:
        for change in rows:
            body = "\n".join(change.diff)
            fence = _fence(body)
            lines += [
                f"<details><summary><code>{html.escape(change.name)}</code> ({change.status}, "
                f"+{change.added} −{change.removed})</summary>",
                "",
                f"{fence}diff",
                body,
                fence,
                "",
                "</details>",
                "",
            ]
    return "\n".join(lines).rstrip("\n") + "\n"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 2em; font-family: monospace; }
table.diff { border-collapse: collapse; width: 100%; table-layout: fixed; font-family: monospace;
  font-size: 12px; }
table.diff td { vertical-align: top; white-space: pre-wrap; word-break: break-all; padding: 0 0.4em; }
table.diff col.n { width: 3.5em; }
table.diff td.n { color: #888; text-align: right; user-select: none; }
table.diff th { text-align: left; font-family: monospace; border-bottom: 1px solid #ccc; }
td.del { background: #fdd; } td.add { background: #dfd; } td.chg { background: #ffc; }
table.summary td, table.summary th { padding: 0.2em 0.8em; text-align: left; }
p.warning { color: #a60; font-weight: bold; }
"""


def _side_by_side(change: Change) -> list[str]:
    old = change.old.source.splitlines() if change.old else []
    new = change.new.source.splitlines() if change.new else []
    old_start = change.old.start if change.old else 1
    new_start = change.new.start if change.new else 1
    rows = []

    def cell(lines: list[str], start: int, index: int | None, css: str) -> str:
        if index is None:
            return '<td class="n"></td><td></td>'
        text = html.escape(lines[index]) or "&#160;"
        return f'<td class="n">{start + index}</td><td class="{css}">{text}</td>'

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        for k in range(max(i2 - i1, j2 - j1)):
            i = i1 + k if i1 + k < i2 else None
            j = j1 + k if j1 + k < j2 else None
            css_old = "eq" if tag == "equal" else ("chg" if j is not None else "del")
            css_new = "eq" if tag == "equal" else ("chg" if i is not None else "add")
            rows.append(f"<tr>{cell(old, old_start, i, css_old)}{cell(new, new_start, j, css_new)}</tr>")
    return rows


def html_fragment(report: DiffReport, level: int = 1) -> str:
    """The report's body: its title at heading `level`, each changed definition one level below, so a
    page that holds several sections (grugctl report) nests it; style it with CSS."""
    e = html.escape
    title, sub = f"h{level}", f"h{level + 1}"
    parts = [
        f"<{title}>{e(_title(report))}</{title}>",
        f"<p>Experiment file: <code>{e(report.path)}</code>. {e(summary(report))}.</p>",
    ]
    parts += [f'<p class="warning">Warning: {e(w)}</p>' for w in report.warnings]
    if report.closest is not None:
        parts.append(
            f"<p>Closest existing experiment: <code>{e(report.closest[0])}</code> "
            f"({report.closest[1]} changed lines).</p>"
        )
    rows = changed(report.changes)
    if rows:
        parts.append(
            '<table class="summary"><tr><th>definition</th><th>bucket</th><th>status</th>'
            "<th>+</th><th>−</th></tr>"
        )
        parts += [
            f"<tr><td><code>{e(c.name)}</code></td><td>{e(c.bucket or '-')}</td><td>{e(c.status)}</td>"
            f"<td>{c.added}</td><td>{c.removed}</td></tr>"
            for c in rows
        ]
        parts.append("</table>")
    for change in rows:
        parts.append(f"<{sub}>{e(change.name)} <small>[{e(_where(change))}]</small></{sub}>")
        left = report.base
        if report.against == "core" and change.module:
            left = f"{report.base}/{change.module}.py"
        parts.append('<table class="diff">')
        parts.append('<colgroup><col class="n"/><col/><col class="n"/><col/></colgroup>')
        parts.append(f'<tr><th colspan="2">{e(left)}</th><th colspan="2">{e(report.experiment)}</th></tr>')
        parts += _side_by_side(change)
        parts.append("</table>")
    return "\n".join(parts)


def render_html(report: DiffReport) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        f"<title>{e(_title(report))}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        html_fragment(report),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def render(report: DiffReport, fmt: str = "text", stat: bool = False, color: bool = False) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "md":
        return render_md(report, stat=stat)
    if fmt == "html":
        return render_html(report)
    return render_stat(report, color) if stat else render_text(report, color)
