"""Run records: one compact JSON per recorded run, tracked in git under `runs/<id>/`, so any clone can
read what a run did (its code, config, machine and curves) and `grugctl compare` can trust it.

A record is built by grugctl (never by the experiment file) from the child's full results and the
git state taken just before the child started. archive.yaml keeps a summary row per run that points at
its record; `grugctl check` fails when a row's record is missing.
"""

from __future__ import annotations

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


def code_id(root: Path, experiment_path: str) -> str:
    """The blob id of the experiment file as it is now on disk: rows with another id ran other code."""
    try:
        return blob_id((root / experiment_path).read_bytes())
    except OSError as error:
        raise GrugError(f"cannot read {experiment_path} ({error.strerror}); restore the file") from None


def provenance(root: Path, experiment_path: str, core: str) -> Provenance:
    """Git facts for a run about to start; the patch covers the experiment file and the core, untracked
    files included, so a dirty run can be reproduced from its record."""
    from grugctl import gitinfo

    repo = gitinfo.open_repo(root)
    blob = code_id(root, experiment_path)
    if not gitinfo.has_commits(repo):
        return Provenance(None, True, blob, None, None)
    head = gitinfo.head_sha(repo)
    tree = repo.git.rev_parse(f"{head}:{core}") if _exists_at(repo, head, core) else None
    patch = repo.git.diff("HEAD", "--", experiment_path, core)
    untracked = repo.git.ls_files("--others", "--exclude-standard", "--", experiment_path, core).splitlines()
    for path in untracked:
        # `git diff --no-index` exits 1 when the files differ, which they always do here.
        patch += "\n" + repo.git.diff("--no-index", "--", "/dev/null", path, with_exceptions=False)
    patch = patch.strip("\n")
    return Provenance(head, bool(patch), blob, tree, patch + "\n" if patch else None)


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
        "host": results.get("host"),
        "shared_host": shared_host,
        "mesh": results.get("mesh"),
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
        "code": source["experiment_blob"][:12],
        "config": record["config_hash"],
        "host": host.get("id"),
    }
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
        "code": source["experiment_blob"][:12],
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


def missing_records(root: Path, experiments) -> list[str]:
    """`id: path` for every archive row whose record file does not exist."""
    missing = []
    for entry in experiments:
        for row in entry.results:
            path = row.get("record") or row.get("results")
            if isinstance(path, str) and not (root / path).is_file():
                missing.append(f"{entry.id}: {path}")
    return missing
