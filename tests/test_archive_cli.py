"""`grugctl archive ...` end to end: in-process CliRunner on real files and real git repositories."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from archive_helpers import commit, init_repo, one_line_error, run_cli
from fresh_process import loaded_from, run_commands

from grugctl import archive

REPO_ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
version: 1
experiments:
  foo:
    path: experiments/speedrun/foo/foo.py
    status: active
    purpose: Try a thing.
"""

# (name, archive bytes, line, column, fragment of the message)
MALFORMED = [
    ("bad-yaml", "version: 1\nexperiments:\n  foo:\n    purpose: [unclosed\n", 5, 1, "not valid YAML"),
    ("bad-indent", "version: 1\nexperiments:\n  foo:\n    path: x.py\n   status: active\n", 5, 4,
     "not valid YAML"),
    ("wrong-type-field", GOOD.replace("path: experiments/speedrun/foo/foo.py", "path: [a, b]"), 4, 11,
     "experiments.foo.path: expected text, found a list"),
    ("wrong-type-experiments", "version: 1\nexperiments:\n  - foo\n", 3, 3,
     "experiments: expected a mapping of id -> entry, found a list"),
    ("wrong-type-entry", "version: 1\nexperiments:\n  foo: just text\n", 3, 8,
     "expected a mapping of fields"),
    ("wrong-type-version", GOOD.replace("version: 1", "version: [1]"), 1, 10,
     "version: only schema version 1"),
    ("unknown-key", GOOD.replace("status: active", "stauts: active"), 5, 5,
     "experiments.foo.stauts: unknown key; expected one of path, status"),
    ("unknown-top-key", "experiment_dir: x\n" + GOOD, 1, 1, "experiment_dir: unknown key"),
    ("bad-status", GOOD.replace("status: active", "status: actve"), 5, 13,
     "experiments.foo.status: 'actve' is not one of active, superseded, deleted"),
    ("bad-bucket", GOOD + "    bucket: attn\n", 7, 13,
     "experiments.foo.bucket: 'attn' is not one of attention"),
    ("bad-id", GOOD.replace("  foo:", "  Foo_Bar:"), 3, 3,
     "experiments.Foo_Bar: 'Foo_Bar' is not a valid id"),
    ("dotdot-path", GOOD.replace("experiments/speedrun/foo/foo.py", "experiments/../../etc/foo.py"), 4, 11,
     "must be a path inside the repository"),
    ("absolute-path", GOOD.replace("experiments/speedrun/foo/foo.py", "/etc/passwd"), 4, 11, "without '..'"),
    ("duplicate-ids", GOOD + "  foo:\n    path: y.py\n    status: active\n    purpose: Again.\n", 7, 3,
     "experiments.foo: duplicate id"),
    ("missing-purpose", GOOD.replace("    purpose: Try a thing.\n", ""), 3, 3,
     "experiments.foo: missing required field 'purpose'"),
    ("missing-version", GOOD.replace("version: 1\n", ""), 1, 1, "version: missing"),
    ("bad-sha", GOOD + "    introduced: not-a-sha\n", 7, 17, "is not a commit SHA"),
    ("bad-starter", "starter: nope\n" + GOOD, 1, 10, "starter: 'nope' is not an id under experiments"),
    ("empty-file", "", 1, 1, "the file is empty"),
    ("only-comments", "# nothing yet\n", 1, 1, "the file is empty"),
    ("binary-garbage", bytes(range(128, 256)) + b"\x00\x01", 1, 1, "is not UTF-8 text"),
    ("control-characters", "version: 1\x00\nexperiments:\n", 1, 11, "control characters"),
    ("top-level-list", "- version: 1\n", 1, 1, "expected a mapping with keys version"),
]  # fmt: skip


@pytest.mark.parametrize("name, content, line, column, fragment", MALFORMED, ids=[c[0] for c in MALFORMED])
@pytest.mark.parametrize(
    "command",
    [["status"], ["show", "foo"], ["set", "foo", "--notes", "x"], ["resolve"]],
    ids=["status", "show", "set", "resolve"],
)
def test_malformed_archive_is_one_located_line_and_untouched(
    tmp_path, monkeypatch, command, name, content, line, column, fragment
):
    init_repo(tmp_path)
    data = content.encode() if isinstance(content, str) else content
    (tmp_path / "archive.yaml").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    result = run_cli("archive", *command)
    assert result.exit_code == 2, result.output
    message = one_line_error(result)
    assert message.startswith(f"archive.yaml:{line}:{column}: "), message
    assert fragment in message
    assert result.stdout == ""
    assert (tmp_path / "archive.yaml").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [".git", "archive.yaml"]


def test_import_md_into_malformed_archive_is_refused(tmp_path, monkeypatch):
    data = GOOD.replace("status: active", "status: actve").encode()
    (tmp_path / "archive.yaml").write_bytes(data)
    (tmp_path / "a.md").write_text("### x\n- Path: x.py\n- Status: active\n- Purpose: X.\n")
    monkeypatch.chdir(tmp_path)
    result = run_cli("archive", "import-md", "a.md", "--archive", "archive.yaml")
    assert result.exit_code == 2 and one_line_error(result).startswith("archive.yaml:5:13: ")
    assert (tmp_path / "archive.yaml").read_bytes() == data


COMMENTED = """\
# Paper trail. Comments, order and blank lines here must survive grugctl.
version: 1
core: grug_core
starter: starter   # copied by grugctl new

experiments:
  # --- the starter ---
  starter:
    path: exp/starter.py
    status: active
    purpose: Entry point.

  # --- attention ---
  window:
    path: exp/window.py  # moved once
    status: active
    bucket: attention
    purpose: Sliding window.
    notes: |
      Tried 256 and 512.

  old-norm:
    status: active   # status first: hand-written order is kept
    path: exp/old_norm.py
    purpose: Pre-norm variant.
# trailing comment
"""


def test_set_and_resolve_keep_comments_order_and_blank_lines(tmp_path, monkeypatch):
    repo = init_repo(tmp_path)
    c1 = commit(repo, "add", {"exp/starter.py": "s", "exp/window.py": "w", "exp/old_norm.py": "n"})
    c2 = commit(repo, "drop old norm", delete=("exp/old_norm.py",))
    (tmp_path / "archive.yaml").write_text(COMMENTED)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # found by walking up
    result = run_cli("archive", "set", "old-norm", "--status", "deleted", "--notes", "Folded into the core.")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "set old-norm.status: active -> deleted",
        "set old-norm.notes: (unset) -> Folded into the core.",
    ]
    result = run_cli("archive", "resolve")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"filled starter.introduced = {c1[:12]}",
        f"filled window.introduced = {c1[:12]}",
        f"filled old-norm.introduced = {c1[:12]}",
        f"filled old-norm.last_known_good = {c1[:12]}",
        "filled 4 field(s)",
    ]
    assert c2 != c1
    expected = (
        COMMENTED.replace(
            "    purpose: Entry point.\n", f"    purpose: Entry point.\n    introduced: {c1[:12]}\n"
        )
        .replace(
            "    purpose: Sliding window.\n", f"    purpose: Sliding window.\n    introduced: {c1[:12]}\n"
        )
        .replace(
            "    status: active   # status first: hand-written order is kept\n",
            "    status: deleted  # status first: hand-written order is kept\n",  # comment column kept
        )
        .replace(
            "    purpose: Pre-norm variant.\n",
            f"    purpose: Pre-norm variant.\n    introduced: {c1[:12]}\n    last_known_good: {c1[:12]}\n"
            "    notes: Folded into the core.\n",
        )
    )
    assert (tmp_path / "archive.yaml").read_text() == expected
    again = run_cli("archive", "resolve", "--dry-run")
    assert again.stdout.splitlines() == ["would fill 0 field(s)"]


@pytest.fixture
def repo_with_archive(tmp_path, monkeypatch):
    repo = init_repo(tmp_path)
    shas = [commit(repo, "add", {"exp/a.py": "a", "exp/b.py": "b", "exp/c.py": "c"})]
    shas.append(commit(repo, "delete c", delete=("exp/c.py",)))
    (tmp_path / "archive.yaml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            starter: a
            experiments_dir: exp
            experiments:
              a:
                path: exp/a.py
                status: active
                purpose: Starter.
                introduced: {shas[0][:12]}
              b:
                path: exp/b.py
                status: active
                bucket: mlp
                origin: a
                purpose: B tries [bold]markup[/bold] that must print literally.
              c:
                path: exp/c.py
                status: active
                bucket: loss
                purpose: C lost its file.
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    return repo, shas


def test_status_table_summary_and_warnings(repo_with_archive, tmp_path):
    (tmp_path / "exp/stray.py").write_text("x")
    result = run_cli("archive", "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "status",
        "bucket",
        "file",
        "introduced",
        "last",
        "known-good",
        "seeds",  # the leaderboard's columns (issue 10)
        "size",
        "val_bpb",
        "steps→target",
        "Δ",
        "bpb",
        "vs",
        "starter",
        "purpose",
    ]
    assert lines[2].split()[:4] == ["b", "active", "mlp", "yes"]
    assert "[bold]markup[/bold]" in lines[2]
    assert lines[3].split()[:4] == ["c", "active", "loss", "missing"]
    assert lines[-1] == "3 experiments: 3 active, 0 superseded, 0 deleted; 2 warnings"
    assert result.stderr.splitlines() == [
        "warning: c: active file exp/c.py is missing; restore it or set status deleted",
        "warning: exp/stray.py is not named by any entry; register it in archive.yaml or delete it",
    ]
    assert "\x1b[" not in result.output  # not a terminal: no colour codes


def test_status_caps_warnings_in_the_table_view(repo_with_archive, tmp_path):
    for number in range(25):
        (tmp_path / f"exp/stray_{number:02d}.py").write_text("x")
    result = run_cli("archive", "status")
    lines = result.stderr.splitlines()
    assert (
        len(lines) == 21 and lines[-1] == "warning: ... and 6 more; `grugctl archive status --json` lists all"
    )
    assert len(json.loads(run_cli("archive", "status", "--json").stdout)["warnings"]) == 26


def test_status_json_is_only_json(repo_with_archive):
    result = run_cli("archive", "status", "--json", "--bucket", "mlp")
    assert result.exit_code == 0 and result.stderr == ""
    data = json.loads(result.stdout)
    assert [e["id"] for e in data["experiments"]] == ["b"]
    assert data["summary"] == {
        "total": 3,
        "shown": 1,
        "active": 3,
        "superseded": 0,
        "deleted": 0,
        "warnings": 1,
    }
    assert data["warnings"][0]["kind"] == "missing-file"
    bad = run_cli("archive", "status", "--status", "gone")
    assert bad.exit_code == 2 and "--status 'gone' is not one of active, superseded, deleted" in bad.stderr


def test_show(repo_with_archive, tmp_path):
    result = run_cli("archive", "show", "c", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    data = json.loads(result.stdout)
    assert (data["id"], data["file_present"], data["bucket"]) == ("c", False, "loss")
    assert [w["kind"] for w in data["warnings"]] == ["missing-file"]
    human = run_cli("archive", "show", "a")
    assert "introduced" in human.stdout and "Starter." in human.stdout
    missing = run_cli("archive", "show", "bb")
    assert missing.exit_code == 2
    assert one_line_error(missing) == (
        "no experiment 'bb' in archive.yaml (did you mean 'b'?); `grugctl archive status` lists the ids"
    )


def test_set_status_transitions(repo_with_archive, tmp_path):
    repo, shas = repo_with_archive
    before = (tmp_path / "archive.yaml").read_text()
    need = run_cli("archive", "set", "b", "--status", "superseded")
    assert need.exit_code == 2 and "needs --superseded-by" in one_line_error(need)
    unknown = run_cli("archive", "set", "b", "--status", "superseded", "--superseded-by", "zz")
    assert unknown.exit_code == 2 and "must be another experiment's id" in one_line_error(unknown)
    dry = run_cli(
        "archive", "set", "b", "--status", "superseded", "--superseded-by", "core@HEAD", "--dry-run"
    )
    assert dry.exit_code == 0 and dry.stdout.splitlines()[0] == "would set b.status: active -> superseded"
    assert (tmp_path / "archive.yaml").read_text() == before
    done = run_cli("archive", "set", "b", "--status", "superseded", "--superseded-by", "core@HEAD")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[1] == f"set b.superseded_by: (unset) -> core@{shas[1][:12]}"
    assert "archive resolve" in done.stderr
    back = run_cli("archive", "set", "b", "--status", "active")
    assert back.exit_code == 2
    assert one_line_error(back) == (
        "b is superseded; superseded -> active is not allowed (active -> superseded | deleted, "
        "superseded -> deleted); pass --force if you mean it"
    )
    assert run_cli("archive", "set", "b", "--status", "deleted").exit_code == 0
    forced = run_cli("archive", "set", "b", "--status", "superseded", "--force")
    assert forced.exit_code == 0, forced.output
    nothing = run_cli("archive", "set", "b")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.stderr
    assert archive.load_archive(tmp_path / "archive.yaml").experiments["b"].status == "superseded"


def test_resolve_outside_git_says_how_to_fix(tmp_path, monkeypatch):
    (tmp_path / "archive.yaml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    result = run_cli("archive", "resolve", "--archive", str(tmp_path / "archive.yaml"))
    assert result.exit_code == 2
    assert "is not inside a git repository; run `git init`" in one_line_error(result)
    status = run_cli("archive", "status", "--archive", "archive.yaml")
    assert status.exit_code == 0 and "SHAs were not checked" in status.stderr


def test_no_archive_found(tmp_path, monkeypatch):
    init_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_cli("archive", "status")
    assert result.exit_code == 2 and "no archive.yaml between" in one_line_error(result)


def test_import_md_cli(tmp_path, monkeypatch):
    (tmp_path / "archive.yaml").write_text("version: 1\nexperiments:\n")
    (tmp_path / "grug-archive.md").write_text(
        "## Experiments\n\n### kept\n- Path: `x/kept.py`\n- Status: active\n- Purpose: Kept.\n"
        "- Introduced: TBD\n\n"
        "### dropped\n- Path: x/d.py\n- Purpose: No status.\n"
    )
    monkeypatch.chdir(tmp_path)
    dry = run_cli("archive", "import-md", "grug-archive.md", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.splitlines() == [
        "would import kept",
        "would import 1 experiment(s)",
    ]
    assert (tmp_path / "archive.yaml").read_text() == "version: 1\nexperiments:\n"
    done = run_cli("archive", "import-md", "grug-archive.md")
    assert done.exit_code == 0 and done.stdout.splitlines()[-1] == "imported 1 experiment(s)"
    assert done.stderr.splitlines() == [
        "note: grug-archive.md:9: '### dropped' not imported: no `- Status:` line; fix it and import again"
    ]
    again = run_cli("archive", "import-md", "grug-archive.md")
    assert again.exit_code == 2 and "kept already in archive.yaml" in one_line_error(again)


@pytest.mark.parametrize("command", ["status", "show", "set", "resolve", "import-md"])
def test_help_has_an_example(command):
    result = run_cli("archive", command, "--help")
    assert result.exit_code == 0 and f"Example: grugctl archive {command}" in result.stdout


def test_repository_archive_is_valid():
    loaded = archive.load_archive(REPO_ROOT / "archive.yaml")
    assert loaded.starter == "grugformer-starter"
    assert loaded.experiments["grugformer-starter"].path == (
        "experiments/speedrun/grugformer_starter/grugformer_speedrun.py"
    )


def test_archive_commands_never_import_jax(repo_with_archive, tmp_path):
    (tmp_path / "a.md").write_text("### z\n- Path: z.py\n- Status: active\n- Purpose: Z.\n")
    commands = [["status"], ["status", "--json"], ["show", "a"], ["set", "b", "--notes", "n"], ["resolve"],
                ["import-md", "a.md"]]  # fmt: skip
    # This archive has no results, so status judges nothing; judging loads scipy.special (and numpy),
    # never scipy.stats (tests/test_compare.py).
    _, modules = run_commands(tmp_path, [["archive", *args] for args in commands])
    assert loaded_from(modules, "jax", "jaxlib", "optax", "numpy") == []
