"""Writing archive.yaml. Every write goes through _rewrite: inside a transaction (grugctl/transaction.py:
the repository lock, a journal, atomic replacement), re-read and validate, edit a ruamel round-trip
document (comments, key order and blank lines survive), validate the exact bytes that would be written
with the reader, then replace the file. A UTF-8 BOM and CRLF line endings the file had are kept.

update_archive edits the whole document; update_entries (behind set_fields, add_entry, append_result)
round-trips only the lines of the entries it touches, since ruamel needs ~5 s for a whole 1,000-entry
archive, and falls back to the whole document whenever the splice cannot be proven to leave every other
entry as it was.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grugctl.archive.comments import (
    blank_separated,
    carry_comment,
    is_block,
    last_line_slot,
    put_field,
    to_round_trip,
)
from grugctl.archive.reader import experiments_span, parse_archive, read_archive_bytes
from grugctl.archive.schema import (
    FIELDS,
    REQUIRED,
    SHA_FIELDS,
    Archive,
    check_field,
    check_id,
    display_path,
    get_entry,
    kind_of,
)
from grugctl.errors import GrugError

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


def edit_whole_document(data: bytes, archive: Archive, edit_fn: Callable[[Any], None]) -> bytes:
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
    data = read_archive_bytes(path)
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
    return _rewrite(path, lambda data, archive: (edit_whole_document(data, archive, edit_fn), None), dry_run)


def _edit_region(
    data: bytes, archive: Archive, ids: list[str], added: list[str], edit_fn: Callable[[Any, Archive], None]
) -> tuple[bytes, Archive] | None:
    """Round-trip only the lines of the entries in `ids` (from the first to the last of them) and splice
    them back: a 1,000-entry archive costs ~5 s whole. None when the layout is unusual or the result
    does not prove that every other entry is untouched; the caller then edits the whole document."""
    from ruamel.yaml.error import YAMLError

    text = data.decode("utf-8")
    odd = text.startswith("\ufeff") or any(c in text for c in ODD_BREAKS)
    span = None if odd else experiments_span(data)
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
    if not is_block(experiments) or list(experiments) != keys[first : last + 1]:
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
        return edit_whole_document(data, archive, lambda doc: edit_fn(experiments_node(doc), archive)), None

    return _rewrite(path, make, dry_run, verify)


def experiments_node(doc: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap

    experiments = doc.get("experiments")
    if not experiments:
        experiments = CommentedMap()
        doc["experiments"] = experiments
    experiments.fa.set_block_style()
    return experiments


def entry_node(experiments: Any, entry_id: str, archive: Archive) -> Any:
    get_entry(archive, entry_id)
    return experiments[entry_id]


def clean_entry(fields: dict) -> tuple[str, dict]:
    """(id, fields in FIELDS order without empty ones), validated like the reader validates."""
    fields = dict(fields)
    entry_id = str(fields.pop("id", "") or "")
    try:
        check_id(entry_id)
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
    clean = [clean_entry(fields) for fields in entries]
    ids = [entry_id for entry_id, _ in clean]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise GrugError(f"ids {', '.join(repeated)} are given more than once; each id may appear once")

    blank = blank_separated(
        read_archive_bytes(Path(path))
    )  # layout only, so reading outside the lock is fine

    def edit(experiments: Any, archive: Archive) -> None:
        taken = [i for i in ids if i in archive.experiments]
        if taken:
            raise GrugError(
                f"{', '.join(taken)} already in {archive.path.name}; choose ids that are not taken"
            )
        for entry_id, fields in clean:
            old = last_line_slot(experiments) if len(experiments) else None
            experiments[entry_id] = to_round_trip(fields)
            if old is not None:
                carry_comment(old, last_line_slot(experiments), blank_line=blank)

    return update_entries(path, [], edit, added=ids, dry_run=dry_run)


def add_entry(path: Path | str, entry_fields: dict, *, dry_run: bool = False) -> Archive:
    return add_entries(path, [entry_fields], dry_run=dry_run)


def clean_fields(entry_id: str, fields: dict) -> dict:
    clean = {}
    for name, value in fields.items():
        try:
            clean[name] = check_field(name, value)
        except ValueError as error:
            raise GrugError(f"experiments.{entry_id}.{name}: {error}") from None
    return clean


def write_fields(entry: Any, clean: dict) -> None:
    for name, value in clean.items():
        if value is None or value == ():
            if name in entry:  # an absent key stays absent rather than appearing as `name: null`
                entry[name] = None
            continue
        put_field(entry, name, to_round_trip(list(value) if name == "results" else value))


def set_fields(path: Path | str, entry_id: str, *, dry_run: bool = False, **fields: Any) -> Archive:
    """Validated edit of one entry; None clears a field that is present and writes nothing otherwise."""
    clean = clean_fields(entry_id, fields)
    edit = lambda experiments, archive: write_fields(entry_node(experiments, entry_id, archive), clean)
    return update_entries(path, [entry_id], edit, dry_run=dry_run)


def append_result(path: Path | str, entry_id: str, result: dict, *, dry_run: bool = False) -> Archive:
    """Add one mapping to an entry's results list."""
    from ruamel.yaml.comments import CommentedSeq

    if not isinstance(result, dict):
        raise GrugError(f"a result must be a mapping, not {kind_of(result)}")

    def edit(experiments: Any, archive: Archive) -> None:
        entry = entry_node(experiments, entry_id, archive)
        results = entry.get("results")
        if not results:  # created holding the result, so put_field moves trailing comments past it
            put_field(entry, "results", CommentedSeq([to_round_trip(result)]))
            return
        results.fa.set_block_style()
        old = last_line_slot(results)
        results.append(to_round_trip(result))
        carry_comment(old, last_line_slot(results), blank_line=False)

    return update_entries(path, [entry_id], edit, dry_run=dry_run)
