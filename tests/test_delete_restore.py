"""grugctl delete and restore in real temporary git repositories built from a copy of this repository
(see test_promote.make_repo): delete then restore gives back identical bytes, under the same id or a new
one, and every refusal writes nothing. No JAX is imported or run."""

from __future__ import annotations

import os

import git
import pytest
from test_diff import _invoke, experiment_file, surface_edit
from test_promote import STARTER_ID, commit_all, entry, git_state, make_repo, snapshot

from grugctl import archive
from grugctl.promotion import lifecycle

IDEA = "wide-mlp"


@pytest.fixture()
def repo(tmp_path):
    return make_repo(tmp_path)


def experiment(root, idea: str = IDEA, *extra: str):
    """new → edit mlp → an extra file beside it → commit; returns the file."""
    result = _invoke(root, ["new", idea, "--bucket", "mlp", "--purpose", "Try a wider MLP.", *extra])
    assert result.exit_code == 0, result.output
    path = experiment_file(root, idea)
    surface_edit(path, "mlp")
    (path.parent / "NOTES.md").write_text("Measured on 2 cores.\n")
    os.chmod(path, 0o755)  # the mode comes back too
    commit_all(root, f"add {idea}")
    return path


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_delete_then_restore_gives_identical_bytes(repo):
    path = experiment(repo)
    before, mode = folder_bytes(path.parent), path.stat().st_mode
    head = git.Repo(repo).head.commit.hexsha

    result = _invoke(repo, ["delete", IDEA, "--yes"])
    assert result.exit_code == 0, result.output
    assert not path.parent.exists()
    assert "remove experiments/speedrun/grugformer_wide_mlp (2 file(s), git rm)" in result.stdout
    gone = entry(repo, IDEA)
    assert (gone.status, gone.last_known_good, gone.superseded_by) == ("deleted", head[:12], None)
    status = git.Repo(repo).git.status("--porcelain")
    assert "D  experiments/speedrun/grugformer_wide_mlp/grugformer_wide_mlp.py" in status  # staged: git rm
    assert _invoke(repo, ["archive", "status"]).stderr.count("warning") == 0
    commit_all(repo, "delete it")

    result = _invoke(repo, ["restore", IDEA])
    assert result.exit_code == 0, result.output
    assert folder_bytes(path.parent) == before and path.stat().st_mode == mode
    back = entry(repo, IDEA)
    assert (back.status, back.superseded_by, back.last_known_good) == ("active", None, head[:12])
    assert _invoke(repo, ["diff", IDEA, "--exit-code"]).exit_code == 1  # its mlp change came back too


def test_restore_before_committing_the_delete_leaves_only_archive_yaml_changed(repo):
    path = experiment(repo)
    before = folder_bytes(path.parent)
    assert _invoke(repo, ["delete", IDEA, "--yes", "--superseded-by", "core@pending"]).exit_code == 0
    assert entry(repo, IDEA).superseded_by == archive.CORE_PENDING
    assert _invoke(repo, ["restore", IDEA]).exit_code == 0
    assert folder_bytes(path.parent) == before
    assert git.Repo(repo).git.status("--porcelain") == " M archive.yaml"  # index and tree as before
    assert entry(repo, IDEA).superseded_by is None


def test_restore_as_a_new_id_renames_by_the_scaffold_rule(repo):
    path = experiment(repo)
    before = folder_bytes(path.parent)
    assert _invoke(repo, ["delete", IDEA, "--yes"]).exit_code == 0
    sha = commit_all(repo, "delete it")
    old_sha = entry(repo, IDEA).last_known_good

    result = _invoke(repo, ["restore", IDEA, "--as", "wide-mlp-again"])
    assert result.exit_code == 0, result.output
    new = repo / "experiments/speedrun/grugformer_wide_mlp_again/grugformer_wide_mlp_again.py"
    assert new.read_bytes() == before[path.name]  # byte-identical, header included
    assert (new.parent / "NOTES.md").read_bytes() == before["NOTES.md"]
    assert not path.parent.exists()
    again = entry(repo, "wide-mlp-again")
    assert (again.path, again.status, again.origin, again.base, again.bucket) == (
        new.relative_to(repo).as_posix(), "active", IDEA, old_sha, "mlp",
    )  # fmt: skip
    assert entry(repo, IDEA).status == "deleted"
    assert git.Repo(repo).head.commit.hexsha == sha
    # against its origin as it was at its base, the restored copy changed nothing
    assert _invoke(repo, ["diff", "wide-mlp-again", "--against", "origin", "--exit-code"]).exit_code == 0


def test_dry_runs_write_nothing(repo):
    experiment(repo)
    files, state = snapshot(repo), git_state(repo)
    result = _invoke(repo, ["delete", IDEA, "--dry-run"])
    assert result.exit_code == 0 and "would remove" in result.stdout
    assert snapshot(repo) == files and git_state(repo) == state

    assert _invoke(repo, ["delete", IDEA, "--yes"]).exit_code == 0
    files, state = snapshot(repo), git_state(repo)
    result = _invoke(repo, ["restore", IDEA, "--dry-run"])
    assert result.exit_code == 0 and "would write" in result.stdout
    assert snapshot(repo) == files and git_state(repo) == state


def test_delete_warns_about_experiments_that_name_it_as_origin(repo):
    experiment(repo)
    assert _invoke(repo, ["new", "child", "--from", IDEA, "--purpose", "Build on it."]).exit_code == 0
    commit_all(repo, "child")
    result = _invoke(repo, ["delete", IDEA, "--yes"])
    assert result.exit_code == 0, result.output
    assert "warning: child names wide-mlp as its origin" in result.stderr


def test_a_failed_archive_edit_puts_the_files_back(repo, monkeypatch):
    path = experiment(repo)
    files, state = snapshot(repo), git_state(repo)

    def locked(*args, **kwargs):
        if kwargs.get("dry_run"):
            return []
        raise archive.GrugError("another grugctl holds the lock on archive.yaml; retry later")

    monkeypatch.setattr(archive, "set_entry", locked)
    result = _invoke(repo, ["delete", IDEA, "--yes"])
    assert result.exit_code == 2 and "lock" in result.stderr
    assert path.is_file() and snapshot(repo) == files and git_state(repo) == state


@pytest.mark.parametrize(
    ("args", "setup", "message"),
    [
        (["delete", "nope"], None, "no experiment 'nope'"),
        (["delete", STARTER_ID], None, "is the starter"),
        (["delete", IDEA], "deleted", "is already deleted"),
        (["delete", IDEA], "dirty", "uncommitted changes"),
        (["delete", "fresh"], "uncommitted", "was never committed"),
        (["delete", IDEA, "--superseded-by", "nope"], None, "--superseded-by 'nope'"),
        (["restore", "nope"], None, "no experiment 'nope'"),
        (["restore", IDEA], None, "is active, so there is nothing to restore"),
        (["restore", IDEA, "--as", "Bad Name"], "deleted", "try 'bad-name'"),
        (["restore", IDEA, "--as", STARTER_ID], "deleted", "already exists"),
        (["restore", IDEA], "in-the-way", "would overwrite"),
        (["restore", IDEA], "bad-sha", "is not a commit in this repository"),
    ],
)
def test_refusals_are_one_sentence_exit_2_and_write_nothing(repo, args, setup, message):
    path = experiment(repo)
    if setup in ("deleted", "in-the-way", "bad-sha"):
        assert _invoke(repo, ["delete", IDEA, "--yes"]).exit_code == 0
        commit_all(repo, "delete it")
    if setup == "dirty":
        path.write_text(path.read_text() + "\n# unsaved idea\n")
    elif setup == "uncommitted":
        assert _invoke(repo, ["new", "fresh", "--purpose", "Not committed yet."]).exit_code == 0
    elif setup == "in-the-way":
        path.parent.mkdir()
        path.write_text("someone else's file\n")
    elif setup == "bad-sha":
        lifecycle_entry = archive.load_archive(repo / "archive.yaml")
        assert lifecycle_entry.experiments[IDEA].status == "deleted"
        archive.set_fields(repo / "archive.yaml", IDEA, last_known_good="0123456789ab")
    files, state = snapshot(repo), git_state(repo)
    result = _invoke(repo, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert snapshot(repo) == files and git_state(repo) == state


def test_removal_target_never_takes_a_shared_folder(repo):
    loaded = archive.load_archive(repo / "archive.yaml")
    entry_ = loaded.experiments[STARTER_ID]
    assert lifecycle.removal_target(loaded, entry_) == "experiments/speedrun/grugformer_starter"
    flat = archive.Entry(id="flat", path="experiments/speedrun/flat.py", status="active", purpose="x")
    assert lifecycle.removal_target(loaded, flat) == "experiments/speedrun/flat.py"
    shared = archive.Entry(
        id="shared", path="experiments/speedrun/grugformer_starter/other.py", status="active", purpose="x"
    )
    assert lifecycle.removal_target(loaded, shared) == "experiments/speedrun/grugformer_starter/other.py"


def test_restore_reactivates_a_superseded_experiment_whose_file_is_still_there(repo):
    path = experiment(repo)
    before = folder_bytes(path.parent)
    archive.set_fields(repo / "archive.yaml", IDEA, status="superseded", superseded_by="core@pending")
    commit_all(repo, "superseded")
    result = _invoke(repo, ["restore", IDEA])
    assert result.exit_code == 0, result.output
    assert folder_bytes(path.parent) == before
    assert (entry(repo, IDEA).status, entry(repo, IDEA).superseded_by) == ("active", None)
    assert git.Repo(repo).git.status("--porcelain") == " M archive.yaml"
