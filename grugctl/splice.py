"""Splicing top-level definitions into a module's text: the one mechanism `promote` (an experiment's
definitions into the core and the starter) and `sync` (the core's definitions into an experiment) both
use, so neither imports the other."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grugctl import codediff
from grugctl.errors import GrugError


def insert_lines(text: str, line: int, block: str) -> str:
    """`block` inserted before 1-based `line`."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[: line - 1]) + block + "".join(lines[line - 1 :])


def add_imports(text: str, statements: list[str]) -> str:
    """One line per statement after the module's last top-level import (or its docstring)."""
    if not statements:
        return text
    tree = ast.parse(text)
    block = "".join(s + "\n" for s in statements)
    last = [n.end_lineno for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    if last:
        return insert_lines(text, max(last) + 1, block)
    first = tree.body[0] if tree.body else None
    docstring = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
    return insert_lines(text, first.end_lineno + 1, "\n" + block) if docstring else block + "\n" + text


def imports_for(experiment, core, moved: list[str], target: codediff.Module, own: str) -> list[str]:
    """Statements binding what `moved` uses that `target` (import name `own`) lacks: the experiment's own
    imports, and core definitions it holds copies of that live in another core module."""
    wanted = [i for i in codediff.needed_imports(experiment, moved, target, own)]
    statements = {i.name: i.statement for i in wanted}
    bound = set(target.definitions) | set(target.imports) | set(statements)
    for name in moved:
        for ref in sorted(experiment.definitions[name].references - bound):
            module = core.owner.get(ref)
            if module is not None and f"{core.package}.{module}" != own and ref in experiment.definitions:
                statements[ref] = f"from {core.package}.{module} import {ref}"
                bound.add(ref)
    return list(statements.values())


@dataclass(frozen=True)
class Spliced:
    text: str  # the module after the splice
    names: tuple[str, ...]  # definitions replaced and helpers inserted
    imports: tuple[str, ...]  # import statements added


def splice(
    text: str, filename: str, experiment, core, names: list[str], helpers: list[str], own: str
) -> Spliced:
    """`names` replaced by the experiment's source where `text` defines them, `helpers` inserted before
    their first use, missing imports added."""
    done = []
    for name in names:
        current = codediff.parse_module(text, filename)
        if name in current.definitions:
            text = codediff.replace_definition(
                text, current.definitions[name], experiment.definitions[name].source
            )
            done.append(name)
    for helper in helpers:
        current = codediff.parse_module(text, filename)
        if helper in current.definitions or helper in current.imports:
            raise GrugError(
                f"{filename} already binds {helper}; rename the experiment's helper {helper} first."
            )
        user = next((d for d in current.definitions.values() if helper in d.references), None)
        if user is not None:
            text = insert_lines(text, user.start, experiment.definitions[helper].source + "\n\n")
            done.append(helper)
    statements = imports_for(experiment, core, done, codediff.parse_module(text, filename), own)
    text = add_imports(text, statements)
    result = codediff.parse_module(text, filename)
    for name in done:
        if result.definitions[name].fingerprint != experiment.definitions[name].fingerprint:
            raise GrugError(
                f"splicing {name} into {filename} went wrong; nothing was written, please report it."
            )
    return Spliced(text, tuple(done), tuple(statements))


def sort_imports(root: Path, rel: str, original: str, text: str) -> str:
    """`text` with its imports sorted by ruff under the project's own settings, but only when `original`
    already passed that check: then the only lines it moves are the imports promote added. Without ruff
    (a dev dependency) the imports stay where splice put them."""

    def fixed(source: str) -> str | None:
        command = [sys.executable, "-m", "ruff", "check", "--select", "I", "--fix-only", "--quiet"]
        try:
            done = subprocess.run(
                [*command, "--stdin-filename", rel, "-"], cwd=root, input=source, capture_output=True,
                text=True, timeout=60,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 and done.stdout else None

    if fixed(original) != original:
        return text
    return fixed(text) or text
