"""Writes the report's folder whole: every file goes into a hidden sibling, then the old folder is moved
aside and the new one renamed into its place, so a reader (or a web server) sees the old site or the
new one, never a mix, and a failure halfway leaves the old site as it was.

A folder the report writes carries MARK, the list of its files: rewriting such a folder asks nothing,
while a folder holding anything else is only replaced when the caller has asked the user (--yes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from grugctl.errors import GrugError

MARK = ".grugctl-report"
NEW, OLD = "new", "old"


def _sibling_prefix(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}-"


def check_out(out: Path, root: Path) -> None:
    """Refuse an --out that is not a folder of its own: a file, or a folder holding the repository."""
    if out.exists() and not out.is_dir():
        raise GrugError(f"--out {out} is a file, not a folder; pick a folder such as site/")
    here, repo = os.path.realpath(out), os.path.realpath(root)
    if repo == here or repo.startswith(here.rstrip(os.sep) + os.sep):
        raise GrugError(f"--out {out} holds the repository itself; pick a folder of its own such as site/")


def foreign_files(out: Path) -> list[str]:
    """Files under `out` that no earlier `grugctl report` wrote, relative and sorted."""
    if not out.is_dir():
        return []
    written: set[str] = set()
    with contextlib.suppress(OSError, UnicodeDecodeError):
        written = set((out / MARK).read_text(encoding="utf-8").splitlines())
    found = []
    for folder, subfolders, names in os.walk(out):
        subfolders.sort()
        for name in sorted(names + [d for d in subfolders if os.path.islink(os.path.join(folder, d))]):
            rel = Path(os.path.relpath(os.path.join(folder, name), out)).as_posix()
            if rel != MARK and rel not in written:
                found.append(rel)
    return found


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _leftovers(out: Path) -> list[Path]:
    """Hidden siblings a killed earlier build left behind; ours only, recognised by MARK inside."""
    found = []
    for kind in (NEW, OLD):
        for path in sorted(out.parent.glob(_sibling_prefix(out, kind) + "*")):
            if path.is_dir() and not path.is_symlink() and (path / MARK).is_file():
                found.append(path)
    return found


def write_site(files: dict[str, bytes], out: Path) -> None:
    """Write `files` (relative path -> bytes) as the folder `out`, replacing what was there."""
    out = Path(os.path.abspath(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for path in _leftovers(out):
            shutil.rmtree(path, ignore_errors=True)
        new = Path(tempfile.mkdtemp(dir=out.parent, prefix=_sibling_prefix(out, NEW)))
    except OSError as error:
        raise GrugError(f"cannot write beside {out} ({error.strerror}); pick another --out folder") from None
    old = None
    try:
        # The list first: a build killed halfway is then recognisably ours for the next one to clear.
        _write(new / MARK, "".join(f"{rel}\n" for rel in files).encode())
        for rel, data in files.items():
            _write(new / rel, data)
        os.chmod(new, 0o755)
        if out.exists() or out.is_symlink():
            old = out.parent / new.name.replace(_sibling_prefix(out, NEW), _sibling_prefix(out, OLD), 1)
            os.replace(out, old)
        os.replace(new, out)
    except OSError as error:
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)  # put the old site back
        shutil.rmtree(new, ignore_errors=True)
        raise GrugError(
            f"cannot write {out} ({error.strerror}: {error.filename}); the folder was left as it was"
        ) from None
    if old is not None and old.is_symlink():
        old.unlink()  # an --out that was a link: the link goes, never what it pointed at
    elif old is not None:
        shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):
        fd = os.open(out.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
