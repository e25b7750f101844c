"""Every write is a transaction: one repository lock, a journal written before the first change, atomic
replacement, rollback on any failure or signal, and `grugctl recover` after a SIGKILL. Races use real
concurrent processes, kills real signals, faults a real full disk and a real non-root user."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from archive_helpers import init_repo
from repo_copy import commit_all, make_repo
from test_diff import _invoke, edit_definition, experiment_file, starter_file
from test_promote import FAST_TEST, FAST_TEST_SOURCE, GELU, IDEA, SILU, gelu_experiment, git_state, snapshot

from grugctl import archive, transaction
from grugctl.promotion import gate

# These promotions test the write path, not the evidence: no seeds were run, so the gate is waived.
WAIVE = ("--waive", "the write path is under test, not the model")
SMALL = "version: 1\nexperiments:\n  qk-norm:\n    path: e/qk.py\n    status: active\n    purpose: QK norm.\n"


def grugctl(*args: str, cwd: Path, env: dict | None = None, user: str | None = None, timeout: float = 300):
    """grugctl in its own process (optionally as another user through setpriv)."""
    command = [sys.executable, "-m", "grugctl.cli", *args]
    if user is not None:
        import pwd

        account = pwd.getpwnam(user)
        ids = [f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
        command = ["setpriv", *ids, *command]
    full_env = {**os.environ, **(env or {}), "NO_COLOR": "1"}
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def tracked_files(root: Path) -> dict[str, str]:
    """snapshot() without the caches `grugctl check` leaves (git-ignored)."""
    return {k: v for k, v in snapshot(root).items() if not k.startswith((".grugctl_cache/", ".ruff_cache/"))}


def one_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


# ---------------------------------------------------------------------------------------------------
# the transaction itself


def test_an_exception_rolls_back_every_file_and_folder(tmp_path):
    init_repo(tmp_path)
    (tmp_path / "a.txt").write_bytes(b"a\r\n\x00")
    (tmp_path / "b.txt").write_bytes(b"b")
    os.chmod(tmp_path / "b.txt", 0o600)
    with pytest.raises(RuntimeError), transaction.transaction(tmp_path, "test") as txn:
        transaction.write(txn, "a.txt", b"changed")
        transaction.write(txn, "new/deep/c.txt", b"created")
        transaction.remove(txn, "b.txt")
        journal = json.loads((tmp_path / ".git" / "grugctl" / "journal.json").read_text())
        assert set(journal["files"]) == {"a.txt", "new/deep/c.txt", "b.txt"}
        assert journal["files"]["new/deep/c.txt"] is None and journal["pid"] == os.getpid()
        raise RuntimeError("boom")
    assert (tmp_path / "a.txt").read_bytes() == b"a\r\n\x00"
    assert (tmp_path / "b.txt").read_bytes() == b"b" and (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / ".git" / "grugctl" / "journal.json").exists()


def test_outside_git_the_lock_and_journal_live_beside_the_archive(tmp_path):
    path = tmp_path / "archive.yaml"
    path.write_text(SMALL)
    assert transaction.state_dir(tmp_path) == tmp_path
    archive.set_fields(path, "qk-norm", notes="x")
    assert (tmp_path / ".grugctl.lock").exists() and not (tmp_path / ".grugctl.journal").exists()


def test_the_lock_times_out_with_one_sentence_naming_the_holder(tmp_path):
    init_repo(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from grugctl import transaction
            with transaction.transaction({str(tmp_path)!r}, "grugctl promote slow"):
                print("held", flush=True)
                time.sleep(30)
            """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(archive.GrugError, match=r"`grugctl promote slow` \(pid \d+\) has held the repo"):
            with transaction.transaction(tmp_path, "second", timeout=0.5):
                pass
        assert time.monotonic() - start < 5
        assert transaction.interrupted(tmp_path) is None  # a live holder's work is not stale
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------------------------------------
# races between real processes


def test_concurrent_new_with_one_id_has_one_winner_and_keeps_its_file(repo):
    """Several trials of 6 processes creating the same id: one wins; the others exit 2 with one line; the
    file exists exactly when the entry does."""
    for trial in range(3):
        idea = f"race-{trial}"
        args = ["new", idea, "--bucket", "mlp", "--purpose", "Race for one id."]
        command = [sys.executable, "-m", "grugctl.cli", *args]
        procs = [
            subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(6)
        ]
        outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        winners = [o for o in outcomes if o[0] == 0]
        assert len(winners) == 1, outcomes
        for code, _, stderr in outcomes:
            if code != 0:
                assert code == 2 and "Traceback" not in stderr, stderr
                lines = stderr.strip().splitlines()
                assert len(lines) == 1 and "already exists" in lines[0], stderr
        loaded = archive.load_archive(repo / "archive.yaml")
        assert idea in loaded.experiments
        assert experiment_file(repo, idea).is_file()
        assert transaction.interrupted(repo) is None


def _edit_experiment(root: Path, idea: str, new: str) -> None:
    result = _invoke(root, ["new", idea, "--bucket", "mlp", "--purpose", f"Try {new} in the MLP."])
    assert result.exit_code == 0, result.output
    edit_definition(experiment_file(root, idea), "mlp", SILU, new)


@pytest.mark.slow
def test_two_concurrent_promotes_leave_only_what_the_successful_one_wrote(repo):
    """gelu-mlp passes the gate; broken-mlp fails it. Run at once, the lock serialises them: the tree
    ends exactly as gelu-mlp's promotion alone leaves it, whichever went first."""
    (repo / FAST_TEST).write_text(FAST_TEST_SOURCE)
    _edit_experiment(repo, IDEA, GELU)
    _edit_experiment(repo, "broken-mlp", "undefined_activation(")
    commit_all(repo, "two experiments")
    before = snapshot(repo)
    env = {gate.GATE_TESTS_ENV: FAST_TEST, "GRUGCTL_LOCK_TIMEOUT_S": "600"}
    command = lambda idea: [sys.executable, "-m", "grugctl.cli", "promote", idea, "--yes", *WAIVE]
    procs = {
        idea: subprocess.Popen(
            command(idea),
            cwd=repo,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for idea in (IDEA, "broken-mlp")
    }
    outputs = {idea: p.communicate(timeout=400)[0] for idea, p in procs.items()}
    assert procs[IDEA].returncode == 0, outputs[IDEA]
    assert procs["broken-mlp"].returncode in (1, 2), outputs["broken-mlp"]
    assert "Traceback" not in outputs["broken-mlp"]
    model = (repo / "grug_core" / "model.py").read_text()
    assert GELU in model and "undefined_activation" not in model
    starter = starter_file(repo).read_text()
    assert GELU in starter and "undefined_activation" not in starter
    after = snapshot(repo)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == {"grug_core/model.py", starter_file(repo).relative_to(repo).as_posix(), "archive.yaml"}
    loaded = archive.load_archive(repo / "archive.yaml")
    assert loaded.experiments[IDEA].status == "superseded"
    assert loaded.experiments["broken-mlp"].status == "active"
    assert transaction.interrupted(repo) is None


# ---------------------------------------------------------------------------------------------------
# SIGKILL: detection and recovery


def _kill_during_gate(repo: Path, *extra: str) -> None:
    model = repo / "grug_core" / "model.py"
    child = subprocess.Popen(
        [sys.executable, "-m", "grugctl.cli", "promote", IDEA, "--yes", *WAIVE, *extra], cwd=repo,
        env={**os.environ, gate.GATE_TESTS_ENV: FAST_TEST}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while GELU not in model.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert GELU in model.read_text(), "the splice never happened"
    time.sleep(0.5)  # inside the gate now
    os.killpg(child.pid, signal.SIGKILL)  # the process and its gate children: nothing can clean up
    child.wait(timeout=30)


def test_sigkill_during_the_gate_is_detected_and_recover_restores_every_byte(repo):
    (repo / FAST_TEST).write_text(FAST_TEST_SOURCE)
    gelu_experiment(repo)
    files, state = tracked_files(repo), git_state(repo)
    _kill_during_gate(repo, "--delete")
    assert tracked_files(repo) != files  # half-done: the core is spliced, the archive says active

    status = grugctl("archive", "status", cwd=repo)
    assert status.returncode == 0 and "grugctl recover" in status.stderr, status.stderr
    diff = grugctl("diff", IDEA, cwd=repo)
    assert "grugctl recover" in diff.stderr
    check = grugctl("check", "--fast", "--json", cwd=repo)
    assert check.returncode == 1
    journal = next(c for c in json.loads(check.stdout)["checks"] if c["name"] == "journal")
    assert journal["status"] == "fail" and "grugctl recover" in journal["message"]
    refused = grugctl("archive", "set", IDEA, "--notes", "x", cwd=repo)
    assert refused.returncode == 2
    assert f"`grugctl promote {IDEA}` (pid" in one_line(refused) and "grugctl recover" in refused.stderr

    dry = grugctl("recover", "--dry-run", cwd=repo)
    assert dry.returncode == 0 and "would restore grug_core/model.py" in dry.stdout, dry.stdout
    assert tracked_files(repo) != files
    done = grugctl("recover", "--yes", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "restored grug_core/model.py" in done.stdout
    assert tracked_files(repo) == files and git_state(repo) == state
    assert grugctl("recover", cwd=repo).stdout.startswith("nothing to recover")
    after = json.loads(grugctl("check", "--fast", "--json", cwd=repo).stdout)["checks"]
    assert next(c for c in after if c["name"] == "journal")["status"] == "pass"


# The child kills itself with a real SIGKILL right after the promotion commit exists, before archive.yaml
# records its SHA: HEAD is on the new branch, which holds a commit.
KILL_AFTER_COMMIT = """
import os, signal, sys
from grugctl.promotion import promote
promote._record_sha = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
from grugctl.cli import app
sys.argv = ["grugctl", *sys.argv[1:]]
app()
"""


@pytest.mark.slow
def test_sigkill_after_the_promotion_commit_is_recovered_branch_and_all(repo):
    (repo / FAST_TEST).write_text(FAST_TEST_SOURCE)
    commit_all(repo, "fast test")
    gelu_experiment(repo)
    files, state = snapshot(repo), git_state(repo)
    done = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_COMMIT, "promote", IDEA, "--yes", *WAIVE, "--commit", "--delete"],
        cwd=repo, env={**os.environ, gate.GATE_TESTS_ENV: FAST_TEST}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert git_state(repo)[1] == f"promote/{IDEA}"
    recovered = grugctl("recover", "--yes", cwd=repo)
    assert recovered.returncode == 0, recovered.stderr
    assert f"ran git branch -D promote/{IDEA}" in recovered.stdout
    assert snapshot(repo) == files and git_state(repo) == state


def test_sigterm_inside_any_writer_rolls_back(tmp_path):
    """A transaction turns SIGTERM into an interruption that rolls back, like Ctrl-C."""
    init_repo(tmp_path)
    (tmp_path / "a.txt").write_text("original")
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from grugctl import transaction
            with transaction.transaction({str(tmp_path)!r}, "test") as txn:
                transaction.write(txn, "a.txt", b"half")
                print("written", flush=True)
                time.sleep(30)
            """)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout.readline().strip() == "written"
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    assert (tmp_path / "a.txt").read_text() == "original"
    assert transaction.read_journal(tmp_path / ".git" / "grugctl") is None


# ---------------------------------------------------------------------------------------------------
# faults: a full disk, a read-only file system, a user without permissions


@pytest.fixture()
def small_disk():
    """A 1 MiB tmpfs (needs root and a kernel that lets this process mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; ENOSPC and EROFS are not tested as this user")
    mount = Path(tempfile.mkdtemp(prefix="grugctl-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
    mount.rmdir()


def _fill(disk: Path, leave: int) -> None:
    """Fill the disk, then free `leave` bytes."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))


@pytest.mark.parametrize("leave", [8 << 10, 110 << 10])  # the journal does not fit / the new file does not
def test_a_full_disk_is_one_sentence_and_changes_nothing(small_disk, leave):
    path = small_disk / "archive.yaml"
    data = (SMALL + "    notes: |\n" + "      padding line\n" * 3000).encode()
    path.write_bytes(data)
    _fill(small_disk, leave)
    done = grugctl("archive", "set", "qk-norm", "--notes", "n" * (100 << 10), cwd=small_disk)
    assert done.returncode == 2
    line = one_line(done)
    assert "the disk is full" in line and ("journal" in line or "archive.yaml" in line), line
    assert path.read_bytes() == data
    leftovers = sorted(p.name for p in small_disk.iterdir())
    assert leftovers == [".grugctl.lock", "archive.yaml", "filler"], leftovers


def test_a_read_only_file_system_is_one_sentence(small_disk):
    path = small_disk / "archive.yaml"
    path.write_text(SMALL)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = grugctl("archive", "set", "qk-norm", "--notes", "x", cwd=small_disk)
    assert done.returncode == 2 and "the file system is read-only" in one_line(done)
    assert path.read_text() == SMALL


@pytest.fixture()
def nobody_dir():
    """A folder owned by the unprivileged user `nobody`, and that user's name (skips without one)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as an unprivileged user")
    try:
        import pwd

        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user `nobody` on this machine")
    # A clone under a private folder (a 0700 home) keeps its interpreter and code out of nobody's reach.
    reach = grugctl("--version", cwd=Path(tempfile.gettempdir()), user="nobody")
    if reach.returncode != 0:
        pytest.skip("user `nobody` cannot run this checkout's Python (is it under a private folder?)")
    folder = Path(tempfile.mkdtemp(prefix="grugctl-nobody-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(folder: Path) -> None:
    subprocess.run(["chown", "-R", "nobody:", str(folder)], check=True)


def test_an_unreadable_archive_is_one_sentence(nobody_dir):
    path = nobody_dir / "archive.yaml"
    path.write_text(SMALL)
    _as_nobody(nobody_dir)
    path.chmod(0)
    done = grugctl("archive", "status", cwd=nobody_dir, user="nobody", env={"HOME": str(nobody_dir)})
    assert done.returncode == 2 and "permission denied" in one_line(done), done.stderr


def test_a_read_only_repository_with_a_lock_file_is_one_sentence(nobody_dir):
    path = nobody_dir / "archive.yaml"
    path.write_text(SMALL)
    archive.set_fields(path, "qk-norm", notes="by root")  # leaves root's lock file behind
    data = path.read_bytes()
    nobody_dir.chmod(0o755)  # root's folder: nobody may read, not write
    done = grugctl("archive", "set", "qk-norm", "--notes", "x", cwd=nobody_dir, user="nobody")
    assert done.returncode == 2 and "permission denied" in one_line(done), done.stderr
    assert path.read_bytes() == data


def test_new_into_a_read_only_experiments_folder_is_one_sentence(tmp_path, nobody_dir):
    repo = make_repo(tmp_path)
    shutil.move(repo, nobody_dir / "repo")
    repo = nobody_dir / "repo"
    _as_nobody(repo)
    (repo / "experiments" / "speedrun").chmod(0o555)
    before = snapshot(repo)
    env = {"HOME": str(nobody_dir), "GIT_CONFIG_GLOBAL": "/dev/null"}
    done = grugctl("new", "blocked", "--purpose", "Cannot be written.", cwd=repo, user="nobody", env=env)
    assert done.returncode == 2 and "permission denied" in one_line(done), done.stderr
    assert snapshot(repo) == before
    assert transaction.interrupted(repo) is None


# ---------------------------------------------------------------------------------------------------
# a run's record and its archive row land together


# The child is a real `grugctl run --smoke --record`; its archive edit is replaced by a real SIGKILL (or by
# an exception), so the record file is written and the row never is.
RUN_THEN = """
import os, signal, sys
from grugctl.runs import runner
how = sys.argv[1]
def append_result(*args, **kwargs):
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("the archive edit failed")
runner.append_result = append_result
from grugctl.cli import app
sys.argv = ["grugctl", "run", "grugformer-starter", "--smoke", "--record"]
app()
"""


def _runs(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in (root / "runs").rglob("*.json") if ".scratch" not in p.parts
    )


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "raise"])
def test_a_run_record_and_its_archive_row_land_together_or_not_at_all(repo, how):
    before, records_before = (
        (repo / "archive.yaml").read_bytes(),
        _runs(repo) if (repo / "runs").exists() else [],
    )
    done = subprocess.run([sys.executable, "-c", RUN_THEN, how], cwd=repo, capture_output=True, text=True)
    if how == "kill":
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert len(_runs(repo)) == len(records_before) + 1  # the record landed, the row did not
        assert transaction.interrupted(repo) is not None
        assert grugctl("recover", "--yes", cwd=repo).returncode == 0
    else:
        assert done.returncode != 0 and "the archive edit failed" in done.stderr
    assert (repo / "archive.yaml").read_bytes() == before
    assert (_runs(repo) if (repo / "runs").exists() else []) == records_before
    assert transaction.interrupted(repo) is None
