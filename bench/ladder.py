"""What the size ladder costs on this machine: each rung's training time, and a whole comparison's.

Runs the starter at each rung for a few dozen steps (`--size R --steps K`), takes the training seconds
per step it reports (compile and evaluation excluded), and scales to the rung's full step count. Then
the cost of `grugctl run ID --sizes <first k rungs> --seeds S --paired` (2 x S runs a rung) for k = 1,
2, 3, ...: each rung costs 2-4x the one below, so the largest rung is most of the bill.

Run: .venv/bin/python bench/ladder.py [--sizes xs,s,m] [--steps 40] [--seeds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STARTER = ROOT / "experiments" / "speedrun" / "grugformer_starter" / "grugformer_speedrun.py"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def measure(size: str, steps: int, out: Path) -> dict:
    command = [sys.executable, str(STARTER), "--size", size, "--steps", str(steps), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
    results = json.loads(out.read_text())
    described = subprocess.run(
        [sys.executable, str(STARTER), "--size", size, "--describe"], cwd=ROOT, capture_output=True, text=True
    )
    full = json.loads(described.stdout)
    per_step = results["train_seconds"] / steps
    full_steps = full["tokens"] // (results["config"]["batch_size"] * results["config"]["seq_len"])
    return {
        "size": size,
        "flops": full["flops"],
        "seconds_per_step": per_step,
        "steps": full_steps,
        "full_seconds": per_step * full_steps,
        "compile_seconds": results["compile_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="xs,s,m")
    parser.add_argument("--steps", type=int, default=40, help="steps timed per rung")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="xs and s, 4 steps: checks the script runs")
    args = parser.parse_args()
    sizes = ["xs", "s"] if args.quick else args.sizes.split(",")
    steps = 4 if args.quick else args.steps
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; {steps} timed steps a rung")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            rows.append(measure(size, steps, Path(tmp) / f"{size}.json"))
    print("| size | training FLOPs | s / step | steps | full run (training) | compile |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['size']} | {row['flops']:.2e} | {row['seconds_per_step']:.3f} | {row['steps']} | "
            f"{row['full_seconds'] / 60:.1f} min | {row['compile_seconds']:.1f} s |"
        )
    total = 0.0
    for number, row in enumerate(rows, start=1):
        total += 2 * args.seeds * (row["full_seconds"] + row["compile_seconds"])
        rungs = ",".join(r["size"] for r in rows[:number])
        share = 2 * args.seeds * row["full_seconds"] / total
        print(
            f"--sizes {rungs} --seeds {args.seeds} --paired: {total / 60:.1f} min of training "
            f"(the largest rung {share:.0%} of it)"
        )


if __name__ == "__main__":
    main()
