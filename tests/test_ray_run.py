"""`grugctl run --ray` for real: one local Ray instance for this module, bound to 127.0.0.1 and stopped at
the end; grugctl runs as its own process and joins it with --ray-address, as it would a cluster."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from foreground import DEFAULT_SIGINT_THEN_GRUGCTL
from test_diff import _invoke, commit_all, make_repo, new_experiment

STARTER = "grugformer-starter"
GRUGCTL = Path(sys.executable).parent / "grugctl"
BROKEN = 'raise RuntimeError("deliberately broken for the test")'


def listening_addresses(pids: set[int]) -> set[str]:
    return {
        conn.laddr.ip.removeprefix("::ffff:")
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    }


@pytest.fixture(scope="module")
def ray_address():
    # As grugctl does for its own local instances (rayrun.start_ray): Ray keeps to loopback only when
    # this is set before it is imported.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    # Two CPUs: the machine's, and enough for two runs at once, so some records say the host was shared.
    ray.init(
        address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2,
        logging_level="error", log_to_driver=False,
    )  # fmt: skip
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    instance = {child.pid for child in psutil.Process().children(recursive=True)}
    assert listening_addresses(instance | {os.getpid()}) == {"127.0.0.1"}
    yield address
    ray.shutdown()
    os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    # Shutdown signals the instance's processes and returns; on a loaded machine they take seconds to go
    # (two outlived 30 s once while the suite's training tests held both cores), so wait for them: a
    # process that never goes still fails.
    alive = [psutil.Process(pid) for pid in instance if psutil.pid_exists(pid)]
    _, still = psutil.wait_procs(alive, timeout=120)
    assert not [process.pid for process in still if not gone_or_zombie(process)]
    with pytest.raises(OSError):  # the instance is gone: nothing listens on its port any more
        socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=2).close()


def gone_or_zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # it exited between the wait and this look
        return True


def grugctl(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GRUGCTL), *args], cwd=root, capture_output=True, text=True, timeout=600, env=os.environ.copy()
    )


def training_children(process) -> list:
    """Descendants of `process` that run an experiment file (processes may exit while we look)."""
    found = []
    for child in process.children(recursive=True):
        try:
            if any("grugformer_speedrun.py" in part for part in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def rows(root: Path, entry_id: str) -> list[dict]:
    return yaml.safe_load((root / "archive.yaml").read_text())["experiments"][entry_id].get("results") or []


@pytest.mark.slow
def test_two_experiments_two_seeds_land_while_a_broken_one_is_recorded_failed_and_retried(
    tmp_path, ray_address
):
    root = make_repo(tmp_path)
    new_experiment(root, "relu-squared")
    broken = new_experiment(root, "broken")
    # It fails as it starts, before importing JAX, which keeps its four attempts cheap.
    broken.write_text(broken.read_text().replace("\nimport argparse\n", f"\n{BROKEN}\nimport argparse\n", 1))
    commit_all(root, "break one experiment")
    before = {entry: len(rows(root, entry)) for entry in (STARTER, "relu-squared", "broken")}

    args = ["run", STARTER, "relu-squared", "broken", "--smoke", "--record", "--seeds", "2"]
    result = grugctl(root, *args, "--ray-address", ray_address, "--retries", "1")

    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert "2 run(s) failed after 1 retries (broken seed 0, broken seed 1)" in result.stderr
    assert "\x1b" not in result.stderr  # the workers' lines, relayed through a pipe, carry no colour codes
    assert "the other 4 run(s) landed" in result.stderr
    landed = [row for entry in (STARTER, "relu-squared") for row in rows(root, entry)[before[entry] :]]
    assert len(landed) == 4 and all(row.get("status") is None for row in landed)
    assert sorted((row["record"].split("/")[1], row["seed"]) for row in landed) == [
        ("grugformer-starter", 0), ("grugformer-starter", 1), ("relu-squared", 0), ("relu-squared", 1),
    ]  # fmt: skip
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout
    for row in landed:
        record = json.loads((root / row["record"]).read_text())
        assert record["git"]["commit"] == head.strip() and record["git"]["dirty"] is False
        assert record["metrics"]["steps"] == 2 and record["mesh"] == {"data": 1, "model": 1}
        assert isinstance(record["shared_host"], bool)
    # Two CPUs, one per task: runs overlapped on this one machine, and their records say so.
    assert any(row.get("shared_host") for row in landed)

    failed = rows(root, "broken")[before["broken"] :]
    assert sorted((row["seed"], row["attempt"]) for row in failed) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for row in failed:
        assert row["status"] == "failed" and row["exit_code"] == 1 and "-failed" in row["record"]
        record = json.loads((root / row["record"]).read_text())
        assert "deliberately broken for the test" in record["log_tail"]
    # Workers never touched the repository: only the driver's records and archive rows are new.
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
    changed = sorted(line[3:] for line in status.stdout.splitlines())
    assert changed[0] == "archive.yaml" and changed[1:] and all(p.startswith("runs/") for p in changed[1:])


def test_a_dirty_tree_is_refused_before_anything_ships(tmp_path):
    root = make_repo(tmp_path)
    starter = next((root / "experiments/speedrun/grugformer_starter").glob("*.py"))
    starter.write_text(starter.read_text() + "\n# an uncommitted edit\n")
    before = (root / "archive.yaml").read_bytes()
    runs_before = sorted((root / "runs").rglob("*"))
    result = _invoke(root, ["run", STARTER, "--smoke", "--record", "--ray"])
    assert result.exit_code == 2
    assert "uncommitted changes (experiments/speedrun/grugformer_starter/" in result.output
    assert "--allow-dirty" in result.output
    assert (root / "archive.yaml").read_bytes() == before and sorted(
        (root / "runs").rglob("*")
    ) == runs_before


def test_commands_other_than_run_ray_import_neither_ray_nor_jax(tmp_path):
    root = make_repo(tmp_path)
    probe = (
        "import sys; from typer.testing import CliRunner; from grugctl.cli import app\n"
        "for args in (['archive', 'status'], ['run', '--help'], ['diff', 'grugformer-starter']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "print(sorted(m for m in ('ray', 'jax') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_ray_options_without_ray_are_refused(tmp_path):
    root = make_repo(tmp_path)
    result = _invoke(root, ["run", STARTER, "--smoke", "--retries", "2", "--allow-dirty"])
    assert result.exit_code == 2
    assert "--retries, --allow-dirty only apply to Ray runs; add --ray" in result.output


@pytest.mark.slow
def test_ctrl_c_cancels_the_running_tasks_and_keeps_what_finished(tmp_path, ray_address):
    root = make_repo(tmp_path)
    log = (tmp_path / "driver.log").open("w")
    # Two CPUs a task on a two-CPU instance: the three seeds run one after another.
    args = ["run", STARTER, "--smoke", "--record", "--seeds", "3", "--cpus-per-run", "2"]
    driver = subprocess.Popen(
        [sys.executable, "-c", DEFAULT_SIGINT_THEN_GRUGCTL, *args, "--ray-address", ray_address], cwd=root,
        stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    first = driver.stdout.readline()  # printed when the first seed's record has landed
    assert "recorded in runs/grugformer-starter/" in first, first
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=120) == 130
    log.close()
    assert (
        "interrupted: 1 run(s) finished and were recorded, 2 cancelled"
        in (tmp_path / "driver.log").read_text()
    )
    landed = rows(root, STARTER)[-1]
    assert landed["record"] in first and (root / landed["record"]).is_file()
    assert len([row for row in rows(root, STARTER) if row.get("smoke")]) == 1
    # The cancelled task took its training child down with it.
    children = lambda: training_children(psutil.Process())
    deadline = time.time() + 30
    while children() and time.time() < deadline:
        time.sleep(0.5)
    assert not children()


def test_an_unreachable_cluster_is_one_sentence_at_once(tmp_path):
    root = make_repo(tmp_path)
    before = (root / "archive.yaml").read_bytes()
    start = time.time()
    # Port 1 on loopback: nothing listens there, and nothing leaves this machine.
    result = _invoke(root, ["run", STARTER, "--smoke", "--ray-address", "127.0.0.1:1"])
    assert result.exit_code == 2 and time.time() - start < 10
    assert result.stderr.strip().splitlines() == [
        "error: cannot reach a Ray cluster at 127.0.0.1:1 (Connection refused); check the address "
        "(`ray status` on the head node prints it) or leave out --ray-address for a local instance"
    ]
    assert (root / "archive.yaml").read_bytes() == before
