"""Runs grugctl commands the way a user's shell does, in one fresh interpreter, and reports which modules
they loaded: how tests hold the commands that compute nothing to never importing JAX (or scipy.stats)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

MARKER = "MODULES LOADED: "


def run_commands(root: Path, commands: list[list[str]], commit_between: bool = False) -> tuple[str, set[str]]:
    """(stdout, every module in sys.modules afterwards) of running each `grugctl <args>` in `root`; each
    must exit 0. commit_between commits the tree after each command, as a user between steps."""
    script = textwrap.dedent(
        f"""
        import json, subprocess, sys
        from grugctl.cli import app
        for args in {commands!r}:
            try:
                app(args)
            except SystemExit as done:
                assert done.code in (0, None), (args, done.code)
            if {commit_between!r}:
                subprocess.run(["git", "add", "-A"], check=True)
                subprocess.run(["git", "commit", "-qm", args[0], "--allow-empty"], check=True)
        print({MARKER!r} + json.dumps(sorted(sys.modules)), file=sys.stderr)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith(MARKER)]
    return done.stdout, set(json.loads(line[len(MARKER) :]))


def loaded_from(modules: set[str], *packages: str) -> list[str]:
    """The modules of these top-level packages among `modules`, sorted (empty when none was loaded)."""
    return sorted(m for m in modules if m.split(".")[0] in packages)
