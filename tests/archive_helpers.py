"""Real temporary git repositories and archive files for the archive tests (no mocks of git or files)."""

from __future__ import annotations

from pathlib import Path

import git
from typer.testing import CliRunner

from grugctl.cli import app


def init_repo(root: Path) -> git.Repo:
    repo = git.Repo.init(root)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Archive Test")
        config.set_value("user", "email", "archive-test@example.com")
        config.set_value("commit", "gpgsign", "false")
    return repo


def commit(repo: git.Repo, message: str, write: dict[str, str] | None = None, delete: tuple = ()) -> str:
    """Write/delete files and commit them with the git CLI; returns the full SHA."""
    root = Path(repo.working_tree_dir)
    for rel, content in (write or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
        repo.git.add(rel)
    for rel in delete:
        repo.git.rm("-q", rel)
    repo.git.commit("-q", "--allow-empty", "-m", message)
    return repo.head.commit.hexsha


def run_cli(*args: str):
    """Invoke grugctl in-process; the result has .exit_code, .stdout and .stderr separately."""
    return CliRunner().invoke(app, list(args))


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0][len("error: ") :]
