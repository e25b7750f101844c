"""The layout the README describes: grugctl's modules import one another without a circle (what two
stages share lives below both), and the README's test command is the one `.ci/run` runs."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "grugctl"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The grugctl modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grugctl"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                is_module = (REPO / (full.replace(".", "/") + ".py")).exists()
                found.add(full if is_module or (REPO / full.replace(".", "/")).is_dir() else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("grugctl")}
    return found


def test_grugctl_has_no_import_circle():
    graph = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}

    def related(a: str, b: str) -> bool:  # a package and its own modules may import each other
        return a.startswith(b + ".") or b.startswith(a + ".")

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    circles = sorted(
        {
            tuple(sorted((a, b)))
            for a, deps in graph.items()
            for b in deps
            if a in reachable(b) and not related(a, b)
        }
    )
    assert circles == [], f"import circles: {circles}"


def test_the_stages_are_folders():
    for stage in ("experiments", "runs", "evidence", "promotion", "archive", "cli"):
        assert (PACKAGE / stage / "__init__.py").is_file(), stage
    assert not [p.name for p in PACKAGE.glob("*.py") if p.stem in ("promote", "sync", "runner", "compare")]


def test_the_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, re.S)[1]
    command = [line for line in block.splitlines() if line and not line.startswith("#")][1]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert command == ci
