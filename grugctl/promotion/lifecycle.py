"""`grugctl delete` and `grugctl restore`: retire an experiment without losing it, and bring it back.

delete records last_known_good (the newest commit holding the file), removes the experiment's folder
(`git rm -r` when tracked, so the removal is staged like any other change) and marks the entry
deleted. It refuses uncommitted work: restore brings back what git holds, so the two are inverses only
when the bytes being deleted are committed. restore takes that commit's files (same place: `git
checkout <sha> -- <folder>`; under a new id: the blobs written to the new scaffold path and `git add`ed),
so the restored file is byte-identical to the deleted one.

Each runs as one transaction (grugctl/transaction.py): the files, the index and archive.yaml change
together or not at all, even across a crash (`grugctl recover`). Plans first, writes last, never
prints, never imports JAX.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grugctl import archive as archive_mod
from grugctl import gitinfo, transaction
from grugctl.errors import GrugError
from grugctl.transaction import git, open_repo


@dataclass(frozen=True)
class DeletePlan:
    id: str
    path: str  # the entry's file
    target: str  # what goes: the experiment's own folder, or only its file when the folder is shared
    tracked: bool  # git rm (True) or plain removal
    files: tuple[str, ...]  # files that disappear, repo-relative
    last_known_good: str  # full SHA
    superseded_by: str | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class RestorePlan:
    id: str  # the experiment brought back
    new_id: str | None  # --as
    sha: str  # full SHA of the commit the files come from
    source: str  # the folder or file at `sha`
    files: tuple[tuple[str, str, str], ...]  # (path at sha, path to write, git mode), repo-relative
    path: str  # the entry's path once restored
    present: bool  # every file is already there with those bytes: only archive.yaml changes
    fill_last_known_good: bool  # the entry had none; the SHA came from git history
    warnings: tuple[str, ...]


# ---------------------------------------------------------------- which files an experiment owns


def removal_target(archive, entry) -> str:
    """The experiment's own folder when it has one (its file's parent, inside experiments_dir, holding
    no other entry's files), else just its file: delete never removes a folder others live in."""
    path = PurePosixPath(entry.path)
    if path.suffix != ".py":
        return entry.path  # an entry naming a folder
    folder, base = path.parent, PurePosixPath(archive.experiments_dir)
    if folder == base or base not in folder.parents:
        return entry.path
    for other in archive.experiments.values():
        theirs = PurePosixPath(other.path)
        if other.id != entry.id and (theirs == folder or folder in theirs.parents):
            return entry.path
    return folder.as_posix()


def _files_on_disk(root: Path, target: str) -> tuple[str, ...]:
    return tuple(transaction.files_under(root, target))


def _children(archive, experiment_id: str) -> list[str]:
    return [
        other.id
        for other in archive.experiments.values()
        if other.origin == experiment_id and other.status == "active"
    ]


# ---------------------------------------------------------------- delete


def plan_delete(archive, experiment_id: str, superseded_by: str | None = None) -> DeletePlan:
    """Everything `delete` would do, checked, without writing anything."""
    entry = archive_mod.get_entry(archive, experiment_id)
    if experiment_id == archive.starter:
        raise GrugError(
            f"{experiment_id} is the starter every experiment is copied from; it cannot be deleted."
        )
    if entry.status == "deleted":
        raise GrugError(
            f"{experiment_id} is already deleted; `grugctl restore {experiment_id}` brings it back."
        )
    root = archive.root
    transaction.refuse_if_interrupted(root)
    repo = open_repo(root)
    target = removal_target(archive, entry)
    transaction.inside(root, target, f"{experiment_id}'s")
    last = gitinfo.last_commit_with(repo, root / entry.path)
    if last is None:
        raise GrugError(
            f"{entry.path} was never committed, so deleting it could not be undone; commit it first."
        )
    if gitinfo.is_dirty(repo, [root / target]):
        raise GrugError(
            f"{target} has uncommitted changes that restore could not bring back; commit them first."
        )
    # Validates --superseded-by and the status change exactly as the real edit will, writing nothing.
    archive_mod.set_entry(archive.path, experiment_id, _delete_fields(superseded_by, last), dry_run=True)
    warnings = [
        f"{child} names {experiment_id} as its origin; `grugctl diff {child} --against origin` will read it "
        "from git."
        for child in _children(archive, experiment_id)
    ]
    return DeletePlan(
        id=experiment_id,
        path=entry.path,
        target=target,
        tracked=transaction.tracked(repo, root, target),
        files=_files_on_disk(root, target),
        last_known_good=last,
        superseded_by=superseded_by,
        warnings=tuple(warnings),
    )


def _delete_fields(superseded_by: str | None, last: str) -> dict:
    return {"status": "deleted", "superseded_by": superseded_by, "last_known_good": last}


def remove_target(txn: transaction.Transaction, repo, target: str, is_tracked: bool) -> None:
    """Remove the experiment's folder or file (`git rm -r` when tracked), journaled first."""
    root = txn.root
    files = transaction.files_under(root, target)
    transaction.touch(txn, files)
    if is_tracked:  # files git does not track (ignored ones) stay, as `git rm` leaves them
        transaction.note_git(txn, staged=[target])
        git(repo, "rm", "-r", "-q", "--", str(root / target))
    else:
        for rel in files:
            transaction.remove(txn, rel)
    if not target.endswith(".py"):
        transaction.prune_empty(root, target)


def delete(archive, plan: DeletePlan) -> list[tuple[str, object, object]]:
    """Remove the files, then mark the entry deleted, in one transaction. Returns the archive changes
    as (field, old, new)."""
    with transaction.transaction(archive.root, f"grugctl delete {plan.id}") as txn:
        remove_target(txn, open_repo(archive.root), plan.target, plan.tracked)
        return archive_mod.set_entry(
            archive.path, plan.id, _delete_fields(plan.superseded_by, plan.last_known_good)
        )


# ---------------------------------------------------------------- restore


def _commit_of(repo, archive, entry) -> tuple[str, bool]:
    """(full SHA to restore from, whether it came from git history rather than last_known_good)."""
    sha, filled = entry.last_known_good, False
    if sha is None:
        sha, filled = gitinfo.last_commit_with(repo, archive.root / entry.path), True
        if sha is None:
            raise GrugError(
                f"{entry.id} has no last_known_good and git holds no commit with {entry.path}; "
                "nothing to restore from."
            )
    full = gitinfo.resolve_shas(repo, [sha])[sha]
    if full is None:
        raise GrugError(
            f"{entry.id}'s last_known_good {sha} is not a commit in this repository; fix it in archive.yaml."
        )
    return full, filled


def _files_at(repo, root: Path, sha: str, source: str) -> list[tuple[str, str]]:
    """(repo-relative path, git mode) of every file under `source` (a folder or a file) at `sha`."""
    top = Path(os.path.realpath(repo.working_tree_dir))
    real_root = Path(os.path.realpath(root))
    out = git(repo, "ls-tree", "-r", "-z", "--full-name", sha, "--", str(real_root / source))
    files = []
    for record in filter(None, out.split("\0")):
        meta, _, name = record.partition("\t")
        mode, kind = meta.split()[:2]
        if kind == "blob":
            files.append((os.path.relpath(top / name, real_root).replace(os.sep, "/"), mode))
    return files


def _destination(archive, entry, source: str, new_id: str | None) -> tuple[str, str]:
    """(the entry's path once restored, the folder or file the restored files go to)."""
    if new_id is None:
        return entry.path, source
    from grugctl.experiments import scaffold

    scaffold.check_name(new_id)
    if new_id in archive.experiments:
        raise GrugError(f"experiment {new_id!r} already exists; pick another id for --as.")
    path = scaffold.experiment_path(archive.experiments_dir, new_id)
    return path, (str(PurePosixPath(path).parent) if source != entry.path else path)


def _placed(entry_path: str, source: str, new_path: str, new_target: str, at_sha: str) -> str:
    if at_sha == entry_path or source == entry_path:
        return new_path
    return (PurePosixPath(new_target) / PurePosixPath(at_sha).relative_to(source)).as_posix()


def plan_restore(archive, experiment_id: str, new_id: str | None = None) -> RestorePlan:
    """Everything `restore` would do, checked, without writing anything."""
    entry = archive_mod.get_entry(archive, experiment_id)
    if entry.status == "active":
        raise GrugError(
            f"{experiment_id} is active, so there is nothing to restore; copy it with "
            f"`grugctl new NAME --from {experiment_id}`."
        )
    root = archive.root
    transaction.refuse_if_interrupted(root)
    repo = open_repo(root)
    sha, filled = _commit_of(repo, archive, entry)
    source = removal_target(archive, entry)
    found = _files_at(repo, root, sha, source)
    if entry.path not in {path for path, _ in found}:
        raise GrugError(f"{entry.path} is not in commit {sha[:12]}; fix {experiment_id}'s last_known_good.")
    path, target = _destination(archive, entry, source, new_id)
    transaction.inside(root, target, "restoring to")
    if new_id is not None and (root / target).exists():
        raise GrugError(f"{target} already exists; pick another id for --as or move it away.")
    files, present = [], True
    for at_sha, mode in found:
        dest = _placed(entry.path, source, path, target, at_sha)
        files.append((at_sha, dest, mode))
    _refuse_strangers(root, target, {dest for _, dest, _ in files})
    for at_sha, dest, _ in files:
        if (root / dest).exists():
            if (root / dest).read_bytes() != gitinfo.file_at(repo, sha, root / at_sha):
                raise GrugError(
                    f"restoring {experiment_id} would overwrite {dest}, which differs from commit "
                    f"{sha[:12]}; move it away first."
                )
        else:
            present = False
    _record_restore(archive, entry, new_id, path, sha, filled, dry_run=True)  # validates, writes nothing
    warnings = []
    if git(repo, "diff", "--name-only", sha, "HEAD", "--", str(root / archive.core)).strip():
        shown = new_id or experiment_id
        warnings.append(f"the core changed since {sha[:12]}; `grugctl diff {shown}` shows how.")
    return RestorePlan(
        id=experiment_id,
        new_id=new_id,
        sha=sha,
        source=source,
        files=tuple(files),
        path=path,
        present=present and new_id is None,
        fill_last_known_good=filled,
        warnings=tuple(warnings),
    )


def _refuse_strangers(root: Path, target: str, restored: set[str]) -> None:
    """A folder holding files that restore did not delete would be silently merged into."""
    strangers = [rel for rel in transaction.files_under(root, target) if rel not in restored]
    if (root / target).is_dir() and strangers:
        more = f" and {len(strangers) - 3} more" if len(strangers) > 3 else ""
        raise GrugError(
            f"{target} holds files restore did not delete ({', '.join(strangers[:3])}{more}); "
            "move them away first."
        )


def _new_entry(entry, new_id: str, path: str, sha: str) -> dict:
    return {
        "id": new_id,
        "path": path,
        "status": "active",
        "bucket": entry.bucket,
        "origin": entry.id,
        "purpose": entry.purpose,
        "base": sha,
    }


def _reactivate(experiment_id: str, sha: str | None):
    """The archive edit of a restore under the same id: active again, no successor."""

    def edit(experiments, fresh) -> None:
        node = experiments.get(experiment_id)
        if node is None or fresh.experiments[experiment_id].status == "active":
            raise GrugError(f"{experiment_id} changed in archive.yaml meanwhile; run restore again.")
        archive_mod.put_field(node, "status", "active")
        if "superseded_by" in node:
            del node["superseded_by"]
        if sha is not None:
            archive_mod.put_field(node, "last_known_good", sha[: archive_mod.SHA_LEN])

    return edit


def _record_restore(archive, entry, new_id, path: str, sha: str, filled: bool, dry_run: bool) -> None:
    if new_id is not None:
        archive_mod.add_entry(archive.path, _new_entry(entry, new_id, path, sha), dry_run=dry_run)
    else:
        edit = _reactivate(entry.id, sha if filled else None)
        archive_mod.update_entries(archive.path, [entry.id], edit, dry_run=dry_run)


def restore(archive, plan: RestorePlan) -> None:
    """Write the files from git (staged, like delete's removal), then update archive.yaml, in one
    transaction."""
    root = archive.root
    entry = archive.experiments[plan.id]
    dests = [dest for _, dest, _ in plan.files]
    with transaction.transaction(root, f"grugctl restore {plan.id}") as txn:
        repo = open_repo(root)
        _refuse_strangers(root, plan.source if plan.new_id is None else str(PurePosixPath(plan.path).parent),
                          set(dests))  # fmt: skip
        transaction.touch(txn, dests)
        for dest in dests:
            transaction.make_dirs(txn, str(PurePosixPath(dest).parent))
        transaction.note_git(txn, staged=dests)
        if plan.new_id is None:
            git(repo, "checkout", plan.sha, "--", str(root / plan.source))
        else:
            for at_sha, dest, mode in plan.files:
                data = gitinfo.file_at(repo, plan.sha, root / at_sha)
                transaction.write(txn, dest, data, 0o755 if mode == "100755" else 0o644)
            git(repo, "add", "--", *(str(root / dest) for dest in dests))
        _record_restore(
            archive, entry, plan.new_id, plan.path, plan.sha, plan.fill_last_known_good, dry_run=False
        )
