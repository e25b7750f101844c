"""archive.yaml model, validation and writes: real files, real git repositories, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from archive_helpers import commit, init_repo

from grugctl import archive, gitinfo
from grugctl.errors import GrugError

SHA40 = "0123456789abcdef0123456789abcdef01234567"

BASIC = """\
version: 1
core: grug_core
starter: starter
experiments_dir: experiments/speedrun

experiments:
  starter:
    path: experiments/speedrun/starter/starter.py
    status: active
    bucket: null
    purpose: The entrypoint every experiment is copied from.

  swiglu-mlp:
    path: experiments/speedrun/swiglu_mlp/swiglu_mlp.py
    status: active
    bucket: mlp
    origin: starter
    purpose: SwiGLU instead of GELU in the MLP.
    base: {sha}
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "archive.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_load_builds_an_immutable_model_in_file_order(tmp_path):
    loaded = archive.load_archive(write(tmp_path, BASIC.format(sha=SHA40)))
    assert list(loaded.experiments) == ["starter", "swiglu-mlp"]
    assert loaded.root == tmp_path and loaded.path == tmp_path / "archive.yaml"
    assert (loaded.version, loaded.core, loaded.starter) == (1, "grug_core", "starter")
    entry = loaded.experiments["swiglu-mlp"]
    assert entry.base == SHA40[:12]  # full SHAs are accepted and kept as 12 characters
    assert (entry.bucket, entry.origin, entry.results) == ("mlp", "starter", ())
    assert loaded.experiments["starter"].bucket is None
    with pytest.raises(AttributeError):
        entry.status = "deleted"


def test_defaults_and_empty_experiments(tmp_path):
    loaded = archive.load_archive(write(tmp_path, "version: 1\nexperiments:\n"))
    assert (loaded.core, loaded.experiments_dir, loaded.starter, loaded.experiments) == (
        "grug_core",
        "experiments/speedrun",
        None,
        {},
    )


def test_sha_that_looks_like_a_number_stays_text(tmp_path):
    # YAML would read 123456789012 as an int and 1234567e8901 as a float; SHAs keep their characters.
    text = BASIC.format(sha="123456789012") + "    introduced: 1234567e8901\n"
    path = write(tmp_path, text)
    entry = archive.load_archive(path).experiments["swiglu-mlp"]
    assert (entry.base, entry.introduced) == ("123456789012", "1234567e8901")
    archive.set_fields(path, "swiglu-mlp", notes="touched")
    entry = archive.load_archive(path).experiments["swiglu-mlp"]
    assert (entry.base, entry.introduced, entry.notes) == ("123456789012", "1234567e8901", "touched")


def test_writes_abbreviate_full_shas(tmp_path):
    path = write(tmp_path, BASIC.format(sha=SHA40))
    archive.set_fields(path, "swiglu-mlp", introduced=SHA40.upper())
    text = path.read_text()
    assert SHA40 not in text and f"introduced: {SHA40[:12]}" in text


@pytest.mark.parametrize(
    "value, ok",
    [
        ("swiglu-mlp", True),
        ("core@pending", True),
        ("core@" + SHA40, True),
        ("core@xyz", False),
        ("Bad", False),
    ],
)
def test_superseded_by_convention(value, ok):
    if ok:
        assert archive.check_field("superseded_by", value) == value.replace(SHA40, SHA40[:12])
    else:
        with pytest.raises(ValueError, match="experiment id, core@<sha> or core@pending"):
            archive.check_field("superseded_by", value)


# ------------------------------------------------------------------------------------------ writes


COMMENTED = """\
# The experiments' paper trail.
# Edited by hand and by grugctl.

version: 1
core: grug_core   # the trusted package
starter: starter
experiments_dir: experiments/speedrun

experiments:
  # The starter stays active forever.
  starter:
    path: experiments/speedrun/starter/starter.py
    status: active
    bucket: null
    purpose: The entrypoint every experiment is copied from.

  # Attention experiments
  sliding-window:
    path: experiments/speedrun/sliding_window/sliding_window.py   # moved once
    status: active
    bucket: attention
    # why attention: it changes the mask only
    purpose: 'Sliding-window attention: keep the last 512 tokens.'
    notes: |
      First line.
      Second line.

  qk-norm:
    path: experiments/speedrun/qk_norm/qk_norm.py
    status: active
    bucket: attention
    purpose: RMS-normalise queries and keys.
  # end of the list
"""


def test_set_fields_keeps_comments_order_and_blank_lines(tmp_path):
    path = write(tmp_path, COMMENTED)
    archive.set_fields(
        tmp_path / "archive.yaml", "sliding-window", status="superseded", superseded_by="qk-norm"
    )
    archive.set_fields(path, "qk-norm", introduced=SHA40, issue="42")
    expected = (
        COMMENTED.replace(
            "    status: active\n    bucket: attention\n    # why",
            "    status: superseded\n    bucket: attention\n    # why",
        )
        .replace(
            "keep the last 512 tokens.'\n",
            "keep the last 512 tokens.'\n    superseded_by: qk-norm\n",  # FIELDS order: before notes
        )
        .replace(
            "    purpose: RMS-normalise queries and keys.\n",
            f"    purpose: RMS-normalise queries and keys.\n    introduced: {SHA40[:12]}\n    issue: '42'\n",
        )
    )
    assert path.read_text() == expected


def test_add_entry_appends_after_trailing_comment_and_keeps_blank_line_style(tmp_path):
    path = write(tmp_path, COMMENTED)
    new = archive.add_entry(
        path, {"id": "rope-theta", "path": "experiments/speedrun/rope/rope.py", "status": "active",
               "bucket": None, "origin": "starter", "purpose": "Raise RoPE theta.", "base": SHA40},
    )  # fmt: skip
    assert list(new.experiments)[-1] == "rope-theta"
    assert path.read_text() == COMMENTED.replace(
        "    purpose: RMS-normalise queries and keys.\n  # end of the list\n",
        "    purpose: RMS-normalise queries and keys.\n\n"
        "  rope-theta:\n    path: experiments/speedrun/rope/rope.py\n    status: active\n"
        "    origin: starter\n"
        f"    purpose: Raise RoPE theta.\n    base: {SHA40[:12]}\n  # end of the list\n",
    )


def test_append_result_adds_a_list_then_extends_it(tmp_path):
    path = write(tmp_path, COMMENTED)
    archive.append_result(path, "starter", {"loss": 3.25, "steps": 100, "tokens": "1e6"})
    new = archive.append_result(path, "starter", {"loss": 3.1})
    assert new.experiments["starter"].results == (
        {"loss": 3.25, "steps": 100, "tokens": "1e6"},
        {"loss": 3.1},
    )
    assert (
        "    results:\n      - loss: 3.25\n        steps: 100\n        tokens: '1e6'\n      - loss: 3.1\n\n"
        in (path.read_text())
    )


def test_none_clears_only_fields_that_exist(tmp_path):
    path = write(tmp_path, COMMENTED)
    archive.set_fields(path, "starter", origin=None, bucket=None)
    assert path.read_text() == COMMENTED  # absent origin not written; bucket was already null


def test_whole_document_edit_and_region_edit_agree(tmp_path):
    """update_archive (whole document) and the per-entry fast path must write the same bytes."""
    fast, whole = write(tmp_path, COMMENTED), tmp_path / "whole.yaml"
    whole.write_text(COMMENTED)
    archive.set_fields(fast, "sliding-window", issue="7", status="deleted")

    def edit(doc):
        archive.write_fields(doc["experiments"]["sliding-window"], {"issue": "7", "status": "deleted"})

    archive.update_archive(whole, edit)
    assert fast.read_text() == whole.read_text()


def test_unusual_layout_falls_back_to_whole_document(tmp_path):
    flow = "version: 1\nexperiments: {a: {path: a.py, status: active, purpose: A.}}  # flow style\n"
    path = write(tmp_path, flow)
    archive.set_fields(path, "a", notes="n")
    archive.add_entry(path, {"id": "b", "path": "b.py", "status": "active", "purpose": "B."})
    loaded = archive.load_archive(path)
    assert [e.notes for e in loaded.experiments.values()] == ["n", None]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: archive.set_fields(p, "qk-norm", status="actve"), "'actve' is not one of active"),
        (lambda p: archive.set_fields(p, "nope", notes="x"), "no experiment 'nope'"),
        (lambda p: archive.set_fields(p, "qk-norm", purpose=None), "is required"),
        (lambda p: archive.add_entry(p, {"id": "qk-norm", "path": "a.py", "status": "active",
                                         "purpose": "x"}),
         "already in archive.yaml"),
        (lambda p: archive.add_entry(p, {"id": "x", "path": "../a.py", "status": "active", "purpose": "x"}),
         "without '..'"),
        (lambda p: archive.update_archive(p, lambda d: d["experiments"]["qk-norm"].update(status="bogus")),
         "refusing to write archive.yaml"),
        (lambda p: archive.update_archive(p, lambda doc: 1 / 0), "division by zero"),
    ],
)  # fmt: skip
def test_failed_edits_leave_the_file_untouched(tmp_path, call, message):
    path = write(tmp_path, COMMENTED)
    with pytest.raises((GrugError, ZeroDivisionError), match=message):
        call(path)
    assert path.read_text() == COMMENTED
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_dry_run_validates_but_writes_nothing(tmp_path):
    path = write(tmp_path, COMMENTED)
    new = archive.set_fields(path, "qk-norm", status="deleted", dry_run=True)
    assert new.experiments["qk-norm"].status == "deleted"
    assert path.read_text() == COMMENTED


def test_write_keeps_file_mode(tmp_path):
    path = write(tmp_path, COMMENTED)
    path.chmod(0o640)
    archive.set_fields(path, "qk-norm", notes="x")
    assert path.stat().st_mode & 0o777 == 0o640


def test_crash_mid_write_leaves_the_old_file(tmp_path):
    """A writer that dies after writing its temp file but before the rename changes nothing."""
    path = write(tmp_path, COMMENTED)
    crash = textwrap.dedent(
        f"""
        import os
        from grugctl import archive
        os.fsync = lambda fd: os._exit(9)  # die at the first fsync: temp file written, rename not done
        archive.set_fields({str(path)!r}, "qk-norm", notes="never lands")
        """
    )
    done = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    assert path.read_text() == COMMENTED
    archive.set_fields(path, "qk-norm", notes="lands")  # the dead writer's lock was released by the kernel
    assert archive.load_archive(path).experiments["qk-norm"].notes == "lands"


WORKER = """
import sys
from grugctl import archive
path, worker = sys.argv[1], int(sys.argv[2])
for k in range(12):
    archive.add_entry(path, {{"id": f"w{{worker}}-{{k}}", "path": f"x/w{{worker}}_{{k}}.py",
                              "status": "active", "purpose": f"Worker {{worker}} entry {{k}}."}})
    archive.set_fields(path, f"w{{worker}}-{{k}}", notes=f"set by {{worker}}/{{k}}", status="superseded",
                       superseded_by="shared")
archive.append_result(path, "shared", {{"worker": worker}})
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    """8 processes x 25 writes (12 adds, 12 sets, 1 result append) against one file."""
    path = write(tmp_path, "# keep me\nversion: 1\nexperiments:\n  shared:\n    path: s.py\n"
                 "    status: active\n    purpose: Shared.  # keep me too\n")  # fmt: skip
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format())
    workers = [
        subprocess.Popen([sys.executable, str(script), str(path), str(w)], stderr=subprocess.PIPE, text=True)
        for w in range(8)
    ]
    for proc in workers:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    loaded = archive.load_archive(path)
    assert len(loaded.experiments) == 1 + 8 * 12
    for w in range(8):
        for k in range(12):
            entry = loaded.experiments[f"w{w}-{k}"]
            assert (entry.notes, entry.status, entry.superseded_by) == (
                f"set by {w}/{k}",
                "superseded",
                "shared",
            )
    assert sorted(r["worker"] for r in loaded.experiments["shared"].results) == list(range(8))
    assert path.read_text().startswith("# keep me\n") and "# keep me too" in path.read_text()


# ------------------------------------------------------------------------------------------ git


@pytest.fixture
def history(tmp_path):
    """A repository whose history adds, edits, renames and deletes experiment files."""
    repo = init_repo(tmp_path)
    shas = {}
    shas["c1"] = commit(repo, "add a, b, gone-twice", {"e/a.py": "a1", "e/b.py": "b1", "e/twice.py": "t1"})
    shas["c2"] = commit(repo, "edit a, add c", {"e/a.py": "a2", "e/c.py": "c1"})
    shas["c3"] = commit(repo, "delete b and twice", delete=("e/b.py", "e/twice.py"))
    repo.git.mv("e/c.py", "e/d.py")
    shas["c4"] = commit(repo, "rename c to d")
    shas["c5"] = commit(
        repo, "re-add twice, add folder", {"e/twice.py": "t2", "e/dir/x.py": "x", "e/dir/y.py": "y"}
    )
    shas["c6"] = commit(repo, "unrelated", {"README": "hi"})
    return repo, shas


def test_gitinfo_first_and_last_commits(history):
    repo, shas = history
    first = gitinfo.first_commits_with(
        repo, ["e/a.py", "e/b.py", "e/c.py", "e/d.py", "e/twice.py", "e/dir", "e/no.py"]
    )
    assert first == {
        "e/a.py": shas["c1"], "e/b.py": shas["c1"], "e/c.py": shas["c2"], "e/d.py": shas["c4"],
        "e/twice.py": shas["c1"], "e/dir": shas["c5"], "e/no.py": None,
    }  # fmt: skip
    last = gitinfo.last_commits_with(repo, ["e/a.py", "e/b.py", "e/c.py", "e/twice.py", "e/no.py"])
    assert last == {
        "e/a.py": shas["c6"], "e/b.py": shas["c2"], "e/c.py": shas["c3"], "e/twice.py": shas["c6"],
        "e/no.py": None,
    }  # fmt: skip
    assert gitinfo.first_commit_with(repo, Path(repo.working_tree_dir) / "e/a.py") == shas["c1"]
    assert gitinfo.last_commit_with(repo, "e/b.py") == shas["c2"]
    assert gitinfo.head_sha(repo) == shas["c6"]
    assert gitinfo.sha_exists(repo, shas["c3"][:9]) and not gitinfo.sha_exists(repo, "deadbeef0000")
    assert gitinfo.file_at(repo, shas["c1"], "e/a.py") == b"a1"
    with pytest.raises(GrugError, match="does not exist at commit"):
        gitinfo.file_at(repo, shas["c6"], "e/b.py")


def test_gitinfo_dirty_state(history):
    repo, _ = history
    root = Path(repo.working_tree_dir)
    assert not gitinfo.is_dirty(repo)
    (root / "e/a.py").write_text("changed")
    assert (
        gitinfo.is_dirty(repo)
        and gitinfo.is_dirty(repo, ["e/a.py"])
        and not gitinfo.is_dirty(repo, ["e/d.py"])
    )
    (root / "e/new.py").write_text("untracked")
    assert gitinfo.is_dirty(repo, [root / "e/new.py"])


def test_gitinfo_outside_a_repository(tmp_path):
    with pytest.raises(GrugError, match="is not inside a git repository; run `git init`"):
        gitinfo.open_repo(tmp_path)
    assert gitinfo.toplevel(tmp_path) is None


def test_head_sha_of_a_repository_without_commits(tmp_path):
    with pytest.raises(GrugError, match="has no commits yet"):
        gitinfo.head_sha(init_repo(tmp_path))


def test_resolve_fills_shas_from_history(history):
    repo, shas = history
    root = Path(repo.working_tree_dir)
    entry = "  {id}:\n    path: {path}\n    status: {status}\n    purpose: P.\n"
    rows = [("a", "e/a.py", "active"), ("b", "e/b.py", "deleted"), ("c", "e/c.py", "superseded"),
            ("d", "e/d.py", "active"), ("twice", "e/twice.py", "superseded"), ("dir", "e/dir/", "deleted"),
            ("never", "e/never.py", "deleted")]  # fmt: skip
    text = "version: 1\nexperiments_dir: e\nexperiments:\n" + "".join(
        entry.format(id=i, path=p, status=s) for i, p, s in rows
    )
    path = write(root, text.replace("  c:\n", "  c:\n    superseded_by: d\n"))
    filled, missing = archive.resolve_archive(path)
    short = {k: v[:12] for k, v in shas.items()}
    assert sorted(filled) == sorted([
        ("a", "introduced", short["c1"]), ("b", "introduced", short["c1"]),
        ("b", "last_known_good", short["c2"]), ("c", "introduced", short["c2"]),
        ("c", "last_known_good", short["c3"]), ("d", "introduced", short["c4"]),
        ("twice", "introduced", short["c1"]), ("twice", "last_known_good", short["c6"]),
        ("dir", "introduced", short["c5"]), ("dir", "last_known_good", short["c6"]),
    ])  # fmt: skip
    assert [m.split(":")[0] for m in missing] == ["never.introduced", "never.last_known_good"]
    loaded = archive.load_archive(path)
    assert loaded.experiments["b"].last_known_good == short["c2"]
    assert archive.resolve_archive(path)[0] == []  # nothing left to fill


def test_status_report_warnings(history):
    repo, shas = history
    root = Path(repo.working_tree_dir)
    (root / "e/stray.py").write_text("nobody registered me")
    text = f"""\
version: 1
experiments_dir: e
experiments:
  a:
    path: e/a.py
    status: active
    purpose: Fine.
    introduced: {shas["c1"][:12]}
  gone:
    path: e/b.py
    status: active
    purpose: File was deleted.
  zombie:
    path: e/d.py
    status: deleted
    purpose: Deleted but present.
    last_known_good: deadbeef0000
    superseded_by: core@pending
  kids:
    path: e/dir
    status: superseded
    purpose: Names a folder.
    superseded_by: nobody
  twice:
    path: e/twice.py
    status: active
    purpose: T.
    origin: a
"""
    report = archive.status_report(archive.load_archive(write(root, text)))
    kinds = sorted((w["kind"], w["id"] or w["path"]) for w in report["warnings"])
    assert kinds == [
        ("deleted-file-exists", "zombie"), ("missing-file", "gone"), ("unknown-id", "kids"),
        ("unknown-sha", "zombie"), ("unregistered-file", "e/stray.py"),
    ]  # fmt: skip
    assert report["summary"] == {
        "total": 5, "shown": 5, "active": 3, "superseded": 1, "deleted": 1, "warnings": 5,
    }  # fmt: skip
    assert {r["id"]: r["file_present"] for r in report["experiments"]}["gone"] is False
    filtered = archive.status_report(
        archive.load_archive(root / "archive.yaml"), status="active", bucket="none"
    )
    assert [r["id"] for r in filtered["experiments"]] == ["a", "gone", "twice"]
    json.dumps(report)  # everything is JSON-ready


def test_find_archive_walks_up_to_the_git_root(tmp_path):
    init_repo(tmp_path)
    deep = tmp_path / "experiments/speedrun/x"
    deep.mkdir(parents=True)
    with pytest.raises(GrugError, match="no archive.yaml between .* and the git root"):
        archive.find_archive(deep)
    write(tmp_path, BASIC.format(sha=SHA40))
    assert archive.find_archive(deep) == tmp_path / "archive.yaml"
    assert archive.find_archive(None, tmp_path) == tmp_path / "archive.yaml"
    with pytest.raises(GrugError, match="does not exist; pass an existing archive.yaml"):
        archive.find_archive(None, tmp_path / "nope.yaml")


def test_find_archive_stops_at_the_git_root(tmp_path):
    write(tmp_path, BASIC.format(sha=SHA40))  # outside the repository below: must not be found
    inner = tmp_path / "repo"
    inner.mkdir()
    init_repo(inner)
    os.makedirs(inner / "sub")
    with pytest.raises(GrugError, match="git root"):
        archive.find_archive(inner / "sub")


# ------------------------------------------------------------------------------------------ import-md

MARKDOWN = """\
# Grug Archive: Experiments and Snapshots

This file is the paper trail for grug experiments.

## Entry Template

```text
### <experiment-id>
- Path: <repo-relative-path>
- Status: active | superseded | deleted
```

## Experiments

### grug-base-template
- Path: `experiments/grug/base/`
- Origin: base
- Introduced: {c1}
- Status: active
- Purpose: canonical grug template (model/train/launch).

### grug-moe
- **Path:** `experiments/grug/moe/`
- Origin: grug-base-template
- Introduced: TBD
- Status: active
- Purpose: canonical Mixture-of-Experts variant; carries its own model,
  optimizer and train loop.
- Issue: https://github.com/example/repo/pull/3046

### grugformer-vs-hackable-125m
- Path: `experiments/speedrun/grugformer_vs_hackable_125m/grugformer_vs_hackable_125m.py`
- Introduced: {c1}
- Last known-good: {c2}
- Status: deleted
- Purpose: historical head-to-head comparison.
- Superseded by: {c2} — template-first workflow centered on `experiments/grug/base/`.
- Diff: runs/diff-125m.md

### Old_Attention
- Path: experiments/speedrun/old_attention/old_attention.py
- Status: superseded (kept for reference)
- Purpose: Original attention.
- Superseded by: `experiments/grug/base/`
- Notes: replaced when the template landed.
  See the PR for numbers.
Free text someone wrote under the bullets.

### no-purpose
- Path: experiments/speedrun/np/np.py
- Status: active

### weird-status
- Path: experiments/speedrun/ws/ws.py
- Status: archived
- Purpose: Has a status grugctl does not know.
"""


def test_import_markdown_converts_losslessly(tmp_path):
    repo = init_repo(tmp_path)
    c1 = commit(repo, "one", {"f": "1"})
    c2 = commit(repo, "two", {"f": "2"})
    path = write(tmp_path, "version: 1\nexperiments:\n")
    md = tmp_path / "grug-archive.md"
    md.write_text(MARKDOWN.format(c1=c1[:9], c2=c2[:9]))
    added, messages = archive.import_markdown(path, md)
    assert added == ["grug-base-template", "grug-moe", "grugformer-vs-hackable-125m", "old-attention"]
    got = {i: {k: v for k, v in archive.entry_dict(e).items() if v not in (None, [])}
           for i, e in archive.load_archive(path).experiments.items()}  # fmt: skip
    assert got == {
        "grug-base-template": {
            "id": "grug-base-template", "path": "experiments/grug/base/", "status": "active",
            "origin": "base",
            "purpose": "canonical grug template (model/train/launch).", "introduced": c1[:12],
        },
        "grug-moe": {
            "id": "grug-moe", "path": "experiments/grug/moe/", "status": "active",
            "origin": "grug-base-template",
            "purpose": "canonical Mixture-of-Experts variant; carries its own model, optimizer and train"
            " loop.",
            "issue": "https://github.com/example/repo/pull/3046",
        },
        "grugformer-vs-hackable-125m": {
            "id": "grugformer-vs-hackable-125m",
            "path": "experiments/speedrun/grugformer_vs_hackable_125m/grugformer_vs_hackable_125m.py",
            "status": "deleted", "purpose": "historical head-to-head comparison.", "introduced": c1[:12],
            "last_known_good": c2[:12], "superseded_by": "core@" + c2[:12],
            "notes": "Diff: runs/diff-125m.md\nSuperseded by: "
            f"{c2[:9]} — template-first workflow centered on `experiments/grug/base/`.",
        },
        "old-attention": {
            "id": "old-attention", "path": "experiments/speedrun/old_attention/old_attention.py",
            "status": "superseded", "purpose": "Original attention.", "superseded_by": "grug-base-template",
            "notes": "replaced when the template landed.\nSee the PR for numbers.\n"
            "Status: superseded (kept for reference)\nFree text someone wrote under the bullets.",
        },
    }  # fmt: skip
    text = "\n".join(messages)
    assert "heading 'Old_Attention' became id 'old-attention'" in text
    assert "grug-archive.md:49: '### no-purpose' not imported: no `- Purpose:` line; fix it" in text
    assert "grug-archive.md:53: '### weird-status' not imported: `- Status: archived` is not usable" in text
    assert (
        "grug-archive.md:42: old-attention: kept 'Status: superseded (kept for reference)' in notes" in text
    )
    assert len(messages) == 4
    before = path.read_bytes()
    with pytest.raises(GrugError, match="already in archive.yaml; rename or remove those sections"):
        archive.import_markdown(path, md)
    assert path.read_bytes() == before


def test_import_markdown_without_git_keeps_short_shas(tmp_path):
    path = write(tmp_path, "version: 1\nexperiments:\n")
    md = tmp_path / "a.md"
    md.write_text("### x\n- Path: x.py\n- Status: active\n- Purpose: X.\n- Introduced: abcdef123\n")
    assert archive.import_markdown(path, md, dry_run=True) == (["x"], [])
    assert path.read_text() == "version: 1\nexperiments:\n"
    archive.import_markdown(path, md)
    assert archive.load_archive(path).experiments["x"].introduced == "abcdef123"
