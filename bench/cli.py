"""Wall time of `grugctl archive status` on a 1,000-entry archive, and of `new`, `diff` and `delete` on
one experiment of a real core, next to `python -c "import jax"`.

Builds a throwaway git repository with N experiment files (most committed and present, some deleted),
then times fresh processes, so interpreter start, imports, YAML parsing, git and rendering all count.
The target is status < 1 s; importing JAX alone is the yardstick for "feels like a compute tool".
The life-cycle commands run in a second repository holding this checkout's grug_core and starter:
each round scaffolds an experiment, diffs it against the core and deletes it (committing between
steps as a user would), so each command reads a real core and a real experiment file.
It also times, in this process, the archive's two fast paths against what they replace: reading with
libyaml nodes against a ruamel load, and editing one entry's lines against a whole-document edit.

Run: .venv/bin/python bench/cli.py [--entries 1000] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 1.0
# A reading command should feel instant next to a compute tool: status within a quarter of `import jax`.
TARGET_RATIO = 0.25


def grugctl_command() -> list[str]:
    script = Path(sys.executable).parent / "grugctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "grugctl.cli"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def build_repo(root: Path, entries: int) -> None:
    """N experiments: 90% active, 5% superseded (file kept), 5% deleted (file removed in a later commit)."""
    git(root, "init", "-q")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "bench")
    statuses = [
        "deleted" if i % 20 == 1 else "superseded" if i % 20 == 2 else "active" for i in range(entries)
    ]
    for i in range(entries):
        path = root / f"experiments/speedrun/exp_{i:04d}/exp_{i:04d}.py"
        path.parent.mkdir(parents=True)
        path.write_text(f"# experiment {i}\nLEARNING_RATE = {i}e-5\n")
    (root / "archive.yaml").write_text("version: 1\nexperiments: {}\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "add experiments")
    first = git(root, "rev-parse", "HEAD")[:12]
    for i, status in enumerate(statuses):
        if status == "deleted":
            (root / f"experiments/speedrun/exp_{i:04d}/exp_{i:04d}.py").unlink()
    git(root, "commit", "-qam", "delete some experiments")
    lines = ["# Bench archive.", "version: 1", "core: grug_core", "starter: exp-0000", "", "experiments:"]
    for i, status in enumerate(statuses):
        lines += [
            f"  exp-{i:04d}:",
            f"    path: experiments/speedrun/exp_{i:04d}/exp_{i:04d}.py",
            f"    status: {status}",
            f"    bucket: {('attention', 'block', 'mlp', 'loss', 'optimizer')[i % 5]}",
            f"    purpose: Experiment {i} tries one idea against the core, measured on the speedrun.",
            f"    base: {first}",
            f"    introduced: {first}",
        ]
        if status != "active":
            lines.append(f"    last_known_good: {first}")
        if status == "superseded":
            lines.append("    superseded_by: core@pending")
        lines.append("")
    (root / "archive.yaml").write_text("\n".join(lines))


def wall(cmd: list[str], cwd: Path, repeats: int, warm_up: bool = True) -> list[float]:
    # As a user runs it: bytecode caches allowed (some sandboxes disable them), one warm-up run first.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if warm_up:
        subprocess.run(cmd, cwd=cwd, env=env, capture_output=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return times


PROJECT = Path(__file__).resolve().parents[1]


def lifecycle(grugctl: list[str], root: Path, repeats: int) -> dict[str, list[float]]:
    """Each round: `new` an experiment, edit and `diff` it, `delete` it, committing after each as a user
    would; one fresh process a command."""
    times = {"new": [], "diff": [], "delete": []}
    for index in range(repeats + 1):  # the first round warms bytecode caches and is not counted
        idea = f"bench-idea-{index}"
        steps = {
            "new": [*grugctl, "new", idea, "--bucket", "mlp", "--purpose", "Times the life cycle."],
            "diff": [*grugctl, "diff", idea],
            "delete": [*grugctl, "delete", idea, "--yes"],
        }
        for name, cmd in steps.items():
            if name == "diff":  # an edit to diff: the experiment's own mlp swaps SiLU for GELU
                (path,) = root.glob(f"experiments/speedrun/*/*{idea.replace('-', '_')}.py")
                source = path.read_text()
                if "jax.nn.silu(" not in source:
                    raise SystemExit(f"{path.name} has no jax.nn.silu( to edit; update bench/cli.py's edit")
                path.write_text(source.replace("jax.nn.silu(", "jax.nn.gelu(", 1))
            elapsed = wall(cmd, root, 1, warm_up=False)
            if index:
                times[name] += elapsed
            git(root, "add", "-A")  # delete keeps nothing uncommitted it could not restore
            git(root, "commit", "-qm", f"{name} {idea}")
    return times


def report(label: str, times: list[float]) -> None:
    median, best = statistics.median(times), min(times)
    print(f"{label:<40} median {median:5.2f} s   best {best:5.2f} s   ({len(times)} runs)")


def seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fast_paths(root: Path, repeats: int) -> None:
    """Each fast path next to the plain path it replaces, on the same archive, in one process."""
    from ruamel.yaml import YAML

    from grugctl import archive

    path = root / "archive.yaml"
    libyaml = seconds(lambda: archive.load_archive(path), repeats)
    ruamel = seconds(lambda: YAML().load(path.read_text()), repeats)
    print(f"read:  libyaml nodes {libyaml:6.3f} s vs ruamel load {ruamel:6.3f} s   ({ruamel / libyaml:.0f}x)")
    notes = iter(range(10**6))

    def whole() -> None:
        note = f"bench {next(notes)}"
        archive.update_archive(path, lambda doc: doc["experiments"]["exp-0000"].__setitem__("notes", note))

    region = seconds(lambda: archive.set_fields(path, "exp-0000", notes=f"bench {next(notes)}"), repeats)
    document = seconds(whole, repeats)
    print(
        f"write: one entry's lines {region:6.3f} s vs whole document {document:6.3f} s   "
        f"({document / region:.0f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="40 entries, one repeat: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.repeats = 40, 1
    grugctl = grugctl_command()
    env_note = f"python {sys.version.split()[0]}, {os.cpu_count()} cpus"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_repo(root, args.entries)
        print(f"archive: {args.entries} entries in a temporary git repository ({env_note})")
        status = wall([*grugctl, "archive", "status"], root, args.repeats)
        report("grugctl archive status", status)
        report(
            "grugctl archive status --json",
            wall([*grugctl, "archive", "status", "--json"], root, args.repeats),
        )
        jax_import = wall([sys.executable, "-c", "import jax"], root, args.repeats)
        report('python -c "import jax"', jax_import)
        write = [*grugctl, "archive", "set", "exp-0000", "--notes", "bench", "--archive", "archive.yaml"]
        report("grugctl archive set (one write)", wall(write, root, 2))
        fast_paths(root, args.repeats)
    sys.path.insert(0, str(PROJECT / "tests"))
    from repo_copy import make_repo  # the tests' repository: this checkout's core and starter, committed

    with tempfile.TemporaryDirectory() as tmp:
        root = make_repo(Path(tmp))
        for name, times in lifecycle(grugctl, root, args.repeats).items():
            report(f"grugctl {name} (one experiment)", times)
            ratio = statistics.median(times) / statistics.median(jax_import)
            print(
                f"{name} / import jax: {ratio:.2f}x ({'PASS' if ratio <= TARGET_RATIO else 'MISS'}, "
                f"target <= {TARGET_RATIO}x)"
            )
    verdict = "meets" if statistics.median(status) < TARGET_S else "MISSES"
    print(f"status {verdict} the {TARGET_S:.0f} s target")
    ratio = statistics.median(status) / statistics.median(jax_import)
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(f"status / import jax: {ratio:.2f}x ({verdict}, target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
