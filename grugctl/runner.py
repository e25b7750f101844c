"""`grugctl run`: train an experiment in a child process and record each seed's summary in archive.yaml.

The child is the experiment file itself (`python <file> --out runs/<id>/<stamp>-seed<S>.json ...`),
so grugctl never imports JAX and a run through grugctl is the same as a run by hand. The child
inherits the terminal, which shows its progress bar (or plain log lines when piped).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from grugctl import transaction
from grugctl.archive import Archive, append_result, get_entry
from grugctl.codediff import experiment_file
from grugctl.errors import CHECK_FAILED, GrugError
from grugctl.results import RESULT_KEYS

INTERRUPTED = 130
SUMMARY_KEYS = ("commit", "dirty", "seed", "steps", "val_loss", "val_bpb", "time_to_target_s", "tokens_per_s")


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


def results_path(archive: Archive, entry_id: str, seed: int) -> Path:
    return archive.root / "runs" / entry_id / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}.json"


def child_command(file: Path, out: Path, *, seed: int, steps: int | None, smoke: bool) -> list[str]:
    command = [sys.executable, str(file), "--seed", str(seed), "--out", str(out)]
    if steps is not None:
        command += ["--steps", str(steps)]
    return command + (["--smoke"] if smoke else [])


def run_child(command: list[str], cwd: Path, entry_id: str) -> int:
    """Run to completion; on Ctrl-C let the child stop (it got the same SIGINT from the terminal)."""
    child = subprocess.Popen(command, cwd=cwd, env={**os.environ, "GRUG_EXPERIMENT_ID": entry_id})
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise GrugError(f"run of '{entry_id}' interrupted; nothing recorded", INTERRUPTED) from None


def read_results(path: Path, entry_id: str) -> dict:
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        message = f"'{entry_id}' exited 0 but its results file {path} is unreadable ({error})"
        raise GrugError(message, CHECK_FAILED) from None
    missing = [key for key in RESULT_KEYS if key not in results]
    if missing:
        message = f"'{entry_id}' wrote {path} without the keys {', '.join(missing)}; nothing recorded"
        raise GrugError(message, CHECK_FAILED)
    return results


def summarize(results: dict, results_file: Path, root: Path) -> dict:
    summary = {key: results[key] for key in SUMMARY_KEYS}
    # The archive is read by people: short SHAs like its other SHA fields, and figures to 4 digits.
    summary["commit"] = results["commit"][:12] if results["commit"] else None
    for key in ("val_loss", "val_bpb"):
        summary[key] = round(results[key], 4)
    summary["tokens_per_s"] = round(results["tokens_per_s"])
    if results["time_to_target_s"] is not None:
        summary["time_to_target_s"] = round(results["time_to_target_s"], 1)
    if results.get("smoke"):
        summary["smoke"] = True
    summary["date"] = results["date"]
    summary["results"] = results_file.relative_to(root).as_posix()
    return summary


def run_experiment(
    archive: Archive,
    entry_id: str,
    *,
    seeds: list[int],
    steps: int | None = None,
    smoke: bool = False,
    record: bool = True,
) -> list[dict]:
    """Run one child per seed; record each seed's summary as soon as it succeeds. A failed seed records
    nothing and stops the remaining seeds."""
    if record:
        transaction.refuse_if_interrupted(archive.root)
    entry = runnable_entry(archive, entry_id)
    summaries = []
    for seed in seeds:
        out = results_path(archive, entry_id, seed)
        file = experiment_file(archive.root, entry.path)
        command = child_command(file, out, seed=seed, steps=steps, smoke=smoke)
        code = run_child(command, archive.root, entry_id)
        if code != 0:
            done = f"; {len(summaries)} earlier seed(s) were recorded" if summaries and record else ""
            exit_code = code if code == 2 else CHECK_FAILED
            message = f"'{entry_id}' failed with exit code {code} (seed {seed}); nothing recorded{done}"
            raise GrugError(message, exit_code)
        summary = summarize(read_results(out, entry_id), out, archive.root)
        if record:
            append_result(archive.path, entry_id, summary)
        summaries.append(summary)
    return summaries
