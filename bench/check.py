"""Wall time of `grugctl check --fast` on a 1,000-entry archive, next to `python -c "import jax"`.

Builds a throwaway git repository holding a copy of grug_core, pyproject.toml and the starter, plus N-1
experiments copied from the starter (a third with the MLP's gate changed, as `grugctl new` + an edit
would leave them), all committed and registered with origin, base and introduced. Times fresh
processes: cold (no .grugctl_cache, no .ruff_cache: a fresh clone, e.g. CI) and warm (the second run
onwards, what a developer sees). The target is --fast under 2 s.

Run: .venv/bin/python bench/check.py [--entries 1000] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STARTER = "experiments/speedrun/grugformer_starter/grugformer_speedrun.py"
TARGET_S = 2.0


def grugctl_command() -> list[str]:
    script = Path(sys.executable).parent / "grugctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "grugctl.cli"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def experiment_source(starter: str, i: int) -> str:
    """The starter with its own header; every third one also changes the MLP's gate (one bucket)."""
    body = starter.split('"""', 2)[2]
    source = f'"""Experiment {i}: one idea against the core, copied from the starter."""{body}'
    return source.replace("jax.nn.silu(", "jax.nn.gelu(", 1) if i % 3 == 0 else source


def build_repo(root: Path, entries: int) -> None:
    git(root, "init", "-q")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "bench")
    shutil.copytree(REPO / "grug_core", root / "grug_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / STARTER).parent.mkdir(parents=True)
    starter = (REPO / STARTER).read_text()
    (root / STARTER).write_text(starter)
    (root / "archive.yaml").write_text("version: 1\nexperiments: {}\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "core and starter")
    base = git(root, "rev-parse", "HEAD")[:12]
    lines = ["version: 1", "core: grug_core", "starter: grugformer-starter", "", "experiments:"]
    lines += [
        "  grugformer-starter:",
        f"    path: {STARTER}",
        "    status: active",
        "    purpose: The starter.",
    ]
    lines += [f"    introduced: {base}", ""]
    for i in range(1, entries):
        path = f"experiments/speedrun/grugformer_exp_{i:04d}/grugformer_exp_{i:04d}.py"
        (root / path).parent.mkdir(parents=True)
        (root / path).write_text(experiment_source(starter, i))
        lines += [f"  exp-{i:04d}:", f"    path: {path}", "    status: active", "    bucket: mlp"]
        lines += ["    origin: grugformer-starter", f"    purpose: Experiment {i} tries one idea."]
        lines += [f"    base: {base}", ""]
    (root / "archive.yaml").write_text("\n".join(lines))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "experiments")
    introduced = git(root, "rev-parse", "HEAD")[:12]
    text = (
        (root / "archive.yaml")
        .read_text()
        .replace(f"    base: {base}\n", f"    base: {base}\n    introduced: {introduced}\n")
    )
    (root / "archive.yaml").write_text(text)
    git(root, "commit", "-qam", "resolve")


def timed(cmd: list[str], cwd: Path, clear: bool) -> float:
    if clear:
        for cache in (".grugctl_cache", ".ruff_cache"):
            shutil.rmtree(cwd / cache, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return seconds


def report(label: str, times: list[float]) -> None:
    median, best = statistics.median(times), min(times)
    print(f"{label:<44} median {median:6.2f} s   best {best:6.2f} s   ({len(times)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="40 entries, one repeat: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.repeats = 40, 1
    check = [*grugctl_command(), "check", "--fast"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_repo(root, args.entries)
        print(f"archive: {args.entries} entries, {os.cpu_count()} cpus, python {sys.version.split()[0]}")
        timed([sys.executable, "-c", "import grugctl.cli"], root, clear=False)  # warm the bytecode caches
        report("grugctl check --fast, cold caches", [timed(check, root, True) for _ in range(args.repeats)])
        warm = [timed(check, root, False) for _ in range(args.repeats)]
        report("grugctl check --fast, warm", warm)
        jax = [timed([sys.executable, "-c", "import jax"], root, False) for _ in range(args.repeats)]
        report('python -c "import jax"', jax)
    verdict = "meets" if statistics.median(warm) < TARGET_S else "MISSES"
    print(f"warm --fast {verdict} the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
