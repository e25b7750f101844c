"""Fuzz grugctl's write path and print what held: concurrent writers and the entries they lost, malformed
archives and how each was handled, hostile values stored or refused, and kills mid-write and mid-promote
detected and recovered.

    python bench/fuzz_writes.py [--quick] [--seed S] [--promote-kills N]

Every malformed archive must be refused with a GrugError (one sentence in the CLI) or, when the mutation
happens to leave a valid archive, accepted and edited; anything else counts as a traceback, anything
slower than HANG_S as a hang, and a refused write that changed a byte as a file changed. Each value must
come back exactly from a reload after a later write, or be refused up front.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from grugctl import archive, transaction  # noqa: E402
from grugctl.errors import GrugError  # noqa: E402

HANG_S = 5
VALID = """\
# the paper trail
version: 1
starter: base
experiments:
  base:
    path: e/base.py
    status: active
    purpose: The starter.
  qk-norm:  # an idea
    path: e/qk.py
    status: active
    bucket: attention
    origin: base
    purpose: QK norm.
    notes: |
      two
      lines
    results:
    - seed: 0
      val_bpb: 2.5
      config: {lr: 0.003, steps: 10}
"""
SNIPPETS = [
    "&a [x, x]", "*a", "&a {k: *a}", "!!python/object/apply:os.system ['touch PWNED']", "!!binary aGk=",
    "!custom x", "[" * 300 + "]" * 300, "{" * 50, "key: value: more", "\t- tab", "- - - -",
    "? complex\n: key",
    "%YAML 1.1", "---", "...", "'unterminated", '"\\xZZ"', "|\n bad indent", ">-", "\x00", "\x1b[31m",
    "\u2028", "\x85", "\ufeff", "😀: 😀", "results: {}", "results: [1, 2]", "status: [active]",
    "path: /etc/passwd", "path: ../../x.py", "purpose: ''", "version: 2", "experiments: []", "x" * 100_000,
]  # fmt: skip
WHOLE = [
    b"", b"\xef\xbb\xbf", b"\xff\xfe\x00v", os.urandom(2048),
    b"version: 1\nexperiments:\n" + b"  a: &a\n" * 3,
    ("version: 1\nexperiments:\n  a:\n    path: a.py\n    status: active\n    purpose: A.\n    results:\n"
     "    - &l0 [x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"    - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 12))).encode(),
    b"version: 1\nexperiments:\n  a:\n    results:\n    - &s {me: *s}\n",
    b"version: 1\nexperiments: " + b"[" * 20_000,
    b"version: 1\nexperiments:\n  a:\n    path: a.py\n    status: active\n    purpose: "
    + b"p" * 5_000_000 + b"\n",
]  # fmt: skip
CHARS = (
    [chr(c) for c in range(32, 127)] * 4 + [chr(c) for c in range(0, 32)]
    + ["\x7f", "\x85", "\u2028", "\u2029",
    "\ufeff", "😀", "漢", "é", "\u0301", "\ud800", "\udcff", "#", ": ", " ", "  ", "\r\n", "'", '"', "\\"]
)  # fmt: skip


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def timed(call):
    """(outcome, value): ok / refused / traceback / hang."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    try:
        return "ok", call()
    except GrugError as error:
        return "refused", str(error)
    except Hang:
        return "hang", None
    except Exception as error:  # a traceback in the CLI
        return "traceback", repr(error)[:200]
    finally:
        signal.alarm(0)


# ---------------------------------------------------------------- concurrent writers

WRITER = """
import sys
from grugctl import archive
path, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for k in range(count):
    archive.add_entry(path, {"id": f"w{worker}-{k}", "path": f"x/w{worker}_{k}.py", "status": "active",
                             "purpose": f"Worker {worker} entry {k}."})
    archive.set_fields(path, f"w{worker}-{k}", notes=f"note {worker}/{k}")
"""


def concurrent_writers(folder: Path, procs: int, per_proc: int) -> dict:
    path = folder / "archive.yaml"
    path.write_text(VALID)
    start = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w), str(per_proc)], stderr=subprocess.PIPE
        )
        for w in range(procs)
    ]
    failed = sum(child.wait() != 0 for child in children)
    loaded = archive.load_archive(path).experiments
    lost = sum(
        f"w{w}-{k}" not in loaded or loaded[f"w{w}-{k}"].notes != f"note {w}/{k}"
        for w in range(procs)
        for k in range(per_proc)
    )
    return {"writers": procs, "writes": 2 * procs * per_proc, "lost": lost, "failed": failed,
            "seconds": time.perf_counter() - start}  # fmt: skip


def concurrent_new(trials: int, procs: int) -> dict:
    from repo_copy import make_repo

    violations = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = make_repo(Path(tmp))
        for trial in range(trials):
            idea = f"race-{trial}"
            command = [sys.executable, "-m", "grugctl.cli", "new", idea, "--purpose", "Race."]
            children = [
                subprocess.Popen(
                    command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
                for _ in range(procs)
            ]
            results = [(c.wait(), c.stderr.read()) for c in children]
            winners = sum(code == 0 for code, _ in results)
            clean = all(
                code == 0 or (code == 2 and len(err.strip().splitlines()) == 1) for code, err in results
            )
            registered = idea in archive.load_archive(root / "archive.yaml").experiments
            stem = "grugformer_" + idea.replace("-", "_")
            exists = (root / "experiments" / "speedrun" / stem / f"{stem}.py").is_file()
            violations += not (winners == 1 and clean and registered and exists)
    return {"trials": trials, "processes": procs, "violations": violations}


# ---------------------------------------------------------------- malformed archives


def mutate(rng: random.Random) -> bytes:
    data = VALID.encode()
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(WHOLE)
    lines = VALID.splitlines(keepends=True)
    at = rng.randrange(len(lines))
    if kind == 1:
        pos = rng.randrange(len(data))
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1 :]
    if kind == 2:
        return data[: rng.randrange(len(data))]
    if kind == 3:
        indent = " " * rng.choice([0, 2, 4, 6, 3])
        key = rng.choice(["", "notes: ", "results: ", "x: ", "- ", "purpose: "])
        lines.insert(at, f"{indent}{key}{rng.choice(SNIPPETS)}\n")
    elif kind == 4:
        lines.insert(at, lines[at])
    else:
        del lines[at]
    return "".join(lines).encode("utf-8", "surrogatepass")


def malformed(folder: Path, count: int, rng: random.Random) -> dict:
    counts = dict.fromkeys(["tried", "rejected", "valid", "traceback", "hang", "changed", "executed"], 0)
    examples = []
    path = folder / "archive.yaml"
    for _ in range(count):
        data = mutate(rng)
        path.write_bytes(data)
        counts["tried"] += 1
        outcome, detail = timed(lambda: archive.load_archive(path))
        if outcome == "ok":
            counts["valid"] += 1
            entry = next(iter(detail.experiments), None)
            if entry is not None:
                write, detail = timed(lambda e=entry: archive.set_fields(path, e, notes="fuzzed"))
                if write in ("traceback", "hang"):
                    counts[write] += 1
                    examples.append((write, detail, data[:120]))
                elif write == "ok":
                    after = timed(lambda: archive.load_archive(path))[0]
                    counts["traceback"] += after != "ok"
        elif outcome == "refused":
            counts["rejected"] += 1
            write, detail = timed(lambda: archive.set_fields(path, "qk-norm", notes="fuzzed"))
            counts["changed"] += path.read_bytes() != data
            if write in ("traceback", "hang"):
                counts[write] += 1
                examples.append((write, detail, data[:120]))
        else:
            counts[outcome] += 1
            examples.append((outcome, detail, data[:120]))
        counts["executed"] += (folder / "PWNED").exists()
    return counts | {"examples": examples[:5]}


# ---------------------------------------------------------------- values


def values(folder: Path, count: int, rng: random.Random) -> dict:
    counts = dict.fromkeys(["tried", "round-tripped", "refused", "broken"], 0)
    broken, reasons = [], {}
    path = folder / "archive.yaml"
    path.write_text(VALID)
    for _ in range(count):
        value = "".join(rng.choice(CHARS) for _ in range(rng.choice([0, 1, 2, 5, 20, 80, 300])))
        field = rng.choice(["notes", "issue", "purpose"])
        counts["tried"] += 1
        before = path.read_bytes()
        outcome, detail = timed(lambda v=value, f=field: archive.set_entry(path, "qk-norm", {f: v}))
        if outcome == "refused":
            counts["refused"] += 1
            reason = detail.split(": ", 1)[-1]
            reasons[reason] = reasons.get(reason, 0) + 1
            if path.read_bytes() != before:
                counts["broken"] += 1
            continue
        if outcome != "ok":
            counts["broken"] += 1
            broken.append((field, value[:40], detail))
            continue
        other = "issue" if field != "issue" else "notes"
        later = timed(lambda o=other: archive.set_entry(path, "qk-norm", {o: "later"}))[0]
        got = getattr(archive.load_archive(path).experiments["qk-norm"], field)
        if later == "ok" and got == value:
            counts["round-tripped"] += 1
        else:
            counts["broken"] += 1
            broken.append((field, value[:40], later, got))
    return counts | {"refused because": reasons, "examples": broken[:5]}


# ---------------------------------------------------------------- kills

# Writes in a loop. Killed from outside at a random moment (mostly inside ruamel: the journal's window is
# short), and with some chance it SIGKILLs itself at the two moments that matter: the journal is on disk
# but archive.yaml is not replaced yet, or archive.yaml is replaced but the journal not yet dropped.
KILLED_WRITER = """
import os, random, signal, sys
from grugctl import archive, transaction
path = sys.argv[1]
rng = random.Random(int(sys.argv[2]))
real = transaction.write_bytes
def write_bytes(target, data, mode=None):
    if target.name == "archive.yaml" and rng.random() < 0.3:
        if rng.random() < 0.5:
            os.kill(os.getpid(), signal.SIGKILL)
        real(target, data, mode)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(target, data, mode)
transaction.write_bytes = write_bytes
while True:
    archive.set_fields(path, "qk-norm", notes="x" * rng.randrange(1, 200_000))
    print("wrote", flush=True)
"""


def kill_writes(folder: Path, count: int, rng: random.Random) -> dict:
    counts = dict.fromkeys(["kills", "journals", "recovered", "invalid"], 0)
    path = folder / "archive.yaml"
    path.write_text(VALID)
    for trial in range(count):
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(path), str(trial)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(rng.randrange(1, 4)):  # a few writes in: the loop is warm, any moment is mid-write
            child.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        counts["kills"] += 1
        journal = transaction.interrupted(folder)
        if journal is not None:
            counts["journals"] += 1
            report = transaction.recover(folder)
            before = journal["saved"]["archive.yaml"][0]  # recovered means: these bytes exactly, no journal
            ok = report is not None and not report.failed and path.read_bytes() == before
            counts["recovered"] += ok and transaction.interrupted(folder) is None
        counts["invalid"] += timed(lambda: archive.load_archive(path))[0] != "ok"
    return counts


KILL_AFTER_COMMIT = """
import os, signal, sys
from grugctl.promotion import promote
promote._record_sha = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
from grugctl.cli import app
sys.argv = ["grugctl", *sys.argv[1:]]
app()
"""


def kill_promotes(count: int, rng: random.Random) -> dict:
    """Promote a GELU-MLP experiment and SIGKILL it at a random moment in the gate (or right after its
    commit); then `check --fast` must fail on the journal, and `recover` must restore every byte and the
    git state."""
    from repo_copy import commit_all, make_repo
    from test_promote import FAST_TEST, FAST_TEST_SOURCE, GELU, IDEA, gelu_experiment, git_state, snapshot

    def clean(root: Path) -> dict:  # every file but the caches `check` leaves (git-ignored)
        return {
            k: v for k, v in snapshot(root).items() if not k.startswith((".grugctl_cache/", ".ruff_cache/"))
        }

    counts = dict.fromkeys(["kills", "detected", "recovered"], 0)
    for trial in range(count):
        with tempfile.TemporaryDirectory() as tmp:
            root = make_repo(Path(tmp))
            (root / FAST_TEST).write_text(FAST_TEST_SOURCE)
            commit_all(root, "fast test")
            gelu_experiment(root)
            files, state = clean(root), git_state(root)
            env = {**os.environ, "GRUGCTL_GATE_TESTS": FAST_TEST, "NO_COLOR": "1"}
            after_commit = trial % 2 == 1
            args = ["promote", IDEA, "--yes", "--waive", "a write-path fuzz", "--commit"]
            if after_commit:
                command = [sys.executable, "-c", KILL_AFTER_COMMIT, *args]
            else:
                command = [sys.executable, "-m", "grugctl.cli", *args]
            child = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            if not after_commit:
                model = root / "grug_core" / "model.py"
                deadline = time.monotonic() + 60
                while GELU not in model.read_text() and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 3.0))
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=600)
            counts["kills"] += 1
            check_command = [sys.executable, "-m", "grugctl.cli", "check", "--fast", "--json"]
            check = subprocess.run(check_command, cwd=root, env=env, capture_output=True, text=True)
            journal = [c for c in json.loads(check.stdout)["checks"] if c["name"] == "journal"]
            counts["detected"] += check.returncode == 1 and journal[0]["status"] == "fail"
            subprocess.run([sys.executable, "-m", "grugctl.cli", "recover", "--yes"], cwd=root, env=env,
                           capture_output=True)  # fmt: skip
            counts["recovered"] += clean(root) == files and git_state(root) == state
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small counts (seconds), for the test suite.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--promote-kills", type=int, default=None, help="Default: 0 with --quick, else 4.")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    quick = args.quick
    promote_kills = args.promote_kills if args.promote_kills is not None else (0 if quick else 4)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report["concurrent writers"] = concurrent_writers(folder, 4 if quick else 16, 5 if quick else 25)
        report["concurrent new"] = concurrent_new(1 if quick else 5, 4 if quick else 8)
        shutil.rmtree(folder / ".grugctl.lock", ignore_errors=True)
        report["malformed archives"] = malformed(folder, 60 if quick else 1500, rng)
        report["values"] = values(folder, 60 if quick else 1000, rng)
        report["kills mid-write"] = kill_writes(folder, 3 if quick else 40, rng)
    if promote_kills:
        report["kills mid-promote"] = kill_promotes(promote_kills, rng)
    print(json.dumps(report, indent=1, default=repr))


if __name__ == "__main__":
    main()
