"""Git provenance for archive entries: HEAD, dirty state, which commits added or last held a path.

Each question is one `git` process however many paths it asks about (log/cat-file over all of them),
because `archive status` and `resolve` must stay fast on a 1,000-entry archive. SHAs returned are full
40-character hex; callers abbreviate. Paths may be absolute or relative to the repository's top level.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from grugctl.errors import GrugError

# Keeps each command line far below the kernel's argument limit on large archives.
PATHS_PER_CALL = 400


def blob_id(data: bytes) -> str:
    """Git's id for these bytes as a blob: equal ids mean equal content, committed or not."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def open_repo(root: Path):
    """The git.Repo containing `root`, or a GrugError saying how to make one."""
    import git  # GitPython costs ~0.1 s to import; only commands that need git pay it.

    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GrugError(
            f"{root} is not inside a git repository; run `git init` and commit there, "
            "or run grugctl from inside the repository"
        ) from None
    except git.GitCommandNotFound:
        raise GrugError("git is not installed or not on PATH; install git and try again") from None


def toplevel(root: Path) -> Path | None:
    """The repository's top-level directory, or None; one `git` process and no GitPython import, which
    keeps `archive status` fast (resolve_shas accepts this path in place of a repo)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True
        )
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def _top(repo) -> str:
    return str(repo) if isinstance(repo, (str, Path)) else repo.working_tree_dir


def _run(repo, args: list[str], stdin: str | None = None) -> str:
    """stdout of `git <args>` in the repo's top level; quotePath off so odd file names come back verbatim."""
    cmd = ["git", "-c", "core.quotePath=off", *args]
    try:
        done = subprocess.run(cmd, cwd=_top(repo), input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise GrugError("git is not installed or not on PATH; install git and try again") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise GrugError(f"`git {' '.join(args[:2])}` failed in {_top(repo)}: {last}")
    return done.stdout


def _rel(repo, path: str | Path) -> str:
    """Path relative to the repository's top level, with forward slashes (git's pathspec form)."""
    top = os.path.realpath(_top(repo))
    full = os.path.realpath(path) if os.path.isabs(path) else os.path.join(top, path)
    return Path(os.path.relpath(full, top)).as_posix()


def has_commits(repo) -> bool:
    return repo.head.is_valid()


def head_sha(repo) -> str:
    """Full SHA of HEAD; a repository without commits is an error (nothing to attribute to yet)."""
    if not has_commits(repo):
        raise GrugError(f"the repository at {repo.working_tree_dir} has no commits yet; make a first commit")
    return repo.head.commit.hexsha


def is_dirty(repo, paths: Iterable[str | Path] | None = None) -> bool:
    """True if tracked changes or untracked files exist (limited to `paths` when given)."""
    spec = [_rel(repo, p) for p in paths] if paths is not None else []
    if paths is not None and not spec:
        return False
    return bool(_run(repo, ["status", "--porcelain", "--untracked-files=all", "--", *spec]).strip())


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), PATHS_PER_CALL):
        yield items[start : start + PATHS_PER_CALL]


def _log_records(repo, args: list[str], paths: list[str]) -> Iterable[tuple[list[str], list[str]]]:
    """(header fields, changed-file lines) per commit, newest first; renames count as delete + add."""
    for chunk in _chunks(paths):
        out = _run(repo, ["log", "--no-renames", "--format=%x00%H %P", *args, "--", *chunk])
        for record in out.split("\0")[1:]:
            header, _, body = record.partition("\n")
            yield header.split(), [line for line in body.splitlines() if line.strip()]


def _owner(name: str, wanted: set[str]) -> str | None:
    """The requested path that `name` is, or lies under (an entry may name a folder)."""
    parts = name.split("/")
    for end in range(len(parts), 0, -1):
        if "/".join(parts[:end]) in wanted:
            return "/".join(parts[:end])
    return None


def first_commits_with(repo, paths: Iterable[str | Path]) -> dict[str, str | None]:
    """For each path, the oldest commit that added it (None if never committed)."""
    rel = {str(p): _rel(repo, p) for p in paths}
    wanted = set(rel.values())
    found: dict[str | None, str] = {}
    if rel and has_commits(repo):
        for header, files in _log_records(repo, ["--diff-filter=A", "--name-only"], sorted(wanted)):
            for name in files:
                found[_owner(name, wanted)] = header[0]  # newest first: the last written is the oldest add
    return {p: found.get(r) for p, r in rel.items()}


def first_commit_with(repo, path: str | Path) -> str | None:
    return first_commits_with(repo, [path])[str(path)]


def _present_at_head(repo, wanted: set[str]) -> set[str | None]:
    present: set[str | None] = set()
    for chunk in _chunks(sorted(wanted)):
        names = _run(repo, ["ls-tree", "-r", "--name-only", "HEAD", "--", *chunk]).splitlines()
        present.update(_owner(name, wanted) for name in names)
    return present


def last_commits_with(repo, paths: Iterable[str | Path]) -> dict[str, str | None]:
    """For each path, the newest commit holding it: HEAD while it exists, else the parent of its deletion."""
    rel = {str(p): _rel(repo, p) for p in paths}
    if not rel or not has_commits(repo):
        return dict.fromkeys(rel)
    wanted = set(rel.values())
    found = dict.fromkeys(_present_at_head(repo, wanted), repo.head.commit.hexsha)
    for header, lines in _log_records(repo, ["--name-status"], sorted(wanted)):
        for line in lines:
            change, _, name = line.partition("\t")
            name = _owner(name, wanted)
            if name in found:
                continue
            # A delete's parent still holds the file; merges (no parent diff shown) never land here.
            found[name] = header[1] if change.startswith("D") and len(header) > 1 else header[0]
    return {p: found.get(r) for p, r in rel.items()}


def last_commit_with(repo, path: str | Path) -> str | None:
    return last_commits_with(repo, [path])[str(path)]


def resolve_shas(repo, revs: Iterable[str]) -> dict[str, str | None]:
    """Full commit SHA for each rev (short SHA, branch, HEAD), None when git does not know it as a commit."""
    revs = list(dict.fromkeys(revs))
    if not revs:
        return {}
    out = _run(repo, ["cat-file", "--batch-check=%(objectname)"], "".join(f"{r}^{{commit}}\n" for r in revs))
    answers = out.splitlines()
    return {r: (a if len(a) == 40 and " " not in a else None) for r, a in zip(revs, answers, strict=True)}


def sha_exists(repo, sha: str) -> bool:
    return resolve_shas(repo, [sha])[sha] is not None


def file_at(repo, sha: str, path: str | Path) -> bytes:
    """The bytes of `path` as committed in `sha`."""
    rel = _rel(repo, path)
    done = subprocess.run(["git", "cat-file", "blob", f"{sha}:{rel}"], cwd=_top(repo), capture_output=True)
    if done.returncode != 0:
        raise GrugError(f"{rel} does not exist at commit {sha[:12]}; check the path and the SHA")
    return done.stdout
