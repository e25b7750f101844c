"""archive.yaml's schema: the immutable model (Archive, Entry) and the rule each field obeys, shared by
the reader and every writer.

Schema version 1. Top level: version (1), core (package dir), starter (an id), experiments_dir, and
experiments: id -> entry with the keys in FIELDS. Conventions:
- ids match [a-z0-9][a-z0-9-]*; paths are repo-relative (relative to archive.yaml's directory), no `..`.
- base / synced_from / introduced / last_known_good are commit SHAs: 7-40 hex characters are accepted,
  the first 12 are kept (in the model and in anything grugctl writes). `grugctl sync` advances base and
  keeps the one before in synced_from.
- superseded_by is another experiment's id, `core@<sha>` for the commit that promoted the experiment
  into the core, or `core@pending` between promotion and that commit (replace it with the SHA later).
- bucket is one of BUCKETS or null; results is a list of mappings whose content a later schema fixes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from grugctl.errors import GrugError

ARCHIVE_NAME = "archive.yaml"
STATUSES = ("active", "superseded", "deleted")
# The one bucket list (the schema, codediff, new and promote use it), in the order data flows.
BUCKETS = ("attention", "mlp", "block", "loss", "optimizer")
FIELDS = (
    "path", "status", "bucket", "origin", "purpose", "base", "synced_from", "introduced", "last_known_good",
    "superseded_by", "notes", "issue", "waiver", "tests", "results",
)  # fmt: skip
REQUIRED = ("path", "status", "purpose")
SHA_FIELDS = ("base", "synced_from", "introduced", "last_known_good")
TOP_KEYS = ("version", "core", "starter", "experiments_dir", "experiments")
SHA_LEN = 12
CORE_PENDING = "core@pending"
MAX_DEPTH = 64  # nesting inside results; a deeper document is hostile, not a record of a run
CLIP = 60  # characters of a value quoted in a message: messages never carry a file's content
MAX_VALUE = 1 << 20  # characters in one value: notes, not data (ruamel needs ~10 s to edit 5 MB of it)
MAX_ARCHIVE = 64 << 20  # bytes; a 1,000-entry archive is ~0.3 MB
ID_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
SHA_RE = re.compile(r"[0-9a-f]{7,40}\Z")
# YAML 1.2 core schema for plain scalars, the rules ruamel writes by, so both libraries agree on types.
NULL_RE = re.compile(r"(~|null|Null|NULL|)\Z")
BOOL_RE = re.compile(r"(true|True|TRUE|false|False|FALSE)\Z")
INT_RE = re.compile(r"[-+]?[0-9]+\Z")
FLOAT_RE = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z|[-+]?\.(inf|Inf|INF)\Z|\.(nan|NaN|NAN)\Z"
)


@dataclass(frozen=True, kw_only=True)
class Entry:
    id: str
    path: str
    status: str
    bucket: str | None = None
    origin: str | None = None
    purpose: str
    base: str | None = None
    synced_from: str | None = None  # the base before the last `grugctl sync` (git log keeps older ones)
    introduced: str | None = None
    last_known_good: str | None = None
    superseded_by: str | None = None
    notes: str | None = None
    issue: str | None = None
    waiver: str | None = None  # why it was promoted without a significant win
    tests: str | None = None  # test files promoted with it, comma-separated
    results: tuple = ()


@dataclass(frozen=True)
class Archive:
    path: Path  # the archive.yaml file
    root: Path  # the directory entry paths are relative to
    version: int
    core: str
    starter: str | None
    experiments_dir: str
    experiments: dict[str, Entry]  # in file order


def _text(value: str) -> str:
    return value


def clip(value: str) -> str:
    """A value as a message quotes it: escaped and cut short."""
    text = value if len(value) <= CLIP else value[: CLIP - 3] + "..."
    return repr(text)[1:-1]


def check_repo_path(value: str) -> str:
    if (
        not value.strip()
        or value.startswith(("/", "~"))
        or "\\" in value
        or ".." in value.split("/")
        or ":" in value
    ):
        raise ValueError(
            f"'{clip(value)}' must be a path inside the repository, relative to archive.yaml, without '..'"
        )
    return value


def _one_of(choices: tuple[str, ...], extra: str = "") -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"'{clip(value)}' is not one of {', '.join(choices)}{extra}")
        return value

    return check


def check_id(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(
            f"'{clip(value)}' is not a valid id; use lowercase letters, digits and '-' (like 'swiglu-mlp')"
        )
    return value


def check_sha(value: str) -> str:
    if not SHA_RE.match(value.lower()):
        raise ValueError(
            f"'{clip(value)}' is not a commit SHA (7 to 40 hex characters); copy it from `git log`"
        )
    return value.lower()[:SHA_LEN]


def _superseded_by(value: str) -> str:
    if value == CORE_PENDING or ID_RE.match(value):
        return value
    if value.startswith("core@"):
        with contextlib.suppress(ValueError):
            return "core@" + check_sha(value[len("core@") :])
    raise ValueError(f"'{clip(value)}' must be an experiment id, core@<sha> or {CORE_PENDING}")


def _purpose(value: str) -> str:
    if not value.strip() or "\n" in value.strip():
        raise ValueError("must be one non-empty line saying what the experiment tries")
    return value


def _results(value: Any) -> tuple:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, dict) for item in value):
        raise ValueError("must be a list of mappings (one per recorded run)")
    return tuple(value)


CHECKS: dict[str, Callable[[Any], Any]] = {
    "path": check_repo_path, "status": _one_of(STATUSES), "bucket": _one_of(BUCKETS, " (or null)"),
    "origin": check_id, "purpose": _purpose, "base": check_sha, "synced_from": check_sha,
    "introduced": check_sha, "last_known_good": check_sha, "superseded_by": _superseded_by,
    "notes": _text, "issue": _text, "waiver": _text, "tests": _text, "results": _results,
}  # fmt: skip


def check_field(name: str, value: Any) -> Any:
    """The normalised value of one entry field; ValueError carries the sentence to show the user."""
    if name not in CHECKS:
        raise ValueError(f"unknown field; expected one of {', '.join(FIELDS)}{did_you_mean(name, FIELDS)}")
    if value is None:
        if name in REQUIRED:
            raise ValueError("is required and cannot be empty")
        return () if name == "results" else None
    if name == "results":
        return _results(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected text, found {kind_of(value)}")
    if len(str(value)) > MAX_VALUE:
        raise ValueError(f"is longer than {MAX_VALUE} characters; keep large data in a file and name it here")
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line arrive as lone surrogates
        raise ValueError("holds bytes that are not UTF-8 text; pass it as UTF-8") from None
    return CHECKS[name](str(value))


def did_you_mean(name: str, choices: tuple[str, ...] | list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def kind_of(value: Any) -> str:
    import yaml

    if isinstance(value, (yaml.MappingNode, dict)):
        return "a mapping"
    if isinstance(value, (yaml.SequenceNode, list, tuple)):
        return "a list"
    if isinstance(value, yaml.ScalarNode):
        return f"the value '{clip(value.value)}'"
    return f"a {type(value).__name__}"


def display_path(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when under it."""
    with contextlib.suppress(ValueError):
        return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
    return str(path)


def norm_path(path: str) -> str:
    return PurePosixPath(os.path.normpath(path)).as_posix()


def get_entry(archive: Archive, entry_id: str) -> Entry:
    """The entry, or the one-sentence error every command gives for an unknown id."""
    if entry_id not in archive.experiments:
        hint = did_you_mean(entry_id, list(archive.experiments))
        raise GrugError(
            f"no experiment '{entry_id}' in {archive.path.name}{hint}; `grugctl archive status` lists the ids"
        )
    return archive.experiments[entry_id]
