"""The promotion gate, shared with `grugctl check`: the core tests and a starter smoke run, each a
subprocess run with the repository's own packages first on sys.path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

GATE_TESTS = ("tests/test_grugformer_*.py",)
# Narrows the gate's pytest arguments (whitespace-separated globs or node ids), for grugctl's own test
# suite; the plan names it whenever it is set, so a narrowed gate is never silent.
GATE_TESTS_ENV = "GRUGCTL_GATE_TESTS"
TAIL_LINES = 60


@dataclass(frozen=True)
class GateStep:
    name: str
    argv: tuple[str, ...]
    results: Path | None = None  # a JSON file the step must write (the smoke run's results)


@dataclass(frozen=True)
class GateResult:
    ok: bool
    failed: str | None  # the failing step's name
    tail: str  # the failing step's last output lines
    seconds: dict[str, float]  # step name -> wall time


def gate_tests(root: Path, patterns: Iterable[str] | None = None) -> tuple[list[str], bool]:
    """(pytest arguments, narrowed): every file matching the patterns (default GATE_TESTS, or
    $GRUGCTL_GATE_TESTS), relative to `root`; node ids (`file::test`) pass through when the file exists."""
    narrowed = patterns is not None or bool(os.environ.get(GATE_TESTS_ENV, "").strip())
    if patterns is None:
        patterns = os.environ.get(GATE_TESTS_ENV, "").split() or GATE_TESTS
    found: list[str] = []
    for pattern in patterns:
        if "::" in pattern:
            matches = [pattern] if (root / pattern.split("::")[0]).is_file() else []
        else:
            matches = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
        found += [m for m in matches if m not in found]
    return found, narrowed


def gate_steps(root: Path, starter: str, out_dir: Path, tests: Iterable[str] | None = None) -> list[GateStep]:
    """The core tests (when any match) and a smoke run of `starter`, as subprocess commands run with
    `root` as working directory."""
    tests = list(tests) if tests is not None else gate_tests(root)[0]
    steps = []
    if tests:
        pytest = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests)
        steps.append(GateStep("core tests", pytest))
    results = out_dir / "smoke.json"
    steps.append(
        GateStep("starter smoke run", (sys.executable, starter, "--smoke", "--out", str(results)), results)
    )
    return steps


def gate_env(root: Path) -> dict[str, str]:
    """The repository's own packages first on sys.path (an editable install elsewhere must not answer
    `import grug_core`), and no bytecode written into the tree, so a rollback leaves git status clean."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_step(root: Path, step: GateStep) -> tuple[bool, str]:
    """(passed, combined output). A smoke run must also leave a readable results file."""
    done = subprocess.run(
        step.argv, cwd=root, env=gate_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace",
    )  # fmt: skip
    output = done.stdout
    if done.returncode != 0:
        return False, output + f"\n(exit status {done.returncode})"
    if step.results is not None:
        try:
            json.loads(step.results.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False, output + f"\n{step.name} exited 0 but wrote no readable results file"
    return True, output


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_gate(root: Path, starter: str, tests: Iterable[str], progress: Callable[[str], None]) -> GateResult:
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="grugctl-gate-") as out_dir:
        for step in gate_steps(root, starter, Path(out_dir), tests):
            progress(f"gate: {step.name} ...")
            start = time.perf_counter()
            ok, output = run_step(root, step)
            seconds[step.name] = time.perf_counter() - start
            progress(f"gate: {step.name} {'passed' if ok else 'FAILED'} ({seconds[step.name]:.1f} s)")
            if not ok:
                return GateResult(False, step.name, tail(output), seconds)
    return GateResult(True, None, "", seconds)
