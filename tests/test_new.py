"""grugctl new: scaffolding, registration, and refusals that write nothing, in temporary git repositories
built from a copy of this repository (see repo_copy.make_repo). No JAX is imported or run."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
from test_diff import STARTER_ID, _invoke, commit_all, experiment_file, make_repo, starter_file, surface_edit

from grugctl import archive, codediff
from grugctl.experiments import scaffold


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file outside .git: a refusal must leave all of them, and no new ones."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts and not p.name.startswith(".archive")
    }


def body(source: str) -> str:
    """The source without its module docstring."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    return "".join(lines[: tree.body[0].lineno - 1] + lines[tree.body[0].end_lineno :])


def test_new_copies_the_starter_rewrites_the_header_and_registers(repo):
    import git as gitpython

    head = gitpython.Repo(repo).head.commit.hexsha
    result = _invoke(
        repo, ["new", "rope-scaling", "--bucket", "mlp", "--purpose", 'Try "quotes" \\ and more.']
    )
    assert result.exit_code == 0, result.output
    path = experiment_file(repo, "rope-scaling")
    assert path.relative_to(repo).as_posix() == (
        "experiments/speedrun/grugformer_rope_scaling/grugformer_rope_scaling.py"
    )
    source, original = path.read_text(), starter_file(repo).read_text()
    assert body(source) == body(original)  # everything but the header is a byte-for-byte copy
    doc = ast.get_docstring(ast.parse(source))
    assert doc.startswith('rope-scaling: Try "quotes" \\ and more.')
    for expected in (
        f"`{STARTER_ID}` at commit {head[:12]}",
        "Bucket: mlp. Edit surface: `mlp`.",
        "grugctl run rope-scaling",
        f"python {path.relative_to(repo).as_posix()}",
        "grugctl diff rope-scaling",
        "--against origin",
    ):
        assert expected in doc

    entry = archive.load_archive(repo / "archive.yaml").experiments["rope-scaling"]
    assert (entry.path, entry.status, entry.bucket, entry.origin, entry.base) == (
        path.relative_to(repo).as_posix(),
        "active",
        "mlp",
        STARTER_ID,
        head[:12],
    )
    assert entry.purpose == 'Try "quotes" \\ and more.' and entry.introduced is None

    out = result.stdout
    assert "created experiments/speedrun/grugformer_rope_scaling/grugformer_rope_scaling.py" in out
    assert "edit  mlp in" in out and "grugctl run rope-scaling" in out and "grugctl diff rope-scaling" in out
    assert _invoke(repo, ["diff", "rope-scaling", "--exit-code"]).exit_code == 0


def test_new_without_bucket_lists_every_surface_and_from_copies_another_experiment(repo):
    result = _invoke(repo, ["new", "first", "--purpose", "First idea."])
    assert result.exit_code == 0, result.output
    assert "mlp: mlp" in result.stdout and "block: " in result.stdout
    surface_edit(experiment_file(repo, "first"), "mlp")
    commit_all(repo, "first")

    result = _invoke(
        repo, ["new", "second", "--from", "first", "--bucket", "block", "--purpose", "Build on it."]
    )
    assert result.exit_code == 0, result.output
    second = experiment_file(repo, "second").read_text()
    assert body(second) == body(experiment_file(repo, "first").read_text())
    assert archive.load_archive(repo / "archive.yaml").experiments["second"].origin == "first"
    assert "copied from `first`" in ast.get_docstring(ast.parse(second))
    # against its origin at its base commit it changed nothing; against the core it carries the mlp edit
    assert _invoke(repo, ["diff", "second", "--against", "origin", "--exit-code"]).exit_code == 0
    assert _invoke(repo, ["diff", "second", "--exit-code"]).exit_code == 1


def test_dry_run_writes_nothing(repo):
    before = snapshot(repo)
    result = _invoke(repo, ["new", "rope-scaling", "--purpose", "Try it.", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        "would create experiments/speedrun/grugformer_rope_scaling/grugformer_rope_scaling.py"
        in result.stdout
    )
    assert '    """rope-scaling: Try it.' in result.stdout  # the header it would write
    result = _invoke(repo, ["new", "rope-scaling", "--dry-run"])  # the purpose can wait for the real run
    assert result.exit_code == 0 and "purpose: (give it with --purpose)" in result.stdout
    assert snapshot(repo) == before
    assert not experiment_file(repo, "rope-scaling").parent.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["new", STARTER_ID, "--purpose", "x"], "already exists"),
        (["new", "Rope Scaling", "--purpose", "x"], "try 'rope-scaling'"),
        (["new", "rope/scaling", "--purpose", "x"], "try 'rope-scaling'"),
        (["new", "../escape", "--purpose", "x"], "try 'escape'"),
        (["new", "--purpose", "x", "--", "-leading"], "try 'leading'"),
        (["new", "RoPE", "--purpose", "x"], "try 'rope'"),
        (["new", "rope_scaling", "--purpose", "x"], "try 'rope-scaling'"),
        (["new", "ok", "--from", "nope", "--purpose", "x"], "no experiment called 'nope'"),
        (["new", "ok", "--bucket", "embedding", "--purpose", "x"], "unknown bucket 'embedding'"),
        (["new", "ok"], "--purpose"),
        (["new", "ok", "--purpose", "   "], "--purpose"),
    ],
)
def test_refusals_are_one_sentence_exit_2_and_write_nothing(repo, args, message):
    before = snapshot(repo)
    result = _invoke(repo, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert snapshot(repo) == before


def test_refuses_existing_path_and_deleted_from_and_outside_a_repo(repo, tmp_path):
    stray = experiment_file(repo, "taken")
    stray.parent.mkdir(parents=True)
    commit_all(repo, "x")
    before = snapshot(repo)
    result = _invoke(repo, ["new", "taken", "--purpose", "x"])
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert snapshot(repo) == before

    assert _invoke(repo, ["new", "gone", "--purpose", "x"]).exit_code == 0
    experiment_file(repo, "gone").unlink()
    experiment_file(repo, "gone").parent.rmdir()
    archive.set_fields(repo / "archive.yaml", "gone", status="deleted")
    before = snapshot(repo)
    result = _invoke(repo, ["new", "again", "--from", "gone", "--purpose", "x"])
    assert result.exit_code == 2 and "is deleted" in result.stderr
    assert snapshot(repo) == before

    outside = tmp_path / "elsewhere"
    (outside / ".git").mkdir(parents=True)
    result = _invoke(outside, ["new", "idea", "--purpose", "x"])
    assert result.exit_code == 2 and "archive.yaml" in result.stderr
    assert [p.name for p in outside.iterdir()] == [".git"]


def test_failed_registration_removes_the_new_file(repo, monkeypatch):
    before = snapshot(repo)

    def broken(*args, **kwargs):
        raise archive.GrugError("archive.yaml is locked; retry later")

    monkeypatch.setattr(archive, "add_entry", broken)
    result = _invoke(repo, ["new", "rope-scaling", "--purpose", "Try it."])
    assert result.exit_code == 2 and "locked" in result.stderr
    assert snapshot(repo) == before
    assert not experiment_file(repo, "rope-scaling").parent.exists()


def test_header_lines_fit_ruffs_limit_even_with_a_long_name(repo):
    idea = "a-rather-long-experiment-name-about-rotary-scaling-at-long-context"[: scaffold.MAX_NAME]
    idea = idea.rstrip("-")
    result = _invoke(repo, ["new", idea, "--bucket", "attention", "--purpose", "Words " * 40])
    assert result.exit_code == 0, result.output
    source = experiment_file(repo, idea).read_text()
    docstring = ast.parse(source).body[0]
    lines = source.splitlines()[docstring.lineno - 1 : docstring.end_lineno]
    # ruff's E501 (limit 110) lets a line through only when it is one word
    assert all(len(line) <= 110 or len(line.split()) == 1 for line in lines), lines


def test_names_and_headers():
    assert scaffold.normalise_name("  Rope Scaling/v2..x ") == "rope-scaling-v2-x"
    assert scaffold.check_name("rope-scaling-2") == "rope-scaling-2"
    with pytest.raises(archive.GrugError, match="try 'a-b'"):
        scaffold.check_name("a--b")
    assert (
        scaffold.experiment_path("experiments/speedrun", "a-b")
        == "experiments/speedrun/grugformer_a_b/grugformer_a_b.py"
    )

    doc = '"""new"""\n'
    assert scaffold.rewrite_header("# axes\n'''old\ndoc'''\nx = 1\n", doc) == '# axes\n"""new"""\nx = 1\n'
    assert (
        scaffold.rewrite_header("#!/usr/bin/env python\nx = 1\n", doc)
        == '#!/usr/bin/env python\n"""new"""\nx = 1\n'
    )
    text = scaffold.header("i", "o", "0" * 40, None, 'ends with """ and \\', "p.py", {})
    assert ast.get_docstring(ast.parse(text + "x = 1\n")).startswith('i: ends with """ and \\')
    assert codediff.BUCKETS is archive.BUCKETS  # one bucket list
