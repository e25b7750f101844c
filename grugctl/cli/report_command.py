"""grugctl report: the archive as a static site to review in a browser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grugctl.cli.common import ArchiveOption, app, confirm, err, guarded, json_out, load_archive_for, say


@app.command("report")
def report_command(
    out_dir: Annotated[
        Path, typer.Option("--out", help="The folder to write (replaced whole; default site/).")
    ] = Path("site"),
    open_it: bool = typer.Option(False, "--open", help="Open its index.html in the default browser."),
    as_json: bool = typer.Option(False, "--json", help="Print the files written (or to write) as JSON."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Build every page in memory; write nothing."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Replace an --out folder that holds files grugctl report did not write."
    ),
    archive_path: ArchiveOption = None,
) -> None:
    """Build a static site from archive.yaml, the run records and the code: a sortable leaderboard, a
    page per experiment (status history, compare table, curves, diff against the core, every run with
    the command that reproduces it) and the retired ideas. Plain HTML and CSS, no network fetches; the
    same repository gives the same bytes.

    Example: grugctl report --out site/ --open
    """
    from grugctl.report import site, writer

    archive = load_archive_for(archive_path, reading=True)
    guarded(lambda: writer.check_out(out_dir, archive.root))
    foreign = guarded(lambda: writer.foreign_files(out_dir))
    if foreign and not dry_run:
        confirm(f"Replace {out_dir}? It holds {len(foreign)} file(s) grugctl report did not write", yes)
    files = guarded(lambda: site.build_site(archive))
    if not dry_run:
        guarded(lambda: writer.write_site(files, out_dir))
    index = out_dir / "index.html"
    pages = [name for name in files if name.endswith(".html")]
    if as_json:
        json_out(
            {
                "out": str(out_dir),
                "written": not dry_run,
                "index": str(index),
                "pages": [str(out_dir / name) for name in pages],
                "files": [{"path": str(out_dir / name), "bytes": len(data)} for name, data in files.items()],
                "replaces_other_files": foreign,
            }
        )
    else:
        for name in files:
            say(str(out_dir / name))
    verb = "would write" if dry_run else "wrote"
    size = sum(len(data) for data in files.values())
    err.print(
        f"{verb} {out_dir}: {len(pages)} pages ({len(archive.experiments)} experiment"
        f"{'s' * (len(archive.experiments) != 1)}), "
        f"{len(files) - len(pages)} other files, {size / 1e6:.1f} MB"
        + ("" if dry_run else f"; open {index}"),
        markup=False,
        highlight=False,
    )
    if foreign and dry_run:
        held = f"{out_dir} holds {len(foreign)} file(s) grugctl report did not write (e.g. {foreign[0]})"
        err.print(f"{held}; writing it would ask first, or need --yes", markup=False, highlight=False)
    if open_it and not dry_run:
        import webbrowser

        if not webbrowser.open(index.resolve().as_uri()):
            err.print(f"no browser found to open it; open {index} yourself", markup=False, highlight=False)
