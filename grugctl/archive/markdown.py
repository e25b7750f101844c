"""`archive import-md`: entries from a marin-style grug-archive.md, all or nothing."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from grugctl.archive.reader import load_archive
from grugctl.archive.schema import ID_RE, REQUIRED, SHA_FIELDS, SHA_LEN, STATUSES, norm_path
from grugctl.archive.store import add_entries, clean_entry
from grugctl.errors import GrugError

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
    target = first if first in ids else by_path.get(norm_path(first.rstrip("/"))) if first else None
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
    by_path = {norm_path(e["path"].rstrip("/")): e["id"] for e in entries}
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
            clean_entry(entry)
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
