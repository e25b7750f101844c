"""Sweeps and tuned comparisons: `run --sweep` plans every value, `compare` never mixes settings or data,
and `compare --tuned FIELD` compares each side at its own best value, chosen on other seeds than it tests."""

import json
import math

import pytest
from scipy import stats as scipy_stats
from test_compare import add_rows
from test_diff import _invoke, make_repo, new_experiment

from grugctl.errors import GrugError
from grugctl.runs import runner

STARTER = "grugformer-starter"
IDEA = "relu-squared"


def test_a_sweep_is_the_grid_of_its_values_and_refuses_what_is_not_a_number():
    assert runner.parse_sweep(["peak_lr=1e-3,3e-3"]) == (("peak_lr=1e-3",), ("peak_lr=3e-3",))
    grid = runner.parse_sweep(["peak_lr=1e-3,3e-3", "warmup_steps=10,20"])
    assert len(grid) == 4 and ("peak_lr=3e-3", "warmup_steps=20") in grid
    assert runner.parse_sweep(None) == ((),)
    with pytest.raises(GrugError, match="'fast' is not a number"):
        runner.parse_sweep(["peak_lr=1e-3,fast"])
    with pytest.raises(GrugError, match="is not FIELD=V1,V2"):
        runner.parse_sweep(["peak_lr"])
    with pytest.raises(GrugError, match="is not FIELD=VALUE"):
        runner.parse_settings(["peak_lr="])


def test_run_dry_run_lists_every_size_value_and_seed_of_a_paired_sweep(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    result = _invoke(root, ["run", IDEA, "--paired", "--seeds", "2", "--sweep", "peak_lr=1e-3,3e-3",
                            "--sizes", "xs,s", "--dry-run", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)
    assert len(planned) == 2 * 2 * 2 * 2  # sizes x values x seeds x sides
    first = planned[0]
    assert first["setting"] == ["peak_lr=1e-3"] and first["size"] == "xs"
    assert first["command"][-4:] == ["--size", "xs", "--set", "peak_lr=1e-3"]
    # The two sides of a pair ran at the same point; the points never share a pair id.
    pairs = {}
    for run in planned:
        pairs.setdefault(run["pair"], set()).add((run["size"], tuple(run["setting"]), run["seed"]))
    assert len(pairs) == 8 and all(len(points) == 1 for points in pairs.values())


def test_a_bad_field_or_value_is_refused_by_the_file_before_anything_trains(tmp_path):
    root = make_repo(tmp_path)
    for args, words in (
        (["--sweep", "peak_rate=1e-3,3e-3"], "peak_rate"),
        (["--set", "num_layers=two"], "num_layers"),
        (["--sweep", "peak_lr=1e-3,x"], "'x' is not a number"),
    ):
        result = _invoke(root, ["run", STARTER, "--dry-run", *args])
        assert result.exit_code == 2, result.output
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (root / "runs").exists()


def sweep_rows(root, entry_id, means: dict[str, float], seeds: int = 4, noise=None, field="peak_lr", **extra):
    """Rows of a paired sweep over peak_lr (or `field`): value -> mean val_bpb; seed i adds noise[i]."""
    noise = noise or [0.004, -0.003, 0.002, -0.001, 0.0, 0.003][:seeds]
    for value, mean in means.items():
        add_rows(root, entry_id, [mean + n for n in noise], pair=f"sweep-{value}", config=f"cfg-{value}",
                 settings=f"{field}={value}", **extra)  # fmt: skip


def test_compare_never_mixes_settings_or_data_and_says_what_it_left_out(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, [2.85, 2.86, 2.84], pair="p")
    add_rows(root, IDEA, [2.80, 2.81, 2.79], pair="p")
    sweep_rows(root, STARTER, {"1e-3": 2.70})  # far better, but another setting
    add_rows(root, IDEA, [3.5, 3.6, 3.4], pair="p", data="fineweb:abc123")  # other data
    result = _invoke(root, ["compare", IDEA, "--json", "--metric", "val_bpb"])
    assert result.exit_code == 0, result.output
    c, on_fineweb = json.loads(result.stdout)  # one comparison per dataset
    (m,) = c["metrics"]
    assert m["n_candidate"] == m["n_baseline"] == 3 and m["mean_baseline"] == pytest.approx(2.85)
    assert c["excluded_candidate"]["other data"] == 3
    assert c["excluded_baseline"]["other settings (compare --tuned FIELD weighs a sweep)"] == 4
    assert c["data"] is None and c["settings"] is None
    # The starter never ran on that data: its table has the candidate's runs and none to compare with.
    assert on_fineweb["data"] == "fineweb:abc123" and on_fineweb["rows_candidate"] == 3
    assert on_fineweb["rows_baseline"] == 0 and on_fineweb["metrics"][0]["verdict"] == "inconclusive"


def test_tuned_compares_each_side_at_its_own_best_value_on_held_out_seeds(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    # The baseline is best at 3e-3, the candidate at 1e-2: at one shared value the verdict would differ.
    sweep_rows(root, STARTER, {"1e-3": 2.90, "3e-3": 2.85, "1e-2": 2.88})
    sweep_rows(root, IDEA, {"1e-3": 2.95, "3e-3": 2.86, "1e-2": 2.80}, noise=[0.003, -0.002, 0.004, 0.001])
    result = _invoke(root, ["compare", IDEA, "--tuned", "peak_lr", "--json", "--metric", "val_bpb"])
    assert result.exit_code == 0, result.output
    (c,) = json.loads(result.stdout)
    tuned = c["tuned"]
    assert (tuned["candidate_value"], tuned["baseline_value"]) == ("1e-2", "3e-3")
    assert tuned["selection_seeds"] == [0, 1] and tuned["test_seeds"] == [2, 3] and tuned["held_out"]
    assert tuned["tried_baseline"]["1e-3"] == pytest.approx(2.90 + (0.004 - 0.003) / 2)
    (m,) = c["metrics"]
    # Tested on seeds 2 and 3 only, paired by seed.
    cand, base = [2.80 + 0.004, 2.80 + 0.001], [2.85 + 0.002, 2.85 - 0.001]
    assert m["test"] == "paired" and m["n_candidate"] == 2
    assert m["p_value"] == pytest.approx(scipy_stats.ttest_rel(cand, base).pvalue)
    text = _invoke(root, ["compare", IDEA, "--tuned", "peak_lr", "--metric", "val_bpb"]).stdout
    assert "tuned peak_lr: relu-squared at 1e-2, grugformer-starter at 3e-3" in text
    assert "chosen on seeds 0,1, tested on seeds 2,3 only" in text


def test_tuned_without_seeds_to_hold_out_says_the_p_value_is_optimistic(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    sweep_rows(root, STARTER, {"1e-3": 2.90, "3e-3": 2.85}, seeds=2)
    sweep_rows(root, IDEA, {"1e-3": 2.95, "3e-3": 2.80}, seeds=2)
    result = _invoke(
        root, ["compare", IDEA, "--tuned", "peak_lr", "--select-seeds", "0", "--metric", "val_bpb"]
    )
    assert result.exit_code == 0, result.output
    assert "NOT held out" in result.stdout and "optimistic" in result.stdout


def test_tuned_without_a_sweep_is_one_sentence(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, [2.85, 2.86], pair="p")
    add_rows(root, IDEA, [2.80, 2.81], pair="p")
    result = _invoke(root, ["compare", IDEA, "--tuned", "peak_lr"])
    assert result.exit_code == 2
    assert "run a sweep first" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_files_own_settings_count_as_one_value_of_the_sweep(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    sweep_rows(root, STARTER, {"1e-3": 2.90})
    # The file's own runs (config cfg-3e-3, no settings) are the value 3e-3 of the sweep.
    add_rows(
        root,
        STARTER,
        [2.85 + n for n in (0.004, -0.003, 0.002, -0.001)],
        pair="sweep-3e-3",
        config="cfg-3e-3",
    )
    sweep_rows(root, IDEA, {"1e-3": 2.80, "3e-3": 2.95})
    result = _invoke(root, ["compare", IDEA, "--tuned", "peak_lr", "--json", "--metric", "val_bpb"])
    assert result.exit_code == 0, result.output
    (c,) = json.loads(result.stdout)
    assert c["tuned"]["baseline_value"] == "default"
    assert math.isclose(c["tuned"]["tried_baseline"]["default"], 2.85 + 0.0005)


@pytest.mark.slow
def test_a_sweep_on_token_shards_records_its_data_and_settings(tmp_path):
    """End to end: tokenize a folder with a BPE tokenizer, then `grugctl run --data --sweep` trains on
    the shards with the tokenizer's vocabulary and records, per run, the data and the setting."""
    import subprocess
    import sys

    from test_shards import TEXTS, tokenize

    root = make_repo(tmp_path / "repo")
    texts = tmp_path / "texts"
    texts.mkdir()
    for name, text in TEXTS.items():
        (texts / name).write_text(text, encoding="utf-8")
    trained = subprocess.run(
        [sys.executable, "-m", "grug_core.data", "train-tokenizer", "--input", str(texts), "--out",
         str(tmp_path / "tokenizer.json"), "--vocab-size", "300"], capture_output=True, text=True,
    )  # fmt: skip
    assert trained.returncode == 0 and "300 tokens" in trained.stdout, trained.stderr
    done = tokenize("--tokenizer", str(tmp_path / "tokenizer.json"), "--input", str(texts), "--out",
                    str(tmp_path / "shards"), "--val-fraction", "0.2", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    grugctl = [sys.executable, "-m", "grugctl.cli"]
    result = subprocess.run(
        [*grugctl, "run", STARTER, "--smoke", "--record", "--data", str(tmp_path / "shards"),
         "--sweep", "peak_lr=1e-3,3e-3", "--json"], cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    assert [row["settings"] for row in rows] == ["peak_lr=0.001", "peak_lr=0.003"]
    assert {row["data"] for row in rows} == {rows[0]["data"]} and rows[0]["data"].startswith("shards:")
    record = json.loads((root / rows[0]["record"]).read_text())
    assert record["settings"] == {"peak_lr": 0.001} and record["config"]["peak_lr"] == 0.001
    assert record["data"]["kind"] == "shards" and record["data"]["vocab_size"] == 300
    assert record["config"]["model"]["vocab_size"] == 384  # 300 padded to a multiple of 128
    assert record["data"]["eval_bytes"] < record["data"]["eval_tokens"] * 4
    check = subprocess.run([*grugctl, "check", "--fast"], cwd=root, capture_output=True, text=True)
    assert "disagrees" not in check.stdout + check.stderr


def test_plot_x_flops_tuned_draws_each_size_at_its_best_value(tmp_path):
    from grugctl import archive
    from grugctl.evidence import plot

    root = make_repo(tmp_path)
    for size, flops, shift in (("3xs", 4.4e11, 0.5), ("2xs", 1.1e12, 0.3), ("xs", 3.3e12, 0.0)):
        means = {"0.5": 2.95 + shift, "1": 2.85 + shift, "2": 2.90 + shift}
        sweep_rows(root, STARTER, means, seeds=2, field="lr_scale", size=size, flops=flops)
    loaded = archive.load_archive(root / "archive.yaml")
    (drawn,) = plot.load_scaling(loaded, [STARTER], "val_bpb", tuned="lr_scale")
    assert drawn.sizes == ("3xs", "2xs", "xs")
    assert [round(m, 4) for m in drawn.means] == [round(2.85 + s + 0.0005, 4) for s in (0.5, 0.3, 0.0)]
    result = _invoke(
        root, ["plot", STARTER, "--x", "flops", "--tuned", "lr_scale", "--out", str(tmp_path / "s.png")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = _invoke(root, ["plot", STARTER, "--tuned", "lr_scale", "--out", str(tmp_path / "c.png")])
    assert wrong.exit_code == 2 and "--tuned applies to --x flops" in wrong.stderr


def test_promotion_judges_a_swept_experiment_against_the_tuned_baseline(tmp_path):
    from grugctl import archive
    from grugctl.evidence import compare

    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    sweep_rows(root, STARTER, {"0.5": 2.90, "1": 2.85, "2": 2.88}, field="lr_scale")
    sweep_rows(root, IDEA, {"0.5": 2.95, "1": 2.86, "2": 2.80}, field="lr_scale")
    loaded = archive.load_archive(root / "archive.yaml")
    assert compare.swept_field(loaded, IDEA) == "lr_scale"
    evidence = compare.evidence_for_promotion(loaded, IDEA)
    assert (evidence.tuned.candidate_value, evidence.tuned.baseline_value) == ("2", "1")
    assert evidence.tuned.held_out and evidence.metrics[0].n_candidate == 2
    board = compare.leaderboard(loaded, [STARTER, IDEA])
    assert board[IDEA]["tuned"] == "lr_scale=2 vs 1" and board[IDEA]["seeds"] == 2
    assert board[IDEA]["delta_val_bpb"] == pytest.approx(evidence.metrics[0].delta)
    assert board[STARTER]["tuned"] == "lr_scale=1" and board[STARTER]["seeds"] == 4
    status = _invoke(root, ["archive", "status"]).stdout
    assert "at lr_scale=2 vs 1" in status


def test_compare_without_tuned_judges_a_swept_experiment_at_each_sides_best_value(tmp_path):
    """One value of a sweep is not a verdict: plain `compare` on a swept experiment compares as promote."""
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    sweep_rows(root, STARTER, {"0.5": 2.90, "1": 2.85, "2": 2.88}, field="lr_scale")
    sweep_rows(root, IDEA, {"0.5": 2.95, "1": 2.86, "2": 2.80}, field="lr_scale")
    result = _invoke(root, ["compare", IDEA, "--json", "--metric", "val_bpb"])
    assert result.exit_code == 0, result.output
    (c,) = json.loads(result.stdout)
    assert (c["tuned"]["field"], c["tuned"]["candidate_value"], c["tuned"]["baseline_value"]) == (
        "lr_scale",
        "2",
        "1",
    )
