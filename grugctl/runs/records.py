"""Run records: one compact JSON per recorded run, tracked in git under `runs/<id>/`, so any clone can
read what a run did (its code, config, machine and curves) and `grugctl compare` can trust it.

A record is built by grugctl (never by the experiment file) from the child's full results and the
git state taken just before the child started. archive.yaml keeps a summary row per run that points at
its record and keeps the record's content hash; `grugctl check` fails, and `grugctl compare` leaves the
row out, when the record is missing, damaged, or disagrees with its row (`row_problem`).

Evidence is keyed by what the code computes, not by its bytes: a row's `code` is a hash of the
experiment file's syntax tree without docstrings (`code_id`), so a comment or docstring edit keeps the
seeds already run while any change to a statement retires them.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from grugctl.errors import GrugError
from grugctl.gitinfo import blob_id

RUNS_DIR = "runs"
# Full child outputs (curves at every step, the whole config): useful locally, never tracked.
SCRATCH_DIR = "runs/.scratch"
RECORD_VERSION = 1
# The size of every run recorded before the size ladder existed: the starter's model then, `s` now.
DEFAULT_SIZE = "s"
TRAIN_CURVE_POINTS = 200
# The row fields `compare` needs, so the archive alone answers it; curves stay in the record.
ROW_METRICS = (
    "val_loss", "val_bpb", "steps_to_target", "tokens_to_target", "time_to_target_s", "tokens_per_s",
)  # fmt: skip


@dataclass(frozen=True)
class Provenance:
    """What the run executed: HEAD, the experiment file's and the core's ids, and any uncommitted patch."""

    commit: str | None
    dirty: bool
    experiment_blob: str
    core_tree: str | None
    patch: str | None
    code: str | None = None  # code_id: what the file computes, comments and docstrings aside


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = body[0] if body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


# Keyed by the file's bytes, so an edit is never served a stale id. compare, the leaderboard and the
# report ask for the same file's id many times in one command: `archive status` on this repository's
# three experiments parsed their files 13 times, 77 ms each; cached, the command takes 0.90 s, not 1.16 s
# (2-core Xeon).
@functools.lru_cache(maxsize=64)
def source_code_id(source: bytes) -> str:
    """sha256 of the syntax tree without docstrings or positions: equal for two files that differ only in
    comments, docstrings or layout. A file that does not parse falls back to its git blob id (no run of
    it can exist, so nothing matches it)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return blob_id(source)
    return hashlib.sha256(ast.dump(_without_docstrings(tree)).encode()).hexdigest()


def code_id(root: Path, experiment_path: str) -> str:
    """The code id of the experiment file as it is now on disk: rows with another id ran other code."""
    try:
        return source_code_id((root / experiment_path).read_bytes())
    except OSError as error:
        raise GrugError(f"cannot read {experiment_path} ({error.strerror}); restore the file") from None


def provenance(root: Path, experiment_path: str, core: str) -> Provenance:
    """Git facts for a run about to start; the patch covers the experiment file and the core, untracked
    files included, so a dirty run can be reproduced from its record."""
    from grugctl import gitinfo

    repo = gitinfo.open_repo(root)
    try:
        source = (root / experiment_path).read_bytes()
    except OSError as error:
        raise GrugError(f"cannot read {experiment_path} ({error.strerror}); restore the file") from None
    blob, code = blob_id(source), source_code_id(source)
    if not gitinfo.has_commits(repo):
        return Provenance(None, True, blob, None, None, code)
    head = gitinfo.head_sha(repo)
    tree = repo.git.rev_parse(f"{head}:{core}") if _exists_at(repo, head, core) else None
    patch = repo.git.diff("HEAD", "--", experiment_path, core)
    untracked = repo.git.ls_files("--others", "--exclude-standard", "--", experiment_path, core).splitlines()
    for path in untracked:
        # `git diff --no-index` exits 1 when the files differ, which they always do here.
        patch += "\n" + repo.git.diff("--no-index", "--", "/dev/null", path, with_exceptions=False)
    patch = patch.strip("\n")
    return Provenance(head, bool(patch), blob, tree, patch + "\n" if patch else None, code)


def _exists_at(repo, sha: str, path: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{sha}:{path}")
    except Exception:  # GitCommandError: the path is not in that commit
        return False
    return True


def config_hash(config: dict) -> str:
    """Equal hashes mean the same training recipe; the seed is left out, since seeds vary by design."""
    recipe = {key: value for key, value in config.items() if key != "seed"}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def record_path(entry_id: str, seed: int, when: float | None = None, suffix: str = "") -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    return f"{RUNS_DIR}/{entry_id}/{stamp}-seed{seed}{suffix}.json"


def _thin(points: list, limit: int) -> list:
    """At most `limit` points, evenly spaced, always keeping the last."""
    if len(points) <= limit:
        return points
    stride = -(-len(points) // limit)
    return points[::stride][: limit - 1] + [points[-1]]


def _round(value, digits: int):
    return None if value is None else round(value, digits)


def build_record(
    results: dict, source: Provenance, *, entry_id: str, pair: str | None, shared_host: bool = False
) -> dict:
    """The compact record (a few KB) from the child's full results. shared_host: another run was alive
    on the same machine meanwhile (hostjobs), so its wall times are not a fair measurement."""
    curve = [
        {
            "step": point["step"],
            "tokens": point.get("tokens"),
            "seconds": _round(point.get("train_seconds"), 2),
            "val_loss": _round(point["val_loss"], 5),
            "val_bpb": _round(point.get("val_bpb"), 5),
        }
        for point in results["curve"]
    ]
    train = _thin([list(point) for point in results.get("train_curve", [])], TRAIN_CURVE_POINTS)
    return {
        "version": RECORD_VERSION,
        "experiment": entry_id,
        "seed": results["seed"],
        "smoke": bool(results.get("smoke")),
        "pair": pair,
        "date": results["date"],
        "git": asdict(source),
        "config": results["config"],
        "config_hash": config_hash(results["config"]),
        # The rung of the size ladder and what it costs: compare never mixes sizes, and fits across them.
        "size": results.get("size", DEFAULT_SIZE),
        "params": results.get("params"),
        "flops_per_token": results.get("flops_per_token"),
        "flops": results.get("flops"),
        # What the run trained on and the settings given with --set or --sweep: compare never mixes either.
        "data": results.get("data"),
        "settings": results.get("overrides") or {},
        # Where the weights are (never in git; grugctl export reads them) and whether this run was resumed.
        "checkpoint": results.get("checkpoint"),
        "resumed_from": results.get("resumed_from"),
        "host": results.get("host"),
        "shared_host": shared_host,
        "mesh": results.get("mesh"),
        "attention_kernel": results.get("attention_kernel"),
        "metrics": {
            "steps": results["steps"],
            "tokens": results["tokens"],
            "train_seconds": _round(results["train_seconds"], 2),
            "compile_seconds": _round(results["compile_seconds"], 2),
            "tokens_per_s": _round(results["tokens_per_s"], 1),
            "mfu": _round(results.get("mfu"), 4),
            "final_train_loss": _round(results["final_train_loss"], 5),
            "val_loss": _round(results["val_loss"], 5),
            "val_bpb": _round(results["val_bpb"], 5),
            "target_val_bpb": results["target_val_bpb"],
            "steps_to_target": _round(results.get("steps_to_target"), 1),
            "tokens_to_target": _round(results.get("tokens_to_target"), 0),
            "time_to_target_s": _round(results["time_to_target_s"], 2),
        },
        "eval_curve": curve,
        "train_curve": train,
    }


def data_key(data: dict | None) -> str | None:
    """A row's data: None for byte-level Shakespeare (every record before --data named none), else the
    dataset's name and content fingerprint, which covers its tokenizer."""
    if not data or (data.get("name") == "shakespeare" and data.get("kind") == "bytes"):
        return None
    return f"{data['name']}:{data['fingerprint']}"


def settings_text(settings: dict | None) -> str | None:
    """`{"peak_lr": 0.01}` -> "peak_lr=0.01" (sorted, comma-separated); None for the file's defaults."""
    return ",".join(f"{name}={value}" for name, value in sorted((settings or {}).items())) or None


def _code(source: dict) -> str:
    """The row's code key: the code id, or for a record written before code ids, its file's blob id."""
    return (source.get("code") or source["experiment_blob"])[:12]


def summary_row(record: dict, path: str) -> dict:
    """The archive.yaml row for a record: what compare and the leaderboard read, and where the rest is."""
    metrics, source, host = record["metrics"], record["git"], record.get("host") or {}
    row = {
        "commit": source["commit"][:12] if source["commit"] else None,
        "dirty": source["dirty"],
        "seed": record["seed"],
        "steps": metrics["steps"],
        "val_loss": _round(metrics["val_loss"], 4),
        "val_bpb": _round(metrics["val_bpb"], 4),
        "steps_to_target": metrics["steps_to_target"],
        "tokens_to_target": None if metrics["tokens_to_target"] is None else int(metrics["tokens_to_target"]),
        "time_to_target_s": _round(metrics["time_to_target_s"], 1),
        "tokens_per_s": round(metrics["tokens_per_s"]),
        "code": _code(source),
        "config": record["config_hash"],
        "size": record.get("size", DEFAULT_SIZE),
        "flops": record.get("flops"),
        "host": host.get("id"),
    }
    if source.get("core_tree"):  # compare keeps wall-time metrics within one core: its speed moves too
        row["core"] = source["core_tree"][:12]
    if data_key(record.get("data")):
        row["data"] = data_key(record.get("data"))
    if settings_text(record.get("settings")):
        row["settings"] = settings_text(record.get("settings"))
    if record["pair"]:
        row["pair"] = record["pair"]
    if record["smoke"]:
        row["smoke"] = True
    if record.get("shared_host"):  # compare leaves such rows out of wall-time metrics
        row["shared_host"] = True
    row["date"] = record["date"]
    row["record"] = path
    return row


def failure_record(
    *, entry_id: str, seed: int, source: Provenance, pair: str | None, failure: dict, smoke: bool
) -> dict:
    """A run that did not finish: what ran, where, how it ended and the last lines it printed."""
    return {
        "version": RECORD_VERSION,
        "experiment": entry_id,
        "seed": seed,
        "smoke": smoke,
        "pair": pair,
        "status": "failed",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": asdict(source),
        "attempt": failure["attempt"],
        "exit_code": failure["exit_code"],
        "node": failure.get("node"),
        "log_tail": failure["log_tail"],
    }


def failure_row(record: dict, path: str) -> dict:
    """The archive row of a failed run: compare and check count it but never average it."""
    source = record["git"]
    row = {
        "status": "failed",
        "commit": source["commit"][:12] if source["commit"] else None,
        "dirty": source["dirty"],
        "seed": record["seed"],
        "attempt": record["attempt"],
        "exit_code": record["exit_code"],
        "code": _code(source),
    }
    if record["pair"]:
        row["pair"] = record["pair"]
    if record["smoke"]:
        row["smoke"] = True
    row["date"] = record["date"]
    row["record"] = path
    return row


def encode(record: dict) -> bytes:
    """Readable and small: one line per curve point, nested objects indented."""
    text = json.dumps(record, indent=1)
    return (text + "\n").encode()


def read_record(root: Path, path: str) -> dict:
    try:
        return json.loads((root / path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GrugError(f"run record {path} is missing; `git checkout -- {path}` or rerun the run") from None
    except (OSError, ValueError) as error:
        raise GrugError(f"run record {path} is unreadable ({error}); restore it from git") from None


def content_hash(data: bytes) -> str:
    """The hash a row keeps of its record's bytes: any edit or truncation of the record changes it."""
    return hashlib.sha256(data).hexdigest()[:16]


# What a record must hold for its row to be trusted; curves may be empty, the metrics may not be absent.
REQUIRED = ("version", "experiment", "seed", "date", "git", "config", "config_hash", "metrics")
REQUIRED_FAILED = ("version", "experiment", "seed", "date", "git", "status", "attempt", "exit_code")
CHECKED_METRICS = ("steps", "tokens", *ROW_METRICS)
ROW_KEYS_ALWAYS = ("seed", "steps", "code", "config", *ROW_METRICS)


def row_problem(root: Path, entry_id: str, row: dict) -> str | None:
    """Why a results row cannot be trusted, in one sentence naming its record; None when the record exists,
    matches the hash the row keeps, holds the fields its schema requires, and agrees with the row."""
    path = row.get("record") or row.get("results")
    if not isinstance(path, str):
        return None  # a row grugctl did not write (no record to hold it to)
    try:
        data = (root / path).read_bytes()
    except FileNotFoundError:
        return f"{path} is missing; restore it from git or remove the row"
    except OSError as error:
        return f"{path} is unreadable ({error.strerror}); restore it from git"
    kept = row.get("record_hash")
    if kept is not None and content_hash(data) != kept:
        return f"{path} was changed after it was recorded (its hash is not the row's); restore it from git"
    try:
        record = json.loads(data)
    except ValueError:
        return f"{path} is not valid JSON; restore it from git"
    if not isinstance(record, dict):
        return f"{path} is not a run record; restore it from git"
    failed = record.get("status") == "failed"
    absent = [name for name in (REQUIRED_FAILED if failed else REQUIRED) if name not in record]
    if not failed:
        metrics = record.get("metrics")
        metrics = metrics if isinstance(metrics, dict) else {}
        absent += [f"metrics.{name}" for name in CHECKED_METRICS if name not in metrics]
    if not isinstance(record.get("git"), dict) or "experiment_blob" not in record["git"]:
        absent.append("git.experiment_blob")
    if absent:
        return f"{path} lacks {', '.join(absent)}; restore it from git"
    if record["experiment"] != entry_id:
        return f"{path} is a record of {record['experiment']!r}, not {entry_id!r}; move the row or the file"
    try:
        expected = failure_row(record, path) if failed else summary_row(record, path)
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"{path} has fields of the wrong type; restore it from git"
    # Rows written before a field existed lack it; every row has the ones compare reads.
    # A record's data and settings must show on its row: without them it would pass for the defaults.
    claimed = [name for name in expected if name in row or name in (*ROW_KEYS_ALWAYS, "data", "settings")]
    differ = [name for name in claimed if name != "record" and row.get(name) != expected[name]]
    # A row may lack its core (written before rows named it), but must not name one its record lacks.
    if "core" in row and "core" not in expected:
        differ.append("core")
    if differ:
        return f"{path} disagrees with its archive row on {', '.join(differ)}; restore the row or the record"
    return None


def record_problems(root: Path, experiments) -> list[str]:
    """`id: sentence` for every archive row whose record is missing, damaged or disagrees with it."""
    problems = []
    for entry in experiments:
        for row in entry.results:
            problem = row_problem(root, entry.id, row)
            if problem is not None:
                problems.append(f"{entry.id}: {problem}")
    return problems
