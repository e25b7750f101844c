"""Preemption and exact resume through `grugctl run`: a run stopped by SIGTERM (checkpoint, exit 75, one
line) or killed by SIGKILL, then resumed with --resume, records the same curve as a run never stopped."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from repo_copy import make_repo

STARTER = "grugformer-starter"
RUN = ["run", STARTER, "--smoke", "--record", "--steps", "1200", "--checkpoint-every", "100", "--json"]


def grugctl(root, *args, **popen):
    return subprocess.Popen([sys.executable, "-m", "grugctl.cli", *args], cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # fmt: skip


def finished(root, *args) -> dict:
    done = grugctl(root, *args)
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr[-3000:]
    (row,) = json.loads(stdout)
    return json.loads((root / row["record"]).read_text())


def wait_for_checkpoint(folder, at_least: int, process) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        steps = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.exists() else []
        if steps and max(steps) >= at_least:
            return
        time.sleep(0.05)
    pytest.fail(f"no checkpoint of step {at_least} appeared: {process.communicate()[1][-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_a_stopped_run_resumes_to_the_curve_of_a_run_never_stopped(tmp_path, stop):
    root = make_repo(tmp_path)
    whole = finished(root, *RUN, "--checkpoint-dir", "whole")
    assert whole["checkpoint"] == {"dir": f"whole/{STARTER}/smoke-seed0", "step": 1200}
    assert whole["resumed_from"] is None

    folder = root / "stopped" / STARTER / "smoke-seed0"
    run = grugctl(root, *RUN, "--checkpoint-dir", "stopped")
    wait_for_checkpoint(folder, 300, run)
    if stop == "SIGTERM":  # what a scheduler or a spot preemption sends: the checkpoint, then exit 75
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 75, stderr[-3000:]
        lines = stderr.strip().splitlines()
        assert lines[-1].startswith("error: 'grugformer-starter' seed 0 was stopped by SIGTERM after saving")
        assert "--resume" in lines[-1] and "Traceback" not in stderr
    else:  # the machine vanished: the latest finished checkpoint is the one to go on from
        (child,) = [
            p for p in psutil.Process(run.pid).children() if "grugformer_speedrun" in " ".join(p.cmdline())
        ]
        child.send_signal(signal.SIGKILL)
        run.communicate(timeout=120)
        assert run.returncode != 0
    stopped_at = max(int(p.name) for p in folder.glob("*") if p.name.isdigit())
    assert 300 <= stopped_at < 1200
    archive_before = (root / "archive.yaml").read_text()
    assert "stopped" not in archive_before  # nothing recorded for the stopped run

    resumed = finished(root, *RUN, "--checkpoint-dir", "stopped", "--resume")
    assert resumed["resumed_from"] == stopped_at and resumed["checkpoint"]["step"] == 1200
    assert resumed["train_curve"] == whole["train_curve"]
    assert [p["val_loss"] for p in resumed["eval_curve"]] == [p["val_loss"] for p in whole["eval_curve"]]
    assert resumed["metrics"]["val_bpb"] == whole["metrics"]["val_bpb"]


def test_resume_without_checkpoints_and_a_reused_folder_are_one_sentence(tmp_path):
    root = make_repo(tmp_path)
    done = grugctl(root, "run", STARTER, "--smoke", "--resume")
    _, stderr = done.communicate(timeout=300)
    assert done.returncode == 2 and stderr.strip().splitlines()[-1].endswith(
        "--resume needs --checkpoint-every N (the interval the run saves at)"
    )
    args = ["run", STARTER, "--smoke", "--steps", "4", "--checkpoint-every", "2"]
    first = grugctl(root, *args)
    first.communicate(timeout=300)
    assert first.returncode == 0
    again = grugctl(root, *args)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 2, stderr[-2000:]
    assert "already holds checkpoints of this run (up to step 4); pass --resume" in stderr
    assert os.path.isdir(root / "checkpoints" / STARTER / "smoke-seed0" / "4")
