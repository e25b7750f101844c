"""The starter speedrun and `grugctl run`: real training on the real corpus with the smoke config."""

import json
import subprocess
import sys

import git
import yaml
from test_diff import _invoke, commit_all, edit_definition, make_repo, new_experiment, starter_file

from grugctl.results import RESULT_KEYS


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


def test_a_few_dozen_steps_lower_validation_loss(tmp_path):
    root = make_repo(tmp_path)
    out = tmp_path / "short.json"
    result = run_starter(root, "--smoke", "--steps", "40", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    curve = json.loads(out.read_text())["curve"]
    assert curve[0]["step"] == 2 and curve[-1]["step"] == 40
    assert curve[-1]["val_loss"] < curve[0]["val_loss"] - 0.5, curve


def test_grugctl_run_smoke_records_every_seed_with_a_complete_results_file(tmp_path):
    root = make_repo(tmp_path)
    earlier = experiments(root)["grugformer-starter"].get("results", [])
    result = _invoke(root, ["run", "grugformer-starter", "--smoke", "--seed", "3", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    records = experiments(root)["grugformer-starter"]["results"]
    assert records[: len(earlier)] == earlier  # appended, nothing earlier rewritten
    records = records[len(earlier) :]
    head = git.Repo(root).head.commit.hexsha
    assert [r["seed"] for r in records] == [3, 4]
    for record in records:
        assert record["commit"] == head[:12] and record["dirty"] is False
        assert record["smoke"] is True and record["steps"] == 2
        assert record["results"].startswith("runs/grugformer-starter/")
        results = json.loads((root / record["results"]).read_text())
        assert set(RESULT_KEYS) <= set(results)
        assert results["experiment"] == "grugformer-starter" and results["commit"] == head
        assert results["seed"] == record["seed"] and results["curve"][-1]["step"] == 2
        assert results["config"]["model"]["vocab_size"] == 256 and results["val_bpb"] > 0


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
