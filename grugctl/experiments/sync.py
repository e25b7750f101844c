"""`grugctl sync`: bring an experiment's copies of core definitions onto the current core, one
definition at a time.

A three-way merge per top-level definition: base = the core at the entry's `base` commit (where the
copies came from, or the last sync), theirs = the core on disk now, ours = the experiment's copy.
- unchanged by the experiment: replaced by the core's definition (refreshed);
- changed only by the experiment: kept;
- changed on both sides: `git merge-file --diff3` on the three texts of that one definition, so a
  conflict's markers never leave it;
- imports and helpers a refreshed definition now uses are added (a helper is copied when the starter
  holds a copy, else imported from the core); imports the sync left unused, and copies of definitions
  the core dropped that nothing uses any more, are removed.
The entry's `base` advances to HEAD and the previous one is kept as `synced_from`; the file's bytes
change, so runs recorded before no longer count as the current code's in `grugctl compare`.

A conflict is left like git leaves one: the file holds the markers, and the bytes before the sync are
saved beside the journal (`<git dir>/grugctl/sync/<id>.json`), in the same transaction as the file.
`--continue` (no markers left, the file parses) records the new base; `--abort` writes the saved bytes
back. Never prints; never imports JAX.
"""

from __future__ import annotations

import ast
import base64
import builtins
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grugctl import archive as archive_mod
from grugctl import codediff, gitinfo, transaction
from grugctl.errors import CHECK_FAILED, GrugError
from grugctl.splice import add_imports, insert_lines

CURRENT = "current"  # already as the core has it (comments aside)
REFRESHED = "refreshed"  # unchanged by the experiment: now the core's
KEPT = "kept"  # changed only by the experiment
MERGED = "merged"  # changed on both sides, merged line by line without conflict
CONFLICT = "conflict"  # changed on both sides, conflict markers left inside it
DROPPED = "dropped"  # a copy of a definition the core no longer has, used by nothing any more
MARKER = re.compile(r"^(<{7}|\|{7}|={7}|>{7})( |$)", re.M)


@dataclass(frozen=True)
class Merged:
    """What merging one file did: the new text and what happened to each definition."""

    text: str
    outcomes: dict[str, str]  # definition -> CURRENT, REFRESHED, KEPT, MERGED, CONFLICT or DROPPED
    added: tuple[str, ...]  # helpers copied and import statements added
    removed: tuple[str, ...]  # import statements removed
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class SyncPlan:
    id: str
    path: str  # the experiment's file, repo-relative
    base: str  # the entry's base now
    target: str  # the commit that becomes its base (full SHA)
    merged: Merged
    old: bytes
    new: bytes
    record: bool  # whether archive.yaml changes (the core moved since the base)
    warnings: tuple[str, ...]

    @property
    def conflicts(self) -> tuple[str, ...]:
        return tuple(n for n, o in self.merged.outcomes.items() if o == CONFLICT)

    @property
    def changed(self) -> dict[str, str]:
        return {n: o for n, o in self.merged.outcomes.items() if o not in (KEPT, CURRENT)}


# ---------------------------------------------------------------- the merge, on source text


def merge_text(ours: str, base: str, theirs: str, labels: tuple[str, str, str]) -> tuple[str, bool]:
    """(merged text, conflicted) by `git merge-file --diff3` on three temporary files."""
    with tempfile.TemporaryDirectory(prefix="grugctl-sync-") as folder:
        paths = [Path(folder) / name for name in ("ours", "base", "theirs")]
        for path, text in zip(paths, (ours, base, theirs), strict=True):
            path.write_text(text, encoding="utf-8")
        labelled = [arg for label in labels for arg in ("-L", label)]
        done = subprocess.run(
            ["git", "merge-file", "-p", "--diff3", *labelled, *map(str, paths)], capture_output=True
        )
    if done.returncode >= 128 or done.returncode < 0:  # git's own error (it exits -1)
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
        raise GrugError(f"`git merge-file` failed ({message}); check that git works here.")
    return done.stdout.decode("utf-8"), done.returncode > 0


def _classify(ours, base, theirs, labels) -> tuple[str, str | None]:
    """(outcome, new text or None to keep ours) for one definition the core defines now."""
    if ours.fingerprint == theirs.fingerprint:
        return CURRENT, None
    if base is not None and base.source == theirs.source:
        return KEPT, None
    if base is not None and ours.source == base.source:
        return REFRESHED, theirs.source
    text, conflicted = merge_text(ours.source, base.source if base else "", theirs.source, labels)
    return (CONFLICT if conflicted else MERGED), text


def _loads(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _replace_all(text: str, filename: str, replacements: dict[str, str]) -> str:
    """Replace each named top-level definition's lines, bottom up so earlier line numbers hold."""
    module = codediff.parse_module(text, filename)
    for name in sorted(replacements, key=lambda n: -module.definitions[n].start):
        text = codediff.replace_definition(text, module.definitions[name], replacements[name])
    return text


def _needs(text: str, filename: str, names: list[str], extra: dict[str, set[str]], now, starter):
    """(text with helpers copied, helpers, import statements to add): what `names` (plus the names in
    `extra` each also uses) take from their core module that the file does not bind. A helper is copied
    when the starter holds a copy (the experiment then looks as a fresh copy of the starter would), else
    imported from the core."""
    helpers, statements, added = [], [], set()
    while True:
        module = codediff.parse_module(text, filename)
        bound = set(module.definitions) | set(module.imports) | set(dir(builtins)) | added
        need = next(
            (
                (ref, now.owner[name])
                for name in names + helpers
                if name in module.definitions and name in now.owner
                for ref in sorted((module.definitions[name].references | extra.get(name, set())) - bound)
                if ref in now.modules[now.owner[name]].imports or ref in now.owner
            ),
            None,
        )
        if need is None:
            return text, helpers, statements
        ref, stem = need
        if ref in now.modules[stem].imports:
            statements.append(now.modules[stem].imports[ref].statement)
        elif starter is not None and ref in starter.definitions:
            user = next(d for d in module.definitions.values() if ref in d.references)
            text = insert_lines(text, user.start, codediff.core_definition(now, ref).source + "\n\n")
            helpers.append(ref)
        else:
            statements.append(f"from {now.package}.{now.owner[ref]} import {ref}")
        added.add(ref)


def _drop_definition(text: str, definition: codediff.Definition) -> str:
    lines = text.splitlines(keepends=True)
    end = definition.end
    while end < len(lines) and not lines[end].strip():
        end += 1
    return "".join(lines[: definition.start - 1] + lines[end:])


def _drop_imports(text: str, filename: str, unused: set[str]) -> tuple[str, list[str]]:
    """Remove the bindings in `unused` from their import statements (a whole statement when all its
    names go, else the alias's own line, else the statement rewritten)."""
    tree = ast.parse(text, filename)
    lines = text.splitlines(keepends=True)
    removed = []
    for node in sorted(tree.body, key=lambda n: -n.lineno):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        gone = [a for a in node.names if (a.asname or a.name.split(".")[0]) in unused]
        if not gone:
            continue
        removed += [item.statement for item in codediff.module_imports(node) if item.name in unused]
        keep = [a for a in node.names if a not in gone]
        own_lines = all(a.lineno != node.lineno and a.lineno == a.end_lineno for a in gone)
        if not keep:
            lines[node.lineno - 1 : node.end_lineno] = []
        elif own_lines and all(lines[a.lineno - 1].strip().rstrip(",") == ast.unparse(a) for a in gone):
            for alias in sorted(gone, key=lambda a: -a.lineno):
                del lines[alias.lineno - 1]
        else:
            node.names = keep
            lines[node.lineno - 1 : node.end_lineno] = [ast.unparse(node) + "\n"]
    return "".join(lines), removed[::-1]


def merge_module(
    source: str, filename: str, then: codediff.Core, now: codediff.Core, starter, labels: tuple[str, str, str]
) -> Merged:
    """The three-way merge of one experiment file (see the module docstring); pure."""
    ours = codediff.parse_module(source, filename)
    outcomes, replacements, conflicts, warnings = {}, {}, {}, []
    for name, mine in ours.definitions.items():
        if name in now.owner:
            base = codediff.core_definition(then, name) if name in then.owner else None
            outcome, text = _classify(mine, base, codediff.core_definition(now, name), labels)
            outcomes[name] = outcome
            if text is not None:
                (conflicts if outcome == CONFLICT else replacements)[name] = text
        elif name in then.owner:
            same = mine.source == codediff.core_definition(then, name).source
            outcomes[name] = KEPT
            if not same:
                warnings.append(f"the core no longer defines {name}; {filename} keeps its changed copy.")
    text = _replace_all(source, filename, replacements)
    # A conflicted definition still holds our side here; the core's side's names count as used too, so
    # either resolution finds what it needs.
    theirs = {n: codediff.core_definition(now, n).references for n in conflicts}
    fresh = [n for n in outcomes if outcomes[n] in (REFRESHED, MERGED, CONFLICT)]
    text, helpers, statements = _needs(text, filename, fresh, theirs, now, starter)
    if statements:
        text = add_imports(text, statements)
    text, removed = _tidy(text, filename, ours, then, now, outcomes, set().union(set(), *theirs.values()))
    text = _replace_all(text, filename, conflicts)
    added = tuple(f"{h} (copied from {now.package}/{now.owner[h]}.py)" for h in helpers) + tuple(statements)
    return Merged(text, outcomes, added, tuple(removed), tuple(warnings))


def _tidy(text, filename, ours, then, now, outcomes, pending: set[str]) -> tuple[str, list[str]]:
    """Drop what the sync left unused: imports used before and not now, and unchanged copies of
    definitions the core dropped. `pending` are names a conflict's other side still uses."""
    before = _loads(ast.parse(ours.source))
    after = _loads(ast.parse(text)) | pending
    removed = []
    module = codediff.parse_module(text, filename)
    for name in sorted(module.definitions, key=lambda n: -module.definitions[n].start):
        copy = name in then.owner and name not in now.owner
        if copy and name in before and name not in after:
            if module.definitions[name].source == codediff.core_definition(then, name).source:
                text = _drop_definition(text, module.definitions[name])
                outcomes[name] = DROPPED
    after = _loads(ast.parse(text)) | pending
    unused = {b for b in ours.imports if b in before and b not in after}
    if unused:
        text, removed = _drop_imports(text, filename, unused)
    return text, removed


# ---------------------------------------------------------------- where a conflicted sync waits


def state_path(root: Path, experiment_id: str) -> Path:
    return transaction.state_dir(root) / "sync" / f"{experiment_id}.json"


def read_state(root: Path, experiment_id: str) -> dict | None:
    path = state_path(root, experiment_id)
    try:
        state = json.loads(path.read_bytes())
        state["old"] = base64.b64decode(state["bytes"])
        return state
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise GrugError(
            f"the saved state of {experiment_id}'s sync ({path}) is unreadable ({error}); restore the file "
            "from git and delete that file."
        ) from None


def in_progress(root: Path) -> list[str]:
    folder = transaction.state_dir(root) / "sync"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


# ---------------------------------------------------------------- planning


def _refuse(archive, experiment_id: str):
    entry = archive_mod.get_entry(archive, experiment_id)
    if experiment_id == archive.starter:
        raise GrugError(f"{experiment_id} is the starter, which promote keeps current; sync an experiment.")
    if entry.status != "active":
        raise GrugError(f"{experiment_id} is {entry.status}, not active; only active experiments are synced.")
    if read_state(archive.root, experiment_id) is not None:
        raise GrugError(
            f"a sync of {experiment_id} is waiting for its conflicts; edit them, then run `grugctl sync "
            f"{experiment_id} --continue`, or `--abort` to restore every byte."
        )
    if not entry.base:
        raise GrugError(
            f"{experiment_id} has no base commit in archive.yaml, so its changes cannot be told from the "
            f"core's; set the commit it was copied at with `grugctl archive set {experiment_id} --base SHA`."
        )
    return entry


def _core_dirty(repo, archive) -> bool:
    return gitinfo.is_dirty(repo, [archive.root / archive.core])


def plan_sync(
    archive, experiment_id: str, *, allow_dirty: bool = False, target: str | None = None
) -> SyncPlan:
    """Everything `sync` would do to one experiment, checked, without writing anything. `target` is the
    commit recorded as the new base (default HEAD); the core merged in is always the one on disk."""
    entry = _refuse(archive, experiment_id)
    root = archive.root
    repo = transaction.open_repo(root)
    file = codediff.experiment_file(root, entry.path)
    rel = file.relative_to(root).as_posix()
    warnings = []
    if not allow_dirty and gitinfo.is_dirty(repo, [file]):
        raise GrugError(f"{rel} has uncommitted changes; commit them first, or pass --allow-dirty.")
    if target is None:
        target = gitinfo.head_sha(repo)
        if _core_dirty(repo, archive):
            if not allow_dirty:
                raise GrugError(
                    f"{archive.core} has uncommitted changes, so no commit holds the core sync would merge "
                    "in; commit them first, or pass --allow-dirty."
                )
            warnings.append(
                f"{archive.core} has uncommitted changes; base records HEAD ({target[:12]}), set it to the "
                f"commit holding them with `grugctl archive set {experiment_id} --base SHA`."
            )
    try:
        then = codediff.core_at(archive, entry.base)
    except GrugError as error:
        raise GrugError(f"cannot read the core at {experiment_id}'s base {entry.base}: {error}") from None
    now = codediff.load_core(root / archive.core)
    starter = None
    if archive.starter and archive.starter in archive.experiments:
        starter_entry = archive.experiments[archive.starter]
        starter = codediff.read_module(root, starter_entry.path, "the starter's")
    old = file.read_bytes()
    labels = (experiment_id, f"{now.package}@{entry.base[:8]}", f"{now.package}@{target[:8]}")
    merged = merge_module(old.decode("utf-8"), rel, then, now, starter, labels)
    new = merged.text.encode("utf-8")
    moved = any(
        then.modules.get(s) is None or then.modules[s].source != m.source for s, m in now.modules.items()
    )
    record = moved and not target.startswith(entry.base)
    return SyncPlan(
        experiment_id,
        rel,
        entry.base,
        target,
        merged,
        old,
        new,
        record,
        tuple(warnings + list(merged.warnings)),
    )


def stale(archive, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """Active experiments (not the starter) holding a copy the core has moved since their base."""
    found = []
    now = codediff.load_core(archive.root / archive.core)
    for experiment_id, entry in archive.experiments.items():
        if experiment_id in exclude or experiment_id == archive.starter or entry.status != "active":
            continue
        if not entry.base:
            continue
        try:
            module = codediff.read_module(archive.root, entry.path, experiment_id)
            then = codediff.core_at(archive, entry.base)
        except GrugError:
            continue
        if codediff.drifted(module, then, now) or any(
            n in then.owner
            and n in now.owner
            and codediff.core_definition(then, n).fingerprint != codediff.core_definition(now, n).fingerprint
            and module.definitions[n].fingerprint != codediff.core_definition(now, n).fingerprint
            for n in module.definitions
        ):
            found.append(experiment_id)
    return found


def targets(archive, ids: list[str], every: bool) -> list[str]:
    if every and ids:
        raise GrugError("pass experiment ids or --all, not both.")
    if every:
        return [
            i
            for i, e in archive.experiments.items()
            if e.status == "active" and i != archive.starter and e.base
        ]
    if not ids:
        raise GrugError("name the experiment to sync, e.g. `grugctl sync relu-squared`, or pass --all.")
    return list(dict.fromkeys(ids))


# ---------------------------------------------------------------- doing it


def _record(archive, plans: list[SyncPlan]) -> None:
    moving = [p for p in plans if p.record]
    if not moving:
        return

    def edit(experiments, fresh) -> None:
        for plan in moving:
            node = experiments.get(plan.id)
            if node is None:
                raise GrugError(f"{plan.id} left archive.yaml during the sync; run sync again.")
            archive_mod.put_field(node, "base", plan.target[: archive_mod.SHA_LEN])
            archive_mod.put_field(node, "synced_from", plan.base)

    archive_mod.update_entries(archive.path, [p.id for p in moving], edit)


def apply(txn, archive, plans: list[SyncPlan]) -> None:
    """Write every plan inside the open transaction `txn`: clean ones record their new base, conflicted
    ones save the bytes before the sync for --continue / --abort."""
    for plan in plans:
        if (archive.root / plan.path).read_bytes() != plan.old:
            raise GrugError(f"{plan.path} changed since the sync was planned; run sync again.")
        if plan.new != plan.old:
            transaction.write(txn, plan.path, plan.new)
        if plan.conflicts:
            state = {
                "id": plan.id, "path": plan.path, "base": plan.base, "target": plan.target,
                "record": plan.record, "conflicts": list(plan.conflicts),
                "bytes": base64.b64encode(plan.old).decode(),
            }  # fmt: skip
            saved = str(state_path(archive.root, plan.id))
            transaction.write(txn, saved, json.dumps(state, indent=1).encode("utf-8"), 0o600)
    _record(archive, [p for p in plans if not p.conflicts])


def sync(archive, plans: list[SyncPlan]) -> None:
    with transaction.transaction(archive.root, "grugctl sync " + " ".join(p.id for p in plans)) as txn:
        apply(txn, archive, plans)


def _markers(text: str) -> list[int]:
    return [text.count("\n", 0, m.start()) + 1 for m in MARKER.finditer(text)]


def finish(archive, experiment_id: str, abort: bool) -> dict:
    """--continue (record the base once no marker is left and the file parses) or --abort (write back
    the bytes from before the sync). Returns the saved state."""
    root = archive.root
    with transaction.transaction(
        root, f"grugctl sync {experiment_id} {'--abort' if abort else '--continue'}"
    ) as txn:
        state = read_state(root, experiment_id)
        if state is None:
            raise GrugError(
                f"no sync of {experiment_id} is waiting; run `grugctl sync {experiment_id}` first."
            )
        rel = state["path"]
        if abort:
            transaction.write(txn, rel, state["old"])
        else:
            text = (root / rel).read_text(encoding="utf-8")
            lines = _markers(text)
            if lines:
                where = ", ".join(map(str, lines[:5]))
                raise GrugError(
                    f"{rel} still holds conflict markers (line {where}); resolve them, then run "
                    f"`grugctl sync {experiment_id} --continue` again.",
                    CHECK_FAILED,
                )
            codediff.parse_module(text, rel)
            if state["record"]:
                plan = SyncPlan(experiment_id, rel, state["base"], state["target"], None, b"", b"", True, ())
                _record(archive, [plan])
        transaction.remove(txn, str(state_path(root, experiment_id)))
    return state


def plan_many(archive, ids: list[str], every: bool, allow_dirty: bool) -> tuple[list[SyncPlan], list[str]]:
    """(plans, sentences for experiments --all skipped). Named ids are refused one by one; --all skips
    what it cannot sync and says why."""
    plans, skipped = [], []
    transaction.refuse_if_interrupted(archive.root)
    for experiment_id in targets(archive, ids, every):
        try:
            plans.append(plan_sync(archive, experiment_id, allow_dirty=allow_dirty))
        except GrugError as error:
            if not every:
                raise
            skipped.append(f"skipped {experiment_id}: {error}")
    return plans, skipped


def describe(plan: SyncPlan) -> dict:
    """One plan as JSON-ready data (what `sync --json` prints)."""
    import difflib

    old, new = plan.old.decode("utf-8"), plan.new.decode("utf-8")
    diff = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{plan.path}", f"b/{plan.path}"
    )
    return {
        "id": plan.id,
        "path": plan.path,
        "base": plan.base,
        "new_base": plan.target[: archive_mod.SHA_LEN] if plan.record else plan.base,
        "definitions": plan.changed,
        "kept": [n for n, o in plan.merged.outcomes.items() if o == KEPT],
        "conflicts": list(plan.conflicts),
        "added": list(plan.merged.added),
        "removed": list(plan.merged.removed),
        "changes_file": plan.new != plan.old,
        "warnings": list(plan.warnings),
        "diff": "".join(diff),
    }


def made_stale(archive, promoted: dict[str, str], exclude: str) -> list[str]:
    """Active experiments (not the starter, not `exclude`) holding a copy of a definition being promoted
    (name -> its new fingerprint) that differs from it: the promotion moves the core under them."""
    found = []
    for experiment_id, entry in archive.experiments.items():
        if experiment_id in (exclude, archive.starter) or entry.status != "active":
            continue
        try:
            module = codediff.read_module(archive.root, entry.path, experiment_id)
        except GrugError:
            continue  # a broken file is `grugctl check`'s business
        if any(
            n in module.definitions and module.definitions[n].fingerprint != f for n, f in promoted.items()
        ):
            found.append(experiment_id)
    return found


def sync_after_promotion(txn, archive, ids: list[str], target: str) -> tuple[list[str], list[str]]:
    """(synced ids, warnings) inside promote's transaction: each stale experiment that merges without a
    conflict is synced onto the spliced core; a conflicted one is left for `grugctl sync ID`."""
    synced, warnings = [], []
    for experiment_id in ids:
        try:
            plan = plan_sync(archive, experiment_id, allow_dirty=True, target=target)
        except GrugError as error:
            warnings.append(f"{experiment_id} was not synced: {error}")
            continue
        if plan.conflicts:
            warnings.append(
                f"{experiment_id} was not synced: {', '.join(plan.conflicts)} conflict with the new core; "
                f"run `grugctl sync {experiment_id}` after the promotion and resolve them."
            )
            continue
        apply(txn, archive, [plan])
        synced.append(experiment_id)
    return synced, warnings
