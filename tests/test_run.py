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
        assert record["git"]["patch"] is None and row["code"] == record["git"]["experiment_blob"][:12]
        assert record["git"]["core_tree"] == repo.head.commit.tree["grug_core"].hexsha
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
