"""`grugctl run --ray`: every (experiment, seed) a Ray task; only this driver writes archive.yaml and the
run records.

The working tree ships to the workers as Ray's runtime_env working_dir (without .git, .venv, runs/), so
it must be the commit the records name: a dirty tree is refused unless --allow-dirty, and then the
patch is recorded (records.provenance). Results come back as tasks finish and are recorded at once. A
failed task is recorded as failed with its log tail and resubmitted up to `retries` times; the others
go on. Ctrl-C cancels what is still running; what finished stays recorded. Ray is imported here only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from grugctl.runs import records
from grugctl.archive import Archive
from grugctl.codediff import experiment_file
from grugctl.errors import CHECK_FAILED, GrugError
from grugctl.runs.runner import (
    INTERRUPTED,
    Finished,
    Job,
    RunPlan,
    checked_jobs,
    checked_results,
    record_run,
    runnable_entry,
)

# Not shipped: git history, the local environment, and run outputs (records are written by the driver).
SHIP_EXCLUDES = [".git", ".venv", "runs/", "__pycache__", "*.pyc", ".grugctl_cache", ".pytest_cache"]
# What Ctrl-C waits for cancelled tasks to stop their children before Ray is shut down.
CANCEL_GRACE_SECONDS = 15


@dataclass(frozen=True)
class RayOptions:
    address: str | None  # None: start a local instance bound to 127.0.0.1, stopped at the end
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    retries: int = 0
    allow_dirty: bool = False


def refuse_dirty_tree(archive: Archive) -> None:
    from grugctl import gitinfo

    repo = gitinfo.open_repo(archive.root)
    # archive.yaml and runs/ are the paper trail this command writes, not shipped code.
    changed = repo.git.status(
        "--porcelain", "--untracked-files=all", "--", ":(top)", ":(top,exclude)archive.yaml",
        ":(top,exclude)runs",
    )  # fmt: skip
    if changed.strip():
        first, more = changed.splitlines()[0][3:], len(changed.splitlines()) - 1
        which = f"{first} and {more} more" if more else first
        raise GrugError(
            f"the working tree has uncommitted changes ({which}), "
            "and --ray ships the tree to the workers; commit them, or pass --allow-dirty to ship and "
            "record the patch"
        )


REACH_TIMEOUT_S = 5.0


def refuse_unreachable(address: str) -> None:
    """Ray retries an address it cannot reach for minutes, printing warnings; one TCP connect says it
    at once. `auto` (the cluster this machine belongs to) is left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as error:
        why = error.strerror or type(error).__name__
        raise GrugError(
            f"cannot reach a Ray cluster at {address} ({why}); check the address (`ray status` on the head "
            "node prints it) or leave out --ray-address for a local instance"
        ) from None


def start_ray(archive: Archive, options: RayOptions):
    if options.address is not None:
        refuse_unreachable(options.address)
    if os.environ.get("NO_COLOR") or not sys.stderr.isatty():
        # Workers' log lines come back without colour codes. Ray colours its "[repeated Nx across
        # cluster]" note whatever RAY_COLOR_PREFIX says, so deduplication goes too (read at import).
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if options.address is None:
        # On Linux Ray swaps 127.0.0.1 for the machine's routable address unless told it is not forming
        # a multi-machine cluster; this switch keeps every process of the local instance on loopback.
        # It is read when ray is imported, so it is set first.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise GrugError("--ray needs Ray; install it with `pip install 'grugctl[ray]'`") from None
    runtime_env = {"working_dir": str(archive.root), "excludes": SHIP_EXCLUDES}
    common = {"runtime_env": runtime_env, "log_to_driver": True, "logging_level": "warning"}
    try:
        if options.address is None:
            # "local" always starts a new instance (never joins another one found on this machine); it
            # listens on 127.0.0.1 only and stops with ray.shutdown().
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, **common)
        else:
            ray.init(address=options.address, **common)
    except Exception as error:  # ConnectionError, ValueError, RaySystemError...: one sentence for all
        where = options.address or "a local instance"
        raise GrugError(f"cannot start Ray on {where} ({error}); check the address or `ray status`") from None
    return ray


def _finished(archive: Archive, job: Job, outcome: dict, source, *, record: bool) -> Finished:
    """Record a task that came back with results."""
    results = checked_results(outcome["results"], job.entry_id, "its results")
    built = records.build_record(
        results, source, entry_id=job.entry_id, pair=job.pair, shared_host=outcome["shared_host"]
    )
    if record:
        return Finished(job.entry_id, record_run(archive, job.entry_id, built), True)
    return Finished(job.entry_id, records.summary_row(built, "(not recorded)"), False)


def _failed(archive: Archive, job: Job, failure: dict, source, *, smoke: bool, record: bool) -> Finished:
    built = records.failure_record(
        entry_id=job.entry_id, seed=job.seed, source=source, pair=job.pair, failure=failure, smoke=smoke
    )
    if record:
        return Finished(job.entry_id, record_run(archive, job.entry_id, built), True)
    return Finished(job.entry_id, records.failure_row(built, "(not recorded)"), False)


def run_on_ray(
    archive: Archive, entry_ids: list[str], options: RayOptions, plan: RunPlan, on_finished=None
) -> list[Finished]:
    """Submit every job at once and record each as it comes back. Raises GrugError (exit 1) at the end
    when some job still failed after its retries, once every other job has landed."""
    record, smoke = plan.recorded, plan.smoke
    if options.retries < 0:
        raise GrugError(f"--retries {options.retries} must be 0 or more")
    jobs, _ = checked_jobs(archive, entry_ids, plan)
    if not options.allow_dirty:
        refuse_dirty_tree(archive)
    paths = {
        job.entry_id: experiment_file(archive.root, runnable_entry(archive, job.entry_id).path)
        .relative_to(archive.root)
        .as_posix()
        for job in jobs
    }
    # Provenance is taken once, before anything ships: it describes exactly the tree the workers get.
    sources = {entry: records.provenance(archive.root, path, archive.core) for entry, path in paths.items()}
    flags = plan.child_options()

    ray = start_ray(archive, options)
    from grugctl.runs import raytask

    task = ray.remote(raytask.run_on_worker).options(
        num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_retries=0
    )

    def submit(job: Job, attempt: int):
        spec = {
            "entry_id": job.entry_id, "path": paths[job.entry_id], "seed": job.seed,
            "options": flags + job.own_options(),
        }  # fmt: skip
        return task.remote(spec), (job, attempt)

    pending = dict(submit(job, 1) for job in jobs)
    finished: list[Finished] = []
    gave_up: list[Job] = []
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job, attempt = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:  # the worker died, or Ray could not run the task
                outcome = {"exit_code": None, "results": None, "log_tail": str(error)[-4000:], "node": None}
            source = sources[job.entry_id]
            if outcome["exit_code"] == 0 and outcome["results"] is not None:
                done = _finished(archive, job, outcome, source, record=record)
            else:
                failure = {**outcome, "attempt": attempt}
                done = _failed(archive, job, failure, source, smoke=smoke, record=record)
                if attempt <= options.retries:
                    new_ref, meta = submit(job, attempt + 1)
                    pending[new_ref] = meta
                else:
                    gave_up.append(job)
            finished.append(done)
            if on_finished is not None:
                on_finished(done)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # not force: the task gets KeyboardInterrupt and stops its child first
        ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_GRACE_SECONDS)
        landed = sum(1 for done in finished if done.row.get("status") != "failed")
        raise GrugError(
            f"interrupted: {landed} run(s) finished and were recorded, {len(pending)} cancelled",
            INTERRUPTED,
        ) from None
    finally:
        ray.shutdown()
    if gave_up:
        which = ", ".join(f"{job.entry_id} seed {job.seed}" for job in jobs if job in gave_up)  # in run order
        raise GrugError(
            f"{len(gave_up)} run(s) failed after {options.retries} retries ({which}); "
            "each attempt is recorded as failed with its log tail, and the other "
            f"{len(jobs) - len(gave_up)} run(s) landed",
            CHECK_FAILED,
        )
    return finished
