"""`grugctl promote`: port an experiment's changed definitions into grug_core behind a test gate.

Plan: the definitions `grugctl diff` reports changed against the core, narrowed by --only / --bucket,
minus copies that differ only because the core moved since the experiment's base. Each one's source
text (comments kept) replaces the core's definition in its module; experiment-only helpers it uses go
into the same module before their first use, and imports the module lacks are added. The starter's
copies get the same splice, so its diff against the core is empty again.

Gate: the core tests and a `--smoke` run of the starter, each a subprocess in the repository root
(gate_steps; `grugctl check` reuses it). The whole promotion (splice, gate, archive, removal, commits)
is one transaction holding the repository lock, so two promotions run one after the other, and the
journal holds every touched file's original bytes before the splice: any failure, Ctrl-C or SIGTERM
puts them back byte for byte, and after a SIGKILL `grugctl recover` does. Only after the gate does
archive.yaml change: the experiment becomes superseded (deleted with --delete), superseded_by
`core@pending`, last_known_good its newest commit.

--commit makes branch promote/<id> and commits core, starter, archive (and the removal) there. A
commit cannot contain its own SHA, and amending to add it would change the SHA, so a second small
commit ("Record <id>'s promotion as core@<sha>") replaces core@pending by the SHA of the first: that
first commit is the one holding the promoted core. Never prints; never imports JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grugctl import archive as archive_mod
from grugctl import codediff, gitinfo, transaction
from grugctl.errors import CHECK_FAILED, GrugError
from grugctl.evidence import compare
from grugctl.evidence.compare import Comparison
from grugctl.evidence.stats import ci_level
from grugctl.experiments import sync
from grugctl.promotion import lifecycle
from grugctl.promotion.gate import GATE_TESTS, GateResult, gate_tests, run_gate
from grugctl.runs import records
from grugctl.splice import Spliced, sort_imports, splice
from grugctl.transaction import git

TESTS_DIR = "tests"


@dataclass(frozen=True)
class FileEdit:
    path: str  # repo-relative, posix
    old: bytes
    new: bytes


@dataclass(frozen=True)
class CodeChange:
    """What moves: the definitions, where they land, and the bytes of every file that changes."""

    names: tuple[str, ...]  # promoted core definitions, in experiment file order
    helpers: tuple[str, ...]  # experiment-only definitions they use, carried along
    buckets: tuple[str, ...]
    modules: dict[str, tuple[str, ...]]  # core module file -> names and helpers spliced into it
    imports: dict[str, tuple[str, ...]]  # file -> import statements added
    edits: tuple[FileEdit, ...]  # core modules, then the starter
    starter: str  # the starter's file
    starter_names: tuple[str, ...]  # definitions updated in the starter
    core_diff: str  # unified diff of the core package


@dataclass(frozen=True)
class GatePlan:
    """What must pass before anything lands."""

    tests: tuple[str, ...]  # the gate's pytest arguments; empty: no core test matched
    narrowed: bool  # tests came from GRUGCTL_GATE_TESTS
    covering: dict[str, tuple[str, ...]]  # core module file -> test files importing it
    test_files: tuple[str, ...] = ()  # tests promoted with it: edits under tests/ and shipped copies
    shipped: tuple[tuple[str, str], ...] = ()  # (test_<id>.py in its folder, where it goes under tests/)


@dataclass(frozen=True)
class Landing:
    """What happens to the archive, the experiment's folder and git once the gate passed."""

    last_known_good: str | None  # full SHA of the experiment's newest commit
    delete: bool
    delete_target: str | None  # folder or file --delete removes
    delete_tracked: bool
    commit: bool
    branch: str
    stale: tuple[str, ...] = ()  # other active experiments whose copies this promotion moves
    sync_all: bool = False  # sync them in the same transaction (and commit)


@dataclass(frozen=True)
class PromotePlan:
    id: str
    path: str  # the experiment's file
    purpose: str
    code: CodeChange
    gate: GatePlan
    landing: Landing
    evidence: Comparison  # the experiment against the starter on the speedrun metric
    waiver: str | None  # why it is promoted without a significant win (--waive)
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class PromoteOutcome:
    gate: GateResult
    superseded_by: str  # core@pending or core@<sha>
    commit: str | None  # the promotion commit
    record_commit: str | None  # the commit recording its SHA in archive.yaml
    warnings: tuple[str, ...]
    synced: tuple[str, ...] = ()  # experiments --sync-all brought onto the new core


class GateFailed(GrugError):
    """The gate failed and everything was restored; `tail` is the failing step's output."""

    def __init__(self, message: str, tail: str):
        super().__init__(message, exit_code=CHECK_FAILED)
        self.tail = tail


# ---------------------------------------------------------------- choosing what to promote


def _refuse_entry(archive, experiment_id: str):
    entry = archive_mod.get_entry(archive, experiment_id)
    if experiment_id == archive.starter:
        raise GrugError(
            f"{experiment_id} is the starter, which tracks the core; promote an experiment instead."
        )
    if entry.status != "active":
        raise GrugError(
            f"{experiment_id} is {entry.status}, not active; only active experiments can be promoted."
        )
    return entry


def _core_moved(
    archive, entry, experiment: codediff.Module, core: codediff.Core
) -> tuple[set[str], set[str]]:
    """(copies left as the core had them at the experiment's base but changed in the core since, names
    both the experiment and the core changed since the base). Empty when the base cannot be read."""
    if not entry.base:
        return set(), set()
    try:
        then = codediff.core_at(archive, entry.base)
    except GrugError:
        return set(), set()
    drift = set(codediff.drifted(experiment, then, core))
    both = set()
    for name, mine in experiment.definitions.items():
        if name in then.owner and name in core.owner and name not in drift:
            old, new = codediff.core_definition(then, name), codediff.core_definition(core, name)
            if old.fingerprint != new.fingerprint and mine.fingerprint != new.fingerprint:
                both.add(name)
    return drift, both


def _select(
    experiment_id: str, changes: list[codediff.Change], only: list[str], bucket: str | None, drift: set[str]
) -> list[codediff.Change]:
    # Only bucket definitions are edit surfaces: a name that merely collides with one in a core module
    # outside the buckets (the harness's `main` and data.py's) is never spliced into the core.
    candidates = [c for c in changes if c.status == codediff.CHANGED and c.bucket and c.name not in drift]
    names = [c.name for c in candidates]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise GrugError(
            f"{', '.join(unknown)}: not among {experiment_id}'s changed core definitions "
            f"({', '.join(names) or 'none'}); see `grugctl diff {experiment_id}`."
        )
    outside = [c.name for c in candidates if c.name in only and bucket and c.bucket != bucket]
    if outside:
        raise GrugError(
            f"{', '.join(outside)} is not in the {bucket} bucket; drop it from --only or --bucket."
        )
    chosen = [c for c in candidates if (not only or c.name in only) and (not bucket or c.bucket == bucket)]
    if not chosen:
        where = f" in the {bucket} bucket" if bucket else ""
        moved = f" ({', '.join(sorted(drift))} differ only because the core moved)" if drift else ""
        raise GrugError(f"{experiment_id} changes no core definition{where}{moved}; nothing to promote.")
    buckets = list(dict.fromkeys(c.bucket for c in chosen))
    if len(buckets) > 1 and not only and not bucket:
        raise GrugError(
            f"{experiment_id} changes the buckets {', '.join(buckets)}; promote one at a time with "
            "--bucket B or name the definitions with --only."
        )
    return chosen


def _helpers(experiment: codediff.Module, changes: list[codediff.Change], names: list[str]) -> list[str]:
    spare = [c.name for c in changes if c.status == codediff.EXPERIMENT_ONLY]
    used = {h for n in names for h in codediff.dependencies(experiment, n, spare)}
    return [n for n in experiment.definitions if n in used]


def _target_modules(experiment, core, names: list[str], helpers: list[str]) -> dict[str, str]:
    """Definition or helper -> the core module (stem) it goes into."""
    spare = set(helpers)
    home = {n: core.owner[n] for n in names}
    for helper in helpers:
        users = {core.owner[n] for n in names if helper in codediff.dependencies(experiment, n, spare)}
        if len(users) > 1:
            modules = " and ".join(f"{m}.py" for m in sorted(users))
            raise GrugError(
                f"helper {helper} is used by definitions going into {modules}; "
                "promote them one module at a time."
            )
        home[helper] = users.pop()
    return home


def _harness_check(experiment, harness: frozenset[str], moved: list[str]) -> None:
    for name in moved:
        uses = sorted(experiment.definitions[name].references & harness)
        if uses:
            raise GrugError(
                f"{name} uses {', '.join(uses)} from the experiment's harness, which the core lacks; "
                "pass it in as an argument first."
            )


def _unified(path: str, old: bytes, new: bytes) -> str:
    a, b = old.decode("utf-8").splitlines(keepends=True), new.decode("utf-8").splitlines(keepends=True)
    lines = difflib.unified_diff(a, b, f"a/{path}", f"b/{path}")
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


# ---------------------------------------------------------------- the plan


def covering_tests(root: Path, package: str, modules: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Core module file -> test files under tests/ importing `<package>.<module>`."""
    texts = {}
    for path in sorted((root / "tests").rglob("*.py")) if (root / "tests").is_dir() else []:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            texts[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    found = {}
    for module in modules:
        p, m = re.escape(package), re.escape(module)
        pattern = re.compile(rf"\b{p}\.{m}\b|^\s*from\s+{p}\s+import\s+[^\n]*\b{m}\b", re.M)
        found[f"{package}/{module}.py"] = tuple(rel for rel, text in texts.items() if pattern.search(text))
    return found


def _overlapping(archive, experiment_id: str, names: list[str], core) -> list[str]:
    """Other active experiments that changed the same definitions: the core moves under them."""
    warnings = []
    for other_id, other in archive.experiments.items():
        if other_id in (experiment_id, archive.starter) or other.status != "active":
            continue
        try:
            text = codediff.experiment_file(archive.root, other.path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        # An untouched copy holds the core's text verbatim; only the others need parsing.
        suspects = [n for n in names if codediff.core_definition(core, n).source not in text]
        if not suspects:
            continue
        try:
            module = codediff.parse_module(text, other.path)
        except GrugError:
            continue
        hit = [
            n for n in suspects
            if n in module.definitions
            and module.definitions[n].fingerprint != codediff.core_definition(core, n).fingerprint
        ]  # fmt: skip
        if hit:
            warnings.append(
                f"{other_id} also changed {', '.join(hit)}: the core moves under it; "
                f"re-check it with `grugctl diff {other_id}`."
            )
    return warnings


def _git_checks(repo, archive, entry, paths: list[Path], target: str | None, commit: bool, branch: str):
    """Refusals that need git; returns (last_known_good, warnings)."""
    root = archive.root
    exp_file = codediff.experiment_file(root, entry.path)
    last = gitinfo.last_commit_with(repo, exp_file)
    warnings = []
    if target is not None and (last is None or gitinfo.is_dirty(repo, [root / target])):
        raise GrugError(
            f"--delete would lose uncommitted work in {target}, which restore could not bring back; "
            "commit it first."
        )
    if gitinfo.is_dirty(repo, [exp_file]):
        warnings.append(f"{entry.path} has uncommitted changes; last_known_good does not hold them.")
    if commit:
        if gitinfo.resolve_shas(repo, [f"refs/heads/{branch}"])[f"refs/heads/{branch}"] is not None:
            raise GrugError(f"branch {branch} already exists; delete it or merge it before promoting again.")
        dirty = [p for p in paths if p not in _bookkeeping(archive) and gitinfo.is_dirty(repo, [p])]
        if dirty:
            names = ", ".join(p.relative_to(root).as_posix() for p in dirty)
            raise GrugError(f"--commit would also commit uncommitted changes in {names}; commit them first.")
    return last, warnings


def _bookkeeping(archive) -> list[Path]:
    """What grugctl itself writes as it goes (results rows, resolved SHAs, run records): never "your
    uncommitted changes", and committed with the promotion so its evidence travels with it."""
    return [archive.path, archive.root / records.RUNS_DIR]


def _dirty_outside_tests(repo, archive) -> bool:
    root = archive.root
    skip = [root / TESTS_DIR, *_bookkeeping(archive)]
    spec = [str(root), *(f":(exclude){path}" for path in skip)]
    # Untracked files (a curves.png, a scratch note) are nothing promote could lose or commit, as for git.
    return bool(git(repo, "status", "--porcelain", "--untracked-files=no", "--", *spec).strip())


def _promoted_tests(repo, archive, entry) -> tuple[list[str], list[tuple[str, str]]]:
    """(test files promoted with the change, shipped copies): every uncommitted change under tests/, and
    a test_<id>.py in the experiment's folder, which goes to tests/test_grugformer_<id>.py (a name the
    default gate matches)."""
    root = archive.root
    status = git(repo, "status", "--porcelain", "--untracked-files=all", "--", str(root / TESTS_DIR))
    top = Path(repo.working_tree_dir)
    changed = [(top / line[3:].split(" -> ")[-1].strip('"')) for line in status.splitlines() if line.strip()]
    files = [p.relative_to(root).as_posix() for p in changed]
    stem = entry.id.replace("-", "_")
    folder = codediff.experiment_file(root, entry.path).parent
    shipped = []
    for name in dict.fromkeys([f"test_{entry.id}.py", f"test_{stem}.py"]):
        if (folder / name).is_file() and folder != root / archive.experiments_dir:
            dest = f"{TESTS_DIR}/test_grugformer_{stem}.py"
            if (root / dest).exists() and (root / dest).read_bytes() != (folder / name).read_bytes():
                raise GrugError(f"{dest} already exists; rename {name} or merge the two tests first.")
            shipped.append(((folder / name).relative_to(root).as_posix(), dest))
            files.append(dest)
            break
    return list(dict.fromkeys(files)), shipped


def _with_tests(test_args: list[str], test_files: list[str]) -> list[str]:
    """The gate's pytest arguments plus each promoted test file they do not already select (in whole,
    or by a node id inside it)."""
    selected = lambda f: any(a == f or a.startswith(f + "::") for a in test_args)
    return test_args + [f for f in test_files if f.endswith(".py") and not selected(f)]


@dataclass(frozen=True)
class Sources:
    """What a promotion reads before it diffs anything."""

    entry: archive_mod.Entry
    repo: Any  # git.Repo
    experiment: codediff.Module
    starter: codediff.Module
    starter_file: Path
    core: codediff.Core


def _sources(archive, experiment_id: str, allow_dirty: bool) -> Sources:
    """The experiment, the starter and the core, after the refusals that need no diff."""
    entry = _refuse_entry(archive, experiment_id)
    if archive.starter is None:
        raise GrugError("archive.yaml names no starter, so promote has none to update; set `starter:` there.")
    transaction.refuse_if_interrupted(archive.root)
    repo = transaction.open_repo(archive.root)
    if not gitinfo.has_commits(repo):
        raise GrugError("the repository has no commits yet; commit the experiment first.")
    if not allow_dirty and _dirty_outside_tests(repo, archive):
        raise GrugError(
            "the working tree has uncommitted changes; commit or stash them, or pass --allow-dirty."
        )
    experiment = codediff.read_module(archive.root, entry.path, f"experiment {experiment_id}'s")
    starter_entry = archive.experiments[archive.starter]
    starter = codediff.read_module(archive.root, starter_entry.path, "the starter's")
    starter_file = codediff.experiment_file(archive.root, starter_entry.path)
    core = codediff.load_core(archive.root / archive.core)
    return Sources(entry, repo, experiment, starter, starter_file, core)


def _choice_warnings(
    entry, changes, names: list[str], drift: set[str], both: set[str], experiment
) -> list[str]:
    base = (entry.base or "")[:12]
    warnings = [
        f"{n} is as the core had it at {base}; the core changed it since, so it stays." for n in sorted(drift)
    ]
    warnings += [
        f"the core's {n} also changed since {base}; promoting replaces that change."
        for n in names
        if n in both
    ]
    left = {
        c.name
        for c in changes
        if c.status == codediff.CHANGED and c.name not in names and c.name not in drift
    }
    for name in names:
        missed = sorted(experiment.definitions[name].references & left)
        if missed:
            warnings.append(
                f"{name} uses {', '.join(missed)}, which {entry.id} also changed but is not promoted."
            )
    return warnings


def _spliced_file(
    root: Path, rel: str, experiment, core, names, helpers, own: str
) -> tuple[FileEdit, Spliced]:
    """One file's edit: the splice, with its imports sorted as ruff would when it added any."""
    old = (root / rel).read_bytes()
    spliced = splice(old.decode("utf-8"), rel, experiment, core, names, helpers, own)
    text = sort_imports(root, rel, old.decode("utf-8"), spliced.text) if spliced.imports else spliced.text
    return FileEdit(rel, old, text.encode("utf-8")), spliced


def _core_edits(archive, experiment, core, names, helpers, home) -> dict[str, tuple[FileEdit, Spliced]]:
    """Core module file -> its edit and what was spliced into it."""
    edits = {}
    for stem in dict.fromkeys(home[n] for n in names + helpers):
        rel = f"{Path(archive.core).as_posix()}/{stem}.py"
        mine = [n for n in names if home[n] == stem], [h for h in helpers if home[h] == stem]
        edits[rel] = _spliced_file(archive.root, rel, experiment, core, *mine, f"{core.package}.{stem}")
    return edits


def plan_promote(
    archive,
    experiment_id: str,
    *,
    only: Iterable[str] = (),
    bucket: str | None = None,
    allow_dirty: bool = False,
    delete: bool = False,
    commit: bool = False,
    tests: Iterable[str] | None = None,
    waiver: str | None = None,
    sync_all: bool = False,
) -> PromotePlan:
    """Everything promote would do, checked, without writing anything."""
    if waiver is not None and not waiver.strip():
        raise GrugError('--waive needs a reason, e.g. --waive "a systems-only change: same math, faster".')
    only = [n.strip() for n in only if n.strip()]
    if bucket is not None and bucket not in codediff.BUCKETS:
        raise GrugError(f"unknown bucket {bucket!r}; use one of {', '.join(codediff.BUCKETS)}.")
    sources = _sources(archive, experiment_id, allow_dirty)
    entry, repo, experiment, starter, core = (
        sources.entry,
        sources.repo,
        sources.experiment,
        sources.starter,
        sources.core,
    )
    changes = codediff.diff_against_core(experiment, core, starter, experiment_id)
    drift, both = _core_moved(archive, entry, experiment, core)
    chosen = _select(experiment_id, changes, only, bucket, drift)
    names = [c.name for c in chosen]
    helpers = _helpers(experiment, changes, names)
    _harness_check(experiment, codediff.harness_names(starter, core), names + helpers)
    home = _target_modules(experiment, core, names, helpers)
    warnings = _choice_warnings(entry, changes, names, drift, both, experiment)

    core_edits = _core_edits(archive, experiment, core, names, helpers, home)
    edits = [edit for edit, _ in core_edits.values()]
    modules = {rel: spliced.names for rel, (_, spliced) in core_edits.items()}
    imports = {rel: spliced.imports for rel, (_, spliced) in core_edits.items()}
    core_diff = "".join(_unified(e.path, e.old, e.new) for e in edits)
    starter_rel = sources.starter_file.relative_to(archive.root).as_posix()
    starter_edit, starter_spliced = _spliced_file(
        archive.root, starter_rel, experiment, core, names, helpers, ""
    )
    if starter_edit.new != starter_edit.old:
        edits.append(starter_edit)
        imports[starter_rel] = starter_spliced.imports
    missing = [n for n in names if n not in starter_spliced.names]
    if missing:
        warnings.append(f"the starter holds no copy of {', '.join(missing)}, so only the core gets it.")

    target = lifecycle.removal_target(archive, entry) if delete else None
    branch = f"promote/{experiment_id}"
    paths = [archive.root / e.path for e in edits] + [archive.path]
    last, git_warnings = _git_checks(repo, archive, entry, paths, target, commit, branch)
    warnings += git_warnings + _overlapping(archive, experiment_id, names, core)
    test_args, narrowed = gate_tests(archive.root, tests)
    test_files, shipped = _promoted_tests(repo, archive, entry)
    present = [f for f in test_files if (archive.root / f).exists()] + [dest for _, dest in shipped]
    test_args = _with_tests(test_args, list(dict.fromkeys(present)))
    promoted = {n: experiment.definitions[n].fingerprint for n in names + helpers}
    if not test_args:
        warnings.append(
            f"no core tests match {' '.join(GATE_TESTS)}; the gate is only the starter's smoke run."
        )
    code_change = CodeChange(
        names=tuple(names),
        helpers=tuple(helpers),
        buckets=tuple(dict.fromkeys(c.bucket for c in chosen)),
        modules=modules,
        imports={k: v for k, v in imports.items() if v},
        edits=tuple(edits),
        starter=starter_rel,
        starter_names=starter_spliced.names,
        core_diff=core_diff,
    )
    gate_plan = GatePlan(
        tests=tuple(test_args),
        narrowed=narrowed,
        covering=covering_tests(archive.root, core.package, dict.fromkeys(home[n] for n in names + helpers)),
        test_files=tuple(test_files),
        shipped=tuple(shipped),
    )
    landing = Landing(
        last_known_good=last,
        delete=delete,
        delete_target=target,
        delete_tracked=target is not None and transaction.tracked(repo, archive.root, target),
        commit=commit,
        branch=branch,
        stale=tuple(sync.made_stale(archive, promoted, experiment_id)),
        sync_all=sync_all,
    )
    return PromotePlan(
        id=experiment_id,
        path=entry.path,
        purpose=entry.purpose,
        code=code_change,
        gate=gate_plan,
        landing=landing,
        evidence=compare.evidence_for_promotion(archive, experiment_id),
        waiver=waiver.strip() if waiver is not None else None,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------- doing it


def check_evidence(plan: PromotePlan) -> None:
    """Refuse a promotion that is not significantly better than the starter, unless waived. With runs at
    several sizes the test is the compute multiplier at the largest: its interval must lie above 1."""
    if plan.waiver is not None:
        return
    multiplier = compare.largest_multiplier(plan.evidence)
    if multiplier is not None:
        if multiplier.ci_low is not None and multiplier.ci_low > 1:
            return
        level = ci_level(plan.evidence.ladder.confidence)
        low = "none" if multiplier.ci_low is None else f"{multiplier.ci_low:.2f}x"
        seen = f"its compute multiplier at {multiplier.size} has a {level} interval starting at {low}"
        raise GrugError(
            f"{plan.id} is not shown to be worth compute at the largest size run: {seen}, not above 1; "
            f"run more seeds (`grugctl run {plan.id} --sizes ... --seeds 5 --paired`) or pass "
            '--waive "REASON"',
            CHECK_FAILED,
        )
    result = plan.evidence.metrics[0]
    if result.verdict == "better":
        return
    p = "no p-value" if result.p_value is None else f"p = {result.p_value:.2g}"
    seen = f"{result.verdict} ({p}, {result.n_candidate} vs {result.n_baseline} seeds)"
    raise GrugError(
        f"{plan.id} is not significantly better than {plan.evidence.baseline} on {result.metric} at alpha "
        f"{plan.evidence.alpha:g}: {seen}; run `grugctl run {plan.id} --seeds 5 --paired` and `grugctl "
        f'compare {plan.id}`, or pass --waive "REASON" for a change not meant to move the loss',
        CHECK_FAILED,
    )


def _record(archive, plan: PromotePlan, superseded_by: str, first: bool) -> None:
    """The archive edit; `first` also moves the status and records last_known_good."""

    def edit(experiments, fresh) -> None:
        node, entry = experiments.get(plan.id), fresh.experiments.get(plan.id)
        if node is None or (first and entry.status != "active"):
            raise GrugError(f"{plan.id} changed in archive.yaml during the promotion; run promote again.")
        if first:
            archive_mod.put_field(node, "status", "deleted" if plan.landing.delete else "superseded")
            last = plan.landing.last_known_good
            if last:
                archive_mod.put_field(node, "last_known_good", last[: archive_mod.SHA_LEN])
        archive_mod.put_field(node, "superseded_by", superseded_by)
        if first and plan.waiver is not None:
            archive_mod.put_field(node, "waiver", plan.waiver)
        if first and plan.gate.test_files:
            archive_mod.put_field(node, "tests", ", ".join(plan.gate.test_files))

    archive_mod.update_entries(archive.path, [plan.id], edit)


def commit_message(plan: PromotePlan) -> str:
    names = ", ".join(plan.code.names)
    lines = [f"Promote {plan.id} into the core: {names}", "", plan.purpose, ""]
    for path, spliced in plan.code.modules.items():
        lines.append(f"- {path}: {', '.join(spliced)}")
    if plan.code.starter_names:
        lines.append(f"- {plan.code.starter}: the starter's copies of {', '.join(plan.code.starter_names)}")
    status = "deleted" if plan.landing.delete else "superseded"
    lines.append(f"- archive.yaml: {plan.id} {status} by this commit")
    if plan.landing.delete:
        lines.append(f"- {plan.landing.delete_target}: removed")
    lines += [f"- {path}: a test promoted with it" for path in plan.gate.test_files]
    lines += [
        "",
        f"Experiment: {plan.path}"
        + (f" (last known good {plan.landing.last_known_good[:12]})" if plan.landing.last_known_good else ""),
    ]
    tests = f"pytest {' '.join(plan.gate.tests)}; " if plan.gate.tests else ""
    lines.append(f"Gate passed: {tests}{plan.code.starter} --smoke")
    return "\n".join(lines) + "\n"


def _commit(repo, message: str, paths: list[Path]) -> str:
    git(repo, "add", "--", *(str(p) for p in paths if p.exists()))
    git(repo, "commit", "-q", "-m", message, "--", *(str(p) for p in paths))
    return repo.head.commit.hexsha


def _check_unchanged(root: Path, plan: PromotePlan) -> None:
    for edit in plan.code.edits:
        if (root / edit.path).read_bytes() != edit.old:
            raise GrugError(f"{edit.path} changed since the plan was made; run promote again.")


def _splice_and_gate(txn, plan: PromotePlan, progress: Callable[[str], None]) -> GateResult:
    for edit in plan.code.edits:
        transaction.write(txn, edit.path, edit.new)
    for source, dest in plan.gate.shipped:
        transaction.write(txn, dest, (txn.root / source).read_bytes())
    gate = run_gate(txn.root, plan.code.starter, plan.gate.tests, progress)
    if not gate.ok:
        raise GateFailed(
            f"the gate's {gate.failed} failed after splicing {', '.join(plan.code.names)}; every touched "
            "file was restored byte for byte and nothing was promoted.",
            gate.tail,
        )
    return gate


def _land(txn, repo, archive, plan: PromotePlan, synced: Iterable[str] = ()) -> str | None:
    """After the gate: archive.yaml, the removal, the promotion commit (None without --commit)."""
    root = archive.root
    _record(archive, plan, archive_mod.CORE_PENDING, first=True)
    paths = [root / e.path for e in plan.code.edits] + [p for p in _bookkeeping(archive) if p.exists()]
    paths += [root / p for p in plan.gate.test_files]
    paths += [codediff.experiment_file(root, archive.experiments[i].path) for i in synced]
    if plan.landing.delete:
        lifecycle.remove_target(txn, repo, plan.landing.delete_target, plan.landing.delete_tracked)
        if plan.landing.delete_tracked:
            paths.append(root / plan.landing.delete_target)
    if not plan.landing.commit:
        return None
    staged = [p.relative_to(root).as_posix() for p in paths]
    transaction.note_git(txn, head=transaction.current_ref(repo), branch=plan.landing.branch, staged=staged)
    git(repo, "checkout", "-q", "-b", plan.landing.branch)
    return _commit(repo, commit_message(plan), paths)


def promote(
    archive, plan: PromotePlan, progress: Callable[[str], None] = lambda message: None
) -> PromoteOutcome:
    """Splice, gate, record, (delete), (commit), as one transaction: any failure or interruption
    restores every touched file byte for byte (and the branch), and re-raises."""
    root = archive.root
    with transaction.transaction(root, f"grugctl promote {plan.id}") as txn:
        _check_unchanged(root, plan)  # under the lock: a promotion that landed meanwhile shows here
        if archive_mod.get_entry(archive_mod.load_archive(archive.path), plan.id).status != "active":
            raise GrugError(f"{plan.id} is no longer active in archive.yaml; nothing was promoted.")
        repo = transaction.open_repo(root)
        touched = [e.path for e in plan.code.edits] + [archive.path.relative_to(root).as_posix()]
        transaction.touch(txn, touched)
        gate = _splice_and_gate(txn, plan, progress)
        synced, warnings = [], []
        if plan.landing.sync_all and plan.landing.stale:
            head = gitinfo.head_sha(repo)
            synced, warnings = sync.sync_after_promotion(txn, archive, list(plan.landing.stale), head)
        sha = _land(txn, repo, archive, plan, synced)
        if sha is None:
            return PromoteOutcome(gate, archive_mod.CORE_PENDING, None, None, tuple(warnings), tuple(synced))
        outcome = _record_sha(repo, archive, plan, gate, sha, synced)
        return dataclasses.replace(outcome, warnings=outcome.warnings + tuple(warnings), synced=tuple(synced))


def _record_sha(
    repo, archive, plan: PromotePlan, gate: GateResult, sha: str, synced: Iterable[str] = ()
) -> PromoteOutcome:
    """The second commit: superseded_by core@<promotion commit>. A failure here leaves a consistent
    state (core@pending, committed), so it warns instead of rolling back."""
    value = f"core@{sha[: archive_mod.SHA_LEN]}"
    try:
        _record(archive, plan, value, first=False)
        for experiment_id in synced:  # synced onto the core the promotion commit holds
            archive_mod.set_fields(archive.path, experiment_id, base=sha[: archive_mod.SHA_LEN])
        message = f"Record {plan.id}'s promotion as {value}\n"
        record = _commit(repo, message, [archive.path])
    except GrugError as error:
        warning = (
            f"recording the promotion commit failed ({error}); set {plan.id}'s superseded_by to {value} "
            "and commit archive.yaml yourself."
        )
        return PromoteOutcome(gate, archive_mod.CORE_PENDING, sha, None, (warning,))
    return PromoteOutcome(gate, value, sha, record, ())
