"""One way for tests to get a real git repository shaped like this one: the core, the starter, the core
tests, README, .gitignore and pyproject from this checkout, and archive.yaml from tests/fixtures/ (the
starter alone, no results), committed once by a test identity.

Only the project's code is copied: the user's own experiments, run records, archive rows and scratch
files never reach a test repository, so whatever a clone has run or recorded, the tests see the same
starting point (test_repo_copy.py holds this to the newcomer's sequence)."""

import shutil
from pathlib import Path

import git

REPO = Path(__file__).resolve().parents[1]
FIXTURE_ARCHIVE = REPO / "tests" / "fixtures" / "archive.yaml"
STARTER_DIR = "experiments/speedrun/grugformer_starter"


def commit_all(root: Path, message: str) -> str:
    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.git.commit("-q", "--allow-empty", "-m", message)
    return repo.head.commit.hexsha


def copy_project(source: Path, root: Path) -> None:
    """The project's code from `source` into `root`, and the fixture archive; nothing a user made."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results*.json", ".grugctl_cache")
    shutil.copytree(source / "grug_core", root / "grug_core", ignore=ignore)
    shutil.copytree(source / STARTER_DIR, root / STARTER_DIR, ignore=ignore)
    for name in ("pyproject.toml", "README.md", ".gitignore"):
        shutil.copy2(source / name, root / name)
    shutil.copy2(FIXTURE_ARCHIVE, root / "archive.yaml")
    (root / "tests").mkdir()
    for test in sorted(source.glob("tests/test_grugformer_*.py")):
        shutil.copy2(test, root / "tests" / test.name)
    shutil.copytree(source / "tests" / "multidevice", root / "tests" / "multidevice", ignore=ignore)


def make_repo(tmp_path: Path, source: Path = REPO) -> Path:
    root = tmp_path / "repo"
    copy_project(source, root)
    repo = git.Repo.init(root)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.com")
        config.set_value("commit", "gpgsign", "false")
    commit_all(root, "initial")
    return root
