"""Checkpoints that survive preemption: parameters, optimizer state and a JSON `meta` (step, data
position, RNG, curve so far) written with orbax, asynchronously, keeping the last `keep`.

A checkpoint folder holds one sub-folder per step (orbax writes it under a temporary name and renames
it when every file is durable, so a killed or failed write never looks finished) and `identity.json`:
the experiment, config and code whose state it holds. A run refuses a folder of another identity, so
resuming never mixes two runs' state.

Each key of the state dict (`{"params": ..., "opt_state": ...}`) is its own orbax item, so the
Hugging Face export restores the parameters alone. Arrays are saved with their shardings and come
back on the shardings of the `like` tree the caller passes (its current mesh).

    manager = open_checkpoints(Path("checkpoints/run"), identity, keep=3)
    save_checkpoint(manager, step, {"params": params, "opt_state": opt_state}, {"step": step})
    state, meta = restore_checkpoint(manager, None, {"params": params, "opt_state": opt_state})
    close_checkpoints(manager)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp

IDENTITY_FILE = "identity.json"
META = "meta"  # the orbax item that holds the JSON meta; no state key may use the name


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used as asked: one sentence naming the folder and the fix."""


class _QuietOrbaxFailures(logging.Filter):
    """orbax (through absl and asyncio) logs a traceback from every background task of a failed save
    or restore; the failure reaches the caller once, as a CheckpointError, and those tracebacks would
    only bury its one sentence."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        through = record.exc_info is not None and _through_orbax(record.exc_info[2])
        return not (through or "orbax" in record.pathname or "orbax" in record.getMessage())


def _through_orbax(traceback) -> bool:
    while traceback is not None:
        if f"{os.sep}orbax{os.sep}" in traceback.tb_frame.f_code.co_filename:
            return True
        traceback = traceback.tb_next
    return False


def open_checkpoints(directory: Path, identity: dict, keep: int = 3) -> ocp.CheckpointManager:
    """The manager of `directory` (created if need be) for a run of `identity`; a folder that already
    holds checkpoints of another identity is refused, naming the first key that differs."""
    directory = Path(directory).absolute()
    identity = json.loads(json.dumps(identity))  # as it reads back: tuples become lists
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(
            f"cannot create checkpoint folder {directory} ({error.strerror}); pass another --checkpoint-dir"
        ) from None
    path = directory / IDENTITY_FILE
    held = read_identity(directory) if path.exists() else None
    if held is not None and held != identity and _finished_steps(directory):
        raise CheckpointError(
            f"{directory} holds checkpoints of {_difference(held, identity)}; "
            "pass another --checkpoint-dir or delete it"
        )
    if jax.process_index() == 0:
        if held != identity:
            _write_json(path, identity)
        # A write killed (SIGKILL) or failed (a full disk) mid-way leaves its temporary folder behind.
        for leftover in directory.glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(leftover, ignore_errors=True)
    return _manager(
        directory, ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
    )


def read_checkpoints(directory: Path) -> ocp.CheckpointManager:
    """A read-only manager of an existing checkpoint folder (the export's): nothing is written."""
    directory = Path(directory).absolute()
    read_identity(directory)  # refuses a folder that is not a checkpoint folder, in one sentence
    return _manager(directory, ocp.CheckpointManagerOptions(read_only=True, create=False))


def _manager(directory: Path, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_QUIET)
    _quiet_leftovers()
    return ocp.CheckpointManager(directory, options=options)


_QUIET = _QuietOrbaxFailures()


def read_identity(directory: Path) -> dict:
    """What `directory` holds checkpoints of: {"experiment", "config", "code"}, as the run passed it."""
    path = Path(directory) / IDENTITY_FILE
    try:
        identity = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory} has no {IDENTITY_FILE}, so it is not a checkpoint folder; pass the folder "
            "a run's --checkpoint-dir named"
        ) from None
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is unreadable ({error}); delete the folder or pass another --checkpoint-dir"
        ) from None
    if not isinstance(identity, dict):
        raise CheckpointError(f"{path} is not a checkpoint identity; delete the folder or pass another one")
    return identity


def _difference(held: dict, mine: dict) -> str:
    """'experiment 'x' (this run is 'y')', or the first config field or code that differs."""
    if held.get("experiment") != mine.get("experiment"):
        return f"experiment {held.get('experiment')!r} (this run is {mine.get('experiment')!r})"
    if held.get("config") != mine.get("config"):
        field, theirs, ours = _first_change(held.get("config"), mine.get("config"), "config")
        return f"another config ({field} is {theirs!r} there, {ours!r} in this run)"
    for key in sorted(set(held) | set(mine)):
        if held.get(key) != mine.get(key):
            return f"other {key} ({held.get(key)!r} there, {mine.get(key)!r} in this run)"
    return "another run"


def _first_change(theirs, ours, path: str) -> tuple[str, object, object]:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                return _first_change(theirs.get(key), ours.get(key), f"{path}.{key}")
    return path, theirs, ours


def _write_json(path: Path, payload: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: dict, meta: dict) -> None:
    """Start writing `state` (a dict of pytrees of jax arrays) and `meta` (JSON-able) as `step`.

    Returns once the arrays are copied off the devices, so the caller may donate or overwrite them;
    the files are written in the background. A step at or below the newest saved one is skipped
    (orbax's rule: a SIGTERM right after a periodic save writes nothing twice). A failed earlier write
    is raised here, as a CheckpointError."""
    if META in state:
        raise ValueError(f"state key {META!r} is reserved for the checkpoint's meta")
    items = {name: ocp.args.StandardSave(tree) for name, tree in state.items()}
    try:
        manager.check_for_errors()  # an earlier write that failed in the background
    except Exception as error:
        raise _write_failed(manager, error) from None
    try:
        manager.save(step, args=ocp.args.Composite(**items, **{META: ocp.args.JsonSave(meta)}))
    except OSError as error:  # the folder for the step could not be made (a full disk, a read-only one)
        raise _write_failed(manager, error) from None


def wait_for_checkpoints(manager: ocp.CheckpointManager) -> None:
    """Block until every started save is durable; a write that failed raises a CheckpointError."""
    try:
        manager.wait_until_finished()
    except Exception as error:
        raise _write_failed(manager, error) from None


def close_checkpoints(manager: ocp.CheckpointManager) -> None:
    """wait_for_checkpoints, then release orbax's threads. The manager is closed even when a write
    failed (the error is still raised)."""
    try:
        wait_for_checkpoints(manager)
    finally:
        manager.close()


def _write_failed(manager: ocp.CheckpointManager, error: Exception) -> CheckpointError:
    directory = Path(manager.directory)
    kept = _finished_steps(directory)
    still = f"step {kept[-1]} is still restorable" if kept else "no earlier checkpoint exists"
    return CheckpointError(
        f"writing a checkpoint to {directory} failed ({_reason(error)}); {still}: free disk space or "
        "pass another --checkpoint-dir"
    )


def _quiet_leftovers() -> None:
    """During and after a failed write or read, orbax's pending coroutines and TensorStore's callbacks
    end on a closed event loop; each would print a traceback ("Exception ignored in ...") long after
    the one sentence. Other unraisable exceptions still reach the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "grug_checkpoint", False):
        return

    def hook(unraisable):
        error = unraisable.exc_value
        closed = isinstance(error, RuntimeError) and "loop is closed" in str(error)
        if not (closed or _through_orbax(unraisable.exc_traceback)):
            previous(unraisable)

    hook.grug_checkpoint = True
    sys.unraisablehook = hook
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)


def _reason(error: BaseException) -> str:
    """What went wrong, short: the OS's words when TensorStore names an errno (a full disk is "No space
    left on device"), else the first line of the error without the spec dump that follows it."""
    text = str(error).strip()
    code = re.search(r"os_error_code='?(\d+)", text)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if code:
        return os.strerror(int(code[1]))
    if text.startswith("Encountered error while reading array index"):
        return "an array's data does not read back"
    text = text.splitlines()[0] if text else type(error).__name__
    text = text.split(" See full TensorStore details")[0].rstrip(".")
    return text if len(text) <= 160 else text[:157] + "..."


def _finished_steps(directory: Path) -> list[int]:
    """Steps whose folder orbax finished (renamed from its temporary name): integer-named folders."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit() and (Path(directory) / name).is_dir())


def latest_step(where: Path | ocp.CheckpointManager) -> int | None:
    """The newest finished checkpoint's step in a folder or manager; None when there is none."""
    # The folder, not the manager's own list: after a failed write orbax's list can lose steps that
    # are still whole on disk.
    steps = _finished_steps(Path(where.directory if isinstance(where, ocp.CheckpointManager) else where))
    return steps[-1] if steps else None


def _abstract(tree):
    """Arrays or ShapeDtypeStructs -> ShapeDtypeStructs with a sharding (the default device's when
    the caller gave none, e.g. jax.eval_shape's)."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def leaf(x):
        sharding = getattr(x, "sharding", None) or device
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)


def restore_checkpoint(manager: ocp.CheckpointManager, step: int | None, like: dict) -> tuple[dict, dict]:
    """(state, meta) of `step` (None: the latest), restoring only the keys of `like` (e.g. just
    "params") onto its leaves' shardings. A damaged checkpoint raises a CheckpointError naming the
    step and the newest earlier one that restores."""
    directory = Path(manager.directory)
    step = latest_step(manager) if step is None else step
    if step is None:
        raise CheckpointError(f"{directory} holds no finished checkpoint; run without --resume to start one")
    if step not in _finished_steps(directory):
        kept = ", ".join(map(str, _finished_steps(directory))) or "none"
        raise CheckpointError(
            f"{directory} has no checkpoint of step {step} (it has: {kept}); pick one of those"
        )
    try:
        return _restore(manager, step, like)
    except Exception as error:
        earlier = _restorable_before(manager, step, like)
        fix = (
            f"delete {directory / str(step)} to resume from step {earlier}, the newest that restores"
            if earlier is not None
            else "no earlier checkpoint restores; start the run afresh"
        )
        raise CheckpointError(
            f"checkpoint step {step} in {directory} is damaged or truncated ({_reason(error)}); {fix}"
        ) from None


def _restore(manager: ocp.CheckpointManager, step: int, like: dict) -> tuple[dict, dict]:
    items = {name: ocp.args.StandardRestore(_abstract(tree)) for name, tree in like.items()}
    restored = manager.restore(step, args=ocp.args.Composite(**items, **{META: ocp.args.JsonRestore()}))
    return {name: restored[name] for name in like}, dict(restored[META] or {})


def _restorable_before(manager: ocp.CheckpointManager, step: int, like: dict) -> int | None:
    # Only on the error path: restoring is the one check that every file of a step is whole.
    for earlier in reversed([s for s in _finished_steps(Path(manager.directory)) if s < step]):
        try:
            _restore(manager, earlier, like)
        except Exception:
            continue
        return earlier
    return None
