"""What one Ray task does on a worker: train one (experiment, seed) in a child process of the shipped
code and hand back its results, never touching the driver's repository.

The worker's current folder is the code the driver shipped (runtime_env working_dir); the child runs
the experiment file from there with that folder first on PYTHONPATH, so the shipped grug_core wins over
any installed copy. Standard library only (plus grugctl.runs.hostjobs and, for the corpus, grug_core.data),
because the worker imports this module from the shipped code.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grugctl.runs import hostjobs

LOG_TAIL_LINES = 40
# How often the loop below wakes up while the child is quiet: a cancel (KeyboardInterrupt raised by
# Ray in this thread) is seen within this long, and the child stopped with it.
POLL_SECONDS = 0.5


def ensure_corpus() -> None:
    """Fetch the corpus on this worker if it is not there yet (a no-op when it is)."""
    from grug_core import data

    try:
        data.corpus_files()
    except data.CorpusMissing:
        data.fetch()


def stop_child(child: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s: the child writes its results atomically at the end, so a stopped
    run leaves nothing half-written."""
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _stream(child: subprocess.Popen, prefix: str, tail: collections.deque) -> None:
    """Forward the child's lines to this worker's stderr (Ray shows them on the driver) and keep a tail."""
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ)
    while True:
        if not selector.select(timeout=POLL_SECONDS):
            continue
        line = child.stdout.readline()
        if not line:
            return
        tail.append(line.rstrip("\n"))
        print(f"{prefix}{line}", end="", file=sys.stderr, flush=True)


def _node_id() -> str | None:
    """The Ray node's id (not the host's name, which records do not carry)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside a Ray worker
        return None


def run_on_worker(job: dict) -> dict:
    """job: entry_id, path (of the experiment file, relative to the shipped code), seed, options.
    Returns exit_code, results (the child's full results JSON, or None), log_tail, shared_host, node,
    seconds."""
    root = Path.cwd()
    started = time.time()
    ensure_corpus()
    with tempfile.TemporaryDirectory(prefix="grugctl-run-") as scratch:
        out = Path(scratch) / "results.json"
        command = [sys.executable, str(root / job["path"]), "--seed", str(job["seed"]), "--out", str(out)]
        pythonpath = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "GRUG_EXPERIMENT_ID": job["entry_id"], "PYTHONPATH": pythonpath}
        tail: collections.deque = collections.deque(maxlen=LOG_TAIL_LINES)
        marker = hostjobs.start_job(f"{job['entry_id']} seed {job['seed']}")
        child = subprocess.Popen(
            command + job["options"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _stream(child, f"[{job['entry_id']} seed {job['seed']}] ", tail)
            code = child.wait()
        except BaseException:  # Ray's cancel arrives as KeyboardInterrupt: take the child down with us
            stop_child(child)
            raise
        finally:
            shared_host = hostjobs.finish_job(marker)
        results = json.loads(out.read_text()) if code == 0 and out.is_file() else None
    return {
        "exit_code": code,
        "results": results,
        "log_tail": "\n".join(tail),
        "shared_host": shared_host,
        "node": _node_id(),
        "seconds": time.time() - started,
    }
