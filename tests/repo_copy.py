"""One way for tests to get a real git repository that is a copy of this one: core, experiments,
archive and its run records, core tests, README, .gitignore and pyproject, committed once by a test
identity."""

import shutil
from pathlib import Path

import git

from grugctl import archive

REPO = Path(__file__).resolve().parents[1]
PROVENANCE = ("base", "introduced", "last_known_good")


def commit_all(root: Path, message: str) -> str:
    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.git.commit("-q", "--allow-empty", "-m", message)
    return repo.head.commit.hexsha


def make_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "results*.json", ".grugctl_cache")
    for name in ("grug_core", "experiments"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    # The tracked run records travel with a clone, as archive.yaml's rows expect; scratch runs do not.
    shutil.copytree(REPO / "runs", root / "runs", ignore=shutil.ignore_patterns(".scratch"))
    for name in ("archive.yaml", "pyproject.toml", "README.md", ".gitignore"):
        shutil.copy2(REPO / name, root / name)
    (root / "tests").mkdir()
    for test in sorted(REPO.glob("tests/test_grugformer_*.py")):
        shutil.copy2(test, root / "tests" / test.name)
    shutil.copytree(REPO / "tests" / "multidevice", root / "tests" / "multidevice", ignore=ignore)
    # This repository's SHAs mean nothing in the copy's new history: drop them, as a fresh adopter would.
    for entry_id, entry in archive.load_archive(root / "archive.yaml").experiments.items():
        stale = {name: None for name in PROVENANCE if getattr(entry, name) is not None}
        if stale:
            archive.set_fields(root / "archive.yaml", entry_id, **stale)
    repo = git.Repo.init(root)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.com")
        config.set_value("commit", "gpgsign", "false")
    commit_all(root, "initial")
    return root
