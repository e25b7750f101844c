"""Gathers what every page of `grugctl report` shows and renders the whole site in memory.

Every figure, table and diff comes from the code the other commands use: the leaderboard of `archive
status` (compare.leaderboard), the tables of `compare` (compare_all, comparerender.html_table), the
figures of `plot` (plot.png, plot.scaling_png) and the side-by-side diff of `diff --format html`. The
result is a dict of file name -> bytes in sorted order with no clock, host or path of this machine in
it, so the same repository gives the same bytes (a CI can diff two builds).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from grugctl.archive import Archive, Entry
from grugctl.errors import GrugError
from grugctl.evidence import compare
from grugctl.runs import records

PAGES_DIR = "experiments"


@dataclass(frozen=True)
class Run:
    """One results row of an experiment, with what its record says about the machine."""

    row: dict
    used: bool  # among the rows compare and the leaderboard judge by
    problem: str | None  # why the record cannot be trusted (grugctl check says the same)
    machine: str
    reproduce: str  # the command that reruns it from its commit


@dataclass(frozen=True)
class Experiment:
    entry: Entry
    line: dict  # the leaderboard's line, and "multiplier" (a ladder.Multiplier or None)
    comparisons: str  # compare's HTML tables against the starter; "" when there is nothing to compare
    diff: str  # diffrender's HTML fragment, or a paragraph saying why there is none
    figures: tuple[str, ...]  # file names beside the page
    figure_notes: tuple[str, ...]  # why a figure is missing
    runs: tuple[Run, ...]


def head_commit(root: Path) -> str | None:
    """HEAD's 12-character SHA, or None outside git; one git process, no GitPython import."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return None
    return done.stdout.strip()[:12] or None


def machine(record: dict | None) -> str:
    host = (record or {}).get("host") or {}
    if not host:
        return "-"
    parts = [host.get("cpu") or f"host {host.get('id', '?')}"]
    if host.get("cores"):
        parts.append(f"{host['cores']} cores")
    if host.get("accelerator") and host.get("accelerator") != "cpu":
        parts.append(f"{host.get('accelerator_count') or 1} x {host['accelerator']}")
    if host.get("jax_version"):
        parts.append(f"JAX {host['jax_version']}")
    return ", ".join(str(part) for part in parts)


def reproduce(entry_id: str, row: dict) -> str:
    """`git checkout SHA && grugctl run ...` for this one run; a dirty run's record holds the patch."""
    checkout = f"git checkout {row['commit']} && " if row.get("commit") else ""
    flags = [f"--seed {row['seed']}"]
    if row.get("steps") is not None:
        flags.append(f"--steps {row['steps']}")
    if row.get("status") != "failed":
        flags.append(f"--sizes {compare.row_size(row)}")
    if row.get("smoke"):
        flags.append("--smoke --record")
    command = f"{checkout}grugctl run {entry_id} {' '.join(flags)}"
    if row.get("dirty"):
        command += f"  # uncommitted: apply the patch in {row.get('record')} (git.patch) first"
    return command


def runs_of(archive: Archive, entry: Entry, used: list[dict]) -> tuple[Run, ...]:
    runs = []
    for row in entry.results:
        problem = records.row_problem(archive.root, entry.id, row)
        record = None
        if problem is None and isinstance(row.get("record"), str):
            try:
                record = records.read_record(archive.root, row["record"])
            except GrugError as error:
                problem = str(error)
        is_used = any(row is chosen for chosen in used)
        runs.append(Run(row, is_used, problem, machine(record), reproduce(entry.id, row)))
    return tuple(runs)


def _drawn(attempts: list[list[str]], draw) -> tuple[bytes | None, str | None]:
    """The first list of ids that draws (with the starter, then alone), or why none did."""
    why = None
    for ids in attempts:
        try:
            return draw(ids), None
        except GrugError as error:
            why = str(error)
    return None, why


def figures_of(archive: Archive, entry_id: str, line: dict) -> tuple[dict[str, bytes], list[str]]:
    """The curves `grugctl plot ID STARTER` draws and, with runs at two sizes or more, the figure of
    `plot --x flops`; named after the experiment so the pages folder stays flat."""
    from grugctl.evidence import plot

    if not line["seeds"]:
        return {}, []
    starter = archive.starter
    both = [[entry_id, starter], [entry_id]] if starter and starter != entry_id else [[entry_id]]
    figures, notes = {}, []

    def curves(ids: list[str]) -> bytes:
        return plot.png(plot.load_curves(archive, ids, "val_bpb", "step", None), "val_bpb", "step")

    image, why = _drawn(both, curves)
    if image is not None:
        figures[f"{entry_id}.curves.png"] = image
    elif why:
        notes.append(f"curves: {why}")
    if len(compare.sizes_of(archive, entry_id)) >= 2:

        def scaling(ids: list[str]) -> bytes:
            return plot.scaling_png(plot.load_scaling(archive, ids, "val_bpb"), "val_bpb")

        image, why = _drawn(both, scaling)
        if image is not None:
            figures[f"{entry_id}.scaling.png"] = image
        elif why:
            notes.append(f"across sizes: {why}")
    return figures, notes


def diff_of(archive: Archive, entry_id: str) -> str:
    """`grugctl diff ID --format html`'s body (a deleted experiment read from git at its last known good
    commit); the closest-experiment search is left out, it costs a parse of every other file."""
    import html

    from grugctl import codediff
    from grugctl.experiments import diffrender

    try:
        report = codediff.diff_experiment(archive, entry_id, "core", with_closest=False)
    except GrugError as error:
        return f'<p class="warning">No diff: {html.escape(str(error))}</p>'
    return diffrender.html_fragment(report, level=3)


def experiment(archive: Archive, entry_id: str, line: dict) -> tuple[Experiment, dict[str, bytes]]:
    from grugctl.evidence import comparerender

    entry = archive.experiments[entry_id]
    used = compare.usable_rows(archive, entry_id, None)[0] if entry.results else []
    tables, multiplier = "", None
    if used and entry_id != archive.starter and archive.starter in archive.experiments:
        comparisons = compare.compare_all(archive, [entry_id])  # a swept one at each side's best value
        tables = comparerender.html_table(comparisons)
        multiplier = compare.largest_multiplier(comparisons[-1])
    figures, notes = figures_of(archive, entry_id, line)
    page = Experiment(
        entry=entry,
        line=line | {"multiplier": multiplier},
        comparisons=tables,
        diff=diff_of(archive, entry_id),
        figures=tuple(sorted(figures)),
        figure_notes=tuple(notes),
        runs=runs_of(archive, entry, used),
    )
    return page, figures


def build_site(archive: Archive) -> dict[str, bytes]:
    """Every file of the site, path relative to its folder -> bytes, sorted by path."""
    from grugctl.report import pages

    ids = list(archive.experiments)
    board = compare.leaderboard(archive, ids)
    files: dict[str, bytes] = {pages.STYLE: pages.CSS.encode()}
    gathered = []
    for entry_id in ids:
        page, figures = experiment(archive, entry_id, board[entry_id])
        gathered.append(page)
        files.update({f"{PAGES_DIR}/{name}": data for name, data in figures.items()})
        files[f"{PAGES_DIR}/{entry_id}.html"] = pages.experiment_page(archive, page).encode()
    files["index.html"] = pages.index_page(archive, gathered, head_commit(archive.root)).encode()
    return dict(sorted(files.items()))
