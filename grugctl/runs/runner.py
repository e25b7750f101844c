"""`grugctl run`: train experiments in child processes and record each run.

The child is the experiment file itself (`python <file> --out runs/.scratch/... --seed S ...`), so
grugctl never imports JAX and a run through grugctl is the same as a run by hand. The child's progress
goes to the terminal's stderr. Each successful run becomes a tracked record under `runs/<id>/` and a
summary row in archive.yaml (records.py). `--paired` alternates a baseline and the candidates seed by
seed on this machine, so their wall times compare fairly and `compare` can pair them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from grugctl import transaction
from grugctl.runs import hostjobs
from grugctl.runs import records
from grugctl.runs.raytask import stop_child
from grugctl.archive import Archive, append_result, get_entry
from grugctl.codediff import experiment_file
from grugctl.errors import CHECK_FAILED, GrugError
from grugctl.runs.results import RESULT_KEYS

INTERRUPTED = 130
PREEMPTED = 75  # the experiment file's exit status after SIGTERM and a checkpoint (EX_TEMPFAIL)


@dataclass(frozen=True)
class Job:
    """One child process: an experiment at a seed, and the pair it belongs to when paired."""

    entry_id: str
    seed: int
    pair: str | None = None
    size: str | None = None  # a rung of the size ladder (None: the file's default)
    setting: tuple[str, ...] = ()  # this job's point of a --sweep, as FIELD=VALUE

    def own_options(self) -> list[str]:
        """The flags that differ from job to job besides --seed and --out: size and sweep point."""
        options = [] if self.size is None else ["--size", self.size]
        return options + [flag for item in self.setting for flag in ("--set", item)]


@dataclass(frozen=True)
class Finished:
    entry_id: str
    row: dict
    recorded: bool


@dataclass(frozen=True)
class RunPlan:
    """What `grugctl run` was asked for: the local runs, the Ray runs and --dry-run all read it."""

    seeds: tuple[int, ...]
    steps: int | None = None
    smoke: bool = False
    record: bool | None = None  # None: every run but a smoke run
    paired: bool = False
    against: str | None = None
    mesh: str | None = None
    sizes: tuple[str | None, ...] = (None,)
    settings: tuple[str, ...] = ()  # --set FIELD=VALUE for every run
    sweep: tuple[tuple[str, ...], ...] = ((),)  # the points of --sweep, each a tuple of FIELD=VALUE
    data: str | None = None  # --data DIR, passed through
    checkpoint_every: int = 0  # --checkpoint-every N (0: no checkpoints)
    checkpoint_dir: str | None = None
    resume: bool = False

    @property
    def recorded(self) -> bool:
        return recorded_by_default(self.smoke, self.record)

    def child_options(self) -> list[str]:
        """The experiment file's flags that every seed shares (--seed, --out, --size and the sweep point
        are per run)."""
        options = child_options(steps=self.steps, smoke=self.smoke, mesh=self.mesh)
        options += ["--data", self.data] if self.data else []
        options += ["--checkpoint-every", str(self.checkpoint_every)] if self.checkpoint_every else []
        options += ["--checkpoint-dir", self.checkpoint_dir] if self.checkpoint_dir else []
        options += ["--resume"] if self.resume else []
        return options + [flag for item in self.settings for flag in ("--set", item)]


def runnable_entry(archive: Archive, entry_id: str):
    entry = get_entry(archive, entry_id)
    if entry.status != "active":
        raise GrugError(
            f"experiment '{entry_id}' is {entry.status}; only active experiments run "
            f"(`grugctl restore {entry_id}` brings it back)"
        )
    if not experiment_file(archive.root, entry.path).is_file():
        raise GrugError(f"experiment '{entry_id}' has no file at {entry.path}; restore it or fix its path")
    return entry


def scratch_path(archive: Archive, entry_id: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return archive.root / records.SCRATCH_DIR / entry_id / f"{stamp}-seed{seed}.json"


def plan_jobs(
    archive: Archive,
    entry_ids: list[str],
    seeds: list[int],
    *,
    paired: bool,
    against: str | None,
    sizes: tuple[str | None, ...] = (None,),
    sweep: tuple[tuple[str, ...], ...] = ((),),
) -> list[Job]:
    """Size-major (smallest first, as given), then sweep point, then seed. Paired: the baseline and
    every candidate at each (size, point, seed), the order flipping from seed to seed so a machine that
    slows down over the session does not favour one side."""
    if against is not None and not paired:
        raise GrugError("--against names the baseline of a paired run; add --paired")
    if not paired:
        for entry_id in entry_ids:
            runnable_entry(archive, entry_id)
        return [
            Job(e, seed, None, size, point)
            for size in sizes
            for point in sweep
            for e in entry_ids
            for seed in seeds
        ]
    baseline = against or archive.starter
    # Naming the baseline too (`run relu-squared grugformer-starter --paired`) means the same run.
    entry_ids = list(dict.fromkeys(entry_id for entry_id in entry_ids if entry_id != baseline))
    if not entry_ids:
        raise GrugError(f"'{baseline}' is the baseline of --paired; name the experiment(s) to pair with it")
    for entry_id in [baseline, *entry_ids]:
        runnable_entry(archive, entry_id)
    session = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    jobs = []
    for size, point in ((size, point) for size in sizes for point in sweep):
        tag = "".join(f"-{part}" for part in ([size] if size else []) + list(point))
        for number, seed in enumerate(seeds):
            order = [baseline, *entry_ids]
            for entry_id in order if number % 2 == 0 else order[::-1]:
                jobs.append(Job(entry_id, seed, f"{session}{tag}-seed{seed}", size, point))
    return jobs


def parse_sizes(text: str | None) -> tuple[str | None, ...]:
    """`xs,s,m` -> ("xs", "s", "m"); None -> (None,), the file's default size. Names are checked by the
    experiment file itself (describe_sizes), which owns the ladder."""
    if text is None:
        return (None,)
    sizes = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not sizes:
        raise GrugError(f"--sizes {text!r} names no size; give e.g. --sizes xs,s,m")
    return sizes


def parse_settings(values: list[str] | None) -> tuple[str, ...]:
    """`--set peak_lr=1e-2` -> ("peak_lr=1e-2",). The field is checked by the experiment file, which owns
    its config; here only the shape FIELD=VALUE."""
    settings = []
    for value in values or []:
        name, sep, text = value.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise GrugError(f"--set {value!r} is not FIELD=VALUE; give e.g. --set peak_lr=1e-2")
        settings.append(f"{name.strip()}={text.strip()}")
    return tuple(settings)


def parse_sweep(values: list[str] | None) -> tuple[tuple[str, ...], ...]:
    """`--sweep peak_lr=1e-3,3e-3` (repeatable: the grid of every field's values) -> the points, each a
    tuple of FIELD=VALUE. Values must be numbers: a sweep tunes a scalar, and a typo should not train."""
    grid: list[list[str]] = []
    for value in values or []:
        name, sep, text = value.partition("=")
        name = name.strip()
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not sep or not name or not items:
            raise GrugError(
                f"--sweep {value!r} is not FIELD=V1,V2,...; give e.g. --sweep peak_lr=1e-3,3e-3,1e-2"
            )
        for item in items:
            try:
                float(item)
            except ValueError:
                raise GrugError(
                    f"--sweep {name}: {item!r} is not a number; give numbers, e.g. --sweep {name}=1e-3,3e-3"
                ) from None
        grid.append([f"{name}={item}" for item in dict.fromkeys(items)])
    points: list[tuple[str, ...]] = [()]
    for values_of_field in grid:
        points = [(*point, item) for point in points for item in values_of_field]
    return tuple(points)


def describe_sizes(
    archive: Archive, entry_id: str, sizes: tuple[str | None, ...], options: list[str] = ()
) -> dict[str, dict]:
    """size -> parameters, tokens and FLOPs, as the experiment file computes them (`--describe`, which
    starts JAX but trains nothing), with the run's other flags (--data, --set) so that they are checked
    too. An unknown size, field or value is its one-sentence error, exit 2."""
    named = [size for size in sizes if size is not None] or ([None] if options else [])
    if not named:
        return {}
    file = experiment_file(archive.root, runnable_entry(archive, entry_id).path)
    described = {}
    for size in named:
        flags = ([] if size is None else ["--size", size]) + list(options)
        done = subprocess.run(
            [sys.executable, str(file), *flags, "--describe"], cwd=archive.root, capture_output=True,
            text=True, env={**os.environ, "GRUG_EXPERIMENT_ID": entry_id},
        )  # fmt: skip
        lines = done.stderr.strip().splitlines()
        if done.returncode != 0:
            reason = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
            raise GrugError(f"{entry_id}{'' if size is None else f' --size {size}'}: {reason}")
        try:
            described[size] = json.loads(done.stdout)
        except ValueError:
            raise GrugError(
                f"{entry_id} --size {size} --describe printed no JSON; is the file a copy of "
                "the starter with its size ladder?"
            ) from None
    return described


def child_options(*, steps: int | None, smoke: bool, mesh: str | None) -> list[str]:
    """The experiment file's flags that every seed shares (--seed and --out are per run)."""
    options = [] if steps is None else ["--steps", str(steps)]
    options += ["--mesh", mesh] if mesh else []
    return options + (["--smoke"] if smoke else [])


def child_command(file: Path, out: Path, *, seed: int, options: list[str]) -> list[str]:
    return [sys.executable, str(file), "--seed", str(seed), "--out", str(out), *options]


def run_child(command: list[str], cwd: Path, entry_id: str) -> int:
    """Run to completion; on Ctrl-C stop the child and say so in one line.

    The child starts with SIGINT ignored (Python keeps an inherited SIG_IGN), so the terminal's Ctrl-C
    reaches grugctl alone, which then ends the child with SIGTERM: a Ctrl-C that lands while the child
    is still importing JAX would otherwise print a traceback from the import."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = subprocess.Popen(command, cwd=cwd, env={**os.environ, "GRUG_EXPERIMENT_ID": entry_id})
    finally:
        signal.signal(signal.SIGINT, previous)
    # A SIGTERM to grugctl (a scheduler stopping the job) goes on to the child, which saves a checkpoint
    # when it keeps them; grugctl waits for it and says so in one line.
    previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    try:
        return child.wait()
    except KeyboardInterrupt:
        stop_child(child)
        raise GrugError(f"run of '{entry_id}' interrupted; nothing recorded", INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous_term)


def read_results(path: Path, entry_id: str) -> dict:
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        message = f"'{entry_id}' exited 0 but its results file {path} is unreadable ({error})"
        raise GrugError(message, CHECK_FAILED) from None
    return checked_results(results, entry_id, str(path))


def checked_results(results: dict, entry_id: str, where: str) -> dict:
    missing = [key for key in RESULT_KEYS if key not in results]
    if missing:
        message = f"'{entry_id}' wrote {where} without the keys {', '.join(missing)}; nothing recorded"
        raise GrugError(message, CHECK_FAILED)
    return results


def record_run(archive: Archive, entry_id: str, record: dict) -> dict:
    """Write the record and its archive row in one transaction: both land or neither, even across a
    crash (`grugctl recover`), so a row never points at nothing and no record lies around unlisted.
    Failed runs get their own name, so a retry within the same second does not collide with its
    failed attempt."""
    failed = record.get("status") == "failed"
    suffix = f"-failed{record['attempt']}" if failed else ""
    path = records.record_path(entry_id, record["seed"], suffix=suffix)
    row = records.failure_row(record, path) if failed else records.summary_row(record, path)
    data = records.encode(record)
    row["record_hash"] = records.content_hash(data)  # so check and compare notice a later edit
    with transaction.transaction(
        archive.root, f"grugctl run {entry_id} (recording seed {record['seed']})"
    ) as txn:
        if (archive.root / path).exists():  # two runs of one seed within a second
            raise GrugError(f"{path} already exists; wait a second and run again")
        transaction.write(txn, path, data)
        append_result(archive.path, entry_id, row)
    return row


def checked_jobs(archive: Archive, entry_ids: list[str], plan: RunPlan) -> tuple[list[Job], dict[str, dict]]:
    """The jobs in run order, and each size's parameters and FLOPs: an unknown size or experiment is
    refused here, before anything trains or ships."""
    jobs = plan_jobs(archive, entry_ids, list(plan.seeds), paired=plan.paired, against=plan.against,
                     sizes=plan.sizes, sweep=plan.sweep)  # fmt: skip
    if not jobs:
        return jobs, {}
    # The first job's flags, checked by the file itself: an unknown size, field or value stops here.
    # Only the flags that change the model or its data: --steps, --mesh and --smoke need no JAX start.
    checked = ["--data", plan.data] if plan.data else []
    checked += [flag for item in (*plan.settings, *jobs[0].setting) for flag in ("--set", item)]
    return jobs, describe_sizes(archive, jobs[0].entry_id, plan.sizes, checked)


def run_job(archive: Archive, job: Job, *, options: list[str], record: bool) -> Finished:
    entry = runnable_entry(archive, job.entry_id)
    source = records.provenance(archive.root, entry.path, archive.core)
    out = scratch_path(archive, job.entry_id, job.seed)
    file = experiment_file(archive.root, entry.path)
    command = child_command(file, out, seed=job.seed, options=options + job.own_options())
    marker = hostjobs.start_job(f"{job.entry_id} seed {job.seed}")
    try:
        code = run_child(command, archive.root, job.entry_id)
    finally:
        shared_host = hostjobs.finish_job(marker)
    if code == PREEMPTED:
        raise GrugError(
            f"'{job.entry_id}' seed {job.seed} was stopped by SIGTERM after saving a checkpoint; nothing "
            "recorded: run the same command with --resume to continue it",
            PREEMPTED,
        )
    if code != 0:
        exit_code = code if code == 2 else CHECK_FAILED
        raise GrugError(
            f"'{job.entry_id}' failed with exit code {code} (seed {job.seed}); nothing recorded for it",
            exit_code,
        )
    built = records.build_record(
        read_results(out, job.entry_id), source, entry_id=job.entry_id, pair=job.pair, shared_host=shared_host
    )
    if record:
        return Finished(job.entry_id, record_run(archive, job.entry_id, built), True)
    return Finished(job.entry_id, records.summary_row(built, out.relative_to(archive.root).as_posix()), False)


def recorded_by_default(smoke: bool, record: bool | None) -> bool:
    """Whether runs are recorded: as asked, else every run but a smoke run."""
    return not smoke if record is None else record


def planned_runs(archive: Archive, entry_ids: list[str], plan: RunPlan) -> list[dict]:
    """What run_experiments would do, in its order, as JSON-ready rows (with each size's parameters and
    FLOPs): nothing trains, nothing is written."""
    jobs, described = checked_jobs(archive, entry_ids, plan)
    options = plan.child_options()
    rows = []
    for job in jobs:
        file = experiment_file(archive.root, get_entry(archive, job.entry_id).path)
        rel = file.relative_to(archive.root).as_posix()
        command = ["python", rel, "--seed", str(job.seed), *options, *job.own_options()]
        row = {"id": job.entry_id, "seed": job.seed, "pair": job.pair, "record": plan.recorded}
        if job.setting:
            row["setting"] = list(job.setting)
        row["command"] = command
        if job.size is not None:
            row |= {"size": job.size, **{k: described[job.size][k] for k in ("params", "tokens", "flops")}}
        rows.append(row)
    return rows


def run_experiments(
    archive: Archive, entry_ids: list[str], plan: RunPlan, on_finished=None
) -> list[Finished]:
    """Run every job in order, recording each as soon as it succeeds; a failure stops the rest (what
    finished stays recorded). Smoke runs are recorded only when asked (`record=True`)."""
    record = plan.recorded
    if record:  # refuse before training, not after it
        transaction.refuse_if_interrupted(archive.root)
    jobs, _ = checked_jobs(archive, entry_ids, plan)
    options = plan.child_options()
    finished: list[Finished] = []
    for job in jobs:
        try:
            done = run_job(archive, job, options=options, record=record)
        except GrugError as error:
            if finished and any(f.recorded for f in finished):
                error.args = (f"{error.args[0]}; {len(finished)} earlier run(s) were recorded",)
            raise
        finished.append(done)
        if on_finished is not None:
            on_finished(done)
    return finished
