"""Keeping comments where a person put them when grugctl inserts or appends a field: ruamel hangs a
comment on the value before it, so an insertion carries it past the new line."""

from __future__ import annotations

import copy
from typing import Any

from grugctl.archive.reader import experiments_span
from grugctl.archive.schema import FIELDS


def is_block(value: Any) -> bool:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    return isinstance(value, (CommentedMap, CommentedSeq)) and len(value) > 0 and not value.fa.flow_style()


def last_line_slot(node: Any, key: Any = None) -> tuple[list, int, Any]:
    """(comment slot, index, scalar) for the last line of `node[key]` (or of `node` when key is None)."""
    from ruamel.yaml.comments import CommentedMap

    if key is None:
        key = list(node.keys())[-1] if isinstance(node, CommentedMap) else len(node) - 1
    value = node[key]
    if is_block(value):
        return last_line_slot(value)
    slot = node.ca.items.setdefault(key, [None, None, None, None])
    return slot, 2 if isinstance(node, CommentedMap) else 0, value


def _block_scalar(value: Any) -> bool:
    from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

    return isinstance(value, (LiteralScalarString, FoldedScalarString))


def carry_comment(old: tuple[list, int, Any], new: tuple[list, int, Any], blank_line: bool) -> None:
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


def blank_separated(data: bytes) -> bool:
    """Whether the last two entries are separated by a blank line (new ones follow suit); True for
    fewer than two entries. Read from the text: ruamel hides blank lines after block scalars."""
    span = experiments_span(data)
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


def to_round_trip(value: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

    if isinstance(value, str) and "\n" in value.strip() and _literal_ok(value):
        return LiteralScalarString(value)  # multi-line notes read better as a `|` block than "a\nb"
    if isinstance(value, str) and not value.isprintable():
        # Line breaks YAML would fold (CR, U+0085, U+2028), tabs and control characters: a double-quoted
        # scalar escapes each one, so the text comes back exactly.
        return DoubleQuotedScalarString(value)
    if isinstance(value, dict):
        return CommentedMap((k, to_round_trip(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return CommentedSeq(to_round_trip(v) for v in value)
    return value


def put_field(entry: Any, name: str, value: Any) -> None:
    """Set entry[name], inserting a new key at its place in FIELDS order with comments left in place."""
    if name in entry:
        entry[name] = value
        return
    keys = list(entry.keys())
    rank = {field: i for i, field in enumerate(FIELDS)}
    position = next((i for i, k in enumerate(keys) if rank.get(k, len(FIELDS)) > rank[name]), len(keys))
    old = last_line_slot(entry, keys[position - 1]) if position else None
    entry.insert(position, name, value)
    if old is not None:
        carry_comment(old, last_line_slot(entry, name), blank_line=False)
