"""Every command that writes goes through here: one repository lock, a journal, atomic replacement.

A transaction is git's model for a command that changes several files: take the repository's one lock
file (held for the whole command; readers never take it), write a journal *before* the first file
changes (each file to be touched with its original bytes and mode, or its absence; folders it creates;
the git state it moves), replace each file atomically (temp file in the same folder, fsync, rename,
fsync the folder), and delete the journal only when everything is done. An exception or a signal rolls
every touched file back byte for byte; a journal left by a process that died (SIGKILL, power loss) is
found by every command, and `grugctl recover` rolls it back the same way.

The lock and the journal live in the git directory (`.git/grugctl/`, or the worktree's own git
directory): git never tracks it, so neither can be committed, and a `git clean` cannot remove a journal
that recovery needs. Outside a git repository they live beside archive.yaml as `.grugctl.lock` and
`.grugctl.journal`.

The lock is an flock(2) on that file, so the kernel releases it when its holder dies; whether a journal
is stale is exactly whether the lock is free. Also the shared file and git primitives every writer uses
(snapshot, write_bytes, restore_files, git, ...). Never prints, never imports JAX.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import functools
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grugctl.errors import GrugError

LOCK_NAME = "lock"
JOURNAL_NAME = "journal.json"
# How long a writer waits for the lock. A promotion holds it through its gate (minutes with every core
# test), so CI that runs several at once may raise it with $GRUGCTL_LOCK_TIMEOUT_S.
LOCK_TIMEOUT_S = float(os.environ.get("GRUGCTL_LOCK_TIMEOUT_S") or 60)
JOURNAL_VERSION = 1

Saved = dict[str, tuple[bytes, int] | None]  # repo-relative path -> (bytes, mode), None: did not exist


@dataclass(frozen=True)
class Transaction:
    """One command's writes. The containers fill as the command goes; every change reaches the journal
    on disk before the file (or git) changes."""

    root: Path  # paths are relative to this folder (archive.yaml's)
    state: Path  # the folder holding the lock and the journal
    what: str  # the command, for messages and the journal
    started: str  # UTC, ISO 8601
    saved: Saved = field(default_factory=dict)
    made: list[str] = field(default_factory=list)  # folders this transaction created
    git: dict = field(default_factory=dict)  # head (ref to go back to), branch (created), staged (paths)


@dataclass(frozen=True)
class RecoverReport:
    what: str  # the interrupted command
    pid: int
    started: str
    restored: tuple[str, ...]  # files put back to their original bytes
    removed: tuple[str, ...]  # files that did not exist before and were removed
    git: tuple[str, ...]  # git steps taken (or to take)
    failed: tuple[str, ...]  # what could not be undone


# One entry per state folder this process holds: a writer called inside another (an archive edit inside
# delete) joins the open transaction instead of taking the lock twice (flock would deadlock on itself).
_open: dict[str, Transaction] = {}


# ---------------------------------------------------------------- messages for OS errors


OS_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and run it again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and run it again",
    errno.EACCES: "permission denied; check the file's and its folder's permissions",
    errno.EPERM: "operation not permitted; check the file's and its folder's permissions",
    errno.EROFS: "the file system is read-only; run grugctl where the repository can be written",
    errno.EISDIR: "it is a folder, not a file; pass the file inside it",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
}


def os_error(error: OSError, doing: str, path: Path | str | None = None) -> GrugError:
    """One sentence for an OSError: what failed, on which path, what to do; never the file's content."""
    where = path if path is not None else (error.filename or "a file")
    hint = OS_HINTS.get(error.errno, f"{error.strerror or error}; check the path and try again")
    return GrugError(f"cannot {doing} {where}: {hint}.")


# ---------------------------------------------------------------- where the lock and journal live


def _git_dir(start: Path) -> Path | None:
    """The git directory of the worktree holding `start` (`.git` itself, or what a `.git` file points
    to), found by walking up: no git process, so a reader pays a few stat calls."""
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                text = dot.read_text(encoding="utf-8").strip()
                if text.startswith("gitdir:"):
                    return (folder / text[len("gitdir:") :].strip()).resolve()
            return None
    return None


@functools.lru_cache(maxsize=64)
def _top(start: str) -> str:
    real = Path(os.path.realpath(start))
    for folder in (real, *real.parents):
        if (folder / ".git").exists():
            return str(folder)
    return str(real)


def repo_top(start: Path) -> Path:
    """The repository's top folder (holding `.git`), or `start` outside git: the boundary no path may
    leave. Cached: `archive status` asks once per entry."""
    return Path(_top(os.path.abspath(start)))


def state_dir(root: Path) -> Path:
    git_dir = _git_dir(Path(os.path.abspath(root)))
    return git_dir / "grugctl" if git_dir is not None else Path(os.path.abspath(root))


def _in_git(state: Path) -> bool:
    return state.name == "grugctl" and (state.parent / "HEAD").exists()


def _lock_path(state: Path) -> Path:
    return state / (LOCK_NAME if _in_git(state) else ".grugctl.lock")


def _journal_path(state: Path) -> Path:
    return state / (JOURNAL_NAME if _in_git(state) else ".grugctl.journal")


# ---------------------------------------------------------------- the repository boundary


def _through_link(root: str, rel: str) -> bool:
    """Whether any step from root down to root/rel is a symlink (or `..`). One lstat per step costs
    `archive status` about twice its per-entry exists() check on 1,000 entries; realpath cost ~10x that."""
    here = root
    for part in rel.replace(os.sep, "/").split("/"):
        if part == "..":
            return True
        if part in ("", "."):
            continue
        here = os.path.join(here, part)
        if os.path.islink(here):
            return True
    return False


def inside(root: Path, rel: str, what: str) -> Path:
    """root/rel, refused when it resolves (symlinks followed) outside the repository holding `root`."""
    path = Path(root) / rel
    if not _through_link(str(root), rel):  # no symlink on the way down: it cannot leave
        return path
    top = _top(os.path.abspath(root))
    real = os.path.realpath(path)
    if real != top and not real.startswith(top.rstrip(os.sep) + os.sep):
        raise GrugError(
            f"{what} {rel} resolves to {real}, outside the repository {top}; "
            "replace the symlink with the file itself."
        )
    return path


# ---------------------------------------------------------------- file primitives


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # a rename is durable only once its folder is synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Temp file beside it, fsync, rename, fsync the folder: a reader or a crash never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def snapshot(root: Path, paths: Iterable[str]) -> Saved:
    saved: Saved = {}
    for rel in paths:
        path = root / rel
        try:
            saved[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode)) if path.is_file() else None
        except OSError as error:
            raise os_error(error, "read", rel) from None
    return saved


def files_under(root: Path, target: str) -> list[str]:
    """Every file under `target` (a folder or one file), repo-relative, bytecode caches left out."""
    path = root / target
    if not path.is_dir():
        return [target] if path.exists() or path.is_symlink() else []
    found = [p for p in sorted(path.rglob("*")) if not p.is_dir() and "__pycache__" not in p.parts]
    return [p.relative_to(root).as_posix() for p in found]


def snapshot_tree(root: Path, target: str) -> Saved:
    return snapshot(root, files_under(root, target))


def restore_files(root: Path, saved: Saved) -> list[str]:
    """Put every saved file back byte for byte (and remove those that did not exist). Returns the paths
    it could not restore; keeps going past a failure so one bad file does not strand the others."""
    failed = []
    for rel, content in saved.items():
        path = root / rel
        try:
            if content is None:
                path.unlink(missing_ok=True)
            elif path.is_symlink() or not path.is_file() or path.read_bytes() != content[0]:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_bytes(path, content[0], content[1])
            elif stat.S_IMODE(path.stat().st_mode) != content[1]:
                os.chmod(path, content[1])
        except OSError:
            failed.append(rel)
    return failed


def prune_empty(root: Path, folder: str, stop: str | None = None) -> None:
    """Remove `folder` (bytecode caches inside count as nothing) and then its parents while they are
    empty, up to but not including `stop` (default: `folder`'s parent)."""
    path, end = root / folder, root / (stop if stop is not None else str(PurePosixPath(folder).parent))
    for cache in sorted(path.rglob("__pycache__"), reverse=True) if path.is_dir() else []:
        shutil.rmtree(cache, ignore_errors=True)
    while path != end and end in path.parents and path.is_dir():
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


# ---------------------------------------------------------------- git primitives


def git(repo, *args: str) -> str:
    """`git <args>` through GitPython; a failure becomes one sentence with git's last line."""
    import git as gitpython

    try:
        return repo.git.execute(["git", *args])
    except gitpython.GitCommandError as error:
        last = (str(error.stderr or "").strip().splitlines() or ["no message"])[-1].strip(" '")
        raise GrugError(f"`git {' '.join(args[:2])}` failed: {last}") from None


def open_repo(root: Path):
    from grugctl import gitinfo

    try:
        return gitinfo.open_repo(root)
    except GrugError:
        raise
    except Exception as error:  # any git failure becomes one sentence
        raise GrugError(f"cannot open the git repository at {root} ({error}).") from None


def tracked(repo, root: Path, target: str) -> bool:
    return bool(git(repo, "ls-files", "--", str(root / target)).strip())


def current_ref(repo) -> str:
    """The branch to go back to, or the commit when HEAD is detached."""
    if repo.head.is_detached:
        return repo.head.commit.hexsha
    return git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()


# ---------------------------------------------------------------- the journal


def _encode(txn: Transaction) -> bytes:
    files = {
        rel: None if content is None else {"mode": content[1], "bytes": base64.b64encode(content[0]).decode()}
        for rel, content in txn.saved.items()
    }
    journal = {
        "version": JOURNAL_VERSION,
        "command": txn.what,
        "argv": sys.argv,
        "pid": os.getpid(),
        "started": txn.started,
        "root": str(txn.root),
        "files": files,
        "made": txn.made,
        "git": txn.git,
    }
    return json.dumps(journal, indent=1).encode("utf-8")


def _save_journal(txn: Transaction) -> None:
    path = _journal_path(txn.state)
    try:
        write_bytes(path, _encode(txn), 0o600)
    except OSError as error:
        raise os_error(error, "write the journal", path) from None


def read_journal(state: Path) -> dict | None:
    path = _journal_path(state)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise os_error(error, "read the journal", path) from None
    try:
        journal = json.loads(data)
        journal["saved"] = {
            rel: None if item is None else (base64.b64decode(item["bytes"]), int(item["mode"]))
            for rel, item in journal["files"].items()
        }
        return journal
    except (ValueError, KeyError, TypeError, AttributeError):
        raise GrugError(
            f"the journal {path} is damaged, so grugctl cannot roll back the command that left it; "
            "check `git status`, restore files from git, then delete that file."
        ) from None


def _lock_free(state: Path) -> bool:
    """Whether no live process holds the lock (try it without waiting, and let go at once)."""
    try:
        fd = os.open(_lock_path(state), os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def interrupted(root: Path) -> dict | None:
    """The journal a dead command left, or None (no journal, or its command is still running)."""
    state = state_dir(root)
    if str(state) in _open or not _journal_path(state).exists():
        return None
    return read_journal(state) if _lock_free(state) else None


def interrupted_sentence(journal: dict) -> str:
    command, pid, files = (
        journal.get("command", "a grugctl command"),
        journal.get("pid", "?"),
        journal["files"],
    )
    return (
        f"`{command}` (pid {pid}) stopped halfway and left {len(files)} file(s) half-changed; "
        "run `grugctl recover` to roll it back"
    )


def refuse_if_interrupted(root: Path) -> None:
    """Writers refuse to start on top of a half-done command (its journal would be overwritten)."""
    journal = interrupted(root)
    if journal is not None:
        raise GrugError(interrupted_sentence(journal) + " first.")


# ---------------------------------------------------------------- the lock


def command_line() -> str:
    words = [Path(sys.argv[0]).name if sys.argv else "grugctl", *sys.argv[1:]]
    text = " ".join(words)
    return text if len(text) <= 120 else text[:117] + "..."


def _acquire(state: Path, what: str, timeout: float) -> int:
    path = _lock_path(state)
    try:
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise os_error(error, "create the repository lock", path) from None
    deadline, wait = time.monotonic() + timeout, 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another grugctl"
                os.close(fd)
                raise GrugError(
                    f"{holder} has held the repository lock for {timeout:.0f} s; retry when it finishes."
                ) from None
            time.sleep(wait)
            wait = min(wait * 2, 0.05)
    with contextlib.suppress(OSError):  # who holds it, for the message another writer gives
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`{what}` (pid {os.getpid()})".encode(), 0)
    return fd


# ---------------------------------------------------------------- the transaction


def _mask_signals():
    """SIGTERM / SIGHUP become KeyboardInterrupt meanwhile (like Ctrl-C), so they roll back too. Only
    the main thread may install handlers; elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    wanted = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    return {s: signal.signal(s, interrupt) for s in wanted}


@contextlib.contextmanager
def _deaf() -> Iterator[None]:
    """No interrupt may stop a rollback halfway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in wanted}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def transaction(
    root: Path, what: str | None = None, timeout: float = LOCK_TIMEOUT_S
) -> Iterator[Transaction]:
    """Hold the repository lock for the block; on an exception or signal, roll every touched file back
    and re-raise. Nested calls (same process, same repository) join the open transaction. `what`
    names the command (default: this process's command line)."""
    root = Path(os.path.abspath(root))
    what = what or command_line()
    state = state_dir(root)
    key = str(state)
    if key in _open:
        yield _open[key]
        return
    fd = _acquire(state, what, timeout)
    txn = Transaction(root, state, what, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    previous = _mask_signals()
    _open[key] = txn
    try:
        journal = read_journal(state)
        if journal is not None:  # we hold the lock, so its writer is dead
            raise GrugError(interrupted_sentence(journal) + " first.")
        try:
            yield txn
        except BaseException:
            failed = rollback(txn.root, txn.saved, txn.made, txn.git)
            if failed:
                raise GrugError(
                    f"`{what}` failed and {', '.join(failed)} could not be put back; "
                    "run `grugctl recover` to try again."
                ) from None
            _drop_journal(state)
            raise
        _drop_journal(state)
    finally:
        del _open[key]
        for s, old in previous.items():
            signal.signal(s, old)
        os.close(fd)  # releases the lock


def _drop_journal(state: Path) -> None:
    path = _journal_path(state)
    if path.exists():
        path.unlink()
        _fsync_dir(state)


def touch(txn: Transaction, paths: Iterable[str]) -> None:
    """Journal the original bytes of every path not yet journaled, before any of them changes."""
    fresh = [rel for rel in dict.fromkeys(paths) if rel not in txn.saved]
    if not fresh:
        return
    for rel in fresh:
        inside(txn.root, rel, "grugctl would write")
    txn.saved.update(snapshot(txn.root, fresh))
    _save_journal(txn)


def make_dirs(txn: Transaction, folder: str) -> None:
    """Create `folder` and missing parents, journaled so a rollback removes them again."""
    path = txn.root / folder
    missing = [p for p in (path, *path.parents) if not p.exists() and txn.root in p.parents]
    if not missing:
        return
    txn.made.extend(p.relative_to(txn.root).as_posix() for p in reversed(missing))
    _save_journal(txn)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(error, "create the folder", folder) from None


def write(txn: Transaction, rel: str, data: bytes, mode: int | None = None) -> None:
    touch(txn, [rel])
    make_dirs(txn, str(PurePosixPath(rel).parent))
    try:
        write_bytes(txn.root / rel, data, mode)
    except OSError as error:
        raise os_error(error, "write", rel) from None


def remove(txn: Transaction, rel: str) -> None:
    touch(txn, [rel])
    try:
        (txn.root / rel).unlink(missing_ok=True)
    except OSError as error:
        raise os_error(error, "remove", rel) from None


def note_git(txn: Transaction, **state) -> None:
    """Journal a git change (head: the ref to go back to; branch: a branch being created; staged: paths
    whose index entries change) before making it."""
    for name, value in state.items():
        if name == "staged":
            txn.git["staged"] = list(dict.fromkeys([*txn.git.get("staged", []), *value]))
        else:
            txn.git[name] = value
    _save_journal(txn)


# ---------------------------------------------------------------- rolling back


def _undo_git(root: Path, state: dict, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """(steps, failures) putting HEAD back on its branch, deleting the branch the command created and
    resetting the index entries it staged to HEAD's. The working tree files are put back afterwards
    from the journal, so a staged-but-uncommitted change keeps its bytes but is no longer staged."""
    steps, failed = [], []
    head, branch, staged = state.get("head"), state.get("branch"), state.get("staged", [])
    if not (head or branch or staged):
        return steps, failed
    if head and branch:
        steps += [f"git checkout {head}", f"git branch -D {branch}"]
    if staged:
        steps.append(f"git reset -- {len(staged)} path(s)")
    if dry_run:
        return steps, failed
    try:
        repo = open_repo(root)
    except GrugError as error:
        return steps, [str(error)]
    if head and branch:
        try:
            if current_ref(repo) != head:
                git(repo, "checkout", "-q", head)
            if git(repo, "branch", "--list", branch).strip():
                git(repo, "branch", "-q", "-D", branch)
        except GrugError as error:
            failed.append(str(error))
    if staged:
        with contextlib.suppress(GrugError):
            git(repo, "reset", "-q", "--", *(str(root / p) for p in staged))
    return steps, failed


def rollback(root: Path, saved: Saved, made: list[str], git_state: dict) -> list[str]:
    """Undo in reverse order (git, then files, then created folders), deaf to interrupts; keeps going
    past failures and returns what it could not undo."""
    with _deaf():
        _, failed = _undo_git(root, git_state)
        failed += restore_files(root, saved)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                prune_empty(root, folder, str(PurePosixPath(folder).parent))
    return failed


def recover(root: Path, dry_run: bool = False) -> RecoverReport | None:
    """Roll back the journal a dead command left (None when there is none). Refuses while its command
    still runs."""
    state = state_dir(root)
    if read_journal(state) is None:
        return None
    if not _lock_free(state):
        raise GrugError("a grugctl command is still running and holds the repository lock; wait for it.")
    with contextlib.ExitStack() as stack:
        if not dry_run:
            fd = _acquire(state, "grugctl recover", LOCK_TIMEOUT_S)
            stack.callback(os.close, fd)
        journal = read_journal(state)
        if journal is None:
            return None
        base = Path(journal.get("root") or root)
        base = base if base.is_dir() else Path(os.path.abspath(root))
        saved = journal["saved"]
        changed = [rel for rel, content in saved.items() if _differs(base, rel, content)]
        restored = tuple(rel for rel in changed if saved[rel] is not None)
        removed = tuple(rel for rel in changed if saved[rel] is None)
        steps, _ = _undo_git(base, journal.get("git", {}), dry_run=True)
        failed: list[str] = []
        if not dry_run:
            failed = rollback(base, saved, journal.get("made", []), journal.get("git", {}))
            if not failed:
                _drop_journal(state)
        return RecoverReport(
            what=journal.get("command", "?"),
            pid=int(journal.get("pid", 0)),
            started=journal.get("started", ""),
            restored=restored,
            removed=removed,
            git=tuple(steps),
            failed=tuple(failed),
        )


def _differs(root: Path, rel: str, content: tuple[bytes, int] | None) -> bool:
    path = root / rel
    if content is None:
        return path.exists() or path.is_symlink()
    try:
        return path.is_symlink() or path.read_bytes() != content[0]
    except OSError:
        return True
