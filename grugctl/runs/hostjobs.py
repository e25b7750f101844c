"""Did a run share its host with another run? Each run leaves a small marker file in the host's temp
folder (start time, pid, end time once done); at its end a run looks for markers whose interval overlaps
its own. Markers of local runs and of Ray tasks land in the same folder, so any two grugctl runs on one
machine see each other, whichever terminal or cluster started them. Standard library only: Ray workers
import this module from the shipped code.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path

MARKER_DIR = "grugctl-jobs"
# Markers older than this are deleted on sight: no run the project makes lasts a day.
STALE_SECONDS = 24 * 3600


def marker_dir() -> Path:
    return Path(tempfile.gettempdir()) / MARKER_DIR


def start_job(label: str) -> Path:
    """Leave this run's marker; call finish_job with it when the run ends."""
    folder = marker_dir()
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{uuid.uuid4().hex}.json"
    _write(marker, {"label": label, "pid": os.getpid(), "start": time.time(), "end": None})
    return marker


def finish_job(marker: Path) -> bool:
    """Close this run's marker; True when another run was alive on this host at any time during it."""
    mine = json.loads(marker.read_text())
    mine["end"] = time.time()
    _write(marker, mine)
    shared = False
    for other in marker.parent.glob("*.json"):
        if other == marker:
            continue
        try:
            theirs = json.loads(other.read_text())
        except (OSError, ValueError):  # being written or removed right now
            continue
        if time.time() - theirs["start"] > STALE_SECONDS:
            other.unlink(missing_ok=True)
            continue
        # A run whose process died without closing its marker counts until it was last seen alive: now,
        # if its pid is alive, else not at all (the pid may have been reused, but then it is not ours).
        end = theirs["end"] if theirs["end"] is not None else (mine["end"] if _alive(theirs["pid"]) else None)
        if end is not None and theirs["start"] < mine["end"] and end > mine["start"]:
            shared = True
    return shared


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _write(path: Path, payload: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)
