"""grugctl run, compare and plot: train, weigh the evidence, draw the curves."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from grugctl.cli.common import (
    ArchiveOption,
    app,
    confirm,
    err,
    fail,
    guarded,
    json_out,
    load_archive_for,
    out,
    say,
    warn,
)


def _run_line(done) -> str:
    row = done.row
    if row.get("status") == "failed":
        code = "died" if row["exit_code"] is None else f"exit code {row['exit_code']}"
        where = f"; recorded in {row['record']} with its log tail" if done.recorded else ""
        return f"{done.entry_id} seed {row['seed']} attempt {row['attempt']} FAILED ({code}){where}"
    reached = "target not reached"
    if row["steps_to_target"] is not None:
        tokens, seconds = row["tokens_to_target"], row["time_to_target_s"]
        reached = f"target at step {row['steps_to_target']:.0f} ({tokens:,} tokens, {seconds:.1f} s)"
    pair = f" [pair {row['pair']}]" if row.get("pair") else ""
    where = f"; recorded in {row['record']}" if done.recorded else ""
    return (
        f"{done.entry_id} seed {row['seed']}{pair}: val_bpb {row['val_bpb']:.4f}, {reached}, "
        f"{row['tokens_per_s']:,} tok/s{where}"
    )


def _render_planned(planned: list[dict], as_json: bool) -> None:
    if as_json:
        json_out(planned)
        return
    for run in planned:
        pair = f" (pair {run['pair']})" if run["pair"] else ""
        kept = "recorded" if run["record"] else "not recorded"
        size = ""
        if "size" in run:
            size = f" size {run['size']} ({run['params']['total']:,} params, {run['flops']:.3g} FLOPs)"
        setting = f" at {', '.join(run['setting'])}" if run.get("setting") else ""
        command = " ".join(run["command"])
        say(f"would run {run['id']} seed {run['seed']}{size}{setting}{pair}, {kept}: {command}")


@app.command("run")
def run_command(
    entry_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The experiment(s) to train.")],
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps (default: the file's)."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Number of seeds: seed, seed+1, ..."),
    paired: bool = typer.Option(
        False, "--paired", help="Alternate the baseline and each experiment seed by seed on this machine."
    ),
    against: str | None = typer.Option(
        None, "--against", help="The baseline of --paired (default: the starter)."
    ),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny config, 2 steps: checks the file runs."),
    record: bool | None = typer.Option(
        None, "--record/--no-record", help="Record each run (default: yes, except for --smoke runs)."
    ),
    mesh: str | None = typer.Option(
        None, "--mesh", help="Device mesh of each run, e.g. data=4,model=2 (default: every local device)."
    ),
    sizes: str | None = typer.Option(
        None, "--sizes", "--size", help="Model sizes of the ladder, e.g. xs,s,m (default: the file's, s)."
    ),
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="FIELD=VALUE", help="Set a config field for every run, e.g. --set peak_lr=1e-2."
        ),
    ] = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            "--sweep",
            metavar="FIELD=V1,V2",
            help="Run every value of a scalar config field, e.g. --sweep peak_lr=1e-3,3e-3 (repeat: a grid).",
        ),
    ] = None,
    data: str | None = typer.Option(
        None, "--data", help="Token shards (python -m grug_core.data tokenize) or .txt files to train on."
    ),
    checkpoint_every: int = typer.Option(
        0, "--checkpoint-every", min=0, metavar="N", help="Save a checkpoint every N steps (orbax; 0: never)."
    ),
    checkpoint_dir: str | None = typer.Option(
        None, "--checkpoint-dir", help="Where checkpoints go (default: checkpoints/, ignored by git)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue each run from its latest checkpoint (needs --checkpoint-every)."
    ),
    ray: bool = typer.Option(False, "--ray", help="Run every (experiment, seed) as a task on Ray."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="An existing Ray cluster (implies --ray; default: a new local one)."
    ),
    cpus_per_run: float = typer.Option(1.0, "--cpus-per-run", min=0, help="CPUs each Ray task asks for."),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", min=0, help="GPUs each Ray task asks for."),
    retries: int = typer.Option(0, "--retries", min=0, help="Resubmit a failed Ray task this many times."),
    allow_dirty: bool = typer.Option(
        False, "--allow-dirty", help="Ship an uncommitted tree to Ray (its patch is recorded)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the runs' summary rows as JSON on stdout."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the runs, in order, with their commands; train and write nothing."
    ),
    archive_path: ArchiveOption = None,
) -> None:
    """Train experiments in child processes; record each run under runs/<id>/ and in archive.yaml.

    Each record holds the code (commit, file and core ids, any uncommitted patch), config, machine,
    mesh, whether the machine ran other runs at once, and curves; `grugctl compare` and `grugctl plot`
    read them. Progress streams on stderr. With --ray every (experiment, seed) is a Ray task, the
    tree ships to the workers, results are recorded as they come back, and failed tasks are recorded
    with their log tail and retried.

    Example: grugctl run relu-squared --seeds 5 --paired --steps 200

    Example: grugctl run relu-squared --sizes xs,s,m --seeds 3 --paired

    Example: grugctl run relu-squared --paired --seeds 4 --sweep peak_lr=1.5e-3,3e-3,6e-3

    Example: grugctl run relu-squared --data shards/ --seeds 3 --paired

    Example: grugctl run relu-squared --checkpoint-every 100 (SIGTERM saves and exits 75; --resume goes on)

    Example: grugctl run relu-squared grugformer-starter --seeds 4 --ray --cpus-per-run 2 --retries 1
    """
    from grugctl.runs import runner

    archive = load_archive_for(archive_path)
    show = None if as_json else (lambda done: say(_run_line(done)))
    plan = runner.RunPlan(
        seeds=tuple(range(seed, seed + seeds)), steps=steps, smoke=smoke, record=record, paired=paired,
        against=against, mesh=mesh, sizes=guarded(lambda: runner.parse_sizes(sizes)),
        settings=guarded(lambda: runner.parse_settings(settings)), data=data,
        sweep=guarded(lambda: runner.parse_sweep(sweep)), checkpoint_every=checkpoint_every,
        checkpoint_dir=checkpoint_dir, resume=resume,
    )  # fmt: skip
    ray_only = {
        "--retries": retries != 0, "--allow-dirty": allow_dirty, "--cpus-per-run": cpus_per_run != 1.0,
        "--gpus-per-run": gpus_per_run != 0.0,
    }  # fmt: skip
    if resume and not checkpoint_every:
        raise fail("--resume needs --checkpoint-every N (the interval the run saves at)")
    if not (ray or ray_address) and any(ray_only.values()):
        given = ", ".join(name for name, used in ray_only.items() if used)
        raise fail(f"{given} only apply to Ray runs; add --ray (or --ray-address ADDRESS)")
    if dry_run:
        _render_planned(guarded(lambda: runner.planned_runs(archive, entry_ids, plan)), as_json)
        return
    if ray or ray_address:
        from grugctl.runs import rayrun

        options = rayrun.RayOptions(ray_address, cpus_per_run, gpus_per_run, retries, allow_dirty)
        finished = guarded(lambda: rayrun.run_on_ray(archive, entry_ids, options, plan, show))
    else:
        finished = guarded(lambda: runner.run_experiments(archive, entry_ids, plan, show))
    if as_json:
        json_out([{"id": done.entry_id, "recorded": done.recorded, **done.row} for done in finished])
    elif any(done.recorded for done in finished):
        ran = list(dict.fromkeys(done.entry_id for done in finished))
        baseline = (against or archive.starter) if paired else None
        ids = " ".join([entry_id for entry_id in ran if entry_id != baseline] or ran)  # compare's baseline
        ids += f" --against {against}" if paired and against else ""
        warn([f"`grugctl compare {ids}` weighs the evidence; commit runs/ and archive.yaml"], prefix="next")


# ---------------------------------------------------------------- grugctl compare / plot


@app.command("compare")
def compare_command(
    entry_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The experiment(s) to judge.")],
    against: str | None = typer.Option(None, "--against", help="The baseline (default: the starter)."),
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="val_bpb, steps_to_target, tokens_to_target, time_to_target_s, tokens_per_s or val_loss; "
            "repeat for several (default: val_bpb, steps_to_target, time_to_target_s).",
        ),
    ] = None,
    alpha: float = typer.Option(0.01, "--alpha", help="Significance level of the verdict."),
    steps: int | None = typer.Option(None, "--steps", help="Compare runs of this length (default: newest)."),
    size: str | None = typer.Option(None, "--size", help="Compare this size only (default: every size run)."),
    tuned: str | None = typer.Option(
        None, "--tuned", metavar="FIELD", help="Compare each side at its own best value of a swept field."
    ),
    select_seeds: int | None = typer.Option(
        None, "--select-seeds", min=0, help="--tuned: seeds that choose the value (default: half the seeds)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
    as_md: bool = typer.Option(False, "--md", help="Print a Markdown table (for a pull request)."),
    archive_path: ArchiveOption = None,
) -> None:
    """Is an experiment better than its baseline? n, mean ± sd, delta, CI, p and a verdict per metric.

    Paired seeds (`grugctl run ID --paired`) use the paired t-test, other runs Welch's t-test (scipy);
    the interval is at 1 - alpha, so it excludes zero exactly when the verdict is significant. Smoke
    runs, other code, step counts or configs, and for wall-time metrics other machines and other
    versions of the core, are left out and counted. An inconclusive verdict says how many seeds the
    observed effect would need. Runs that never reached the target count as slowest (rank tests). Each
    size run gets its own table; with two or more, the largest adds the compute multiplier (how many
    times the FLOPs the baseline needs for the candidate's loss) with its interval, and the trend. Runs
    on other data or with other --set/--sweep settings are never mixed in. An experiment that swept one
    field (and --tuned FIELD) is compared with each side at its own best value of it: chosen on the
    lowest seeds, tested on the others.

    Example: grugctl compare relu-squared --metric val_bpb --md

    Example: grugctl compare relu-squared --tuned peak_lr

    Example: grugctl compare relu-squared --size s --json
    """
    from grugctl.evidence import compare, comparerender

    if as_json and as_md:
        raise fail("--json and --md both choose the output; pick one.")
    archive = load_archive_for(archive_path, reading=True)
    chosen = tuple(metrics) if metrics else compare.DEFAULT_METRICS
    comparisons = guarded(
        lambda: compare.compare_all(
            archive,
            entry_ids,
            against=against,
            metrics=chosen,
            alpha=alpha,
            steps=steps,
            size=size,
            tuned=tuned,
            select_seeds=select_seeds,
        )  # fmt: skip
    )
    if as_json:
        json_out(compare.as_json(comparisons))
    elif as_md:
        sys.stdout.write(comparerender.markdown(comparisons))
    else:
        color = out.is_terminal and not os.environ.get("NO_COLOR")
        sys.stdout.write(comparerender.text(comparisons, color=color))


@app.command("plot")
def plot_command(
    entry_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The experiment(s) to draw.")],
    metric: str = typer.Option("val_bpb", "--metric", help="val_bpb, val_loss or train_loss."),
    x_axis: str = typer.Option(
        "step", "--x", help="step, tokens, time (training seconds), or flops (final loss against FLOPs)."
    ),
    out_path: Annotated[
        Path, typer.Option("--out", help="curves.png, or curves.html (the PNG and the compare table).")
    ] = Path("curves.png"),
    steps: int | None = typer.Option(None, "--steps", help="Draw runs of this length (default: newest)."),
    against: str | None = typer.Option(
        None, "--against", help="The HTML table's baseline (default: starter)."
    ),
    tuned: str | None = typer.Option(
        None, "--tuned", metavar="FIELD", help="--x flops: each size at its best value of a swept field."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be drawn; write nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Overwrite an existing --out file without asking."),
    archive_path: ArchiveOption = None,
) -> None:
    """Draw loss curves from run records: a mean curve per experiment, a band over its seeds, the target.

    Uses the runs `grugctl compare` would use (current code, one step count and config, no smoke runs).

    Example: grugctl plot relu-squared grugformer-starter --out curves.html

    Example: grugctl plot relu-squared grugformer-starter --x flops --out scaling.png

    Example: grugctl plot muon grugformer-starter --x flops --tuned lr_scale --out scaling.png
    """
    from grugctl.evidence import plot

    archive = load_archive_for(archive_path, reading=True)
    if out_path.exists() and not dry_run:
        confirm(f"Overwrite {out_path}?", yes)
    curves = guarded(
        lambda: plot.write_plot(
            archive,
            entry_ids,
            out_path,
            metric=metric,
            x_axis=x_axis,
            steps=steps,
            against=against,
            dry_run=dry_run,
            tuned=tuned,
        )
    )
    drawn = ", ".join(f"{c.entry_id} ({c.seeds} seed{'s' * (c.seeds != 1)})" for c in curves)
    err.print(f"{'would write' if dry_run else 'wrote'} {out_path}: {drawn}", markup=False, highlight=False)
