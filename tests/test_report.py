"""`grugctl report`: a static site built from a real repository with an active, a superseded and a
deleted experiment and run records written by the code `grugctl run` uses, checked as files (same bytes
twice, user text escaped, --out refusals, an atomic swap) and loaded in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from repo_copy import commit_all
from test_diff import _invoke, experiment_file, make_repo, new_experiment, surface_edit
from test_plot import fake_results, record_seeds

from grugctl import archive
from grugctl.report import writer
from grugctl.runs import records

STARTER = "grugformer-starter"
IDEA, RETIRED, GONE = "relu-squared", "wide-mlp", "old-idea"
# User text with markup, both quotes, an ampersand, a right-to-left override, a combining mark, an emoji
# and a zero-width space: it must reach the reader as these characters, never as markup.
HOSTILE = '<script>alert("x")</script> \'single\' & "double" \u202eevil a\u0308 \U0001f44d \u200b<b>bold</b>'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "chromium not found; install it with `apt-get install chromium` (.ci/run does)"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The starter, relu-squared (mlp edited, 3 seeds), wide-mlp (3 seeds, then superseded by
    relu-squared with a waiver) and old-idea (deleted with a reason): every user field hostile."""
    root = make_repo(tmp_path_factory.mktemp("report"))
    for idea in (IDEA, RETIRED, GONE):
        new_experiment(root, idea, "--bucket", "mlp")
        surface_edit(experiment_file(root, idea), "mlp")
    archive.set_fields(root / "archive.yaml", RETIRED, purpose=HOSTILE)
    commit_all(root, "three ideas")
    record_seeds(root, STARTER, 0.014)
    record_seeds(root, IDEA, 0.02)
    record_seeds(root, RETIRED, 0.016)
    commit_all(root, "seeds")
    assert _invoke(root, ["delete", GONE, "--yes"]).exit_code == 0
    path = root / "archive.yaml"
    archive.set_fields(path, GONE, notes=HOSTILE)
    archive.set_fields(path, RETIRED, status="superseded", superseded_by=IDEA, waiver=HOSTILE)
    commit_all(root, "retire two")
    return root


def build(root: Path, out: Path, *extra: str):
    return _invoke(root, ["report", "--out", str(out), *extra])


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


class Rows(HTMLParser):
    """The ids of the leaderboard's rows in document order, their cells' sort values, the hidden ones,
    and every <script> element's text."""

    def __init__(self):
        super().__init__()
        self.ids, self.values, self.hidden, self.scripts, self._in_script = [], {}, [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and (attrs.get("id") or "").startswith("row-"):
            self.ids.append(attrs["id"][4:])
            self.values[self.ids[-1]] = []
            if "hidden" in attrs:
                self.hidden.append(self.ids[-1])
        if tag == "td" and self.ids and "data-v" in attrs:
            self.values[self.ids[-1]].append(attrs["data-v"])
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parsed(text: str) -> Rows:
    rows = Rows()
    rows.feed(text)
    return rows


def test_the_site_holds_every_experiment_its_evidence_and_the_retired_ideas(repo, tmp_path):
    out = tmp_path / "site"
    result = build(repo, out)
    assert result.exit_code == 0, result.output
    index = (out / "index.html").read_text()
    assert parsed(index).ids == [STARTER, IDEA, RETIRED, GONE]  # every one, retired ones included
    for entry_id in (STARTER, IDEA, RETIRED, GONE):
        assert (out / "experiments" / f"{entry_id}.html").is_file()
    # The leaderboard's figures are archive status's: 3 seeds each, a verdict against the starter.
    status = json.loads(_invoke(repo, ["archive", "status", "--json"]).stdout)["experiments"]
    idea_row = re.search(r'<tr id="row-relu-squared".*?</tr>', index, re.S)[0]
    expected = next(row for row in status if row["id"] == IDEA)
    assert f'data-v="{expected["mean_val_bpb"]!r}"' in idea_row and expected["verdict"] in idea_row
    # Retired ideas: what replaced each, and why.
    retired = index[index.index('id="retired"') :]
    assert 'href="experiments/relu-squared.html"' in retired and "old-idea" in retired
    page = (out / "experiments" / f"{IDEA}.html").read_text()
    # The diff against the core, definition by definition.
    assert 'table class="diff"' in page and "mlp" in page
    assert "relu-squared vs grugformer-starter at 200 steps" in page  # compare's table
    assert '<img class="figure" src="relu-squared.curves.png"' in page
    assert (out / "experiments" / "relu-squared.curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
    # Every run with its machine and the command that reruns it from its commit.
    assert page.count("git checkout ") == 3
    assert "grugctl run relu-squared --seed 2 --steps 200 --sizes s" in page
    gone = (out / "experiments" / f"{GONE}.html").read_text()
    assert "deleted" in gone and 'table class="diff"' in gone  # read from git at its last known good
    assert head[:12] in index


def test_user_text_renders_as_text(repo, tmp_path):
    out = tmp_path / "site"
    assert build(repo, out).exit_code == 0
    for name, data in files_of(out).items():
        if not name.endswith(".html"):
            continue
        text = data.decode()
        scripts = parsed(text).scripts
        # The leaderboard's own script is the only one; the user's <script> and <b> are text.
        assert len(scripts) == (1 if name == "index.html" else 0), name
        assert "alert" not in "".join(scripts) and "<b>bold" not in text, name
    index = (out / "index.html").read_text()
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &#x27;single&#x27; &amp; &quot;double&quot;"
    assert escaped in index
    # Isolated in <bdi>, every character kept as it is.
    assert "\u202eevil a\u0308 \U0001f44d \u200b&lt;b&gt;bold&lt;/b&gt;</bdi>" in index
    retired = (out / "experiments" / f"{RETIRED}.html").read_text()
    gone = (out / "experiments" / f"{GONE}.html").read_text()
    assert "promoted without a significant win: <bdi" in retired and escaped in retired  # the waiver
    assert "why: <bdi" in gone and escaped in gone  # the deletion's reason


def test_same_inputs_give_the_same_bytes(repo, tmp_path):
    """Twice, and once more from a copy of the repository elsewhere: nothing of the clock, the folder or
    the machine gets in."""
    first, second, third = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    assert build(repo, first).exit_code == 0
    assert build(repo, second).exit_code == 0
    copy = tmp_path / "elsewhere" / "clone"
    shutil.copytree(repo, copy)
    assert build(copy, third).exit_code == 0
    a, b, c = files_of(first), files_of(second), files_of(third)
    assert a == b == c and any(name.endswith(".png") for name in a)


def test_a_repository_with_the_starter_alone_and_no_runs(tmp_path):
    root = make_repo(tmp_path)
    out = tmp_path / "site"
    result = build(root, out)
    assert result.exit_code == 0, result.output
    assert sorted(files_of(out)) == [
        ".grugctl-report",
        "experiments/grugformer-starter.html",
        "index.html",
        "style.css",
    ]
    assert parsed((out / "index.html").read_text()).ids == [STARTER]
    assert "No recorded runs of its current code yet" in (out / "experiments" / f"{STARTER}.html").read_text()


def record_sizes(root: Path, entry_id: str, gain: float) -> None:
    """Three seeds at sizes xs and s, as `grugctl run --sizes xs,s` records them (record, row, hash),
    the final val bpb falling with FLOPs and `gain` lower for the idea."""
    loaded = archive.load_archive(root / "archive.yaml")
    source = records.provenance(root, loaded.experiments[entry_id].path, loaded.core)
    for size, flops, offset in (("xs", 3.3e12, 0.12), ("s", 1.1e13, 0.0)):
        for seed in range(3):
            results = fake_results(seed, 0.02, offset=offset - gain + 0.002 * seed)
            results |= {"size": size, "flops": flops, "config": {"steps": 200, "seed": seed, "size": size}}
            record = records.build_record(results, source, entry_id=entry_id, pair=f"{size}-{seed}")
            path = f"runs/{entry_id}/{size}-seed{seed}.json"
            data = records.encode(record)
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
            row = records.summary_row(record, path) | {"record_hash": records.content_hash(data)}
            archive.append_result(root / "archive.yaml", entry_id, row)


def test_runs_at_two_sizes_give_the_compute_multiplier_and_the_scaling_figure(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    surface_edit(experiment_file(root, IDEA), "mlp")
    commit_all(root, "idea")
    record_sizes(root, STARTER, 0.0)
    record_sizes(root, IDEA, 0.03)
    out = tmp_path / "site"
    assert build(root, out).exit_code == 0
    multiplier = parsed((out / "index.html").read_text()).values[IDEA][9]  # the compute x column
    assert float(multiplier) > 1  # better at both sizes: the starter needs more compute to match it
    page = (out / "experiments" / f"{IDEA}.html").read_text()
    assert "compute multiplier" in page and 'src="relu-squared.scaling.png"' in page
    assert (out / "experiments" / f"{IDEA}.scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_out_refuses_a_folder_holding_other_files_unless_yes(repo, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    result = build(repo, out)
    assert result.exit_code == 2 and "pass --yes" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert files_of(out) == {"notes.txt": b"mine\n"}  # nothing lost, nothing added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no hidden sibling left behind

    result = build(repo, out, "--yes")
    assert result.exit_code == 0, result.output
    assert "notes.txt" not in files_of(out) and (out / "index.html").is_file()
    assert build(repo, out).exit_code == 0  # its own earlier report is replaced without asking


def test_an_out_that_is_a_file_or_holds_the_repository_is_one_sentence(repo, tmp_path):
    (tmp_path / "file").write_text("x")
    for out, words in [(tmp_path / "file", "is a file, not a folder"), (repo, "holds the repository itself")]:
        result = build(repo, out, "--yes")
        assert result.exit_code == 2 and words in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert (repo / "archive.yaml").is_file() and (tmp_path / "file").read_text() == "x"


def test_a_failed_write_leaves_the_old_site_as_it_was(tmp_path):
    out = tmp_path / "site"
    writer.write_site({"index.html": b"old\n"}, out)
    before = files_of(out)
    # "a" is a file, so "a/b" cannot be written: a real OS error halfway through the new folder.
    with pytest.raises(archive.GrugError, match="the folder was left as it was"):
        writer.write_site({"a": b"1", "a/b": b"2", "index.html": b"new\n"}, out)
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_dry_run_lists_the_pages_and_writes_nothing(repo, tmp_path):
    out = tmp_path / "site"
    result = build(repo, out, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["written"] is False and not out.exists()
    assert sorted(Path(p).name for p in data["pages"]) == sorted(
        ["index.html", *(f"{i}.html" for i in (STARTER, IDEA, RETIRED, GONE))]
    )
    assert all(f["bytes"] > 0 for f in data["files"])


def chromium(tmp_path: Path, *args: str) -> str:
    """Headless Chromium's stdout, with a profile of its own (tests may run side by side)."""
    if CHROMIUM is None:
        if os.environ.get("GRUGCTL_REQUIRE_CHROMIUM"):
            pytest.fail(NO_CHROMIUM)
        pytest.skip(NO_CHROMIUM)
    profile = tmp_path / "chromium-profile"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", "--no-first-run", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_site_in_a_headless_browser(repo, tmp_path):
    out = tmp_path / "site"
    assert build(repo, out).exit_code == 0
    index = (out / "index.html").as_uri()
    # The DOM after the script ran, asked (in the address) to sort by mean val bpb and keep superseded.
    dom = chromium(tmp_path, "--dump-dom", index + "#sort=val_bpb&status=superseded")
    rows = parsed(dom)
    assert sorted(rows.ids) == sorted([STARTER, IDEA, RETIRED, GONE])  # all listed, filtered ones hidden
    bpb = {entry_id: values[5] for entry_id, values in rows.values.items()}  # the mean val bpb column
    assert bpb[GONE] == "" and rows.ids[-1] == GONE  # no runs of its current code: last
    assert rows.ids[:3] == sorted(rows.ids[:3], key=lambda entry_id: float(bpb[entry_id]))
    assert rows.ids != [STARTER, IDEA, RETIRED, GONE]  # the script did reorder (archive order differs)
    assert 'aria-sort="ascending"' in dom and "1 of 4 shown" in dom
    assert sorted(rows.hidden) == sorted([STARTER, IDEA, GONE])
    page = chromium(tmp_path, "--dump-dom", (out / "experiments" / f"{IDEA}.html").as_uri())
    assert 'class="diff"' in page and "def mlp" in page  # the side-by-side diff
    assert re.search(r'<img class="figure" src="relu-squared\.curves\.png"', page)
    hostile = chromium(tmp_path, "--dump-dom", (out / "experiments" / f"{RETIRED}.html").as_uri())
    assert "<script" not in hostile and "<b>" not in hostile and "&lt;script&gt;alert" in hostile
    shot = tmp_path / "leaderboard.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars", index)
    assert png_size(shot) == (1280, 900)
