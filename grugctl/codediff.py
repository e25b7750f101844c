"""Definition-by-definition diff of an experiment against grug_core or another experiment.

An experiment holds top-level copies of the core's definitions under the same names, so matching
top-level names and comparing their ASTs says exactly what it changed: formatting and comments are
never a change, and the displayed unified diff is of the source text (comments kept). Pure: reads
files (and git, for `--against origin`), returns data, never prints and never imports JAX.

The lower layer (parse_module, load_core*, compare, diff_against_core, drifted, dependencies,
replace_definition) works on source text only, so promote and check reuse it on any revision.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from grugctl.archive import BUCKETS, get_entry
from grugctl.errors import GrugError

MODULE_BUCKETS = {"attention": "attention", "model": "block", "loss": "loss", "optim": "optimizer"}
# Names whose bucket differs from their module's.
NAME_BUCKETS = {("model", "mlp"): "mlp"}

UNCHANGED = "unchanged"
CHANGED = "changed"
EXPERIMENT_ONLY = "experiment-only"
CORE_ONLY = "core-only"  # only on the other side when diffing against the core
BASE_ONLY = "base-only"  # only on the other side when diffing against another experiment
STATUSES = (CHANGED, EXPERIMENT_ONLY, CORE_ONLY, BASE_ONLY, UNCHANGED)


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str  # "function", "class" or "constant"
    source: str  # decorators and the comment lines directly above included; ends with a newline
    start: int  # first line of `source` in its file, 1-based
    end: int  # last line, inclusive
    node: ast.stmt = field(repr=False, compare=False)

    # Computed on first use: a diff compares a handful of a module's definitions, and dumping or walking
    # every definition of every core module would cost more than the rest of the command.
    @cached_property
    def fingerprint(self) -> str:
        """ast.dump without positions: equal fingerprints mean unchanged."""
        return ast.dump(self.node, include_attributes=False)

    @cached_property
    def references(self) -> frozenset[str]:
        """Names it loads (helpers, imports, other definitions)."""
        loads = (n.id for n in ast.walk(self.node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
        return frozenset(loads) - {self.name}


@dataclass(frozen=True)
class Import:
    name: str  # the name it binds
    module: str | None  # "grug_core.model" for `from grug_core.model import x`; None for `import x`
    statement: str  # a one-name import statement binding exactly `name`
    line: int


@dataclass(frozen=True)
class Module:
    source: str
    definitions: dict[str, Definition]  # in file order; a redefined name keeps its last definition
    imports: dict[str, Import]  # top-level imports by bound name


@dataclass(frozen=True)
class Core:
    package: str  # import name of the core package, e.g. "grug_core"
    modules: dict[str, Module]  # module stem ("model") -> parsed module
    owner: dict[str, str]  # definition name -> module stem
    ambiguous: dict[str, tuple[str, ...]]  # names defined in several core modules -> those modules


@dataclass(frozen=True)
class Change:
    name: str
    status: str  # one of STATUSES
    bucket: str | None
    module: str | None  # core module that defines the name, if any
    old: Definition | None  # the core's (or base experiment's) definition
    new: Definition | None  # the experiment's definition
    added: int
    removed: int
    diff: tuple[str, ...]  # unified diff lines (no newlines), hunk line numbers are file lines


@dataclass(frozen=True)
class DiffReport:
    experiment: str
    path: str  # the experiment's file, relative to the repository root
    against: str  # "core", "origin" or an experiment id
    base: str  # what was diffed against, for humans: "grug_core", "grugformer-starter@0123abcd", ...
    changes: tuple[Change, ...]  # every matched name, unchanged included, in experiment file order
    warnings: tuple[str, ...]
    closest: tuple[str, int] | None  # (experiment id, changed lines) of the nearest other active experiment


# ---------------------------------------------------------------------------------------------------
# Parsing


def parse_module(source: str, filename: str = "<experiment>") -> Module:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        raise GrugError(
            f"{filename} does not parse (line {error.lineno}: {error.msg}); fix it first."
        ) from None
    lines = source.splitlines(keepends=True)
    definitions: dict[str, Definition] = {}
    imports: dict[str, Import] = {}
    previous_end = 0
    for node in tree.body:
        name, kind = defined_name(node)
        if name is not None:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            # Comment lines directly above belong to the definition (they usually say why it is so).
            while first - 1 > previous_end and lines[first - 2].startswith("#"):
                first -= 1
            text = "".join(lines[first - 1 : node.end_lineno])
            definitions.pop(name, None)
            definitions[name] = Definition(
                name=name,
                kind=kind,
                source=text if text.endswith("\n") else text + "\n",
                start=first,
                end=node.end_lineno,
                node=node,
            )
        for item in module_imports(node):
            imports[item.name] = item
        previous_end = node.end_lineno
    return Module(source=source, definitions=definitions, imports=imports)


def defined_name(node: ast.stmt) -> tuple[str | None, str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name, "function"
    if isinstance(node, ast.ClassDef):
        return node.name, "class"
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, "constant"
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, "constant"
    return None, ""


def module_imports(node: ast.stmt) -> list[Import]:
    if isinstance(node, ast.Import):
        return [
            Import(
                name=alias.asname or alias.name.split(".")[0],
                module=None,
                statement=ast.unparse(ast.Import(names=[alias])),
                line=node.lineno,
            )
            for alias in node.names
        ]
    if isinstance(node, ast.ImportFrom):
        module = "." * node.level + (node.module or "")
        return [
            Import(
                name=alias.asname or alias.name,
                module=module,
                statement=ast.unparse(ast.ImportFrom(module=node.module, names=[alias], level=node.level)),
                line=node.lineno,
            )
            for alias in node.names
            if alias.name != "*"
        ]
    return []


# ---------------------------------------------------------------------------------------------------
# The core


def load_core(core_dir: Path) -> Core:
    """Parse the core's bucket modules (attention.py, model.py, loss.py, optim.py)."""
    from grugctl.transaction import inside

    if not core_dir.is_dir():
        raise GrugError(f"core package {core_dir} does not exist; check `core:` in archive.yaml.")
    files = sorted(core_dir.glob("*.py"))
    for path in [core_dir, *files]:
        inside(path.parent, path.name, "the core")
    sources = {p.stem: p.read_text(encoding="utf-8") for p in files}
    return load_core_sources(core_dir.name, sources)


def load_core_sources(package: str, sources: Mapping[str, str]) -> Core:
    """Build a Core from module stem -> source text, e.g. read from git at some commit."""
    modules: dict[str, Module] = {}
    homes: dict[str, list[str]] = {}
    for stem in sorted(sources):
        # Only the bucket modules hold edit surfaces; data.py and sharding.py are plumbing that
        # experiments import, and a harness `main` must not be mistaken for data.main.
        if stem not in MODULE_BUCKETS:
            continue
        modules[stem] = parse_module(sources[stem], f"{package}/{stem}.py")
        for name in modules[stem].definitions:
            homes.setdefault(name, []).append(stem)
    owner = {name: stems[0] for name, stems in homes.items() if len(stems) == 1}
    ambiguous = {name: tuple(stems) for name, stems in homes.items() if len(stems) > 1}
    return Core(package=package, modules=modules, owner=owner, ambiguous=ambiguous)


def bucket_of(module: str | None, name: str) -> str | None:
    if module is None:
        return None
    return NAME_BUCKETS.get((module, name), MODULE_BUCKETS.get(module))


def core_bucket(core: Core, name: str) -> str | None:
    return bucket_of(core.owner.get(name), name)


def core_definition(core: Core, name: str) -> Definition:
    return core.modules[core.owner[name]].definitions[name]


def check_unambiguous(core: Core, names: Iterable[str]) -> None:
    for name in names:
        if name in core.ambiguous:
            modules = " and ".join(f"{core.package}/{m}.py" for m in core.ambiguous[name])
            raise GrugError(
                f"{name} is defined in both {modules}; rename one so every core name has one home."
            )


def harness_names(starter: Module, core: Core) -> frozenset[str]:
    """The starter's own definitions (config, data, train loop, main...): not the core's business."""
    return frozenset(n for n in starter.definitions if n not in core.owner and n not in core.ambiguous)


def edit_surface(module: Module, core: Core, bucket: str | None = None) -> dict[str, list[str]]:
    """Bucket -> the core definitions this file holds copies of (its edit surface), in file order."""
    surface: dict[str, list[str]] = {}
    for name in module.definitions:
        b = core_bucket(core, name)
        if b is not None and (bucket is None or b == bucket):
            surface.setdefault(b, []).append(name)
    return {b: surface[b] for b in BUCKETS if b in surface}


# ---------------------------------------------------------------------------------------------------
# Comparing


def compare(
    new: Mapping[str, Definition],
    old: Mapping[str, Definition],
    core: Core | None,
    *,
    new_module: Module | None = None,
    ignore: Iterable[str] = (),
    old_only: str = BASE_ONLY,
    labels: tuple[str, str] = ("base", "experiment"),
) -> list[Change]:
    """Match `new` against `old` by name. Buckets come from the core; helpers that only the experiment
    defines inherit the bucket of the changed definitions using them (when those agree). `labels` name
    the two sides in diff headers; "{module}" in the first becomes the core module defining the name."""
    skip = set(ignore)
    changes = []
    for name, definition in new.items():
        if name not in skip:
            status = EXPERIMENT_ONLY if name not in old else _status(old[name], definition)
            changes.append(_change(name, status, core, old.get(name), definition, labels))
    for name, definition in old.items():
        if name not in skip and name not in new:
            changes.append(_change(name, old_only, core, definition, None, labels))
    if new_module is not None:
        changes = _inherit_buckets(changes, new_module)
    return changes


def _status(old: Definition, new: Definition) -> str:
    # Identical text is the common case (untouched copies) and needs no AST dump.
    return UNCHANGED if old.source == new.source or old.fingerprint == new.fingerprint else CHANGED


def _change(
    name: str, status: str, core: Core | None, old: Definition | None, new: Definition | None, labels
) -> Change:
    module = core.owner.get(name) if core is not None else None
    lines: tuple[str, ...] = ()
    if status != UNCHANGED:
        lines = tuple(unified_diff(old, new, (labels[0].format(module=module), labels[1])))
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    return Change(name, status, bucket_of(module, name), module, old, new, added, removed, lines)


_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def unified_diff(
    old: Definition | None, new: Definition | None, labels: tuple[str, str] = ("base", "experiment")
) -> list[str]:
    """Unified diff of two definitions' source text, hunk headers numbered as lines of their files."""
    name = (new or old).name
    old_lines = old.source.splitlines() if old else []
    new_lines = new.source.splitlines() if new else []
    old_offset = old.start - 1 if old else 0
    new_offset = new.start - 1 if new else 0

    def renumber(match: re.Match) -> str:
        a = int(match[1]) + (old_offset if int(match[1]) else 0)
        c = int(match[3]) + (new_offset if int(match[3]) else 0)
        return f"@@ -{a}{match[2] or ''} +{c}{match[4] or ''} @@"

    old_label = f"{labels[0]}:{name}" if old else "/dev/null"
    new_label = f"{labels[1]}:{name}" if new else "/dev/null"
    lines = difflib.unified_diff(old_lines, new_lines, old_label, new_label, lineterm="", n=3)
    return [_HUNK.sub(renumber, line) if line.startswith("@@") else line for line in lines]


def dependencies(module: Module, name: str, among: Iterable[str]) -> list[str]:
    """Definitions in `among` that `name` uses, directly or through each other, in file order.
    Promote uses this to carry an experiment's new helpers along with a definition."""
    candidates = set(among)
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = module.definitions.get(todo.pop())
        if current is None:
            continue
        for ref in current.references & candidates:
            if ref not in seen:
                seen.add(ref)
                todo.append(ref)
    return [n for n in module.definitions if n in seen and n != name]


def _inherit_buckets(changes: list[Change], module: Module) -> list[Change]:
    helpers = {c.name for c in changes if c.status == EXPERIMENT_ONLY and c.bucket is None}
    users: dict[str, set[str]] = {}
    for change in changes:
        if change.status in (CHANGED, EXPERIMENT_ONLY) and change.bucket is not None:
            for helper in dependencies(module, change.name, helpers):
                users.setdefault(helper, set()).add(change.bucket)
    return [
        replace(c, bucket=next(iter(users[c.name]))) if len(users.get(c.name, ())) == 1 else c
        for c in changes
    ]


def diff_against_core(
    experiment: Module, core: Core, starter: Module, label: str = "experiment"
) -> list[Change]:
    """Surfaces (core names the experiment defines) are unchanged or changed; the starter's harness
    names are ignored; other new names are experiment-only; surfaces the starter copies but the
    experiment dropped are core-only, unless it imports them from the core instead."""
    harness = harness_names(starter, core)
    check_unambiguous(core, [n for n in experiment.definitions if n not in harness])
    old = {n: core_definition(core, n) for n in experiment.definitions if n in core.owner}
    for name in starter.definitions:
        if name in core.owner and name not in experiment.definitions and name not in old:
            imported = experiment.imports.get(name)
            if imported is None or imported.module != f"{core.package}.{core.owner[name]}":
                old[name] = core_definition(core, name)
    return compare(
        experiment.definitions,
        old,
        core,
        new_module=experiment,
        ignore=harness,
        old_only=CORE_ONLY,
        labels=(core.package + "/{module}.py", label),
    )


def changed(changes: Iterable[Change]) -> list[Change]:
    return [c for c in changes if c.status != UNCHANGED]


def changed_lines(changes: Iterable[Change]) -> int:
    return sum(c.added + c.removed for c in changes)


def changed_buckets(changes: Iterable[Change]) -> list[str]:
    found = {c.bucket for c in changes if c.status != UNCHANGED and c.bucket is not None}
    return [b for b in BUCKETS if b in found]


def bucket_warning(changes: Iterable[Change]) -> str | None:
    buckets = changed_buckets(changes)
    if len(buckets) < 2:
        return None
    return f"changes span the buckets {', '.join(buckets)}: change one bucket at a time."


def drifted(experiment: Module, core_then: Core, core_now: Core) -> list[str]:
    """Copies the experiment left as they were in the core when it was scaffolded, but that the core
    has changed since: the experiment no longer measures its idea against the current best guess."""
    names = []
    for name, definition in experiment.definitions.items():
        if name in core_then.owner and name in core_now.owner:
            then, now = core_definition(core_then, name), core_definition(core_now, name)
            if definition.fingerprint == then.fingerprint and then.fingerprint != now.fingerprint:
                names.append(name)
    return names


def replace_definition(module_source: str, old: Definition, new_source: str) -> str:
    """`module_source` with the lines of `old` (comments above included) replaced by `new_source`."""
    lines = module_source.splitlines(keepends=True)
    text = new_source if new_source.endswith("\n") else new_source + "\n"
    return "".join(lines[: old.start - 1]) + text + "".join(lines[old.end :])


def needed_imports(
    experiment: Module, names: Iterable[str], target: Module, target_module: str
) -> list[Import]:
    """Imports the experiment's definitions `names` rely on that the core module `target` (import name
    `target_module`, e.g. "grug_core.model") neither imports nor defines. Promote adds these."""
    wanted: set[str] = set()
    for name in names:
        wanted |= experiment.definitions[name].references
    bound = set(target.definitions) | set(target.imports)
    found = [
        imported
        for ref, imported in experiment.imports.items()
        if ref in wanted and ref not in bound and imported.module != target_module
    ]
    return sorted(found, key=lambda imported: imported.line)


def closest(
    experiment: Module, candidates: Mapping[str, str], core: Core | None, shortlist: int = 3
) -> tuple[str, int] | None:
    """The candidate (id -> source text) with the fewest changed lines against the experiment, over all
    top-level names. Parsing costs ~5 ms a file, so only the `shortlist` candidates nearest by a cheap
    line-multiset distance are parsed and compared definition by definition."""
    mine = Counter(line.strip() for line in experiment.source.splitlines() if line.strip())

    def rough(text: str) -> int:
        theirs = Counter(line.strip() for line in text.splitlines() if line.strip())
        return sum(((mine - theirs) + (theirs - mine)).values())

    best: tuple[str, int] | None = None
    for candidate_id in sorted(candidates, key=lambda i: rough(candidates[i]))[:shortlist]:
        try:
            candidate = parse_module(candidates[candidate_id], candidate_id)
        except GrugError:
            continue  # a broken neighbour is `grugctl check`'s business, not a reason to fail this diff
        lines = changed_lines(compare(experiment.definitions, candidate.definitions, core))
        if best is None or lines < best[1]:
            best = (candidate_id, lines)
    return best


# ---------------------------------------------------------------------------------------------------
# Experiments in an archive


def experiment_file(root: Path, relative: str) -> Path:
    """An entry's file; an entry naming a folder means the .py file inside named like the folder. One
    that resolves (symlinks followed) outside the repository is refused before anything reads or runs
    it."""
    from grugctl.transaction import inside

    path = inside(root, relative, "the experiment file")
    if path.is_dir():
        named = path / f"{path.name}.py"
        files = [named] if named.is_file() else sorted(path.glob("*.py"))
        path = files[0] if len(files) == 1 else named
    return inside(root, path.relative_to(root).as_posix(), "the experiment file")


def read_module(root: Path, relative: str, what: str) -> Module:
    path = experiment_file(root, relative)
    if not path.is_file():
        raise GrugError(f"{what} file {relative} does not exist; restore it or fix its path in archive.yaml.")
    return parse_module(path.read_text(encoding="utf-8"), relative)


def core_at(archive, sha: str) -> Core:
    """The core as committed at `sha` (modules that did not exist then are left out)."""
    sources = {}
    for path in sorted((archive.root / archive.core).glob("*.py")):
        try:
            sources[path.stem] = _file_at(archive.root, sha, f"{archive.core}/{path.name}")
        except GrugError:
            continue
    return load_core_sources(Path(archive.core).name, sources)


def _live_module(archive, experiment_id: str) -> Module:
    """An experiment's current file; a deleted one is read from git at its last known good commit."""
    entry = get_entry(archive, experiment_id)
    if entry.status != "deleted":
        return read_module(archive.root, entry.path, f"experiment {experiment_id}'s")
    sha = getattr(entry, "last_known_good", None)
    if not sha:
        raise GrugError(f"experiment {experiment_id} is deleted and has no last_known_good commit to read.")
    return parse_module(_file_at(archive.root, sha, entry.path), f"{entry.path}@{sha[:8]}")


def _file_at(root: Path, sha: str, path: str) -> str:
    from grugctl import gitinfo  # GitPython is slow to import; only --against origin needs it

    try:
        return gitinfo.file_at(gitinfo.open_repo(root), sha, root / path).decode("utf-8")
    except GrugError:
        raise
    except Exception as error:  # any git failure becomes one sentence
        raise GrugError(f"cannot read {path} at commit {sha[:12]} from git ({error}).") from None


def origin_module(archive, experiment_id: str) -> tuple[str, Module]:
    """The origin experiment's file as it was at this experiment's base commit, with a label."""
    entry = get_entry(archive, experiment_id)
    origin = getattr(entry, "origin", None)
    if not origin:
        raise GrugError(
            f"experiment {experiment_id} has no origin; diff it against the core or an id instead."
        )
    base = getattr(entry, "base", None)
    if not base:
        raise GrugError(
            f"experiment {experiment_id} has no base commit in archive.yaml, so its origin is unknown."
        )
    origin_entry = get_entry(archive, origin)
    source = _file_at(archive.root, base, origin_entry.path)
    return f"{origin}@{base[:8]}", parse_module(source, f"{origin_entry.path}@{base[:8]}")


def _readable_sources(archive, ids: Iterable[str]) -> dict[str, str]:
    sources = {}
    for experiment_id in ids:
        path = experiment_file(archive.root, archive.experiments[experiment_id].path)
        try:
            sources[experiment_id] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # a missing neighbour is `grugctl check`'s business, not a reason to fail this diff
    return sources


def diff_experiment(
    archive, experiment_id: str, against: str = "core", bucket: str | None = None, with_closest: bool = True
) -> DiffReport:
    """What `grugctl diff` shows: the experiment against the core, its origin at its base, or another id."""
    if bucket is not None and bucket not in BUCKETS:
        raise GrugError(f"unknown bucket {bucket!r}; use one of {', '.join(BUCKETS)}.")
    entry = get_entry(archive, experiment_id)
    experiment = _live_module(archive, experiment_id)
    core = load_core(archive.root / archive.core)
    if against == "core":
        starter = _live_module(archive, archive.starter) if archive.starter != experiment_id else experiment
        changes = diff_against_core(experiment, core, starter, experiment_id)
        base = core.package
    else:
        if against == "origin":
            base, other = origin_module(archive, experiment_id)
        else:
            base, other = against, _live_module(archive, against)
        changes = compare(
            experiment.definitions,
            other.definitions,
            core,
            new_module=experiment,
            labels=(base, experiment_id),
        )
    warning = bucket_warning(changes)
    nearest = None
    if with_closest:
        others = {i: e for i, e in archive.experiments.items() if i != experiment_id and e.status == "active"}
        nearest = closest(experiment, _readable_sources(archive, others), core)
    if bucket is not None:
        changes = [c for c in changes if c.bucket == bucket]
    return DiffReport(
        experiment=experiment_id,
        path=entry.path,
        against=against,
        base=base,
        changes=tuple(changes),
        warnings=(warning,) if warning else (),
        closest=nearest,
    )
