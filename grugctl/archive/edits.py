"""The archive's own editing verbs: `archive set` (checked status transitions) and `archive resolve`
(missing SHAs filled from git history)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grugctl.archive.comments import put_field
from grugctl.archive.reader import load_archive
from grugctl.archive.schema import CORE_PENDING, SHA_LEN, Archive, check_field
from grugctl.archive.store import clean_fields, entry_node, update_entries, write_fields
from grugctl.errors import GrugError

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
    clean = clean_fields(entry_id, changes)
    before: dict[str, Any] = {}

    def edit(experiments: Any, fresh: Archive) -> None:
        entry = entry_node(experiments, entry_id, fresh)
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
        write_fields(entry, clean)

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
