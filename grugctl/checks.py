"""`grugctl check`: every repository check before a PR, each a top-level function returning a CheckResult.

Static checks (always): the archive's schema and references, archive <-> tree, archive <-> git,
experiment contracts (each active experiment parses and holds the starter's edit surface), one bucket
at a time (changes against the origin as of `base`), drift (copies the core has moved under; a warning,
never a failure) and ruff. Unless --fast: each active experiment's `--smoke` run and the core tests, as
subprocesses in the repository root (the command lines and environment are the promotion gate's,
grugctl/promotion/gate.py). An experiment with a `# grug: noverify <reason>` comment line is excused from the
edit-surface rule and its smoke run, which both report as warnings; it must still parse, and the other
checks still apply.

Parsing a starter-sized file costs ~10 ms, so 1,000 experiments would cost 10 s on every run. The
per-experiment verdicts are therefore cached in `.grugctl_cache/check.json` (ignored by git through its
own .gitignore), keyed by the git blob ids of everything a verdict depends on: the file, the starter, the
core now and at its base, the origin at its base, and this module's and codediff's own source. Blob ids
of committed files come from one `git cat-file --batch-check`; only cache misses read blobs and parse.
Never prints; never imports JAX (the smoke runs and tests import it in their own processes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grugctl import archive as archive_mod
from grugctl import codediff
from grugctl.errors import GrugError
from grugctl.gitinfo import blob_id
from grugctl.runs.results import RESULT_KEYS

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
LINT_PATHS = ("grug_core", "grugctl", "experiments", "tests", "bench")
NOVERIFY_RE = re.compile(r"^[ \t]*#[ \t]*grug:[ \t]*noverify\b[ \t]*(.*?)[ \t]*$", re.M)
CACHE_DIR = ".grugctl_cache"
CACHE_FILE = "check.json"
TAIL_LINES = 40
PYTEST_SUMMARY_RE = re.compile(
    r"\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b.* in [\d.]+s"
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    status: str  # pass | warn | fail | skip; warn and skip are ok
    message: str  # one line: what passed, or what is wrong
    details: tuple[str, ...] = ()  # one line per problem or warning, or a failing subprocess's last lines


@dataclass(frozen=True)
class Facts:
    """What the static checks need to know about one active experiment (cached, see the module doc)."""

    id: str
    path: str
    noverify: str | None  # None: no marker; "": a marker without a reason
    parse_error: str | None = None
    missing: tuple[str, ...] = ()  # starter surface definitions it neither defines nor imports from the core
    buckets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # vs origin at base: bucket -> names
    drift: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    facts: dict[str, Facts]  # active experiments whose file exists, in archive order
    surface: tuple[str, ...]  # the starter's edit-surface definitions
    core_error: str | None  # the current core does not parse (or is missing)
    starter_error: str | None  # the starter cannot be read or parsed: surfaces were not checked
    compared: int  # experiments diffed against their origin at base
    cached: int  # verdicts that came from the cache


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _result(
    name: str, message: str, failures: Iterable[str] = (), warnings: Iterable[str] = ()
) -> CheckResult:
    """fail (one problem: it is the message; several: counted, listed in details), warn, or pass."""
    failures, warnings = tuple(failures), tuple(warnings)
    if len(failures) == 1:
        return CheckResult(name, False, FAIL, failures[0], warnings)
    if failures:
        return CheckResult(name, False, FAIL, plural(len(failures), "problem"), failures + warnings)
    if warnings:
        return CheckResult(name, True, WARN, f"{message}; {plural(len(warnings), 'warning')}", warnings)
    return CheckResult(name, True, PASS, message)


def _kinds(report: dict, *kinds: str) -> list[str]:
    return [w["message"] for w in report["warnings"] if w["kind"] in kinds]


def noverify_reason(source: str) -> str | None:
    """The reason given by a `# grug: noverify <reason>` comment line; "" without one; None: no marker."""
    if "noverify" not in source:
        return None
    match = NOVERIFY_RE.search(source)
    return None if match is None else match[1]


# ---------------------------------------------------------------- 1-3: archive, tree, git


def check_journal(archive: archive_mod.Archive) -> CheckResult:
    """A journal left by a command that died means files are half-changed: a failure until recovered."""
    from grugctl import transaction

    try:
        journal = transaction.interrupted(archive.root)
    except GrugError as error:
        return _result("journal", "", [str(error)])
    problems = [transaction.interrupted_sentence(journal)] if journal is not None else []
    return _result("journal", "no half-done command", problems)


def check_schema(archive: archive_mod.Archive, report: dict) -> CheckResult:
    """Loading already validated every field (a malformed file never gets here: exit 2); what is left
    are references between entries."""
    problems = _kinds(report, "unknown-id", "no-successor")
    starter = archive.experiments.get(archive.starter) if archive.starter else None
    if starter is not None and starter.status != "active":
        problems.append(
            f"starter {starter.id} is {starter.status}; experiments are copied from it, so name an active one"
        )
    s = report["summary"]
    counts = f"{s['active']} active, {s['superseded']} superseded, {s['deleted']} deleted"
    valid = f"{archive.path.name} is valid: {plural(s['total'], 'experiment')} ({counts})"
    return _result("schema", valid, problems)


def check_tree(archive: archive_mod.Archive, report: dict) -> CheckResult:
    problems = _kinds(report, "missing-file", "deleted-file-exists", "unregistered-file", "outside-repo")
    owners: dict[str, list[str]] = {}
    for entry in archive.experiments.values():
        owners.setdefault(archive_mod.norm_path(entry.path), []).append(entry.id)
    problems += [
        f"{', '.join(ids)} share the path {path}; give each entry its own file"
        for path, ids in owners.items()
        if len(ids) > 1
    ]
    return _result("tree", f"every file matches {archive.path.name}; none unregistered", problems)


def check_records(archive: archive_mod.Archive) -> CheckResult:
    """Every results row points at a run record that exists, parses, holds its schema's fields, agrees
    with the row and matches the hash the row keeps, so a fresh clone can trust what it claims."""
    from grugctl.runs import records

    problems = records.record_problems(archive.root, archive.experiments.values())
    rows = sum(len(entry.results) for entry in archive.experiments.values())
    return _result(
        "records", f"all {plural(rows, 'result row')} have a sound run record", problems, _baseline(archive)
    )


def _baseline(archive: archive_mod.Archive) -> list[str]:
    """Every comparison is against the starter: without runs of its current code (a promotion or any
    real edit retires them) compare has nothing to measure against."""
    from grugctl.evidence import compare

    starter = archive.experiments.get(archive.starter) if archive.starter else None
    if starter is None or starter.status != "active" or not (archive.root / starter.path).is_file():
        return []
    if compare.usable_rows(archive, starter.id, None)[0]:
        return []
    return [
        f"the starter {starter.id} has no recorded run of its current code, so compare has no baseline; "
        f"`grugctl run {starter.id} --seeds 5` records one (commit runs/ and archive.yaml)"
    ]


def unfilled_shas(archive: archive_mod.Archive) -> bool:
    """Whether any entry lacks a SHA that resolve fills (introduced; last_known_good when not active)."""
    return any(
        e.introduced is None or (e.status != "active" and e.last_known_good is None)
        for e in archive.experiments.values()
    )


def check_git(
    archive: archive_mod.Archive,
    report: dict,
    filled: Iterable[tuple[str, str, str]] = (),
    dry_run: bool = False,
) -> CheckResult:
    """Every SHA is a commit. An empty SHA git could fill is a warning, not a failure: `new` cannot know
    the commit that will introduce the file, and committing it must not make the next check fail."""
    problems = _kinds(report, "no-git", "unknown-sha")
    notes, fillable = [], []
    if not problems and unfilled_shas(archive):
        try:
            fillable, uncommitted = archive_mod.resolve_archive(archive.path, dry_run=True)
        except GrugError as error:
            uncommitted = []
            problems.append(str(error))
        notes = [f"{len(uncommitted)} field(s) wait for a first commit"] if uncommitted else []
    fillable = [
        f"{entry_id}.{name} is empty but git knows it ({sha}); `grugctl check --fix` writes it"
        for entry_id, name, sha in fillable
    ]
    verb = "would fill" if dry_run else "filled"
    fixed = [f"{verb} {entry_id}.{name} = {sha}" for entry_id, name, sha in filled]
    head = [f"--fix {verb} {len(fixed)} SHA(s) from git"] if fixed else []
    result = _result("git", "; ".join([*head, "every SHA is a commit", *notes]), problems, fillable)
    return dataclasses.replace(result, details=(*fixed, *result.details))


# ---------------------------------------------------------------- git objects and the verdict cache


def _git(root: Path, args: list[str], stdin: bytes) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_blob_ids(root: Path, specs: Iterable[str]) -> dict[str, str | None]:
    """`<sha>:./<path>` -> blob id, or None when that commit lacks the file: one git process for all."""
    specs = list(dict.fromkeys(specs))
    stdin = "".join(f"{s}\n" for s in specs).encode()
    out = _git(root, ["cat-file", "--batch-check=%(objectname) %(objecttype)"], stdin) if specs else None
    if out is None:
        return dict.fromkeys(specs)
    answers = out.decode("utf-8", "replace").splitlines()
    return {s: (a.split()[0] if a.endswith(" blob") else None) for s, a in zip(specs, answers, strict=True)}


def git_blobs(root: Path, ids: Iterable[str]) -> dict[str, str]:
    """Blob id -> text, for ids git_blob_ids returned: one `git cat-file --batch` for all."""
    ids = list(dict.fromkeys(ids))
    out = _git(root, ["cat-file", "--batch"], "".join(f"{i}\n" for i in ids).encode()) if ids else b""
    texts, at = {}, 0
    for blob in ids if out else ():
        end = out.index(b"\n", at)
        header = out[at:end].split()
        if header[-1] == b"missing":
            at = end + 1
            continue
        size = int(header[2])
        texts[blob] = out[end + 1 : end + 1 + size].decode("utf-8", "replace")
        at = end + 1 + size + 1
    return texts


def _cache_path(archive: archive_mod.Archive) -> Path:
    return archive.root / CACHE_DIR / CACHE_FILE


def _logic_version() -> str:
    """Verdicts depend on this module's and codediff's code and on Python's ast."""
    sources = b"".join(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], codediff))
    return hashlib.sha1(sources + str(sys.version_info[:2]).encode()).hexdigest()


def load_cache(path: Path, logic: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("records", {}) if isinstance(data, dict) and data.get("logic") == logic else {}


def save_cache(path: Path, logic: str, records: dict) -> None:
    """Atomic, and best effort: a read-only checkout just runs uncached."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(exist_ok=True)
        ignore = path.parent / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# grugctl's cache; never committed.\n*\n")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"logic": logic, "records": records}, handle, separators=(",", ":"))
        os.replace(tmp, path)


# ---------------------------------------------------------------- 4-5: contracts, buckets, drift (static)


def _read_text(path: Path) -> tuple[bytes | None, str | None]:
    """(bytes, text); text is None when the file is not UTF-8, both are None when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, None
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError:
        return data, None


def _imports_from_core(module: codediff.Module, name: str, core: codediff.Core) -> bool:
    imported = module.imports.get(name)
    return (
        imported is not None
        and name in core.owner
        and imported.module == f"{core.package}.{core.owner[name]}"
    )


def verdict(text: str, rel: str, surface: tuple[str, ...], core: codediff.Core, origin, core_then) -> dict:
    """One experiment's static verdict (what the cache stores): parse, surface, buckets, drift."""
    try:
        module = codediff.parse_module(text, rel)
    except GrugError as error:
        return {"parse_error": str(error)}
    missing = [n for n in surface if n not in module.definitions and not _imports_from_core(module, n, core)]
    buckets = {}
    if origin is not None:
        changes = codediff.compare(module.definitions, origin.definitions, core, new_module=module)
        changed = codediff.changed(changes)
        buckets = {b: [c.name for c in changed if c.bucket == b] for b in codediff.changed_buckets(changes)}
    moved = core_then is not None and core_then is not core
    drift = codediff.drifted(module, core_then, core) if moved else []
    return {"missing": missing, "buckets": buckets, "drift": drift}


def _core_sources(archive: archive_mod.Archive) -> dict[str, bytes]:
    folder = archive.root / archive.core
    return {p.stem: p.read_bytes() for p in sorted(folder.glob("*.py"))} if folder.is_dir() else {}


def _git_inputs(archive: archive_mod.Archive, entries: list, stems: list[str]) -> dict[str, str | None]:
    """Blob ids of the core modules at each base and of each origin's file at the experiment's base."""
    specs = []
    for entry in entries:
        if entry.base:
            specs += [f"{entry.base}:./{archive.core}/{stem}.py" for stem in stems]
            origin = archive.experiments.get(entry.origin) if entry.origin else None
            if origin is not None:
                specs.append(f"{entry.base}:./{origin.path}")
    return git_blob_ids(archive.root, specs) if specs else {}


def _signature(ids: dict[str, str]) -> str:
    return ",".join(f"{stem}={blob}" for stem, blob in sorted(ids.items()))


def _parse_core(package: str, sources: dict[str, str]) -> tuple[codediff.Core | None, str | None]:
    try:
        return codediff.load_core_sources(package, sources), None
    except GrugError as error:
        return None, str(error)


def _starter(
    archive: archive_mod.Archive, core: codediff.Core | None
) -> tuple[bytes, tuple[str, ...], str | None]:
    """(the starter's bytes, its edit surface, why surfaces cannot be checked)."""
    entry = archive.experiments.get(archive.starter) if archive.starter else None
    if entry is None or core is None:
        return b"", (), None if core is None else "no starter is named in archive.yaml"
    data, text = _read_text(codediff.experiment_file(archive.root, entry.path))
    if text is None:
        return data or b"", (), f"the starter {entry.path} cannot be read"
    try:
        module = codediff.parse_module(text, entry.path)
    except GrugError as error:
        return data, (), str(error)
    surface = codediff.edit_surface(module, core)
    return data, tuple(n for names in surface.values() for n in names), None


@dataclass(frozen=True)
class _Inputs:
    """Everything the verdicts of one archive share: current core, starter, git lookups, parsed memos."""

    archive: archive_mod.Archive
    core: codediff.Core | None
    core_sig: str
    stems: list[str]
    surface: tuple[str, ...]
    starter_id: str
    git: dict[str, str | None]
    texts: dict[str, str] = field(default_factory=dict)  # blob id -> text, filled for cache misses
    parsed: dict[str, object] = field(default_factory=dict)  # memo: blob id or core signature -> parsed


def _key(inputs: _Inputs, entry, data: bytes, logic: str) -> tuple[str, str | None, dict[str, str] | None]:
    """(cache key, origin's blob at base, core blobs at base) for one experiment."""
    origin = inputs.archive.experiments.get(entry.origin) if entry.origin and entry.base else None
    origin_blob = inputs.git.get(f"{entry.base}:./{origin.path}") if origin is not None else None
    then = {}
    if entry.base:
        then = {s: inputs.git.get(f"{entry.base}:./{inputs.archive.core}/{s}.py") for s in inputs.stems}
    then = {s: blob for s, blob in then.items() if blob is not None} or None
    parts = [
        logic,
        blob_id(data),
        inputs.starter_id,
        inputs.core_sig,
        origin_blob or "-",
        _signature(then or {}),
    ]
    return hashlib.sha1("|".join(parts).encode()).hexdigest(), origin_blob, then


def _module_at(inputs: _Inputs, blob: str | None, label: str):
    if blob is None or blob not in inputs.texts:
        return None
    if blob not in inputs.parsed:
        try:
            inputs.parsed[blob] = codediff.parse_module(inputs.texts[blob], label)
        except GrugError:
            inputs.parsed[blob] = None  # a broken origin at base: nothing to compare against
    return inputs.parsed[blob]


def _core_at(inputs: _Inputs, then: dict[str, str] | None):
    if then is None:
        return None
    signature = _signature(then)
    if signature == inputs.core_sig:
        return inputs.core  # the core has not moved since the base: nothing can have drifted
    if any(blob not in inputs.texts for blob in then.values()):
        return None
    if signature not in inputs.parsed:
        sources = {stem: inputs.texts[blob] for stem, blob in then.items()}
        inputs.parsed[signature] = _parse_core(inputs.core.package, sources)[0]
    return inputs.parsed[signature]


def _facts_from_verdict(entry, record: dict, noverify: str | None) -> Facts:
    return Facts(
        id=entry.id, path=entry.path, noverify=noverify, parse_error=record.get("parse_error"),
        missing=tuple(record.get("missing", ())), drift=tuple(record.get("drift", ())),
        buckets={b: tuple(names) for b, names in record.get("buckets", {}).items()},
    )  # fmt: skip


def analyse_experiments(archive: archive_mod.Archive, use_cache: bool = True) -> Analysis:
    """The static verdict on every active experiment whose file exists; see the module doc for the cache."""
    raw = _core_sources(archive)
    core, core_error = None, f"the core package {archive.core} has no modules; check `core:` in archive.yaml"
    if raw:
        texts = {stem: data.decode("utf-8", "replace") for stem, data in raw.items()}
        core, core_error = _parse_core(Path(archive.core).name, texts)
    starter_data, surface, starter_error = _starter(archive, core)
    files = {}
    for entry in archive.experiments.values():
        try:
            path = codediff.experiment_file(archive.root, entry.path) if entry.status == "active" else None
        except GrugError:  # outside the repository: the tree check names it, nothing reads it
            path = None
        if path is not None and path.is_file():
            files[entry.id] = (entry, *_read_text(path))
    entries = [entry for entry, _, _ in files.values()]
    stems = sorted(raw)
    inputs = _Inputs(
        archive, core, _signature({s: blob_id(d) for s, d in raw.items()}), stems, surface,
        blob_id(starter_data), _git_inputs(archive, entries, stems) if core is not None else {},
    )  # fmt: skip
    logic, cache_file = _logic_version(), _cache_path(archive)
    cache = load_cache(cache_file, logic) if use_cache else {}
    keys = {i: _key(inputs, e, data or b"", logic) for i, (e, data, _) in files.items()}
    misses = [i for i in files if keys[i][0] not in cache]
    inputs.texts.update(git_blobs(archive.root, {b for i in misses for b in _blobs_of(keys[i])}))
    records = {}
    for entry_id in misses:
        entry, _, text = files[entry_id]
        records[keys[entry_id][0]] = _verdict_for(inputs, entry, text, keys[entry_id])
    # An empty verdict (no core to compare with) is a verdict too: `or` would look it up in the cache.
    kept = {keys[i][0]: records[keys[i][0]] if keys[i][0] in records else cache[keys[i][0]] for i in files}
    if use_cache and (misses or len(kept) != len(cache)):
        save_cache(cache_file, logic, kept)
    facts = {
        i: _facts_from_verdict(e, kept[keys[i][0]], noverify_reason(text or ""))
        for i, (e, _, text) in files.items()
    }
    compared = sum(1 for i in files if keys[i][1] is not None)
    return Analysis(facts, surface, core_error, starter_error, compared, len(files) - len(misses))


def _blobs_of(key: tuple[str, str | None, dict[str, str] | None]) -> list[str]:
    _, origin_blob, then = key
    return ([origin_blob] if origin_blob else []) + list((then or {}).values())


def _verdict_for(inputs: _Inputs, entry, text: str | None, key) -> dict:
    if text is None:
        return {"parse_error": f"{entry.path} is not UTF-8 text; restore it from git"}
    if inputs.core is None:  # contracts reports the core; the experiment can still be parsed
        try:
            codediff.parse_module(text, entry.path)
        except GrugError as error:
            return {"parse_error": str(error)}
        return {}
    _, origin_blob, then = key
    origin = _module_at(inputs, origin_blob, f"{entry.origin}@{(entry.base or '')[:8]}")
    return verdict(text, entry.path, inputs.surface, inputs.core, origin, _core_at(inputs, then))


def check_contracts(analysis: Analysis) -> CheckResult:
    problems, warnings = [], []
    if analysis.core_error:
        problems.append(analysis.core_error)
    if analysis.starter_error:
        problems.append(f"edit surfaces not checked: {analysis.starter_error}")
    for facts in analysis.facts.values():
        if facts.parse_error:
            problems.append(f"{facts.id}: {facts.parse_error}")
        elif facts.noverify == "":
            problems.append(f"{facts.id}: `# grug: noverify` needs a reason after it, e.g. `needs a GPU`")
        elif facts.noverify is not None:
            warnings.append(f"{facts.id}: not verified (# grug: noverify {facts.noverify})")
        elif facts.missing:
            problems.append(
                f"{facts.id}: lacks {', '.join(facts.missing)} from the starter's edit surface; "
                "copy them back from the starter (or import them from the core)"
            )
    checked = plural(len(analysis.facts), "active experiment")
    surface = f"each parses and defines the starter's edit surface ({len(analysis.surface)} definitions)"
    return _result("contracts", f"{checked}: {surface}", problems, warnings)


def check_buckets(archive: archive_mod.Archive, analysis: Analysis) -> CheckResult:
    problems = []
    for facts in analysis.facts.values():
        if len(facts.buckets) > 1:
            spans = "; ".join(f"{b}: {', '.join(names)}" for b, names in facts.buckets.items())
            origin = archive.experiments[facts.id].origin
            problems.append(
                f"{facts.id} changes several buckets against {origin} ({spans}): change one bucket at a time"
            )
    compared = plural(analysis.compared, "experiment")
    return _result(
        "buckets", f"{compared} compared with their origin: each changes at most one bucket", problems
    )


def check_drift(archive: archive_mod.Archive, analysis: Analysis) -> CheckResult:
    """A warning, never a failure: the experiment still measures its idea, against an older core."""
    warnings = [
        f"{f.id}: the core changed {', '.join(f.drift)} since its base {archive.experiments[f.id].base}; "
        f"it still holds the old copies; run `grugctl sync {f.id}` to measure against today's core"
        for f in analysis.facts.values()
        if f.drift
    ]
    return _result("drift", "no experiment holds copies the core has changed since its base", (), warnings)


# ---------------------------------------------------------------- 7: lint; then the slow checks


RUFF_STEPS = (
    (("check", "--no-fix", "--output-format", "concise"), "ruff check --fix"),
    (("format", "--check"), "ruff format"),
)


Lint = tuple[list[str], list[tuple[str, str, subprocess.Popen]]]  # targets, (subcommand, fix, process)


def start_lint(root: Path, paths: Iterable[str] = LINT_PATHS) -> Lint:
    """Start ruff check and ruff format --check (configured in pyproject.toml) over the paths that
    exist; run_checks lets them run while it does the other static checks."""
    targets = [p for p in paths if (root / p).exists()]
    started = []
    for args, fix in RUFF_STEPS if targets else ():
        command = [sys.executable, "-m", "ruff", *args, *targets]
        process = subprocess.Popen(
            command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        started.append((args[0], fix, process))
    return targets, started


def finish_lint(lint: Lint) -> CheckResult:
    targets, started = lint
    if not started:
        return CheckResult("lint", True, SKIP, f"none of {', '.join(LINT_PATHS)} exists")
    failed, details = [], []
    for subcommand, fix, process in started:
        output = process.communicate()[0].strip()
        if "No module named ruff" in output:
            return CheckResult("lint", False, FAIL, "ruff is not installed; run `pip install -e '.[dev]'`")
        if process.returncode != 0:
            failed.append(f"`ruff {subcommand}` failed (`{fix}` fixes most)")
            details += [line for line in output.splitlines() if line.strip()][-TAIL_LINES:]
    if failed:
        return CheckResult("lint", False, FAIL, "; ".join(failed), tuple(details))
    return CheckResult("lint", True, PASS, f"ruff check and ruff format pass on {', '.join(targets)}")


def check_lint(root: Path, paths: Iterable[str] = LINT_PATHS) -> CheckResult:
    return finish_lint(start_lint(root, paths))


def core_test_step(root: Path, test_files: Iterable[str] | None = None):
    """(the pytest step promote's gate runs, its test files, whether they were narrowed from the default
    tests/test_grugformer_*.py by `test_files` or $GRUGCTL_GATE_TESTS); the step is None without tests."""
    from grugctl.promotion import gate

    tests, narrowed = gate.gate_tests(root, test_files)
    steps = gate.gate_steps(root, "-", root, tests) if tests else []
    return next((step for step in steps if step.results is None), None), tests, narrowed


def _tail(output: str) -> tuple[str, ...]:
    return tuple(line for line in output.rstrip().splitlines()[-TAIL_LINES:])


def check_core_tests(root: Path, test_files: Iterable[str] | None = None) -> CheckResult:
    """The core's pytest suite (tests/test_grugformer_*.py, the 8-device sharding test included)."""
    from grugctl.promotion import gate

    step, tests, narrowed = core_test_step(root, test_files)
    if step is None:
        return CheckResult(
            "core tests", False, FAIL, "no core tests match tests/test_grugformer_*.py; add them back"
        )
    ok, output = gate.run_step(root, step)
    summaries = [m[0] for m in map(PYTEST_SUMMARY_RE.search, output.splitlines()) if m]
    summary = summaries[-1] if summaries else ""
    note = f" (narrowed to {', '.join(tests)})" if narrowed else ""
    if ok:
        return CheckResult("core tests", True, PASS, f"pytest: {summary or 'passed'}{note}")
    return CheckResult("core tests", False, FAIL, f"pytest: {summary or 'failed'}{note}", _tail(output))


def check_smoke(
    archive: archive_mod.Archive,
    ids: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> CheckResult:
    """Each active experiment's `--smoke` run (tiny config, 2 steps) exits 0 and writes every result key."""
    from grugctl.promotion import gate

    ids = [i for i, e in archive.experiments.items() if e.status == "active"] if ids is None else list(ids)
    failures, tails, warnings, ran, start = [], [], [], 0, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="grugctl-check-") as out:
        for number, entry_id in enumerate(ids, 1):
            path = codediff.experiment_file(archive.root, archive.experiments[entry_id].path)
            reason = noverify_reason(_read_text(path)[1] or "")
            if reason is not None:
                warnings.append(f"{entry_id}: smoke run skipped (# grug: noverify {reason})")
                continue
            if progress:
                progress(f"smoke: {entry_id} ({number}/{len(ids)}) ...")
            results = Path(out) / f"{entry_id}.json"
            rel = path.relative_to(archive.root).as_posix()
            argv = (sys.executable, rel, "--smoke", "--out", str(results))
            ok, output = gate.run_step(archive.root, gate.GateStep(f"{entry_id} --smoke", argv, results))
            ran += 1
            failure = _smoke_failure(entry_id, rel, ok, output, results)
            if failure:
                failures.append(failure)
                tails += [f"--- {entry_id}: last lines of its output ---", *_tail(output)] if not ok else []
    if failures:
        message = failures[0] if len(failures) == 1 else f"{len(failures)} of {ran} smoke runs failed"
        return CheckResult(
            "smoke", False, FAIL, message, (*failures[len(failures) == 1 :], *tails, *warnings)
        )
    seconds = time.perf_counter() - start
    completed = f"{plural(ran, 'experiment')} completed --smoke with every result key ({seconds:.0f} s)"
    return _result("smoke", completed, (), warnings)


def _smoke_failure(entry_id: str, rel: str, ok: bool, output: str, results: Path) -> str | None:
    if not ok:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        status = f" {lines.pop()}" if lines and lines[-1].startswith("(exit status") else ""
        last = f": {lines[-1]}" if lines else ""
        return f"{entry_id}: `python {rel} --smoke` failed{status}{last}"
    data = json.loads(results.read_text(encoding="utf-8"))
    missing = [k for k in RESULT_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        return (
            f"{entry_id}: its --smoke results lack {', '.join(missing)}; write every key grugctl run records"
        )
    return None


# ---------------------------------------------------------------- all of them


def run_checks(
    archive_path: Path | None,
    fast: bool = False,
    fix: bool = False,
    *,
    dry_run: bool = False,
    on_result: Callable[[CheckResult], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Every check in order, static ones first. An unreadable archive raises GrugError (exit 2)."""
    archive = archive_mod.load_archive(archive_mod.find_archive(None, archive_path))
    filled = []
    if fix and unfilled_shas(archive):
        with contextlib.suppress(GrugError):  # no git: the git check says so
            filled = archive_mod.resolve_archive(archive.path, dry_run=dry_run)[0]
        if not dry_run:
            archive = archive_mod.load_archive(archive.path)
    results: list[CheckResult] = []

    def emit(result: CheckResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    lint = start_lint(archive.root)
    try:
        report = archive_mod.status_report(archive)
        emit(check_journal(archive))
        emit(check_schema(archive, report))
        emit(check_tree(archive, report))
        emit(check_records(archive))
        emit(check_git(archive, report, filled, dry_run))
        analysis = analyse_experiments(archive)
        emit(check_contracts(analysis))
        emit(check_buckets(archive, analysis))
        emit(check_drift(archive, analysis))
        emit(finish_lint(lint))
    finally:
        for _, _, process in lint[1]:
            if process.poll() is None:
                process.kill()
                process.wait()
    if fast:
        emit(CheckResult("smoke", True, SKIP, "not run with --fast"))
        emit(CheckResult("core tests", True, SKIP, "not run with --fast"))
        return results
    runnable = [f.id for f in analysis.facts.values() if not f.parse_error]
    emit(check_smoke(archive, runnable, progress))
    if progress:
        progress("core tests: pytest ...")
    emit(check_core_tests(archive.root))
    return results
