"""The HTML of `grugctl report`: the leaderboard (index.html) and one page per experiment. Pure functions
from gathered facts to strings; never reads or writes a file.

Every value that came from a person (purpose, notes, waiver, issue, ids, paths) goes through `text`:
escaped, quotes included, and isolated in <bdi> so a right-to-left override cannot reorder the page
around it. The only script is the leaderboard's sorting and filtering, inline: the site fetches nothing.
"""

from __future__ import annotations

import html

from grugctl.archive import BUCKETS, STATUSES, Archive, Entry
from grugctl.evidence.comparerender import number
from grugctl.experiments import diffrender

STYLE = "style.css"
CSS = (
    diffrender.CSS
    + """
body { max-width: 80em; line-height: 1.4; }
h1 { font-size: 1.5em; }
h2 { font-family: inherit; font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
#evidence > h2:not(:first-child) { font-size: 1em; border: 0; font-family: monospace; }
#diff h3 { font-size: 1.05em; } #diff h4 { font-family: monospace; font-size: 0.95em; margin-top: 1.5em; }
a { color: #0550ae; }
table.board, table.runs, table.retired, #evidence table { border-collapse: collapse; margin: 0.5em 0; }
table.board td, table.board th, table.runs td, table.runs th, table.retired td, table.retired th,
#evidence td, #evidence th { border: 1px solid #ddd; padding: 3px 8px; text-align: left;
  vertical-align: top; }
table.board th button { font: inherit; font-weight: bold; border: 0; background: none; cursor: pointer;
  padding: 0; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.purpose { max-width: 28em; }
.better { color: #070; } .worse { color: #a00; } .inconclusive { color: #a60; }
tr.better td:last-child { color: #070; } tr.worse td:last-child { color: #a00; }
.status { font-size: 0.8em; padding: 1px 6px; border-radius: 3px; background: #eee; }
.status.active { background: #dfd; } .status.superseded { background: #ffc; }
.status.deleted { background: #fdd; }
.user { white-space: pre-wrap; }
dl.history { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.history dt { font-weight: bold; } dl.history dd { margin: 0; }
code.cmd { font-size: 0.85em; word-break: break-all; }
tr.left-out { color: #777; }
nav.filters label { margin-right: 1em; }
img.figure { max-width: 100%; border: 1px solid #eee; }
"""
)

# Sorting and filtering, and nothing else. The state lives in the address (#sort=val_bpb&status=active)
# so a link shows the same view; an empty cell sorts last in either direction.
SCRIPT = """
(function () {
  var table = document.getElementById("leaderboard"), body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var status = document.getElementById("filter-status"), bucket = document.getElementById("filter-bucket");
  var shown = document.getElementById("shown");
  var state = {sort: "", dir: ""};
  function sort() {
    var column = heads.findIndex(function (th) { return th.dataset.key === state.sort; });
    var numeric = column >= 0 && heads[column].dataset.type === "num", sign = state.dir === "desc" ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var order = a.dataset.order - b.dataset.order;
      if (column < 0) return order;
      var x = a.cells[column].dataset.v, y = b.cells[column].dataset.v;
      if (x === "" || y === "") return (x === "") - (y === "") || order;
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return sign * c || order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    heads.forEach(function (th, i) {
      if (i === column) th.setAttribute("aria-sort", state.dir === "desc" ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    });
  }
  function filter() {
    var count = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      row.hidden = (status.value && row.dataset.status !== status.value) ||
        (bucket.value && row.dataset.bucket !== bucket.value);
      count += row.hidden ? 0 : 1;
    });
    shown.textContent = count + " of " + body.rows.length + " shown";
  }
  function save() {
    var parts = [];
    if (state.sort) parts.push("sort=" + state.sort, "dir=" + state.dir);
    if (status.value) parts.push("status=" + status.value);
    if (bucket.value) parts.push("bucket=" + bucket.value);
    try { history.replaceState(null, "", "#" + parts.join("&")); } catch (e) {}
  }
  heads.forEach(function (th) {
    th.querySelector("button").addEventListener("click", function () {
      var again = state.sort === th.dataset.key;
      state.dir = again ? (state.dir === "asc" ? "desc" : "asc") : th.dataset.first;
      state.sort = th.dataset.key;
      sort(); save();
    });
  });
  [status, bucket].forEach(function (select) {
    select.addEventListener("change", function () { filter(); save(); });
  });
  location.hash.slice(1).split("&").forEach(function (part) {
    var kv = part.split("="), value = decodeURIComponent(kv[1] || "");
    if (kv[0] === "sort") state.sort = value;
    if (kv[0] === "dir") state.dir = value;
    if (kv[0] === "status") status.value = value;
    if (kv[0] === "bucket") bucket.value = value;
  });
  if (state.sort && !state.dir) {
    var head = heads.find(function (th) { return th.dataset.key === state.sort; });
    state.dir = head ? head.dataset.first : "asc";
  }
  sort(); filter();
})();
"""

# key, heading, type, first click's direction (best first)
COLUMNS = (
    ("id", "experiment", "text", "asc"),
    ("status", "status", "text", "asc"),
    ("bucket", "bucket", "text", "asc"),
    ("size", "size", "text", "asc"),
    ("seeds", "seeds", "num", "desc"),
    ("val_bpb", "mean val bpb", "num", "asc"),
    ("steps_to_target", "steps to target", "num", "asc"),
    ("delta", "Δ val bpb vs starter", "num", "asc"),
    ("verdict", "verdict", "text", "asc"),
    ("multiplier", "compute ×", "num", "desc"),
    ("purpose", "purpose", "text", "asc"),
)


def text(value: object) -> str:
    """A person's text as text: escaped (quotes too) and direction-isolated."""
    return f'<bdi class="user">{html.escape(str(value))}</bdi>'


def attr(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: list[str], style: str, script: str = "") -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f'<link rel="stylesheet" href="{style}">',
        "</head>",
        "<body>",
        *body,
        *([f"<script>{script}</script>"] if script else []),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def link_to(archive: Archive, ref: str | None, prefix: str) -> str:
    """An experiment id as a link to its page; anything else (core@sha) as code."""
    if not ref:
        return "-"
    if ref in archive.experiments:
        return f'<a href="{prefix}{attr(ref)}.html">{text(ref)}</a>'
    return f"<code>{text(ref)}</code>"


def signed(value: float | None) -> str:
    if value is None:
        return "-"
    return ("+" if value > 0 else "") + number(value)


def times(multiplier) -> tuple[str, str]:
    """The compute multiplier's cell text and its sort value."""
    if multiplier is None:
        return "-", ""
    if multiplier.value is None:
        return "unbounded", "1e308"
    return f"{multiplier.value:.2f}x ({multiplier.size})", repr(multiplier.value)


def cell(shown: str, value: object, css: str = "") -> str:
    value = "" if value is None else value
    klass = f' class="{css}"' if css else ""
    return f'<td{klass} data-v="{attr(value)}">{shown}</td>'


def board_row(archive: Archive, order: int, experiment) -> str:
    entry, line = experiment.entry, experiment.line
    multiplier, multiplier_value = times(line.get("multiplier"))
    verdict = line["verdict"]
    cells = [
        cell(f'<a href="experiments/{attr(entry.id)}.html">{text(entry.id)}</a>', entry.id),
        cell(f'<span class="status {attr(entry.status)}">{text(entry.status)}</span>', entry.status),
        cell(text(entry.bucket or "none"), entry.bucket or "none"),
        cell(
            text(line["size"] or "-")
            + (f"<br><small>{text(line['tuned'])}</small>" if line.get("tuned") else ""),
            line["size"],
        ),  # fmt: skip
        cell(str(line["seeds"]), line["seeds"], "num"),
        cell(number(line["mean_val_bpb"]), line["mean_val_bpb"], "num"),
        cell(number(line["mean_steps_to_target"]), line["mean_steps_to_target"], "num"),
        cell(signed(line["delta_val_bpb"]), line["delta_val_bpb"], "num"),
        cell(text(verdict or "-"), verdict, attr(verdict or "")),
        cell(multiplier, multiplier_value, "num"),
        cell(text(entry.purpose), entry.purpose, "purpose"),
    ]
    data = f'data-status="{attr(entry.status)}" data-bucket="{attr(entry.bucket or "none")}"'
    return f'<tr id="row-{attr(entry.id)}" {data} data-order="{order}">' + "".join(cells) + "</tr>"


def select(name: str, label: str, choices: tuple[str, ...]) -> str:
    options = ['<option value="">all</option>'] + [f'<option value="{c}">{c}</option>' for c in choices]
    return f'<label>{label} <select id="filter-{name}">{"".join(options)}</select></label>'


def retired_rows(archive: Archive, experiments: list) -> list[str]:
    """Superseded and deleted experiments with what replaced them and why: the paper trail."""
    rows = []
    for experiment in experiments:
        entry = experiment.entry
        if entry.status == "active":
            continue
        cells = [
            f'<a href="experiments/{attr(entry.id)}.html">{text(entry.id)}</a>',
            f'<span class="status {attr(entry.status)}">{text(entry.status)}</span>',
            link_to(archive, entry.superseded_by, "experiments/"),
            f"<code>{text(entry.last_known_good or '-')}</code>",
            text(entry.purpose),
            text(entry.notes or "-"),
            text(entry.waiver or "-"),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return rows


def index_page(archive: Archive, experiments: list, head: str | None) -> str:
    counts = ", ".join(f"{sum(e.entry.status == s for e in experiments)} {s}" for s in STATUSES)
    where = f" at commit <code>{attr(head)}</code>" if head else ""
    starter = link_to(archive, archive.starter, "experiments/")
    heads = "".join(
        f'<th data-key="{key}" data-type="{kind}" data-first="{first}"><button type="button">'
        f"{html.escape(label)}</button></th>"
        for key, label, kind, first in COLUMNS
    )
    body = [
        "<h1>Leaderboard</h1>",
        f"<p>{len(experiments)} experiment{'s' * (len(experiments) != 1)} ({counts}) "
        f"in {html.escape(archive.path.name)}{where}. "
        f"Seeds of each experiment's current code at its newest size; the delta and verdict are against "
        f"{starter} at that size (alpha 0.01, as <code>grugctl compare</code>); the compute multiplier is "
        "the largest size's when runs at several sizes exist. Click a heading to sort.</p>",
        '<nav class="filters">',
        select("status", "status", STATUSES),
        select("bucket", "bucket", (*BUCKETS, "none")),
        f'<span id="shown">{len(experiments)} of {len(experiments)} shown</span>',
        "</nav>",
        f'<table id="leaderboard" class="board"><thead><tr>{heads}</tr></thead><tbody>',
        *(board_row(archive, order, e) for order, e in enumerate(experiments)),
        "</tbody></table>",
        '<h2 id="retired">Retired ideas</h2>',
    ]
    retired = retired_rows(archive, experiments)
    if retired:
        titles = ("experiment", "status", "replaced by", "last known-good", "purpose", "notes", "waiver")
        body += [
            '<table class="retired"><tr>' + "".join(f"<th>{t}</th>" for t in titles) + "</tr>",
            *retired,
            "</table>",
        ]
    else:
        body.append("<p>None yet: every experiment is active.</p>")
    body.append("<p><small>Built by <code>grugctl report</code>.</small></p>")
    return page("grugctl report: leaderboard", body, STYLE, SCRIPT)


def history(archive: Archive, entry: Entry) -> list[str]:
    """The entry's paper trail as a definition list: where it came from, what happened to it and why."""
    items = [
        ("file", f"<code>{text(entry.path)}</code>"),
        ("bucket", text(entry.bucket or "none")),
        ("copied from", link_to(archive, entry.origin, "")),
        ("introduced", f"<code>{text(entry.introduced or '-')}</code>"),
        ("base", f"<code>{text(entry.base or '-')}</code>"),
    ]
    if entry.synced_from:
        items.append(("synced from", f"<code>{text(entry.synced_from)}</code>"))
    items.append(("last known-good", f"<code>{text(entry.last_known_good or '-')}</code>"))
    if entry.superseded_by or entry.status == "superseded":
        items.append(("superseded by", link_to(archive, entry.superseded_by, "")))
    if entry.status == "deleted":
        reason = text(entry.notes) if entry.notes else (
            f'no reason recorded (<code>grugctl archive set {attr(entry.id)} --notes "..."</code>)'
        )  # fmt: skip
        items.append(("deleted", f"its file is read from git at its last known-good commit; why: {reason}"))
    if entry.waiver:
        items.append(("waiver", f"promoted without a significant win: {text(entry.waiver)}"))
    if entry.tests:
        items.append(("tests promoted with it", text(entry.tests)))
    if entry.issue:
        items.append(("issue", text(entry.issue)))
    if entry.notes and entry.status != "deleted":
        items.append(("notes", text(entry.notes)))
    replaced = [e for e in archive.experiments.values() if e.superseded_by == entry.id]
    if replaced:
        items.append(("replaces", ", ".join(link_to(archive, e.id, "") for e in replaced)))
    copies = [e for e in archive.experiments.values() if e.origin == entry.id]
    if copies:
        items.append(("copied by", ", ".join(link_to(archive, e.id, "") for e in copies)))
    return ['<dl class="history">', *(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items), "</dl>"]


def summary(archive: Archive, experiment) -> str:
    line = experiment.line
    if not line["seeds"]:
        return (
            f"<p>No recorded runs of its current code yet: <code>grugctl run {attr(experiment.entry.id)}"
            "</code> records them.</p>"
        )
    said = (
        f"{line['seeds']} seed{'s' * (line['seeds'] != 1)} at size {text(line['size'])}, "
        f"{line['steps']} steps: mean val bpb {number(line['mean_val_bpb'])}, "
        f"mean steps to target {number(line['mean_steps_to_target'])}"
    )
    if line["verdict"] is not None:
        said += (
            f"; against {text(archive.starter)} {signed(line['delta_val_bpb'])} bpb, "
            f'<span class="{attr(line["verdict"])}">{text(line["verdict"])}</span>'
        )
    if line.get("multiplier") is not None:
        said += f"; compute multiplier {times(line['multiplier'])[0]}"
    return f"<p>{said}.</p>"


def figures(experiment) -> list[str]:
    if not experiment.figures and not experiment.figure_notes:
        return ["<p>No curves: no recorded runs of its current code.</p>"]
    parts = [
        f'<p><img class="figure" src="{attr(name)}" alt="{attr(name.rsplit(".", 2)[1])} of '
        f'{attr(experiment.entry.id)}"></p>'
        for name in experiment.figures
    ]
    return parts + [f'<p class="warning">{html.escape(note)}</p>' for note in experiment.figure_notes]


def run_rows(experiment) -> list[str]:
    if not experiment.runs:
        return ["<p>No runs recorded.</p>"]
    titles = ("date", "seed", "size", "steps", "val bpb", "steps to target", "used", "machine", "commit")
    rows = ['<table class="runs"><tr>' + "".join(f"<th>{t}</th>" for t in titles) + "</tr>"]
    for run in experiment.runs:
        row = run.row
        failed = row.get("status") == "failed"
        used = "yes" if run.used else "left out" + (" (failed)" if failed else "")
        used += " (smoke)" if row.get("smoke") else ""
        if run.problem:
            used += f": {run.problem}"
        cells = [
            text(row.get("date", "-")),
            text(row.get("seed", "-")),
            text(row.get("size", "-") if not failed else "-"),
            text(row.get("steps", "-") if not failed else "-"),
            number(row.get("val_bpb")) if isinstance(row.get("val_bpb"), (int, float)) else "-",
            number(row.get("steps_to_target"))
            if isinstance(row.get("steps_to_target"), (int, float))
            else "-",
            html.escape(used),
            html.escape(run.machine),
            f"<code>{text(row.get('commit') or '-')}</code>" + (" (dirty)" if row.get("dirty") else ""),
        ]
        klass = "" if run.used else ' class="left-out"'
        rows.append(f"<tr{klass}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        record = f"record <code>{text(row.get('record', '-'))}</code>; reproduce: "
        command = f'<code class="cmd">{html.escape(run.reproduce)}</code>'
        rows.append(f'<tr{klass}><td colspan="{len(titles)}">{record}{command}</td></tr>')
    return rows + ["</table>"]


def experiment_page(archive: Archive, experiment) -> str:
    entry = experiment.entry
    evidence = experiment.comparisons
    if entry.id == archive.starter:
        evidence = "<p>The starter is the baseline every other experiment is compared with.</p>"
    elif not evidence:
        evidence = "<p>Nothing to compare yet.</p>"
    body = [
        '<nav><a href="../index.html">&#8592; leaderboard</a></nav>',
        f'<h1>{text(entry.id)} <span class="status {attr(entry.status)}">{text(entry.status)}</span></h1>',
        f'<p class="purpose">{text(entry.purpose)}</p>',
        '<section id="history"><h2>Status history</h2>',
        *history(archive, entry),
        "</section>",
        '<section id="evidence"><h2>Evidence</h2>',
        summary(archive, experiment),
        evidence,
        "</section>",
        '<section id="curves"><h2>Curves</h2>',
        *figures(experiment),
        "</section>",
        '<section id="diff"><h2>Code against the core</h2>',
        experiment.diff,
        "</section>",
        '<section id="runs"><h2>Run records</h2>',
        *run_rows(experiment),
        "</section>",
    ]
    return page(f"{entry.id}: grugctl report", body, f"../{STYLE}")
