"""Reading archive.yaml: bounded bytes, libyaml nodes, and a validated Archive whose every problem is one
`file:line:column: field: message` sentence.

Reading composes YAML nodes with libyaml (PyYAML's C parser): ruamel's pure-Python parser takes ~2.7 s on
a 1,000-entry archive, libyaml ~0.1 s, and its nodes still carry line:column for error messages.
Anchors and aliases are refused (neither people nor grugctl need them, and an alias bomb would expand
without bound), and so are repeated keys at every depth.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grugctl.archive.schema import (
    ARCHIVE_NAME,
    BOOL_RE,
    FIELDS,
    FLOAT_RE,
    INT_RE,
    MAX_ARCHIVE,
    MAX_DEPTH,
    MAX_VALUE,
    NULL_RE,
    REQUIRED,
    TOP_KEYS,
    Archive,
    Entry,
    check_field,
    check_id,
    check_repo_path,
    clip,
    did_you_mean,
    display_path,
    kind_of,
)
from grugctl.errors import GrugError


def located_error(label: str, line: int, column: int, field: str, message: str) -> GrugError:
    return GrugError(f"{label}:{line}:{column}: {clip(field) + ': ' if field else ''}{message}")


def error_at(label: str, node: Any, field: str, message: str) -> GrugError:
    return located_error(label, node.start_mark.line + 1, node.start_mark.column + 1, field, message)


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    return data.count(b"\n", 0, offset) + 1, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


@functools.cache
def node_loader() -> type:
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
        raise located_error(label, line, col, "", bad) from None
    try:
        root = yaml.compose(data, Loader=node_loader())
    except RecursionError:
        raise located_error(label, 1, 1, "", f"nested deeper than {MAX_DEPTH} levels; flatten it") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = error.context_mark
        context = f"{error.context} from line {where.line + 1}, " if error.context and where else ""
        problem = f"not valid YAML: {context}{error.problem or 'syntax error'}; fix the syntax there"
        raise located_error(label, mark.line + 1, mark.column + 1, "", problem) from None
    except yaml.YAMLError as error:  # ReaderError: control characters; it knows an offset, not a line
        line, col = _line_col(data, getattr(error, "position", 0) or 0)
        problem = "the file contains control characters, not YAML text; restore it from git"
        raise located_error(label, line, col, "", problem) from None
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
            raise error_at(label, node, "", why)
        if depth > MAX_DEPTH:
            raise error_at(label, node, "", f"nested deeper than {MAX_DEPTH} levels; flatten it")
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
            raise error_at(label, key, prefix.rstrip("."), "keys must be plain names, not lists or mappings")
        name = key.value
        if name in seen:
            what = "id; each experiment id may appear once" if prefix == "experiments." else "key; keep one"
            raise error_at(label, key, prefix + name, f"duplicate {what}")
        if allowed is not None and name not in allowed:
            hint = did_you_mean(name, allowed)
            raise error_at(
                label, key, prefix + name, f"unknown key; expected one of {', '.join(allowed)}{hint}"
            )
        seen[name] = (key, value)
    return seen


def field_value(name: str, node: Any) -> Any:
    """Text fields keep the characters as written (a SHA like 0123e45 must not become a float)."""
    import yaml

    if name == "results":
        return _plain(node)
    if not isinstance(node, yaml.ScalarNode):
        raise ValueError(f"expected text, found {kind_of(node)}")
    return None if not node.style and NULL_RE.match(node.value) else node.value


def _entry(label: str, entry_id: str, key: Any, node: Any) -> Entry:
    import yaml

    where = f"experiments.{entry_id}"
    if not isinstance(node, yaml.MappingNode):
        raise error_at(
            label,
            node,
            where,
            f"expected a mapping of fields ({', '.join(REQUIRED)}, ...), found {kind_of(node)}",
        )
    pairs = _pairs(node, label, where + ".", FIELDS)
    for name in REQUIRED:
        if name not in pairs:
            raise error_at(
                label, key, where, f"missing required field '{name}'; add `{name}: ...` to the entry"
            )
    values = {}
    for name, (_, value) in pairs.items():
        try:
            values[name] = check_field(name, field_value(name, value))
        except _Bad as error:
            raise error_at(label, error.node, f"{where}.{name}", str(error)) from None
        except ValueError as error:
            raise error_at(label, value, f"{where}.{name}", str(error)) from None
    return Entry(id=entry_id, **values)


def _top_text(
    label: str, pairs: dict, name: str, default: str | None, check: Callable[[str], str]
) -> str | None:
    if name not in pairs:
        return default
    try:
        value = field_value(name, pairs[name][1])
        return default if value is None else check(value)
    except ValueError as error:
        raise error_at(label, pairs[name][1], name, str(error)) from None


def _experiments(label: str, pairs: dict) -> dict[str, Entry]:
    import yaml

    if "experiments" not in pairs:
        raise located_error(
            label, 1, 1, "experiments", "missing; add `experiments:` with one entry per experiment"
        )
    key, node = pairs["experiments"]
    if isinstance(node, yaml.ScalarNode) and _scalar(node) is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise error_at(
            label, node, "experiments", f"expected a mapping of id -> entry, found {kind_of(node)}"
        )
    entries = {}
    for entry_id, (key, value) in _pairs(node, label, "experiments.", None).items():
        try:
            check_id(entry_id)
        except ValueError as error:
            raise error_at(label, key, f"experiments.{entry_id}", str(error)) from None
        entries[entry_id] = _entry(label, entry_id, key, value)
    return entries


def parse_archive(data: bytes, path: Path) -> Archive:
    """Validate archive bytes; every problem is one GrugError line naming file:line:column and the field."""
    import yaml

    label = display_path(path)
    root = _compose(data, label)
    if root is None:
        raise located_error(
            label, 1, 1, "", "the file is empty; it needs at least `version: 1` and `experiments:`"
        )
    if not isinstance(root, yaml.MappingNode):
        raise error_at(
            label, root, "", f"expected a mapping with keys {', '.join(TOP_KEYS)}, found {kind_of(root)}"
        )
    pairs = _pairs(root, label, "", TOP_KEYS)
    if "version" not in pairs:
        raise error_at(label, root, "version", "missing; add `version: 1` at the top")
    version_node = pairs["version"][1]
    if not isinstance(version_node, yaml.ScalarNode) or _scalar(version_node) != 1:
        raise error_at(label, version_node, "version", "only schema version 1 is supported; set `version: 1`")
    experiments = _experiments(label, pairs)
    starter = _top_text(label, pairs, "starter", None, check_id)
    if starter is not None and starter not in experiments:
        raise error_at(
            label, pairs["starter"][1], "starter", f"'{starter}' is not an id under experiments; fix the name"
        )
    return Archive(
        path=path,
        root=path.parent,
        version=1,
        core=_top_text(label, pairs, "core", "grug_core", check_repo_path),
        starter=starter,
        experiments_dir=_top_text(label, pairs, "experiments_dir", "experiments/speedrun", check_repo_path),
        experiments=experiments,
    )


def read_archive_bytes(path: Path) -> bytes:
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
    return parse_archive(read_archive_bytes(path), path)


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


def experiments_span(data: bytes) -> tuple[list[str], list[int], int] | None:
    """(entry ids, line of each id, line where the experiments mapping ends) for a block-style mapping."""
    import yaml

    root = yaml.compose(data, Loader=node_loader())
    node = next((value for key, value in root.value if key.value == "experiments"), None)
    if not isinstance(node, yaml.MappingNode) or node.flow_style or not node.value:
        return None
    end = node.end_mark.line if node.end_mark.column == 0 else data.count(b"\n") + 1
    return [k.value for k, _ in node.value], [k.start_mark.line for k, _ in node.value], end
