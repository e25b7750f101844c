"""What the reading commands ask of the archive: JSON-ready rows and every inconsistency between the
archive, the files and git (`archive status`, `archive show`, `grugctl check`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from grugctl.archive.schema import (
    BUCKETS,
    CORE_PENDING,
    FIELDS,
    SHA_FIELDS,
    STATUSES,
    Archive,
    Entry,
    get_entry,
    norm_path,
)
from grugctl.errors import GrugError


def entry_dict(entry: Entry) -> dict:
    """An entry as JSON-ready data, keys in FIELDS order."""
    data = {"id": entry.id}
    data.update({name: getattr(entry, name) for name in FIELDS})
    data["results"] = list(entry.results)
    return data


def _unregistered_files(archive: Archive) -> list[str]:
    """Experiment files under experiments_dir that no entry names (an entry path may name a folder).
    Plain string paths: pathlib objects cost ~0.1 s over 1,000 experiment folders."""
    named = {norm_path(entry.path) for entry in archive.experiments.values()}
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


def show_report(archive: Archive, entry_id: str) -> dict:
    get_entry(archive, entry_id)
    report = status_report(archive)
    row = next(r for r in report["experiments"] if r["id"] == entry_id)
    return row | {"warnings": [w for w in report["warnings"] if w["id"] == entry_id]}


# Allowed without --force: an experiment only moves towards the past.
