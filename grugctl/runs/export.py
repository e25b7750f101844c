"""`grugctl export`: a run's checkpoint as a Hugging Face `LlamaForCausalLM` folder.

The checkpoint comes from `--checkpoint DIR`, a run record's `checkpoint` field (`--record FILE`), or
the newest record of the experiment that kept one: `{"dir": <folder, relative to the repository root
or absolute>, "step": <last saved step>}`. The weights are written by `python -m grug_core.export` in a
child process (grugctl never imports JAX), into a temporary folder renamed into place.

An experiment whose changed definitions alter the forward computation (attention, norms, MLP, block,
forward) is refused: LlamaForCausalLM would load its weights and compute something else. Loss and
optimizer changes only shape training, so their weights export as they are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grugctl import codediff
from grugctl.archive import Archive, get_entry
from grugctl.errors import GrugError
from grugctl.runs import records

INTERRUPTED = 130
# The buckets whose definitions run in the forward pass; the loss and the optimizer do not.
FORWARD_BUCKETS = ("attention", "block", "mlp")
# Definitions in those buckets' modules that never run in the forward pass: they only choose initial
# values or placements, which a checkpoint's weights and the export do not depend on.
NOT_FORWARD = frozenset({"init_parameters", "parameter_specs"})


@dataclass(frozen=True)
class ExportPlan:
    experiment: str
    checkpoint: Path  # absolute
    step: int | None  # None: the checkpoint folder's latest
    out: Path  # absolute
    source: str  # where the checkpoint was found, for humans: "--checkpoint", or the record's path

    def command(self, force: bool = False) -> list[str]:
        step = [] if self.step is None else ["--step", str(self.step)]
        force_flag = ["--force"] if force else []
        return [sys.executable, "-m", "grug_core.export", "--checkpoint", str(self.checkpoint),
                "--out", str(self.out), *step, *force_flag]  # fmt: skip

    def as_json(self) -> dict:
        return {
            "experiment": self.experiment,
            "checkpoint": str(self.checkpoint),
            "step": self.step,
            "out": str(self.out),
            "source": self.source,
        }


def forward_changes(archive: Archive, experiment_id: str) -> list[str]:
    """The experiment's definitions, changed against the core, that run in the forward pass."""
    report = codediff.diff_experiment(archive, experiment_id, with_closest=False)
    return [
        change.name
        for change in codediff.changed(report.changes)
        if change.bucket in FORWARD_BUCKETS and change.name not in NOT_FORWARD
    ]


def refuse_non_llama(archive: Archive, experiment_id: str) -> None:
    names = forward_changes(archive, experiment_id)
    if names:
        raise GrugError(
            f"'{experiment_id}' changes {', '.join(names)}, which LlamaForCausalLM does not compute; "
            "export would write weights that load and compute something else"
        )


def plan_export(
    archive: Archive,
    experiment_id: str,
    hf: Path,
    *,
    record: str | None = None,
    checkpoint: Path | None = None,
    step: int | None = None,
) -> ExportPlan:
    """What to export and where, refused up front (unknown id, a forward change, no checkpoint, a folder
    of another experiment); nothing is run or written."""
    get_entry(archive, experiment_id)
    if record is not None and checkpoint is not None:
        raise GrugError("--record and --checkpoint both name the checkpoint; pass one of them")
    refuse_non_llama(archive, experiment_id)
    if checkpoint is not None:  # typed by the user: relative to where they are
        folder, source, recorded_step = Path(checkpoint).absolute(), "--checkpoint", None
    else:
        path, kept = _record_checkpoint(archive, experiment_id, record)
        folder, source, recorded_step = archive.root / str(kept["dir"]), path, kept.get("step")
    _check_identity(folder, experiment_id)
    return ExportPlan(
        experiment=experiment_id,
        checkpoint=folder.absolute(),
        step=recorded_step if step is None else step,
        out=Path(hf).absolute(),
        source=source,
    )


def _record_checkpoint(archive: Archive, experiment_id: str, record: str | None) -> tuple[str, dict]:
    """(record path, its checkpoint field): the record named, or the newest of the experiment's rows
    whose record kept one."""
    if record is not None:
        kept = records.read_record(archive.root, record).get("checkpoint")
        if not _valid(kept):
            raise GrugError(
                f"run record {record} kept no checkpoint; run it with "
                f"`grugctl run {experiment_id} --checkpoint-every N` first"
            )
        return record, kept
    rows = [row for row in get_entry(archive, experiment_id).results if isinstance(row.get("record"), str)]
    for row in sorted(rows, key=lambda row: str(row.get("date", "")), reverse=True):
        try:
            kept = records.read_record(archive.root, row["record"]).get("checkpoint")
        except GrugError:
            continue  # a missing or damaged record is `grugctl check`'s business
        if _valid(kept):
            return row["record"], kept
    raise GrugError(
        f"no run of '{experiment_id}' kept a checkpoint; run it with "
        f"`grugctl run {experiment_id} --checkpoint-every N` first"
    )


def _valid(kept) -> bool:
    return isinstance(kept, dict) and isinstance(kept.get("dir"), str)


def _check_identity(folder: Path, experiment_id: str) -> None:
    """The folder must exist and hold this experiment's checkpoints (its identity.json, plain JSON)."""
    if not folder.is_dir():
        raise GrugError(
            f"checkpoint folder {folder} does not exist; pass the folder a run's --checkpoint-dir named"
        )
    try:
        identity = json.loads((folder / "identity.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GrugError(
            f"{folder} has no identity.json, so it is not a checkpoint folder; pass the folder a run's "
            "--checkpoint-dir named"
        ) from None
    except (OSError, ValueError) as error:
        raise GrugError(
            f"{folder}/identity.json is unreadable ({error}); pass another checkpoint folder"
        ) from None
    held = identity.get("experiment") if isinstance(identity, dict) else None
    if held != experiment_id:
        raise GrugError(
            f"{folder} holds checkpoints of {held!r}, not '{experiment_id}'; export it as "
            f"`grugctl export {held}` or pass another folder"
        )


def out_is_occupied(plan: ExportPlan) -> bool:
    """Whether writing would replace something: the command asks first (or needs --yes)."""
    return plan.out.exists() and (not plan.out.is_dir() or any(plan.out.iterdir()))


def run_export(archive: Archive, plan: ExportPlan, force: bool = False) -> dict:
    """Run `python -m grug_core.export` and return its summary (out, step, bytes, params)."""
    try:
        done = subprocess.run(plan.command(force), cwd=archive.root, capture_output=True, text=True)
    except KeyboardInterrupt:
        raise GrugError(f"export of '{plan.experiment}' interrupted; nothing written", INTERRUPTED) from None
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0:
        last = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
        if done.returncode == 2:
            raise GrugError(last)
        raise GrugError(f"export of '{plan.experiment}' failed with exit code {done.returncode} ({last})")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise GrugError(
            f"python -m grug_core.export printed no summary; is {archive.core} current?"
        ) from None
