"""`grugctl new`: turn an idea's name into an experiment file copied from the starter (or another
experiment) with a rewritten header, and register it in archive.yaml. Plans first, writes last, in
one transaction: the file exists if and only if its entry does. Never prints, never imports JAX."""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from grugctl import codediff, transaction
from grugctl.errors import GrugError

NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_NAME = 64


@dataclass(frozen=True)
class NewPlan:
    id: str
    path: str  # relative to the repository root, posix separators
    origin: str
    origin_path: str
    bucket: str | None
    purpose: str
    base: str  # HEAD SHA when scaffolded
    source: str  # the new file's full text
    header: str  # its module docstring, as written into `source`
    surface: dict[str, list[str]]  # bucket -> definitions that are its edit surface in the new file


def normalise_name(idea: str) -> str:
    """The closest valid id: lowercase, runs of anything but letters and digits become one dash."""
    return re.sub(r"[^a-z0-9]+", "-", idea.strip().lower()).strip("-")[:MAX_NAME].strip("-")


def check_name(idea: str) -> str:
    if NAME.match(idea) and len(idea) <= MAX_NAME:
        return idea
    suggestion = normalise_name(idea)
    hint = f"; try {suggestion!r}" if suggestion else ""
    raise GrugError(
        f"{idea!r} is not a valid experiment name: use lowercase letters, digits and single dashes "
        f"(at most {MAX_NAME} characters){hint}."
    )


def experiment_path(experiments_dir: str, experiment_id: str) -> str:
    stem = "grugformer_" + experiment_id.replace("-", "_")
    return f"{experiments_dir.rstrip('/')}/{stem}/{stem}.py"


def header(plan_id: str, origin: str, base: str, bucket: str | None, purpose: str, path: str, surface) -> str:
    """The new file's module docstring: what it is, where it came from, how to run and diff it. Lines stay
    within ruff's limit (a path too long for one line stands alone, which ruff allows)."""
    fill = lambda text: textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)
    names = [n for names in surface.values() for n in names]
    if bucket is None:
        scope = "Bucket: none chosen yet; pick one and edit only its definitions."
    else:
        scope = f"Bucket: {bucket}. Edit surface: {', '.join(f'`{n}`' for n in names) or '(none copied)'}."
    run = [f"Run:  grugctl run {plan_id}"]
    if len(f"      python {path}") <= 100:
        run.append(f"      python {path}")
    else:
        run += ["      or python with this file:", f"      {path}"]
    diff = [f"Diff: grugctl diff {plan_id}", f"      grugctl diff {plan_id} --against origin"]
    notes = ("(against grug_core)", "(what this experiment changed)")
    width = max(map(len, diff)) + 2
    if width + len(notes[1]) <= 100:
        diff = [line.ljust(width) + note for line, note in zip(diff, notes, strict=True)]
    lines = [
        fill(f"{plan_id}: {purpose}"),
        "",
        fill(
            f"An experiment copied from `{origin}` at commit {base[:12]}. Its top-level copies of grug_core "
            "definitions start identical to the core; change one bucket at a time so the diff shows one idea."
        ),
        fill(scope),
        "",
        *run,
        *diff,
    ]
    text = "\n".join(lines).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return f'"""{text}\n"""\n'


def rewrite_header(source: str, docstring: str) -> str:
    """Replace the module docstring (or add one at the top, after a shebang) keeping all else."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    first = tree.body[0] if tree.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return "".join(lines[: first.lineno - 1]) + docstring + "".join(lines[first.end_lineno :])
    keep = 1 if lines and lines[0].startswith("#!") else 0
    return "".join(lines[:keep]) + docstring + "".join(lines[keep:])


def check_new(archive, idea: str, bucket: str | None, from_id: str | None) -> tuple[str, str]:
    """Refusals that do not need the purpose; returns (id, path)."""
    experiment_id = check_name(idea)
    if bucket is not None and bucket not in codediff.BUCKETS:
        raise GrugError(f"unknown bucket {bucket!r}; use one of {', '.join(codediff.BUCKETS)}.")
    if experiment_id in archive.experiments:
        status = archive.experiments[experiment_id].status
        raise GrugError(f"experiment {experiment_id!r} already exists ({status}); pick another name.")
    path = experiment_path(archive.experiments_dir, experiment_id)
    taken = [i for i, e in archive.experiments.items() if e.path == path]
    if taken:
        raise GrugError(f"{path} is already registered as {taken[0]!r}; pick another name.")
    if (archive.root / path).exists() or (archive.root / path).parent.exists():
        raise GrugError(f"{Path(path).parent} already exists; pick another name or remove it first.")
    origin = from_id or archive.starter
    if origin is None:
        raise GrugError("archive.yaml names no starter to copy from; pass --from ID or set `starter:` there.")
    entry = archive.experiments.get(origin)
    if entry is None:
        raise GrugError(f"no experiment called {origin!r} to copy from; see `grugctl archive status`.")
    if entry.status == "deleted":
        raise GrugError(
            f"experiment {origin!r} is deleted; bring it back with `grugctl restore {origin}` first."
        )
    if not codediff.experiment_file(archive.root, entry.path).is_file():
        raise GrugError(
            f"{entry.path} (experiment {origin!r}) does not exist; fix archive.yaml or restore it."
        )
    return experiment_id, path


def plan_new(
    archive, idea: str, purpose: str | None, bucket: str | None = None, from_id: str | None = None
) -> NewPlan:
    """Everything `new` would do, checked, without writing anything."""
    transaction.refuse_if_interrupted(archive.root)
    experiment_id, path = check_new(archive, idea, bucket, from_id)
    purpose = " ".join((purpose or "").split())
    if not purpose:
        raise GrugError("say what the experiment tries with --purpose 'one sentence'; archive.yaml needs it.")
    from grugctl import gitinfo  # GitPython is slow to import; only new (and origin diffs) need it

    try:
        base = gitinfo.head_sha(gitinfo.open_repo(archive.root))
    except GrugError:
        raise
    except Exception as error:  # any git failure becomes one sentence
        raise GrugError(
            f"cannot read the HEAD commit of {archive.root} ({error}); commit once first."
        ) from None
    origin = from_id or archive.starter
    origin_path = archive.experiments[origin].path
    original = codediff.experiment_file(archive.root, origin_path).read_text(encoding="utf-8")
    module = codediff.parse_module(original, origin_path)
    core = codediff.load_core(archive.root / archive.core)
    surface = codediff.edit_surface(module, core, bucket)
    docstring = header(experiment_id, origin, base, bucket, purpose, path, surface)
    source = rewrite_header(original, docstring)
    return NewPlan(
        experiment_id, path, origin, origin_path, bucket, purpose, base, source, docstring, surface
    )


def create(archive, plan: NewPlan) -> None:
    """Write the file and register it in one transaction; the refusals are made again under the lock,
    so of two `new` with one id exactly one writes anything."""
    from grugctl.archive import add_entry, load_archive

    with transaction.transaction(archive.root, f"grugctl new {plan.id}") as txn:
        check_new(load_archive(archive.path), plan.id, plan.bucket, plan.origin)
        transaction.write(txn, plan.path, plan.source.encode("utf-8"))
        add_entry(
            archive.path,
            {
                "id": plan.id,
                "path": plan.path,
                "status": "active",
                "bucket": plan.bucket,
                "origin": plan.origin,
                "purpose": plan.purpose,
                "base": plan.base,
            },
        )
