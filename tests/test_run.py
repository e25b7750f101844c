"""The starter speedrun and `grugctl run`: real training on the real corpus with the smoke config."""

import json
import subprocess
import sys

import git
import pytest
import yaml
from foreground import DEFAULT_SIGINT_THEN_GRUGCTL
from test_diff import _invoke, commit_all, edit_definition, make_repo, new_experiment, starter_file

from grugctl.runs.results import RESULT_KEYS


def run_starter(root, *args):
    return subprocess.run(
        [sys.executable, str(starter_file(root)), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def experiments(root):
    return yaml.safe_load((root / "archive.yaml").read_text())["experiments"]


@pytest.mark.slow
def test_a_few_dozen_steps_lower_validation_loss(tmp_path):
    root = make_repo(tmp_path)
    out = tmp_path / "short.json"
    result = run_starter(root, "--smoke", "--steps", "40", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    curve = json.loads(out.read_text())["curve"]
    assert curve[0]["step"] == 2 and curve[-1]["step"] == 40
    assert curve[-1]["val_loss"] < curve[0]["val_loss"] - 0.5, curve


@pytest.mark.slow
def test_a_shortened_run_still_evaluates_about_ten_times(tmp_path):
    out = tmp_path / "short.json"
    result = run_starter(make_repo(tmp_path), "--steps", "20", "--out", str(out))  # full config, 20 steps
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p["step"] for p in json.loads(out.read_text())["curve"]] == list(range(2, 21, 2))


@pytest.mark.slow
def test_grugctl_run_smoke_records_every_seed_with_a_tracked_record(tmp_path):
    root = make_repo(tmp_path)
    earlier = experiments(root)["grugformer-starter"].get("results", [])
    args = ["run", "grugformer-starter", "--smoke", "--record", "--seed", "3", "--seeds", "2"]
    result = _invoke(root, args)
    assert result.exit_code == 0, result.output
    rows = experiments(root)["grugformer-starter"]["results"]
    assert rows[: len(earlier)] == earlier  # appended, nothing earlier rewritten
    rows = rows[len(earlier) :]
    repo = git.Repo(root)
    head = repo.head.commit.hexsha
    assert [r["seed"] for r in rows] == [3, 4]
    for row in rows:
        assert row["commit"] == head[:12] and row["dirty"] is False
        assert row["smoke"] is True and row["steps"] == 2
        assert row["record"].startswith("runs/grugformer-starter/") and row["record"].endswith(".json")
        record = json.loads((root / row["record"]).read_text())
        assert record["experiment"] == "grugformer-starter" and record["git"]["commit"] == head
        assert record["git"]["patch"] is None and row["code"] == record["git"]["code"][:12]
        assert len(record["git"]["experiment_blob"]) == 40  # the exact file, beside its code id
        assert record["git"]["core_tree"] == repo.head.commit.tree["grug_core"].hexsha
        assert row["core"] == record["git"]["core_tree"][:12]  # compare's wall-time key
        assert record["seed"] == row["seed"] and record["eval_curve"][-1]["step"] == 2
        assert record["config"]["model"]["vocab_size"] == 256 and record["metrics"]["val_bpb"] > 0
        assert row["config"] == record["config_hash"] and row["host"] == record["host"]["id"]
        assert {"cpu", "cores", "accelerator", "accelerator_count", "jax_version", "load_avg"} <= set(
            record["host"]
        )
        assert len((root / row["record"]).read_bytes()) < 20_000
    # The records are not ignored: a commit takes them, so a fresh clone can read them.
    assert not repo.ignored(*[r["record"] for r in rows])
    # The seed recorded first did not make the second one dirty.
    assert all(r["dirty"] is False for r in rows)


def test_smoke_runs_stay_out_of_the_records_unless_asked(tmp_path):
    root = make_repo(tmp_path)
    before = (root / "archive.yaml").read_bytes()
    result = _invoke(root, ["run", "grugformer-starter", "--smoke", "--json"])
    assert result.exit_code == 0, result.output
    assert (root / "archive.yaml").read_bytes() == before
    assert not (root / "runs" / "grugformer-starter").exists()
    (summary,) = json.loads(result.stdout)
    assert summary["recorded"] is False and summary["record"].startswith("runs/.scratch/")
    # The child's full results (kept in the ignored scratch folder) hold every key grugctl relies on.
    assert set(RESULT_KEYS) <= set(json.loads((root / summary["record"]).read_text()))


@pytest.mark.slow
def test_a_dirty_run_records_the_patch_that_reproduces_it(tmp_path):
    root = make_repo(tmp_path)
    path = new_experiment(root, "wider-mlp", "--bucket", "mlp")
    path.write_text(path.read_text() + "\n# an uncommitted edit\n")
    result = _invoke(root, ["run", "wider-mlp", "--smoke", "--record"])
    assert result.exit_code == 0, result.output
    (row,) = experiments(root)["wider-mlp"]["results"]
    record = json.loads((root / row["record"]).read_text())
    assert row["dirty"] is True and record["git"]["dirty"] is True
    assert f"+++ b/{path.relative_to(root).as_posix()}" in record["git"]["patch"]
    assert "+# an uncommitted edit" in record["git"]["patch"]


def test_a_failing_experiment_records_nothing_and_exits_1(tmp_path):
    root = make_repo(tmp_path)
    path = new_experiment(root, "broken-loss", "--bucket", "loss")
    edit_definition(path, "next_token_loss", "h_blocks, label_blocks", "h_blocks, label_blocks, oops")
    commit_all(root, "break it")
    before = (root / "archive.yaml").read_bytes()
    result = _invoke(root, ["run", "broken-loss", "--smoke"])
    assert result.exit_code == 1
    assert "failed with exit code" in result.output and "nothing recorded" in result.output
    assert (root / "archive.yaml").read_bytes() == before


def test_unknown_and_deleted_ids_exit_2(tmp_path):
    root = make_repo(tmp_path)
    result = _invoke(root, ["run", "grugformer-startr"])
    assert result.exit_code == 2 and "did you mean 'grugformer-starter'" in result.output
    new_experiment(root, "gone")
    assert _invoke(root, ["archive", "set", "gone", "--status", "deleted"]).exit_code == 0
    result = _invoke(root, ["run", "gone", "--smoke"])
    assert result.exit_code == 2 and "is deleted" in result.output


def load_starter_module(root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("starter_under_test", starter_file(root))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_the_crossing_is_interpolated_between_evaluations_and_evaluation_densifies_near_the_target():
    from pathlib import Path

    starter = load_starter_module(Path(__file__).resolve().parents[1])
    cfg = starter.SpeedrunConfig()
    before = {"step": 300, "tokens": 300 * 4096, "train_seconds": 150.0, "val_bpb": 2.72}
    after = {"step": 310, "tokens": 310 * 4096, "train_seconds": 155.0, "val_bpb": 2.68}
    crossed = starter.crossing(before, after, 2.7)
    assert crossed == {"steps": 305.0, "tokens": 305 * 4096, "seconds": 152.5}
    # Every eval_every steps; every dense_eval_every steps within dense_eval_margin of the target,
    # until it is reached.
    assert starter.eval_due(50, None, False, cfg) and not starter.eval_due(60, None, False, cfg)
    assert starter.eval_due(60, cfg.target_val_bpb + 0.05, False, cfg)
    assert not starter.eval_due(60, cfg.target_val_bpb + 0.5, False, cfg)
    assert not starter.eval_due(60, cfg.target_val_bpb - 0.01, True, cfg)
    assert not starter.eval_due(65, cfg.target_val_bpb + 0.05, False, cfg)


@pytest.mark.slow
def test_paired_runs_alternate_the_baseline_and_mark_the_pairs(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, "wider-mlp", "--bucket", "mlp")
    rows_before = {entry_id: len(entry.get("results") or []) for entry_id, entry in experiments(root).items()}
    # Naming the baseline as well is the same paired run.
    args = [
        "run",
        "wider-mlp",
        "grugformer-starter",
        "--paired",
        "--seeds",
        "2",
        "--smoke",
        "--record",
        "--json",
    ]
    result = _invoke(root, args)
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    # Seed 0: baseline first; seed 1: the candidate first, so drift over the session cancels.
    assert [(r["id"], r["seed"]) for r in runs] == [
        ("grugformer-starter", 0), ("wider-mlp", 0), ("wider-mlp", 1), ("grugformer-starter", 1),
    ]  # fmt: skip
    assert runs[0]["pair"] == runs[1]["pair"] != runs[2]["pair"] == runs[3]["pair"]
    assert runs[0]["host"] == runs[1]["host"]
    for entry_id in ("grugformer-starter", "wider-mlp"):
        new_rows = experiments(root)[entry_id]["results"][rows_before[entry_id] :]
        assert [r["pair"] for r in new_rows] == [runs[0]["pair"], runs[2]["pair"]]
    # The hint names compare for the candidate alone: the paired baseline is compare's own default.
    shown = _invoke(root, ["run", "wider-mlp", "--paired", "--smoke", "--record"])
    assert "next: `grugctl compare wider-mlp` weighs the evidence" in shown.stderr


def test_paired_needs_a_runnable_baseline_and_against_needs_paired(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, "wider-mlp", "--bucket", "mlp")
    before = (root / "archive.yaml").read_bytes()
    for args, words in [
        (["run", "wider-mlp", "--against", "grugformer-starter"], "add --paired"),
        (["run", "grugformer-starter", "--paired"], "name the experiment(s) to pair with it"),
        (["run", "wider-mlp", "--paired", "--against", "nope"], "no experiment 'nope'"),
    ]:
        result = _invoke(root, args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)
    assert (root / "archive.yaml").read_bytes() == before


@pytest.mark.parametrize("after", [0.3, 2.0])  # 0.3 s: still importing JAX; 2 s: compiling or training
def test_ctrl_c_during_a_run_prints_one_line_and_records_nothing(tmp_path, after):
    import os
    import signal
    import time

    import psutil

    root = make_repo(tmp_path)
    before = (root / "archive.yaml").read_bytes()
    # Long enough to be still running when interrupted, even with every program in the compile cache.
    args = ["run", "grugformer-starter", "--smoke", "--steps", "4000", "--record"]
    driver = subprocess.Popen(
        [sys.executable, "-c", DEFAULT_SIGINT_THEN_GRUGCTL, *args], cwd=root, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    training = lambda: [
        p for p in psutil.Process(driver.pid).children() if "grugformer_speedrun.py" in " ".join(p.cmdline())
    ]
    deadline, found = time.time() + 60, []
    while not found and time.time() < deadline:
        found = training()
        time.sleep(0.05)
    if not found:
        driver.kill()
        pytest.fail(f"the training child never started: {driver.communicate()[1][-3000:]}")
    time.sleep(after)
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C on a terminal does: the whole foreground group
    stdout, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert (
        stderr.strip().splitlines()[-1] == "error: run of 'grugformer-starter' interrupted; nothing recorded"
    )
    assert stdout == "" and (root / "archive.yaml").read_bytes() == before


def test_sizes_dry_run_lists_each_run_with_its_flops_and_an_unknown_size_is_one_sentence(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, "relu-squared", "--bucket", "mlp")
    before = (root / "archive.yaml").read_bytes()
    result = _invoke(root, ["run", "relu-squared", "--sizes", "xs,s", "--paired", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)
    starter, idea = "grugformer-starter", "relu-squared"
    assert [(run["id"], run["size"]) for run in planned] == [
        (starter, "xs"), (idea, "xs"), (starter, "s"), (idea, "s"),
    ]  # fmt: skip
    xs, s = planned[0], planned[2]
    assert xs["params"]["total"] == 480_096 and s["params"]["total"] == 853_120
    assert 2.5 < s["flops"] / xs["flops"] < 4 and s["tokens"] == 450 * 32 * 128
    assert planned[0]["pair"].endswith("-xs-seed0") and planned[0]["command"][-2:] == ["--size", "xs"]
    bad = _invoke(root, ["run", "relu-squared", "--sizes", "xs,huge"])
    assert (
        bad.exit_code == 2
        and "relu-squared --size huge: unknown size 'huge'; use one of 3xs, 2xs, xs, s" in bad.output
    )
    assert (root / "archive.yaml").read_bytes() == before and not (root / "runs").exists()


@pytest.mark.slow
def test_runs_at_two_sizes_are_recorded_with_their_size_and_flops_and_compared_apart(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, "relu-squared", "--bucket", "mlp")
    commit_all(root, "idea")
    args = ["run", "relu-squared", "--sizes", "xs,s", "--seeds", "2", "--paired", "--steps", "3"]
    result = _invoke(root, args)
    assert result.exit_code == 0, result.output
    rows = experiments(root)["relu-squared"]["results"]
    assert sorted((row["size"], row["seed"]) for row in rows) == [("s", 0), ("s", 1), ("xs", 0), ("xs", 1)]
    record = json.loads((root / rows[0]["record"]).read_text())
    assert record["size"] == rows[0]["size"] and record["flops"] == rows[0]["flops"] > 0
    assert record["params"]["non_embedding"] < record["params"]["total"]
    compared = json.loads(_invoke(root, ["compare", "relu-squared", "--json", "--metric", "val_bpb"]).stdout)
    assert [c["size"] for c in compared] == ["xs", "s"]
    assert all(c["metrics"][0]["n_candidate"] == 2 for c in compared)
