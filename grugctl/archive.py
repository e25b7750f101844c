"""archive.yaml, the experiments' paper trail: a validated, immutable model and one safe write primitive.

Schema version 1. Top level: version (1), core (package dir), starter (an id), experiments_dir, and
experiments: id -> entry with the keys in FIELDS. Conventions:
- ids match [a-z0-9][a-z0-9-]*; paths are repo-relative (relative to archive.yaml's directory), no `..`.
- base / introduced / last_known_good are commit SHAs: 7-40 hex characters are accepted, the first 12
  are kept (in the model and in anything grugctl writes).
- superseded_by is another experiment's id, `core@<sha>` for the commit that promoted the experiment
  into the core, or `core@pending` between promotion and that commit (replace it with the SHA later).
- bucket is one of BUCKETS or null; results is a list of mappings whose content a later schema fixes.

Reading composes YAML nodes with libyaml (PyYAML's C parser): ruamel's pure-Python parser takes ~2.7 s on
a 1,000-entry archive, libyaml ~0.1 s, and its nodes still carry line:column for error messages.
Every write goes through _rewrite: inside a transaction (grugctl/transaction.py: the repository lock,
a journal, atomic replacement), re-read and validate, edit a ruamel round-trip document (comments, key
order and blank lines survive), validate the exact text that would be written with the reader, then
replace the file. A UTF-8 BOM and CRLF line endings the file had are kept. Anchors and aliases are
refused (neither people nor grugctl need them, and an alias bomb would expand without bound), and so
are repeated keys at every depth. update_archive edits the whole
document; update_entries (behind set_fields, add_entry, append_result) round-trips only the lines of
the entries it touches, since ruamel needs ~5 s for a whole 1,000-entry archive, and falls back to the
whole document whenever the splice cannot be proven to leave every other entry as it was.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from grugctl.errors import GrugError

ARCHIVE_NAME = "archive.yaml"
STATUSES = ("active", "superseded", "deleted")
BUCKETS = ("attention", "block", "mlp", "loss", "optimizer")
FIELDS = (
    "path", "status", "bucket", "origin", "purpose", "base", "introduced", "last_known_good",
    "superseded_by", "notes", "issue", "waiver", "results",
)  # fmt: skip
REQUIRED = ("path", "status", "purpose")
SHA_FIELDS = ("base", "introduced", "last_known_good")
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
    introduced: str | None = None
    last_known_good: str | None = None
    superseded_by: str | None = None
    notes: str | None = None
    issue: str | None = None
    waiver: str | None = None  # why it was promoted without a significant win
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


# ---------------------------------------------------------------- field rules (shared by reader and writers)


def _text(value: str) -> str:
    return value


def clip(value: str) -> str:
    """A value as a message quotes it: escaped and cut short."""
    text = value if len(value) <= CLIP else value[: CLIP - 3] + "..."
    return repr(text)[1:-1]


def _repo_path(value: str) -> str:
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


def _id(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(
            f"'{clip(value)}' is not a valid id; use lowercase letters, digits and '-' (like 'swiglu-mlp')"
        )
    return value


def _sha(value: str) -> str:
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
            return "core@" + _sha(value[len("core@") :])
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
    "path": _repo_path, "status": _one_of(STATUSES), "bucket": _one_of(BUCKETS, " (or null)"), "origin": _id,
    "purpose": _purpose, "base": _sha, "introduced": _sha, "last_known_good": _sha,
    "superseded_by": _superseded_by, "notes": _text, "issue": _text, "waiver": _text, "results": _results,
}  # fmt: skip


def check_field(name: str, value: Any) -> Any:
    """The normalised value of one entry field; ValueError carries the sentence to show the user."""
    if name not in CHECKS:
        raise ValueError(f"unknown field; expected one of {', '.join(FIELDS)}{_did_you_mean(name, FIELDS)}")
    if value is None:
        if name in REQUIRED:
            raise ValueError("is required and cannot be empty")
        return () if name == "results" else None
    if name == "results":
        return _results(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected text, found {_kind(value)}")
    if len(str(value)) > MAX_VALUE:
        raise ValueError(f"is longer than {MAX_VALUE} characters; keep large data in a file and name it here")
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line arrive as lone surrogates
        raise ValueError("holds bytes that are not UTF-8 text; pass it as UTF-8") from None
    return CHECKS[name](str(value))


def _did_you_mean(name: str, choices: tuple[str, ...] | list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _kind(value: Any) -> str:
    import yaml

    if isinstance(value, (yaml.MappingNode, dict)):
        return "a mapping"
    if isinstance(value, (yaml.SequenceNode, list, tuple)):
        return "a list"
    if isinstance(value, yaml.ScalarNode):
        return f"the value '{clip(value.value)}'"
    return f"a {type(value).__name__}"


# ---------------------------------------------------------------- reading


def display_path(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when under it."""
    with contextlib.suppress(ValueError):
        return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
    return str(path)


def _fail(label: str, line: int, column: int, field: str, message: str) -> GrugError:
    return GrugError(f"{label}:{line}:{column}: {clip(field) + ': ' if field else ''}{message}")


def _at(label: str, node: Any, field: str, message: str) -> GrugError:
    return _fail(label, node.start_mark.line + 1, node.start_mark.column + 1, field, message)


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    return data.count(b"\n", 0, offset) + 1, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


@functools.cache
def _node_loader() -> type:
    """libyaml's parser without PyYAML's Python tag resolver (a third of the load time): this module
    types every field itself, by the YAML 1.2 rules ruamel writes with."""
    import yaml

    try:
        from yaml.cyaml import CParser
    except ImportError:  # PyYAML built without libyaml: correct, only slower
        return yaml.SafeLoader
    tags = {yaml.ScalarNode: "tag:yaml.org,2002:str", yaml.SequenceNode: "tag:yaml.org,2002:seq"}
    return type(
        "NodeLoader",
        (CParser,),
        {
            "resolve": lambda self, kind, value, implicit: tags.get(kind, "tag:yaml.org,2002:map"),
            "descend_resolver": lambda self, parent, index: None,
            "ascend_resolver": lambda self: None,
        },
    )


def _compose(data: bytes, label: str) -> Any:
    """The YAML node tree, or a located one-line GrugError for undecodable bytes or bad syntax."""
    import yaml

    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, col = _line_col(data, error.start)
        bad = f"byte 0x{data[error.start]:02x} is not UTF-8 text; restore the file from git"
        raise _fail(label, line, col, "", bad) from None
    try:
        root = yaml.compose(data, Loader=_node_loader())
    except RecursionError:
        raise _fail(label, 1, 1, "", f"nested deeper than {MAX_DEPTH} levels; flatten it") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = error.context_mark
        context = f"{error.context} from line {where.line + 1}, " if error.context and where else ""
        problem = f"not valid YAML: {context}{error.problem or 'syntax error'}; fix the syntax there"
        raise _fail(label, mark.line + 1, mark.column + 1, "", problem) from None
    except yaml.YAMLError as error:  # ReaderError: control characters; it knows an offset, not a line
        line, col = _line_col(data, getattr(error, "position", 0) or 0)
        problem = "the file contains control characters, not YAML text; restore it from git"
        raise _fail(label, line, col, "", problem) from None
    if b"*" in data or len(data) > 1 << 20:
        _refuse_aliases(root, label)
    return root


def _refuse_aliases(root: Any, label: str) -> None:
    """An alias composes to the very node its anchor names, so a node met twice is an alias (a bomb of
    nested aliases, or one that contains itself); the walk visits each node once, so it stays linear."""
    import yaml

    seen, todo = set(), [(root, 0)] if root is not None else []
    while todo:
        node, depth = todo.pop()
        if id(node) in seen:
            why = "anchors and aliases (&name, *name) are not allowed; write the value out"
            raise _at(label, node, "", why)
        if depth > MAX_DEPTH:
            raise _at(label, node, "", f"nested deeper than {MAX_DEPTH} levels; flatten it")
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            todo += [(n, depth + 1) for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            todo += [(n, depth + 1) for n in node.value]


def _scalar(node: Any) -> Any:
    """A plain scalar typed by the YAML 1.2 core schema; quoted and block scalars are text."""
    value = node.value
    if node.style:
        return value
    if NULL_RE.match(value):
        return None
    if BOOL_RE.match(value):
        return value.lower() == "true"
    if INT_RE.match(value):
        return int(value)
    if FLOAT_RE.match(value):
        return float(value.lower().replace(".inf", "inf").replace(".nan", "nan"))
    return value


class _Bad(ValueError):
    """A problem inside a value, located at the node that has it."""

    def __init__(self, node: Any, message: str):
        super().__init__(message)
        self.node = node


def _plain(node: Any, depth: int = 0) -> Any:
    import yaml

    if depth > MAX_DEPTH:
        raise _Bad(node, f"nested deeper than {MAX_DEPTH} levels; flatten it")
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key, value in node.value:
            name = str(_plain(key, depth + 1))
            if name in out:
                raise _Bad(key, f"duplicate key '{clip(name)}'; keep one")
            out[name] = _plain(value, depth + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, depth + 1) for item in node.value]
    if len(node.value) > MAX_VALUE:
        raise _Bad(node, f"a value longer than {MAX_VALUE} characters; keep large data in a file")
    return _scalar(node)


def _pairs(node: Any, label: str, prefix: str, allowed: tuple[str, ...] | None) -> dict[str, tuple[Any, Any]]:
    """key -> (key node, value node); rejects non-scalar, repeated and (when `allowed`) unknown keys."""
    import yaml

    seen: dict[str, tuple[Any, Any]] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise _at(label, key, prefix.rstrip("."), "keys must be plain names, not lists or mappings")
        name = key.value
        if name in seen:
            what = "id; each experiment id may appear once" if prefix == "experiments." else "key; keep one"
            raise _at(label, key, prefix + name, f"duplicate {what}")
        if allowed is not None and name not in allowed:
            hint = _did_you_mean(name, allowed)
            raise _at(label, key, prefix + name, f"unknown key; expected one of {', '.join(allowed)}{hint}")
        seen[name] = (key, value)
    return seen


def _field_value(name: str, node: Any) -> Any:
    """Text fields keep the characters as written (a SHA like 0123e45 must not become a float)."""
    import yaml

    if name == "results":
        return _plain(node)
    if not isinstance(node, yaml.ScalarNode):
        raise ValueError(f"expected text, found {_kind(node)}")
    return None if not node.style and NULL_RE.match(node.value) else node.value


def _entry(label: str, entry_id: str, key: Any, node: Any) -> Entry:
    import yaml

    where = f"experiments.{entry_id}"
    if not isinstance(node, yaml.MappingNode):
        raise _at(
            label,
            node,
            where,
            f"expected a mapping of fields ({', '.join(REQUIRED)}, ...), found {_kind(node)}",
        )
    pairs = _pairs(node, label, where + ".", FIELDS)
    for name in REQUIRED:
        if name not in pairs:
            raise _at(label, key, where, f"missing required field '{name}'; add `{name}: ...` to the entry")
    values = {}
    for name, (_, value) in pairs.items():
        try:
            values[name] = check_field(name, _field_value(name, value))
        except _Bad as error:
            raise _at(label, error.node, f"{where}.{name}", str(error)) from None
        except ValueError as error:
            raise _at(label, value, f"{where}.{name}", str(error)) from None
    return Entry(id=entry_id, **values)


def _top_text(
    label: str, pairs: dict, name: str, default: str | None, check: Callable[[str], str]
) -> str | None:
    if name not in pairs:
        return default
    try:
        value = _field_value(name, pairs[name][1])
        return default if value is None else check(value)
    except ValueError as error:
        raise _at(label, pairs[name][1], name, str(error)) from None


def _experiments(label: str, pairs: dict) -> dict[str, Entry]:
    import yaml

    if "experiments" not in pairs:
        raise _fail(label, 1, 1, "experiments", "missing; add `experiments:` with one entry per experiment")
    key, node = pairs["experiments"]
    if isinstance(node, yaml.ScalarNode) and _scalar(node) is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise _at(label, node, "experiments", f"expected a mapping of id -> entry, found {_kind(node)}")
    entries = {}
    for entry_id, (key, value) in _pairs(node, label, "experiments.", None).items():
        try:
            _id(entry_id)
        except ValueError as error:
            raise _at(label, key, f"experiments.{entry_id}", str(error)) from None
        entries[entry_id] = _entry(label, entry_id, key, value)
    return entries


def parse_archive(data: bytes, path: Path) -> Archive:
    """Validate archive bytes; every problem is one GrugError line naming file:line:column and the field."""
    import yaml

    label = display_path(path)
    root = _compose(data, label)
    if root is None:
        raise _fail(label, 1, 1, "", "the file is empty; it needs at least `version: 1` and `experiments:`")
    if not isinstance(root, yaml.MappingNode):
        raise _at(label, root, "", f"expected a mapping with keys {', '.join(TOP_KEYS)}, found {_kind(root)}")
    pairs = _pairs(root, label, "", TOP_KEYS)
    if "version" not in pairs:
        raise _at(label, root, "version", "missing; add `version: 1` at the top")
    version_node = pairs["version"][1]
    if not isinstance(version_node, yaml.ScalarNode) or _scalar(version_node) != 1:
        raise _at(label, version_node, "version", "only schema version 1 is supported; set `version: 1`")
    experiments = _experiments(label, pairs)
    starter = _top_text(label, pairs, "starter", None, _id)
    if starter is not None and starter not in experiments:
        raise _at(
            label, pairs["starter"][1], "starter", f"'{starter}' is not an id under experiments; fix the name"
        )
    return Archive(
        path=path,
        root=path.parent,
        version=1,
        core=_top_text(label, pairs, "core", "grug_core", _repo_path),
        starter=starter,
        experiments_dir=_top_text(label, pairs, "experiments_dir", "experiments/speedrun", _repo_path),
        experiments=experiments,
    )


def _read(path: Path) -> bytes:
    """The archive's bytes: a regular file (a FIFO or a device would never end) of at most MAX_ARCHIVE."""
    from grugctl import transaction

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    raise IsADirectoryError()
                raise GrugError(f"{display_path(path)} is not a regular file; pass the archive.yaml file")
            data = handle.read(MAX_ARCHIVE + 1)
        if len(data) > MAX_ARCHIVE:
            raise GrugError(
                f"{display_path(path)} is larger than {MAX_ARCHIVE >> 20} MiB; it is not an archive"
            )
        return data
    except FileNotFoundError:
        raise GrugError(f"{display_path(path)} does not exist; pass the right --archive path") from None
    except IsADirectoryError:
        raise GrugError(
            f"{display_path(path)} is a directory; pass the archive.yaml file inside it"
        ) from None
    except OSError as error:
        raise transaction.os_error(error, "read", display_path(path)) from None


def _within_repository(path: Path) -> None:
    """An archive.yaml that is a symlink must point inside the repository holding the link."""
    from grugctl import transaction

    if path.is_symlink():
        transaction.inside(path.parent, path.name, "the archive")


def load_archive(path: Path | str) -> Archive:
    path = Path(os.path.abspath(path))
    if path.is_dir():
        path = path / ARCHIVE_NAME
    _within_repository(path)
    return parse_archive(_read(path), path)


def find_archive(start: Path | None = None, explicit: Path | None = None) -> Path:
    """`explicit` if given, else the nearest archive.yaml from `start` (cwd) up to the git root."""
    if explicit is not None:
        explicit = Path(explicit)
        path = explicit / ARCHIVE_NAME if explicit.is_dir() else explicit
        if not path.is_file():
            raise GrugError(f"{path} does not exist; pass an existing archive.yaml to --archive")
        return path
    here = Path(os.path.abspath(start or Path.cwd()))
    for folder in (here, *here.parents):
        if (folder / ARCHIVE_NAME).is_file():
            return folder / ARCHIVE_NAME
        if (folder / ".git").exists():
            raise GrugError(
                f"no {ARCHIVE_NAME} between {here} and the git root {folder}; "
                "run grugctl inside the repository or pass --archive PATH"
            )
    raise GrugError(f"no {ARCHIVE_NAME} in {here} or any parent directory; pass --archive PATH")


# ---------------------------------------------------------------- writing

BOM = b"\xef\xbb\xbf"
# Python's splitlines also breaks at these, libyaml counts some of them as line breaks: a file holding
# one raw is edited whole, never spliced by line numbers.
ODD_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _split_format(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(BOM or b"", line ending to write, the bytes without BOM and with LF line endings)."""
    bom = BOM if data.startswith(BOM) else b""
    body = data[len(bom) :]
    crlf = body.count(b"\r\n")
    eol = b"\r\n" if crlf and 2 * crlf >= body.count(b"\n") else b"\n"
    return bom, eol, body.replace(b"\r\n", b"\n") if crlf else body


def _join_format(bom: bytes, eol: bytes, body: bytes) -> bytes:
    return bom + (body.replace(b"\n", eol) if eol != b"\n" else body)


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) as the file already uses them, so a write does not re-indent it."""
    mapping, offset, previous = 2, 2, None
    found_mapping = found_seq = False
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if previous is not None and previous[1].endswith(":"):
            if stripped.startswith("- ") and not found_seq:
                offset, found_seq = indent - previous[0], True
            elif indent > previous[0] and not found_mapping:
                mapping, found_mapping = indent - previous[0], True
        previous = (indent, stripped.split(" #")[0].rstrip())
    return mapping, offset + 2, offset


def _round_trip(text: str) -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 1 << 16  # never re-wrap a long purpose or note
    mapping, sequence, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def _normalise_shas(experiments: Any, archive: Archive) -> None:
    """Write SHA fields as 12-character strings (a bare 1234567890ab-like SHA may have loaded as a number)."""
    for entry_id, node in experiments.items():
        entry = archive.experiments.get(entry_id)
        for name in SHA_FIELDS:
            value = getattr(entry, name, None)
            if value is not None and node.get(name) != value:
                node[name] = value


def _dump(yaml: Any, doc: Any) -> str:
    buffer = io.StringIO()
    yaml.dump(doc, buffer)
    return buffer.getvalue()


def _whole(data: bytes, archive: Archive, edit_fn: Callable[[Any], None]) -> bytes:
    """Round-trip the whole document through ruamel (~4 ms per entry)."""
    from ruamel.yaml.error import YAMLError

    text = data.decode("utf-8-sig")
    yaml = _round_trip(text)
    try:
        doc = yaml.load(text)
    except (YAMLError, ValueError) as error:  # its message quotes the file, so only the place is kept
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise GrugError(
            f"{display_path(archive.path)}{where}: ruamel.yaml cannot round-trip this file, so grugctl "
            "cannot edit it; rewrite that value in plain YAML"
        ) from None
    _normalise_shas(doc.get("experiments") or {}, archive)
    edit_fn(doc)
    return _dump(yaml, doc).encode("utf-8")


Make = Callable[[bytes, Archive], tuple[bytes, Archive | None]]
Verify = Callable[[Archive], None]


def _new_bytes(path: Path, make: Make, verify: Verify | None) -> tuple[bytes, bytes, Archive]:
    """(bytes now, bytes to write, the archive they hold): edited on LF text without a BOM, then given
    back the file's own BOM and line endings, and validated as they will be on disk."""
    data = _read(path)
    archive = parse_archive(data, path)
    bom, eol, body = _split_format(data)
    new, result = make(body, archive)
    new = _join_format(bom, eol, new)
    if result is None or bom or eol != b"\n":
        try:
            result = parse_archive(new, path)
        except GrugError as error:
            why = f"refusing to write {path.name}; the edit would make it invalid ({error})"
            raise GrugError(why) from None
    if verify is not None:
        verify(result)
    return data, new, result


def _rewrite(path: Path | str, make: Make, dry_run: bool, verify: Verify | None = None) -> Archive:
    """In a transaction (repository lock, journal): read and validate, make the new bytes, validate
    them, replace the file atomically. A dry run takes no lock: it is a reader."""
    from grugctl import transaction

    path = Path(os.path.realpath(path))
    if dry_run:
        transaction.refuse_if_interrupted(path.parent)
        return _new_bytes(path, make, verify)[2]
    with transaction.transaction(path.parent) as txn:
        data, new, result = _new_bytes(path, make, verify)
        if new != data:
            transaction.write(txn, os.path.relpath(path, txn.root), new)
        return result


def update_archive(path: Path | str, edit_fn: Callable[[Any], None], *, dry_run: bool = False) -> Archive:
    """The write primitive: under the lock, re-read, apply edit_fn to the ruamel round-trip document,
    validate the text that would be written, and replace the file atomically. Returns the new Archive."""
    return _rewrite(path, lambda data, archive: (_whole(data, archive, edit_fn), None), dry_run)


def _experiments_span(data: bytes) -> tuple[list[str], list[int], int] | None:
    """(entry ids, line of each id, line where the experiments mapping ends) for a block-style mapping."""
    import yaml

    root = yaml.compose(data, Loader=_node_loader())
    node = next((value for key, value in root.value if key.value == "experiments"), None)
    if not isinstance(node, yaml.MappingNode) or node.flow_style or not node.value:
        return None
    end = node.end_mark.line if node.end_mark.column == 0 else data.count(b"\n") + 1
    return [k.value for k, _ in node.value], [k.start_mark.line for k, _ in node.value], end


def _edit_region(
    data: bytes, archive: Archive, ids: list[str], added: list[str], edit_fn: Callable[[Any, Archive], None]
) -> tuple[bytes, Archive] | None:
    """Round-trip only the lines of the entries in `ids` (from the first to the last of them) and splice
    them back: a 1,000-entry archive costs ~5 s whole. None when the layout is unusual or the result
    does not prove that every other entry is untouched; the caller then edits the whole document."""
    from ruamel.yaml.error import YAMLError

    text = data.decode("utf-8")
    odd = text.startswith("\ufeff") or any(c in text for c in ODD_BREAKS)
    span = None if odd else _experiments_span(data)
    if span is None or any(i not in span[0] for i in ids):
        return None
    keys, starts, end = span
    first, last = min(keys.index(i) for i in ids), max(keys.index(i) for i in ids)
    lines = text.splitlines(keepends=True)
    start, stop = starts[first], starts[last + 1] if last + 1 < len(keys) else end
    head = "experiments:\n"
    yaml = _round_trip(text)
    try:
        doc = yaml.load(head + "".join(lines[start:stop]))
    except YAMLError:
        return None
    experiments = doc["experiments"]
    if not _is_block(experiments) or list(experiments) != keys[first : last + 1]:
        return None
    _normalise_shas(experiments, archive)
    edit_fn(experiments, archive)
    out = _dump(yaml, doc)
    new = ("".join(lines[:start]) + out[len(head) :] + "".join(lines[stop:])).encode("utf-8")
    try:
        result = parse_archive(new, archive.path)
    except GrugError:
        return None
    untouched = all(result.experiments.get(i) == e for i, e in archive.experiments.items() if i not in ids)
    top = lambda a: (a.version, a.core, a.starter, a.experiments_dir)
    if (
        not out.startswith(head)
        or list(result.experiments) != keys + added
        or not untouched
        or top(result) != top(archive)
    ):
        return None
    return new, result


def update_entries(
    path: Path | str,
    ids: list[str],
    edit_fn: Callable[[Any, Archive], None],
    *,
    added: list[str] = (),
    dry_run: bool = False,
    verify: Verify | None = None,
) -> Archive:
    """update_archive for edits confined to the entries `ids` (plus appending `added` ids after the last
    entry): edit_fn(experiments mapping, archive as read under the lock) may be handed only those
    entries, and may be called twice (region first, then the whole document), so it must not accumulate."""
    added = list(added)

    def make(data: bytes, archive: Archive) -> tuple[bytes, Archive | None]:
        if added and archive.experiments:
            region_ids = list(archive.experiments)[-2:]
        else:
            region_ids = list(ids)
        fast = _edit_region(data, archive, region_ids, added, edit_fn) if region_ids else None
        if fast is not None:
            return fast
        return _whole(data, archive, lambda doc: edit_fn(_experiments_node(doc), archive)), None

    return _rewrite(path, make, dry_run, verify)


# ---------------------------------------------------------------- keeping comments where a person put them


def _is_block(value: Any) -> bool:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    return isinstance(value, (CommentedMap, CommentedSeq)) and len(value) > 0 and not value.fa.flow_style()


def _tail(node: Any, key: Any = None) -> tuple[list, int, Any]:
    """(comment slot, index, scalar) for the last line of `node[key]` (or of `node` when key is None)."""
    from ruamel.yaml.comments import CommentedMap

    if key is None:
        key = list(node.keys())[-1] if isinstance(node, CommentedMap) else len(node) - 1
    value = node[key]
    if _is_block(value):
        return _tail(value)
    slot = node.ca.items.setdefault(key, [None, None, None, None])
    return slot, 2 if isinstance(node, CommentedMap) else 0, value


def _block_scalar(value: Any) -> bool:
    from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

    return isinstance(value, (LiteralScalarString, FoldedScalarString))


def _carry_comment(old: tuple[list, int, Any], new: tuple[list, int, Any], blank_line: bool) -> None:
    """Comment lines and blank lines that followed the old last line now follow the inserted node;
    the old line keeps only its own end-of-line comment. A plain scalar's comment text starts with its
    end of line ('# eol' or a bare newline); a block scalar (`|`) has already ended its line."""
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    slot, index, value = old
    token = slot[index]
    if _block_scalar(value):
        text = token.value if token is not None else ""
        rest = " " * token.column + text if text.startswith("#") else text  # its indent lived in the mark
        keep = "\n" if blank_line else ""
    else:
        text = token.value if token is not None else "\n"
        eol, _, rest = text.partition("\n") if text.startswith("#") else ("", "", text[1:])
        keep = eol + "\n" + ("\n" if blank_line else "")
        keep = "" if keep == "\n" else keep
    if not keep:
        slot[index] = None
    elif token is None:
        slot[index] = CommentToken(keep, CommentMark(0))
    else:
        slot[index] = copy.copy(token)
        slot[index].value = keep
    if rest:
        new_slot, new_index, new_value = new
        new_slot[new_index] = CommentToken(rest if _block_scalar(new_value) else "\n" + rest, CommentMark(0))


def _blank_separated(data: bytes) -> bool:
    """Whether the last two entries are separated by a blank line (new ones follow suit); True for
    fewer than two entries. Read from the text: ruamel hides blank lines after block scalars."""
    span = _experiments_span(data)
    if span is None or len(span[1]) < 2:
        return True
    lines = data.decode("utf-8-sig").splitlines()
    row = span[1][-1] - 1
    while row > 0 and lines[row].lstrip().startswith("#"):
        row -= 1
    return not lines[row].strip()


def _literal_ok(value: str) -> bool:
    """Whether a `|` block gives these exact characters back: only LF breaks, no other control or
    break characters, no spaces a block would drop or mistake for indentation."""
    lines = value.split("\n")
    return (
        all(line.isprintable() and line == line.rstrip() for line in lines)
        and not value.startswith((" ", "\n"))
        and not value.endswith("\n\n")
    )


def _to_rt(value: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

    if isinstance(value, str) and "\n" in value.strip() and _literal_ok(value):
        return LiteralScalarString(value)  # multi-line notes read better as a `|` block than "a\nb"
    if isinstance(value, str) and not value.isprintable():
        # Line breaks YAML would fold (CR, U+0085, U+2028), tabs and control characters: a double-quoted
        # scalar escapes each one, so the text comes back exactly.
        return DoubleQuotedScalarString(value)
    if isinstance(value, dict):
        return CommentedMap((k, _to_rt(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return CommentedSeq(_to_rt(v) for v in value)
    return value


def put_field(entry: Any, name: str, value: Any) -> None:
    """Set entry[name], inserting a new key at its place in FIELDS order with comments left in place."""
    if name in entry:
        entry[name] = value
        return
    keys = list(entry.keys())
    rank = {field: i for i, field in enumerate(FIELDS)}
    position = next((i for i, k in enumerate(keys) if rank.get(k, len(FIELDS)) > rank[name]), len(keys))
    old = _tail(entry, keys[position - 1]) if position else None
    entry.insert(position, name, value)
    if old is not None:
        _carry_comment(old, _tail(entry, name), blank_line=False)


def _experiments_node(doc: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap

    experiments = doc.get("experiments")
    if not experiments:
        experiments = CommentedMap()
        doc["experiments"] = experiments
    experiments.fa.set_block_style()
    return experiments


def _entry_node(experiments: Any, entry_id: str, archive: Archive) -> Any:
    get_entry(archive, entry_id)
    return experiments[entry_id]


def _clean_entry(fields: dict) -> tuple[str, dict]:
    """(id, fields in FIELDS order without empty ones), validated like the reader validates."""
    fields = dict(fields)
    entry_id = str(fields.pop("id", "") or "")
    try:
        _id(entry_id)
    except ValueError as error:
        raise GrugError(f"id {error}") from None
    for name in REQUIRED:
        if fields.get(name) is None:
            raise GrugError(f"experiment '{entry_id}' needs a {name}; add it and try again")
    clean = {}
    for name in sorted(fields, key=lambda f: FIELDS.index(f) if f in FIELDS else -1):
        try:
            value = check_field(name, fields[name])
        except ValueError as error:
            raise GrugError(f"experiments.{entry_id}.{name}: {error}") from None
        if value is not None and value != ():
            clean[name] = list(value) if name == "results" else value
    return entry_id, clean


def add_entries(path: Path | str, entries: list[dict], *, dry_run: bool = False) -> Archive:
    """Append new entries (dicts with 'id' and FIELDS keys) at the end of experiments, all or nothing."""
    clean = [_clean_entry(fields) for fields in entries]
    ids = [entry_id for entry_id, _ in clean]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise GrugError(f"ids {', '.join(repeated)} are given more than once; each id may appear once")

    blank = _blank_separated(_read(Path(path)))  # layout only, so reading outside the lock is fine

    def edit(experiments: Any, archive: Archive) -> None:
        taken = [i for i in ids if i in archive.experiments]
        if taken:
            raise GrugError(
                f"{', '.join(taken)} already in {archive.path.name}; choose ids that are not taken"
            )
        for entry_id, fields in clean:
            old = _tail(experiments) if len(experiments) else None
            experiments[entry_id] = _to_rt(fields)
            if old is not None:
                _carry_comment(old, _tail(experiments), blank_line=blank)

    return update_entries(path, [], edit, added=ids, dry_run=dry_run)


def add_entry(path: Path | str, entry_fields: dict, *, dry_run: bool = False) -> Archive:
    return add_entries(path, [entry_fields], dry_run=dry_run)


def _clean_fields(entry_id: str, fields: dict) -> dict:
    clean = {}
    for name, value in fields.items():
        try:
            clean[name] = check_field(name, value)
        except ValueError as error:
            raise GrugError(f"experiments.{entry_id}.{name}: {error}") from None
    return clean


def _write_fields(entry: Any, clean: dict) -> None:
    for name, value in clean.items():
        if value is None or value == ():
            if name in entry:  # an absent key stays absent rather than appearing as `name: null`
                entry[name] = None
            continue
        put_field(entry, name, _to_rt(list(value) if name == "results" else value))


def set_fields(path: Path | str, entry_id: str, *, dry_run: bool = False, **fields: Any) -> Archive:
    """Validated edit of one entry; None clears a field that is present and writes nothing otherwise."""
    clean = _clean_fields(entry_id, fields)
    edit = lambda experiments, archive: _write_fields(_entry_node(experiments, entry_id, archive), clean)
    return update_entries(path, [entry_id], edit, dry_run=dry_run)


def append_result(path: Path | str, entry_id: str, result: dict, *, dry_run: bool = False) -> Archive:
    """Add one mapping to an entry's results list."""
    from ruamel.yaml.comments import CommentedSeq

    if not isinstance(result, dict):
        raise GrugError(f"a result must be a mapping, not {_kind(result)}")

    def edit(experiments: Any, archive: Archive) -> None:
        entry = _entry_node(experiments, entry_id, archive)
        results = entry.get("results")
        if not results:  # created holding the result, so put_field moves trailing comments past it
            put_field(entry, "results", CommentedSeq([_to_rt(result)]))
            return
        results.fa.set_block_style()
        old = _tail(results)
        results.append(_to_rt(result))
        _carry_comment(old, _tail(results), blank_line=False)

    return update_entries(path, [entry_id], edit, dry_run=dry_run)


# ---------------------------------------------------------------- what the commands ask for


def entry_dict(entry: Entry) -> dict:
    """An entry as JSON-ready data, keys in FIELDS order."""
    data = {"id": entry.id}
    data.update({name: getattr(entry, name) for name in FIELDS})
    data["results"] = list(entry.results)
    return data


def _norm(path: str) -> str:
    return PurePosixPath(os.path.normpath(path)).as_posix()


def _unregistered_files(archive: Archive) -> list[str]:
    """Experiment files under experiments_dir that no entry names (an entry path may name a folder).
    Plain string paths: pathlib objects cost ~0.1 s over 1,000 experiment folders."""
    named = {_norm(entry.path) for entry in archive.experiments.values()}
    root = str(archive.root).rstrip(os.sep)
    found = []
    for folder, subfolders, files in os.walk(os.path.join(root, archive.experiments_dir)):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith((".", "__pycache__")))
        rel_folder = folder[len(root) + 1 :].replace(os.sep, "/")  # os.walk yields root-prefixed paths
        if any(prefix in named for prefix in _prefixes(rel_folder)):
            continue
        found += [
            f"{rel_folder}/{name}"
            for name in sorted(files)
            if name.endswith(".py") and name != "__init__.py" and f"{rel_folder}/{name}" not in named
        ]
    return found


def _prefixes(rel: str) -> Iterator[str]:
    while rel and rel != ".":
        yield rel
        rel = rel.rpartition("/")[0]


def _warning(kind: str, entry_id: str | None, path: str | None, message: str) -> dict:
    return {"kind": kind, "id": entry_id, "path": path, "message": message}


def _file_warnings(archive: Archive, present: dict[str, bool]) -> list[dict]:
    from grugctl.transaction import inside

    warnings = []
    for entry in archive.experiments.values():
        try:
            inside(archive.root, entry.path, f"{entry.id}:")
        except GrugError as error:
            warnings.append(_warning("outside-repo", entry.id, entry.path, str(error)))
        if entry.status != "deleted" and not present[entry.id]:
            message = (
                f"{entry.id}: {entry.status} file {entry.path} is missing; restore it or set status deleted"
            )
            warnings.append(_warning("missing-file", entry.id, entry.path, message))
        if entry.status == "deleted" and present[entry.id]:
            message = (
                f"{entry.id}: deleted, but {entry.path} still exists; delete the file or change the status"
            )
            warnings.append(_warning("deleted-file-exists", entry.id, entry.path, message))
    for rel in _unregistered_files(archive):
        message = f"{rel} is not named by any entry; register it in {archive.path.name} or delete it"
        warnings.append(_warning("unregistered-file", None, rel, message))
    return warnings


def _reference_warnings(archive: Archive) -> list[dict]:
    warnings = []
    for entry in archive.experiments.values():
        for name in ("origin", "superseded_by"):
            ref = getattr(entry, name)
            if ref and not ref.startswith("core@") and ref not in archive.experiments:
                message = f"{entry.id}.{name}: '{ref}' is not an id in {archive.path.name}; fix or remove it"
                warnings.append(_warning("unknown-id", entry.id, entry.path, message))
        if entry.status == "superseded" and not entry.superseded_by:
            message = f"{entry.id}: superseded but superseded_by is empty; set it with `grugctl archive set`"
            warnings.append(_warning("no-successor", entry.id, entry.path, message))
    return warnings


def _entry_shas(entry: Entry) -> list[tuple[str, str]]:
    pairs = [(name, getattr(entry, name)) for name in SHA_FIELDS if getattr(entry, name)]
    if (
        entry.superseded_by
        and entry.superseded_by.startswith("core@")
        and entry.superseded_by != CORE_PENDING
    ):
        pairs.append(("superseded_by", entry.superseded_by[len("core@") :]))
    return pairs


def _sha_warnings(archive: Archive) -> list[dict]:
    """One `git cat-file --batch-check` for every SHA in the archive (and no GitPython import)."""
    from grugctl import gitinfo

    top = gitinfo.toplevel(archive.root)
    if top is None:
        message = f"{archive.root} is not inside a git repository (or git is missing); SHAs were not checked"
        return [_warning("no-git", None, None, message)]
    shas = [sha for entry in archive.experiments.values() for _, sha in _entry_shas(entry)]
    known = gitinfo.resolve_shas(top, shas)
    warnings = []
    for entry in archive.experiments.values():
        for name, sha in _entry_shas(entry):
            if known.get(sha) is None:
                message = (
                    f"{entry.id}.{name}: {sha} is not a commit in this repository; fix it or run resolve"
                )
                warnings.append(_warning("unknown-sha", entry.id, entry.path, message))
    return warnings


def status_report(archive: Archive, *, status: str | None = None, bucket: str | None = None) -> dict:
    """Rows for the selected entries, counts, and every inconsistency in the archive, JSON-ready."""
    if status is not None and status not in STATUSES:
        raise GrugError(f"--status '{status}' is not one of {', '.join(STATUSES)}")
    if bucket is not None and bucket not in (*BUCKETS, "none"):
        raise GrugError(f"--bucket '{bucket}' is not one of {', '.join(BUCKETS)}, none")
    entries = archive.experiments.values()
    present = {e.id: (archive.root / e.path).exists() for e in entries}
    warnings = _file_warnings(archive, present) + _reference_warnings(archive) + _sha_warnings(archive)
    rows = [
        entry_dict(e) | {"file_present": present[e.id]}
        for e in entries
        if (status is None or e.status == status) and (bucket is None or (e.bucket or "none") == bucket)
    ]
    counts = {s: sum(e.status == s for e in entries) for s in STATUSES}
    summary = {"total": len(archive.experiments), "shown": len(rows), **counts, "warnings": len(warnings)}
    return {"archive": str(archive.path), "summary": summary, "experiments": rows, "warnings": warnings}


def get_entry(archive: Archive, entry_id: str) -> Entry:
    """The entry, or the one-sentence error every command gives for an unknown id."""
    if entry_id not in archive.experiments:
        hint = _did_you_mean(entry_id, list(archive.experiments))
        raise GrugError(
            f"no experiment '{entry_id}' in {archive.path.name}{hint}; `grugctl archive status` lists the ids"
        )
    return archive.experiments[entry_id]


def show_report(archive: Archive, entry_id: str) -> dict:
    get_entry(archive, entry_id)
    report = status_report(archive)
    row = next(r for r in report["experiments"] if r["id"] == entry_id)
    return row | {"warnings": [w for w in report["warnings"] if w["id"] == entry_id]}


# Allowed without --force: an experiment only moves towards the past.
TRANSITIONS = {("active", "superseded"), ("active", "deleted"), ("superseded", "deleted")}


def _successor(archive: Archive, entry_id: str, value: str) -> str:
    """superseded_by as written: an existing id, core@pending, or core@<rev> resolved by git to 12 hex."""
    if not value.startswith("core@"):
        if value not in archive.experiments or value == entry_id:
            raise GrugError(
                f"--superseded-by '{value}' must be another experiment's id, core@<sha> or {CORE_PENDING}"
            )
        return value
    if value == CORE_PENDING:
        return value
    from grugctl import gitinfo

    try:
        repo = gitinfo.open_repo(archive.root)
    except GrugError:  # no git to ask: accept a well-formed SHA
        try:
            return check_field("superseded_by", value)
        except ValueError as error:
            raise GrugError(f"--superseded-by {error}") from None
    full = gitinfo.resolve_shas(repo, [value[len("core@") :]])[value[len("core@") :]]
    if full is None:
        raise GrugError(f"--superseded-by {value}: git knows no such commit; use a SHA from `git log`")
    return "core@" + full[:SHA_LEN]


def set_entry(
    path: Path | str, entry_id: str, changes: dict, *, force: bool = False, dry_run: bool = False
) -> list[tuple[str, Any, Any]]:
    """`archive set`: validated edits, transitions checked under the lock. Returns (field, old, new)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise GrugError("nothing to change; pass --status, --superseded-by, --purpose, --notes or --issue")
    archive = load_archive(path)
    if "superseded_by" in changes:
        changes["superseded_by"] = _successor(archive, entry_id, changes["superseded_by"])
    clean = _clean_fields(entry_id, changes)
    before: dict[str, Any] = {}

    def edit(experiments: Any, fresh: Archive) -> None:
        entry = _entry_node(experiments, entry_id, fresh)
        old, new = entry.get("status"), clean.get("status", entry.get("status"))
        if old != new and (old, new) not in TRANSITIONS and not force:
            raise GrugError(
                f"{entry_id} is {old}; {old} -> {new} is not allowed (active -> superseded | deleted, "
                "superseded -> deleted); pass --force if you mean it"
            )
        if new == "superseded" and not (clean.get("superseded_by") or entry.get("superseded_by")):
            raise GrugError(
                f"marking {entry_id} superseded needs --superseded-by ID, core@SHA or {CORE_PENDING}"
            )
        if clean.get("superseded_by") and new == "active":
            raise GrugError(
                f"{entry_id} is active; only superseded or deleted experiments have superseded_by"
            )
        before.update({name: entry.get(name) for name in clean})
        _write_fields(entry, clean)

    def verify(result: Archive) -> None:
        for name, value in clean.items():
            if name in ("purpose", "notes", "issue") and getattr(result.experiments[entry_id], name) != value:
                raise GrugError(
                    f"--{name.replace('_', '-')} holds characters archive.yaml would not give back "
                    "exactly; remove unusual control characters and try again"
                )

    after = update_entries(archive.path, [entry_id], edit, dry_run=dry_run, verify=verify)
    after = after.experiments[entry_id]
    return [
        (name, before[name], getattr(after, name)) for name in clean if before[name] != getattr(after, name)
    ]


def resolve_archive(
    path: Path | str, *, dry_run: bool = False
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Fill missing introduced (all entries) and last_known_good (superseded/deleted) from git history.
    Returns ((id, field, sha) filled, reasons for what could not be filled). Git runs outside the lock."""
    from grugctl import gitinfo

    archive = load_archive(path)
    repo = gitinfo.open_repo(archive.root)
    entries = archive.experiments.values()
    wanted = [(e, "introduced") for e in entries if e.introduced is None]
    wanted += [(e, "last_known_good") for e in entries if e.status != "active" and e.last_known_good is None]
    firsts = gitinfo.first_commits_with(repo, [archive.root / e.path for e, f in wanted if f == "introduced"])
    lasts = gitinfo.last_commits_with(
        repo, [archive.root / e.path for e, f in wanted if f == "last_known_good"]
    )
    found, missing = {}, []
    for entry, name in wanted:
        sha = (firsts if name == "introduced" else lasts)[str(archive.root / entry.path)]
        if sha is None:
            missing.append(
                f"{entry.id}.{name}: {entry.path} is in no commit yet; commit it, then run resolve again"
            )
        else:
            found[(entry.id, name)] = sha[:SHA_LEN]
    filled: list[tuple[str, str, str]] = []

    def edit(experiments: Any, _: Archive) -> None:
        filled.clear()  # update_entries may call this twice
        for (entry_id, name), sha in found.items():
            entry = experiments.get(entry_id)
            if entry is not None and entry.get(name) is None:  # a concurrent writer may have filled it
                put_field(entry, name, sha)
                filled.append((entry_id, name, sha))

    if found:
        ids = list(dict.fromkeys(entry_id for entry_id, _ in found))
        update_entries(archive.path, ids, edit, dry_run=dry_run)
    return filled, missing


# ---------------------------------------------------------------- import from a marin-style grug-archive.md

MD_FIELDS = {
    "path": "path", "origin": "origin", "introduced": "introduced", "last known-good": "last_known_good",
    "last known good": "last_known_good", "status": "status", "purpose": "purpose", "notes": "notes",
    "superseded by": "superseded_by", "issue": "issue",
}  # fmt: skip
MD_HEADING_RE = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*\Z")
MD_BULLET_RE = re.compile(
    r"\s{0,3}[-*+]\s+(\*\*|__)?([A-Za-z][A-Za-z _-]*?)(\*\*|__)?\s*:\s*(\*\*|__)?\s*(.*)\Z"
)
MD_SHA_RE = re.compile(r"`?([0-9a-fA-F]{7,40})`?(?![0-9a-zA-Z])\s*(.*)\Z", re.S)
MD_UNKNOWN = ("tbd", "unknown", "n/a", "none", "-", "—", "?", "")


def _md_blocks(text: str) -> list[tuple[int, str, list[list]]]:
    """(line, heading, items) per `###` section outside code fences; items are [line, key or None, text]."""
    blocks: list[tuple[int, str, list[list]]] = []
    current, fence = None, None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence:
            fence = None if stripped.startswith(fence) else fence
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        heading = MD_HEADING_RE.match(stripped)
        if heading and len(heading.group(1)) <= 3:
            current = (number, heading.group(2), []) if len(heading.group(1)) == 3 else None
            if current:
                blocks.append(current)
        elif current is not None and stripped:
            bullet = MD_BULLET_RE.match(line)
            items = current[2]
            if bullet and not line[:1].isspace():
                items.append([number, bullet.group(2).strip(), bullet.group(5).strip()])
            elif line[:1].isspace() and items and items[-1][1] is not None:
                items[-1][2] += "\n" + stripped  # a bullet's continuation line
            else:
                items.append([number, None, stripped])
    return blocks


def _md_value(text: str) -> str:
    """Drop markdown decoration around a whole value: `code`, **bold**, [text](link)."""
    value = text.strip()
    link = re.fullmatch(r"\[([^\]]*)\]\(([^)]*)\)", value)
    if link:
        value = link.group(1)
    while len(value) >= 2 and value[0] == value[-1] and value[0] in "`*_":
        value = value[1:-1].strip()
    return value


def _md_unknown(text: str) -> bool:
    value = _md_value(text).lower()
    return value in MD_UNKNOWN or value.startswith("tbd")


def _md_field(name: str, raw: str) -> tuple[Any, bool]:
    """(converted value or None, whether the original line must also be kept in notes)."""
    if _md_unknown(raw):
        return None, False
    value = _md_value(raw)
    if name in SHA_FIELDS:
        sha = MD_SHA_RE.match(value)
        return (sha.group(1).lower(), bool(sha.group(2).strip(" .,;"))) if sha else (None, True)
    if name == "status":
        word = re.split(r"[\s(,;:]", value.lower(), maxsplit=1)[0].strip("`*_.")
        return (word, word != value.lower()) if word in STATUSES else (None, True)  # e.g. 'archived'
    if name == "origin":
        return (value, False) if ID_RE.match(value) else (None, True)
    if name == "purpose":  # a wrapped Markdown line is one line of text
        return " ".join(value.split()), False
    return value, False


def _md_entry(label: str, number: int, heading: str, items: list[list]) -> tuple[dict | None, list[str]]:
    """One section as entry fields (superseded_by still raw), plus messages; None when it cannot convert."""
    renamed, messages, extra, fields, unread = [], [], [], {}, {}
    entry_id = _md_value(heading)
    if not ID_RE.match(entry_id):
        entry_id = re.sub(r"[^a-z0-9]+", "-", entry_id.lower()).strip("-")
        renamed.append(f"{label}:{number}: heading '{heading}' became id '{entry_id}'")
    for line, key, raw in items:
        name = MD_FIELDS.get(key.lower()) if key else None
        if name is None or name in fields:
            extra.append(f"{key}: {raw}" if key else raw)
            continue
        value, keep_line = _md_field(name, raw) if name != "superseded_by" else (raw, False)
        if value is not None:
            fields[name] = value
        elif keep_line:
            unread[name] = f"`- {key}: {raw}`"
        if keep_line:
            extra.append(f"{key}: {raw}")
            messages.append(f"{label}:{line}: {entry_id}: kept '{key}: {raw}' in notes")
    if extra:
        fields["notes"] = "\n".join(filter(None, [fields.get("notes"), *extra]))
    missing = [name for name in REQUIRED if name not in fields]
    if entry_id and not missing:
        return {"id": entry_id, **fields}, renamed + messages
    problems = [
        f"{unread[m]} is not usable" if m in unread else f"no `- {m.capitalize()}:` line" for m in missing
    ]
    why = "; ".join(problems) or "no id in its heading"
    return None, renamed + [f"{label}:{number}: '### {heading}' not imported: {why}; fix it and import again"]


def _md_successor(entry: dict, raw: str, by_path: dict[str, str], ids: set[str]) -> str | None:
    """Map 'Superseded by' to an id (named directly or by its path) or core@<sha>; None if it cannot."""
    value = _md_value(raw)
    first = _md_value(value.split()[0]) if value.split() else ""
    target = first if first in ids else by_path.get(_norm(first.rstrip("/"))) if first else None
    if target and target != entry["id"]:
        return target
    sha = MD_SHA_RE.match(value)
    return "core@" + sha.group(1).lower() if sha else None


def parse_markdown_archive(
    text: str, label: str, known_ids: set[str] = frozenset()
) -> tuple[list[dict], list[str]]:
    """Entries from a marin-style archive (`### id` + `- Key: value` bullets; TBD means unknown).
    Anything without a field of its own is kept, verbatim, in notes. Returns (entries, messages)."""
    entries, messages, seen = [], [], set()
    for number, heading, items in _md_blocks(text):
        entry, notes = _md_entry(label, number, heading, items)
        messages += notes
        if entry is not None and entry["id"] in seen:
            messages.append(
                f"{label}:{number}: '### {heading}' repeats id '{entry['id']}'; only the first was kept"
            )
            continue
        if entry is not None:
            seen.add(entry["id"])
            entries.append(entry)
    by_path = {_norm(e["path"].rstrip("/")): e["id"] for e in entries}
    for entry in entries:
        raw = entry.pop("superseded_by", None)
        if raw is None or _md_unknown(raw):
            continue
        successor = _md_successor(entry, raw, by_path, seen | set(known_ids))
        if successor is not None:
            entry["superseded_by"] = successor
        if successor is None or len(_md_value(raw).split()) > 1:
            entry["notes"] = "\n".join(filter(None, [entry.get("notes"), f"Superseded by: {raw}"]))
        if successor is None:
            messages.append(
                f"{label}: {entry['id']}: 'Superseded by: {raw}' names no id or commit; kept in notes"
            )
    return entries, messages


def _checked_md_entries(entries: list[dict], messages: list[str]) -> list[dict]:
    """Drop entries the archive's validator would reject, saying why."""
    kept = []
    for entry in entries:
        try:
            _clean_entry(entry)
            kept.append(entry)
        except GrugError as error:
            messages.append(f"{entry['id']}: not imported: {error}")
    return kept


def _expand_shas(root: Path, entries: list[dict]) -> None:
    """Short SHAs become 12 characters where this repository knows the commit."""
    from grugctl import gitinfo

    try:
        repo = gitinfo.open_repo(root)
    except GrugError:
        return
    shas = [e[n] for e in entries for n in SHA_FIELDS if e.get(n)]
    shas += [e["superseded_by"][5:] for e in entries if str(e.get("superseded_by", "")).startswith("core@")]
    full = gitinfo.resolve_shas(repo, shas)
    for entry in entries:
        for name in SHA_FIELDS:
            if entry.get(name) and full.get(entry[name]):
                entry[name] = full[entry[name]][:SHA_LEN]
        successor = str(entry.get("superseded_by", ""))
        if successor.startswith("core@") and full.get(successor[5:]):
            entry["superseded_by"] = "core@" + full[successor[5:]][:SHA_LEN]


MAX_MARKDOWN = 16 << 20  # an archive of a few thousand experiments is ~1 MB; more is not an archive


def _read_markdown(markdown: Path) -> str:
    """The file's text: a regular file of at most MAX_MARKDOWN bytes (/dev/zero or a FIFO would never
    end), UTF-8."""
    from grugctl import transaction

    try:
        fd = os.open(markdown, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise transaction.os_error(error, "read", markdown) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise GrugError(f"{markdown} is not a regular file; pass a Markdown file")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_MARKDOWN + 1)
        except OSError as error:
            raise transaction.os_error(error, "read", markdown) from None
    if len(data) > MAX_MARKDOWN:
        raise GrugError(f"{markdown} is larger than {MAX_MARKDOWN >> 20} MiB; that is not a Markdown archive")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        why = f"{markdown} is not UTF-8 text (byte {error.start}); convert it and try again"
        raise GrugError(why) from None


def import_markdown(
    path: Path | str, markdown: Path | str, *, dry_run: bool = False
) -> tuple[list[str], list[str]]:
    """`archive import-md`: add every convertible section as an entry. Returns (ids added, messages)."""
    archive = load_archive(path)
    markdown = Path(markdown)
    text = _read_markdown(markdown)
    entries, messages = parse_markdown_archive(text, markdown.name, set(archive.experiments))
    taken = [e["id"] for e in entries if e["id"] in archive.experiments]
    if taken:
        raise GrugError(
            f"{', '.join(taken)} already in {archive.path.name}; rename or remove those sections "
            f"in {markdown.name} and run import-md again"
        )
    entries = _checked_md_entries(entries, messages)
    _expand_shas(archive.root, entries)
    if entries:
        add_entries(archive.path, entries, dry_run=dry_run)
    return [e["id"] for e in entries], messages
