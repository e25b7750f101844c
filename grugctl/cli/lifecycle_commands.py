"""grugctl promote, sync, delete, restore and recover: the commands that move code between an
experiment and the core."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from grugctl.cli.common import (
    ArchiveOption,
    app,
    confirm,
    err,
    fail,
    find_archive_path,
    guarded,
    json_out,
    load_archive_for,
    out,
    say,
    warn,
    writing,
)
from grugctl.errors import GrugError


def _render_promote_plan(plan, dry_run: bool) -> None:
    from grugctl.promotion.gate import GATE_TESTS_ENV

    verb = "would promote" if dry_run else "promote"
    say(f"{verb} {plan.id} ({', '.join(plan.code.buckets)}) into the core: {', '.join(plan.code.names)}")
    for path, names in plan.code.modules.items():
        say(f"  {path}: {', '.join(names)}")
    for path, statements in plan.code.imports.items():
        say("\n".join(f"  {path}: add `{s}`" for s in statements))
    if plan.code.starter_names:
        say(f"  {plan.code.starter}: the starter's copies of {', '.join(plan.code.starter_names)}")
    sha = plan.landing.last_known_good[:12] if plan.landing.last_known_good else "-"
    status = "deleted" if plan.landing.delete else "superseded"
    say(f"  archive.yaml: {plan.id} {status}, superseded_by core@pending, last_known_good {sha}")
    if plan.landing.delete:
        say(f"  remove {plan.landing.delete_target}{' (git rm)' if plan.landing.delete_tracked else ''}")
    tests = f"pytest {' '.join(plan.gate.tests)}" if plan.gate.tests else "no core tests"
    narrowed = f" (narrowed by ${GATE_TESTS_ENV})" if plan.gate.narrowed else ""
    say(f"  gate: {tests}{narrowed}; {plan.code.starter} --smoke")
    if plan.gate.test_files:
        copies = "".join(f"; {dest} from {source}" for source, dest in plan.gate.shipped)
        promoted = ", ".join(plan.gate.test_files)
        say(f"  tests promoted with it (in the gate and the commit): {promoted}{copies}")
    landing = plan.landing
    if landing.stale:
        how = "synced now where they merge cleanly" if landing.sync_all else "`grugctl sync ID` or --sync-all"
        say(f"  makes stale: {', '.join(landing.stale)} ({how})")
    if landing.commit:
        say(f"  commit on a new branch {landing.branch}, then record its SHA in archive.yaml (2nd commit)")
    warn(list(plan.warnings))
    if plan.code.core_diff:
        say()
        sys.stdout.write(plan.code.core_diff)
        sys.stdout.flush()
    from grugctl.evidence import comparerender

    say()
    say("evidence (the speedrun metric against the starter; `grugctl compare` shows more):")
    sys.stdout.write(
        comparerender.text([plan.evidence], color=out.is_terminal and not os.environ.get("NO_COLOR"))
    )
    if plan.waiver is not None:
        say(f"waived: {plan.waiver} (recorded in archive.yaml as the entry's waiver)")


def _render_promoted(plan, outcome) -> None:
    gate = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome.gate.seconds.items())
    where = "; ".join(f"{', '.join(names)} into {path}" for path, names in plan.code.modules.items())
    say(f"promoted {where}; gate passed ({gate})")
    status = "deleted" if plan.landing.delete else "superseded"
    say(f"archive.yaml: {plan.id} {status}, superseded_by {outcome.superseded_by}")
    for path, tests in plan.gate.covering.items():
        if tests:
            say(f"lock the new behaviour with a test: {path} is covered by {', '.join(tests)}")
        else:
            say(f"no test imports {path}: add one that locks the new behaviour")
    if outcome.synced:
        say(f"synced onto the new core: {', '.join(outcome.synced)}")
    left = [i for i in plan.landing.stale if i not in outcome.synced]
    if left:
        say(
            f"now stale: {', '.join(left)}; bring them onto the new core with `grugctl sync {' '.join(left)}`"
        )
    if outcome.commit:
        record = f"; its SHA recorded in {outcome.record_commit[:12]}" if outcome.record_commit else ""
        say(f"committed {outcome.commit[:12]} on branch {plan.landing.branch}{record}")
    else:
        warn(
            [f"commit, then `grugctl archive set {plan.id} --superseded-by core@<sha>` with its SHA"],
            prefix="hint",
        )
    warn(list(outcome.warnings))


@app.command()
def promote(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment to promote."),
    only: str | None = typer.Option(None, "--only", help="Promote only these definitions (NAME,NAME...)."),
    bucket: str | None = typer.Option(None, "--bucket", help="Promote only this bucket's definitions."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and core diff; write nothing."),
    delete_after: bool = typer.Option(False, "--delete", help="Also remove the experiment's folder."),
    commit: bool = typer.Option(False, "--commit", help="Commit on a new branch promote/ID."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Proceed with uncommitted changes."),
    sync_all: bool = typer.Option(
        False, "--sync-all", help="Also sync the experiments it makes stale (same transaction and commit)."
    ),
    waive: str | None = typer.Option(
        None, "--waive", help="Promote without a significant win, recording this reason (e.g. systems-only)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive_path: ArchiveOption = None,
) -> None:
    """Splice an experiment's changed definitions into grug_core and the starter, behind a test gate.

    First the evidence: promote refuses (exit 1) unless the experiment's recorded runs are
    significantly better than the starter's on val_bpb at alpha 0.01 (`grugctl compare`); --waive
    "REASON" promotes anyway and records the reason. The gate runs the core tests and the starter's
    --smoke run; if anything fails (or you press Ctrl-C) every touched file is restored byte for byte
    and the command exits 1. Uncommitted edits under tests/ and a test_<id>.py in the experiment's
    folder (copied to tests/test_grugformer_<id>.py) are promoted with it: in the gate and the commit.

    Example: grugctl promote relu-squared --dry-run
    """
    from grugctl.promotion import promote as promoting

    # The lock is held from the plan to the last write (git holds index.lock the same way): a plan made
    # while another promotion is mid-gate would splice against that promotion's half-done files.
    with writing(archive_path, f"grugctl promote {experiment_id}", dry_run):
        archive = load_archive_for(archive_path)
        names = (only or "").split(",")
        plan = guarded(
            lambda: promoting.plan_promote(
                archive, experiment_id, only=names, bucket=bucket, allow_dirty=allow_dirty,
                delete=delete_after, commit=commit, waiver=waive, sync_all=sync_all,
            )
        )  # fmt: skip
        _render_promote_plan(plan, dry_run)
        guarded(lambda: promoting.check_evidence(plan))
        if dry_run:
            return
        confirm(f"Promote {', '.join(plan.code.names)} from {plan.id} into the core?", yes)
        progress = lambda message: err.print(message, markup=False, highlight=False)
        try:
            outcome = promoting.promote(archive, plan, progress)
        except promoting.GateFailed as error:
            err.print("--- last lines of the failing step's output ---", markup=False, highlight=False)
            err.print(error.tail, markup=False, highlight=False)
            raise fail(str(error), error.exit_code) from None
        except GrugError as error:
            raise fail(str(error), error.exit_code) from None
        except KeyboardInterrupt:
            raise fail(
                "interrupted; every touched file was restored and nothing was promoted.", 130
            ) from None
        _render_promoted(plan, outcome)


def _render_sync(report: dict, dry_run: bool) -> None:
    verb = "would sync" if dry_run else "syncing"  # printed before the confirmation, so not "synced"
    if not report["changes_file"] and report["new_base"] == report["base"]:
        say(f"{report['id']}: up to date with the core")
        return
    by = {}
    for name, outcome in report["definitions"].items():
        by.setdefault(outcome, []).append(name)
    parts = [f"{outcome} {', '.join(names)}" for outcome, names in by.items()]
    if report["kept"]:
        parts.append(f"kept its own {', '.join(report['kept'])}")
    say(f"{verb} {report['id']}: {'; '.join(parts) or 'no definition changes'}")
    for item in report["added"]:
        say(f"  add {item}")
    for item in report["removed"]:
        say(f"  remove `{item}` (nothing uses it any more)")
    if report["new_base"] != report["base"]:
        say(f"  archive.yaml: base {report['base']} -> {report['new_base']} (synced_from {report['base']})")
    warn(report["warnings"])
    if dry_run and report["diff"]:
        sys.stdout.write(report["diff"])


@app.command("sync")
def sync_command(
    experiment_ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="The experiments to sync.")
    ] = None,
    every: bool = typer.Option(False, "--all", help="Sync every active experiment (not the starter)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would change and the diff; write nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Sync files with uncommitted changes."),
    resume: bool = typer.Option(False, "--continue", help="Finish a sync whose conflicts you resolved."),
    abort: bool = typer.Option(False, "--abort", help="Undo a conflicted sync, restoring every byte."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive_path: ArchiveOption = None,
) -> None:
    """Merge the core's changes since an experiment's base into its copies, definition by definition.

    A copy the experiment left alone becomes the core's; its own changes stay; a definition both
    changed is merged line by line, and a conflict leaves markers inside that one definition (exit 1):
    edit it, then `grugctl sync ID --continue`, or `grugctl sync ID --abort` to restore every byte.
    The entry's base advances (the old one kept as synced_from).

    Example: grugctl sync --all --dry-run
    """
    from grugctl.experiments import sync

    ids = list(experiment_ids or [])
    if resume or abort:
        if (resume and abort) or dry_run:
            raise fail("--continue and --abort take no --dry-run and not each other; pass one.")
        archive = load_archive_for(archive_path)
        waiting = ids or (sync.in_progress(archive.root) if every else [])
        if not waiting:
            raise fail(
                "name the experiment whose sync to finish, e.g. `grugctl sync ID --continue`, or --all."
            )
        for experiment_id in waiting:
            state = guarded(lambda i=experiment_id: sync.finish(archive, i, abort))
            if abort:
                say(f"aborted the sync of {experiment_id}: {state['path']} is as it was before it")
            else:
                say(f"synced {experiment_id}: base {state['base']} -> {state['target'][:12]}")
        return
    with writing(archive_path, "grugctl sync " + (" ".join(ids) or "--all"), dry_run):
        archive = load_archive_for(archive_path)
        plans, skipped = guarded(lambda: sync.plan_many(archive, ids, every, allow_dirty))
        reports = [sync.describe(plan) for plan in plans]
        if as_json:
            json_out({"dry_run": dry_run, "experiments": reports, "skipped": skipped})
        else:
            for report in reports:
                _render_sync(report, dry_run)
            warn(skipped, prefix="note")
        if dry_run or not any(r["changes_file"] or r["new_base"] != r["base"] for r in reports):
            return
        confirm(f"Sync {', '.join(p.id for p in plans)}?", yes)
        guarded(lambda: sync.sync(archive, plans))
    conflicted = [p for p in plans if p.conflicts]
    if conflicted:
        for plan in conflicted:
            err.print(
                f"conflict in {plan.id}: {', '.join(plan.conflicts)} in {plan.path}; edit them, then run "
                f"`grugctl sync {plan.id} --continue`, or `grugctl sync {plan.id} --abort` to restore "
                "every byte",
                markup=False, highlight=False,
            )  # fmt: skip
        raise typer.Exit(1)


@app.command("delete")
def delete_command(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment to delete."),
    superseded_by: str | None = typer.Option(
        None, "--superseded-by", help="Its successor: an experiment id, core@<sha> or core@pending."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would happen; write nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive_path: ArchiveOption = None,
) -> None:
    """Remove an experiment's folder (git rm) and mark it deleted, recording its last known good commit.

    `grugctl restore ID` brings it back byte for byte from that commit.

    Example: grugctl delete relu-squared --superseded-by core@pending
    """
    from grugctl.promotion import lifecycle

    archive = load_archive_for(archive_path)
    plan = guarded(lambda: lifecycle.plan_delete(archive, experiment_id, superseded_by))
    verb = ("would remove", "would mark") if dry_run else ("remove", "mark")
    how = "git rm" if plan.tracked else "not tracked by git"
    say(f"{verb[0]} {plan.target} ({len(plan.files)} file(s), {how})")
    successor = f", superseded_by {plan.superseded_by}" if plan.superseded_by else ""
    say(f"{verb[1]} {plan.id} deleted, last_known_good {plan.last_known_good[:12]}{successor}")
    warn(list(plan.warnings))
    if dry_run:
        return
    confirm(f"Delete {plan.id}?", yes)
    guarded(lambda: lifecycle.delete(archive, plan))
    say(f"deleted {plan.id}; `grugctl restore {plan.id}` brings it back from {plan.last_known_good[:12]}")


@app.command("restore")
def restore_command(
    experiment_id: str = typer.Argument(..., metavar="ID", help="A deleted or superseded experiment."),
    as_id: str | None = typer.Option(None, "--as", help="Register it under this new id (origin: ID)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would happen; write nothing."),
    archive_path: ArchiveOption = None,
) -> None:
    """Bring an experiment back, byte for byte, from its last known good commit, and mark it active.

    Example: grugctl restore relu-squared --as relu-squared-again
    """
    from grugctl.promotion import lifecycle

    archive = load_archive_for(archive_path)
    plan = guarded(lambda: lifecycle.plan_restore(archive, experiment_id, as_id))
    if not dry_run:
        guarded(lambda: lifecycle.restore(archive, plan))
    verb = "would write" if dry_run else "wrote"
    for at_sha, dest, _ in plan.files:
        renamed = f" (was {at_sha})" if at_sha != dest else ""
        say(f"{verb} {dest}{renamed} from {plan.sha[:12]}")
    verb = ("would register", "would mark") if dry_run else ("registered", "marked")
    if plan.new_id is not None:
        say(f"{verb[0]} {plan.new_id}: active, origin {plan.id}, base {plan.sha[:12]}")
    else:
        say(f"{verb[1]} {plan.id} active")
    warn(list(plan.warnings), prefix="note")


@app.command("recover")
def recover_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be rolled back; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive_path: ArchiveOption = None,
) -> None:
    """Roll back, byte for byte, a command that died halfway (killed, power loss), from its journal.

    Every touched file gets its original bytes back (files it created go), HEAD returns to its branch,
    a branch it created is deleted and the index entries it staged are reset.

    Example: grugctl recover --dry-run
    """
    from grugctl import transaction

    path = find_archive_path(archive_path, reading=False)
    report = guarded(lambda: transaction.recover(path.parent, dry_run=True))
    if report is None:
        say("nothing to recover: no command stopped halfway")
        return
    verb = ("would restore", "would remove") if dry_run else ("restored", "removed")
    say(f"`{report.what}` (pid {report.pid}, started {report.started}) stopped halfway")
    if not dry_run:
        confirm("Roll it back?", yes)
        report = guarded(lambda: transaction.recover(path.parent))
        if report is None:
            say("nothing to recover: another grugctl recovered it meanwhile")
            return
    for rel in report.restored:
        say(f"{verb[0]} {rel}")
    for rel in report.removed:
        say(f"{verb[1]} {rel}")
    for step in report.git:
        say(f"{'would run' if dry_run else 'ran'} {step}")
    if report.failed:
        failed = ", ".join(report.failed)
        raise fail(f"could not roll back {failed}; fix that and run `grugctl recover` again.")
    if not dry_run:
        say(f"rolled back {len(report.restored) + len(report.removed)} file(s); the journal is gone")
