"""`grugctl compare`: its statistics against scipy computed here from fixed per-seed numbers, the paired
and the Welch case, and the rows it must leave out (smoke, other config, other code, other host)."""

import json
import math

import pytest
from fresh_process import run_commands
from scipy import stats as scipy_stats
from test_diff import _invoke, make_repo, new_experiment

from grugctl import archive
from grugctl.evidence import stats
from grugctl.runs import records

STARTER = "grugformer-starter"
IDEA = "relu-squared"


def code_of(root, entry_id):
    entry = archive.load_archive(root / "archive.yaml").experiments[entry_id]
    return records.code_id(root, entry.path)[:12]


def add_rows(root, entry_id, values, *, pair=None, steps=200, host="host-a", config="cfg-1", **extra):
    """Summary rows as `grugctl run` writes them, without a record (compare holds a row that names one to
    it; these name none)."""
    code = code_of(root, entry_id)
    for seed, value in enumerate(values):
        row = {
            "seed": seed, "steps": steps, "val_bpb": value, "val_loss": value * math.log(2),
            "steps_to_target": None, "time_to_target_s": None, "tokens_per_s": 5000 + seed,
            "code": code, "config": config, "host": host,
        }  # fmt: skip
        if pair is not None:
            row["pair"] = f"{pair}-seed{seed}"
        row.update(extra)
        archive.append_result(root / "archive.yaml", entry_id, row)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("compare"))
    new_experiment(root, IDEA, "--bucket", "mlp")
    return root


def compare_json(root, *args):
    result = _invoke(root, ["compare", IDEA, "--json", *args])
    assert result.exit_code == 0, result.output
    (comparison,) = json.loads(result.stdout)
    return comparison


CANDIDATE = [2.801, 2.795, 2.812, 2.790, 2.805]
BASELINE = [2.850, 2.861, 2.842, 2.855, 2.848]


def test_paired_seeds_use_the_paired_t_test(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE, pair="s1")
    add_rows(root, IDEA, CANDIDATE, pair="s1")
    (m,) = compare_json(root, "--metric", "val_bpb")["metrics"]
    diffs = [c - b for c, b in zip(CANDIDATE, BASELINE, strict=True)]
    mean, sd = sum(diffs) / 5, math.sqrt(sum((d - sum(diffs) / 5) ** 2 for d in diffs) / 4)
    half = scipy_stats.t.ppf(0.995, 4) * sd / math.sqrt(5)  # a 99% CI: alpha 0.01
    assert m["test"] == "paired" and m["n_candidate"] == m["n_baseline"] == 5
    assert m["delta"] == pytest.approx(mean) and m["ci_low"] == pytest.approx(mean - half)
    assert m["ci_high"] == pytest.approx(mean + half)
    assert m["p_value"] == pytest.approx(scipy_stats.ttest_rel(CANDIDATE, BASELINE).pvalue)
    assert m["p_value"] < 0.01 and m["verdict"] == "better"
    assert m["relative_delta"] == pytest.approx(mean / (sum(BASELINE) / 5))


def test_unpaired_rows_use_welch_and_an_inconclusive_result_says_how_many_seeds(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    baseline = [2.850, 2.830, 2.870, 2.845]
    candidate = [2.840, 2.822, 2.861, 2.850, 2.829]
    add_rows(root, STARTER, baseline)
    add_rows(root, IDEA, candidate)
    (m,) = compare_json(root, "--metric", "val_bpb")["metrics"]
    welch = scipy_stats.ttest_ind(candidate, baseline, equal_var=False)
    assert m["test"] == "welch" and (m["n_candidate"], m["n_baseline"]) == (5, 4)
    assert m["p_value"] == pytest.approx(welch.pvalue)
    vc, vb = (scipy_stats.tvar(candidate) / 5, scipy_stats.tvar(baseline) / 4)
    df = (vc + vb) ** 2 / (vc**2 / 4 + vb**2 / 3)
    half = scipy_stats.t.ppf(0.995, df) * math.sqrt(vc + vb)
    delta = sum(candidate) / 5 - sum(baseline) / 4
    assert m["ci_low"] == pytest.approx(delta - half) and m["ci_high"] == pytest.approx(delta + half)
    assert m["verdict"] == "inconclusive"
    # The seeds the observed effect needs: enough for power 0.8, and one fewer is not enough.
    d = delta / math.sqrt((scipy_stats.tvar(candidate) + scipy_stats.tvar(baseline)) / 2)
    n = m["seeds_needed"]
    assert n > 5 and stats.power(d, n, 0.01, paired=False) >= 0.8 > stats.power(d, n - 1, 0.01, paired=False)


def test_the_interval_is_at_one_minus_alpha_so_it_agrees_with_the_verdict(tmp_path):
    # A paired effect with 0.01 < p < 0.05: significant at alpha 0.05, not at the default 0.01. A 95%
    # interval beside an alpha-0.01 verdict would exclude zero while the verdict says inconclusive.
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    candidate = [b + d for b, d in zip(BASELINE, [-0.010, -0.004, -0.012, -0.002, -0.007], strict=True)]
    add_rows(root, STARTER, BASELINE, pair="s1")
    add_rows(root, IDEA, candidate, pair="s1")
    assert 0.01 < scipy_stats.ttest_rel(candidate, BASELINE).pvalue < 0.05
    for alpha, verdict, level in [("0.01", "inconclusive", "99% CI"), ("0.05", "better", "95% CI")]:
        comparison = compare_json(root, "--metric", "val_bpb", "--alpha", alpha)
        (m,) = comparison["metrics"]
        assert comparison["confidence"] == pytest.approx(1 - float(alpha)) and m["verdict"] == verdict
        assert (m["ci_high"] < 0) == (verdict == "better")  # the interval excludes zero iff significant
        table = _invoke(root, ["compare", IDEA, "--metric", "val_bpb", "--alpha", alpha]).stdout
        assert level in table.splitlines()[1], table


def test_identical_differences_have_no_interval_beside_their_inconclusive_verdict(tmp_path):
    # Every pair differs by exactly -0.25 (exact in binary): no noise, so no p-value, and an interval of
    # [-0.25, -0.25] would exclude zero beside "inconclusive".
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, [2.5, 2.75, 3.0], pair="s1")
    add_rows(root, IDEA, [2.25, 2.5, 2.75], pair="s1")
    (m,) = compare_json(root, "--metric", "val_bpb")["metrics"]
    assert m["delta"] == -0.25 and m["p_value"] is None and m["verdict"] == "inconclusive"
    assert m["ci_low"] is None and m["ci_high"] is None
    assert m["note"] == "no seed-to-seed variation to test against"


def test_archive_status_judges_every_experiment_without_importing_scipy_stats(tmp_path):
    """The leaderboard's verdicts come from scipy.special's t distribution: importing scipy.stats would
    cost `archive status` ~1 s on every call (bench/cli.py), for the same p-values."""
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE, pair="s1")
    add_rows(root, IDEA, CANDIDATE, pair="s1")
    stdout, modules = run_commands(root, [["archive", "status", "--json"]])
    assert "scipy.special" in modules and "scipy.stats" not in modules
    (row,) = [row for row in json.loads(stdout)["experiments"] if row["id"] == IDEA]
    assert row["verdict"] == "better" and row["seeds"] == 5


def test_power_matches_a_known_value():
    # Two-sample t-test, d = 1, 17 per group, alpha 0.05: the textbook power is ~0.807.
    assert stats.power(1.0, 17, 0.05, paired=False) == pytest.approx(0.807, abs=0.005)
    assert stats.detectable_effect(17, 0.05, paired=False) == pytest.approx(1.0, abs=0.02)


def test_rows_that_must_not_be_mixed_are_left_out_and_counted(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE)
    add_rows(root, IDEA, CANDIDATE[:3], host="host-b")  # a second machine: no wall-time comparison
    add_rows(root, IDEA, CANDIDATE)
    add_rows(root, IDEA, [2.5], smoke=True)
    add_rows(root, IDEA, [2.4, 2.41], config="cfg-other", steps=200)
    add_rows(root, IDEA, [2.3], steps=450)
    add_rows(root, IDEA, [2.3, 2.31], config="cfg-1")
    # A row of code that is not the current file.
    stale = {"seed": 9, "steps": 200, "val_bpb": 1.0, "code": "0" * 12, "config": "cfg-1"}
    archive.append_result(root / "archive.yaml", IDEA, stale)
    # The newest row (cfg-1, 200 steps) decides the step count and config.
    comparison = compare_json(root, "--metric", "val_bpb", "--metric", "tokens_per_s")
    assert comparison["steps"] == 200
    assert comparison["excluded_candidate"] == {
        "smoke run": 1, "other code than the current file": 1, "other step count": 1, "other config": 2,
    }  # fmt: skip
    assert comparison["rows_candidate"] == 3 + 5 + 2
    val_bpb, tokens_per_s = comparison["metrics"]
    assert val_bpb["n_candidate"] == 10 and not val_bpb["left_out"]
    assert tokens_per_s["n_candidate"] == 7 and tokens_per_s["left_out"] == {"other host": 3}


def test_too_few_seeds_is_inconclusive_and_says_so(repo):
    result = _invoke(repo, ["compare", IDEA])
    assert result.exit_code == 0, result.output
    assert "needs at least 2 seeds on each side" in result.stdout and "inconclusive" in result.stdout


def test_bad_input_is_one_sentence_and_exit_2(repo):
    for args, words in [
        (["compare", "relu-squard"], "did you mean 'relu-squared'"),
        (["compare", IDEA, "--metric", "val_bpbb"], "unknown metric 'val_bpbb'"),
        (["compare", IDEA, "--alpha", "2"], "must be between 0 and 1"),
        (["compare", STARTER], "is its own baseline"),
    ]:
        result = _invoke(repo, args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)


def test_markdown_and_text_tables(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE, pair="s1")
    add_rows(root, IDEA, CANDIDATE, pair="s1")
    md = _invoke(root, ["compare", IDEA, "--md", "--metric", "val_bpb"]).stdout
    assert "| metric | n | candidate | baseline |" in md and "| val_bpb | 5/5 paired |" in md
    text = _invoke(root, ["compare", IDEA]).stdout
    assert "relu-squared vs grugformer-starter at 200 steps, size s (alpha 0.01)" in text
    assert "better" in text and "\x1b[" not in text  # piped: no colour


def test_rows_of_a_shared_host_count_for_quality_but_not_for_wall_time(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE)
    add_rows(root, IDEA, CANDIDATE)
    add_rows(root, IDEA, CANDIDATE[:2], shared_host=True)  # e.g. two Ray tasks on one machine
    failed = {"status": "failed", "seed": 7, "attempt": 1, "exit_code": 1, "code": code_of(root, IDEA)}
    archive.append_result(root / "archive.yaml", IDEA, failed)
    comparison = compare_json(root, "--metric", "val_bpb", "--metric", "tokens_per_s")
    assert comparison["excluded_candidate"] == {"failed run": 1}
    val_bpb, tokens_per_s = comparison["metrics"]
    assert val_bpb["n_candidate"] == 7 and not val_bpb["left_out"]
    assert tokens_per_s["n_candidate"] == 5
    assert tokens_per_s["left_out"] == {"host ran other jobs at once": 2}


def test_wall_time_is_compared_within_one_version_of_the_core(tmp_path):
    # The starter's file is unchanged but the core it imports got faster (its git tree differs): quality
    # still compares, wall time only against the baseline rows that ran the candidate's core.
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE)  # written before rows named their core
    add_rows(root, STARTER, BASELINE[:3], core="core-new")
    add_rows(root, IDEA, CANDIDATE[:2])  # the idea's own older rows: the newest row's core decides
    add_rows(root, IDEA, CANDIDATE, core="core-new")
    val_bpb, tokens_per_s = compare_json(root, "--metric", "val_bpb", "--metric", "tokens_per_s")["metrics"]
    assert (val_bpb["n_candidate"], val_bpb["n_baseline"]) == (7, 8) and not val_bpb["left_out"]
    assert (tokens_per_s["n_candidate"], tokens_per_s["n_baseline"]) == (5, 3)
    assert tokens_per_s["left_out"] == {"other core": 7}


def test_a_row_names_its_records_core_and_is_held_to_it(tmp_path):
    record = {
        "version": 1, "experiment": IDEA, "seed": 0, "date": "2026-12-06T00:00:00Z", "config": {},
        "git": {"commit": "a" * 40, "dirty": False, "experiment_blob": "b" * 40, "core_tree": "c" * 40},
        "metrics": {"steps": 10, "tokens": 40960, "val_loss": 1.0, "val_bpb": 1.4, "steps_to_target": None,
                    "tokens_to_target": None, "time_to_target_s": None, "tokens_per_s": 10.0},
        "config_hash": "cfg", "pair": None, "smoke": False,
    }  # fmt: skip
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record))
    row = records.summary_row(record, "run.json")
    assert row["core"] == "c" * 12 and records.row_problem(tmp_path, IDEA, row) is None
    # A row written before rows named their core lacks it and is still sound; one naming another core,
    # or a core its record does not have (a repository with no commit yet), is not.
    assert records.row_problem(tmp_path, IDEA, {k: v for k, v in row.items() if k != "core"}) is None
    assert "on core" in records.row_problem(tmp_path, IDEA, {**row, "core": "d" * 12})
    record["git"]["core_tree"] = None
    path.write_text(json.dumps(record))
    assert "core" not in records.summary_row(record, "run.json")
    assert "on core" in records.row_problem(tmp_path, IDEA, row)


def test_archive_status_is_a_leaderboard(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    new_experiment(root, "worse-idea", "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE, pair="s1")
    add_rows(root, IDEA, CANDIDATE, pair="s1")
    worse = [v + 0.2 + e for v, e in zip(BASELINE, [0.01, -0.004, 0.003, 0.0, -0.006], strict=True)]
    add_rows(root, "worse-idea", worse, pair="s1", steps_to_target=300.0)
    result = _invoke(root, ["archive", "status", "--json", "--sort-by", "val_bpb"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.stdout)["experiments"]}
    order = [r["id"] for r in json.loads(result.stdout)["experiments"]]
    assert order == [IDEA, STARTER, "worse-idea"]
    assert rows[IDEA]["seeds"] == 5 and rows[IDEA]["mean_val_bpb"] == pytest.approx(sum(CANDIDATE) / 5)
    assert rows[IDEA]["verdict"] == "better" and rows["worse-idea"]["verdict"] == "worse"
    assert rows["worse-idea"]["mean_steps_to_target"] == 300.0
    assert rows[STARTER]["delta_val_bpb"] is None and rows[STARTER]["seeds"] == 5
    table = _invoke(root, ["archive", "status"]).stdout
    assert "Δ bpb vs starter" in table and "better" in table and "worse" in table


def test_a_large_effect_needs_few_pairs_and_power_never_goes_missing():
    # Three pairs whose differences are ~2 sd from zero (d_z = 2.05): inconclusive at alpha 0.01 with 3,
    # found with power 0.8 at 7. scipy's noncentral t returns nan beyond ~50 pairs at this effect, which
    # once sent the search to 383.
    d = stats.paired_test([3.6502, 3.5578, 3.6135], [3.5393, 3.5189, 3.5413], confidence=0.99).effect_size
    assert d == pytest.approx(2.0536, abs=1e-3)
    assert stats.seeds_needed(d, 0.01, paired=True) == 7
    assert stats.power(d, 6, 0.01, paired=True) < 0.8 <= stats.power(d, 7, 0.01, paired=True)
    for effect in (0.05, 0.3, 1.0, 2.0, 5.0):
        for n in (2, 10, 50, 200, 1000):
            for paired in (True, False):
                assert 0.0 <= stats.power(effect, n, 0.01, paired) <= 1.0


def add_target_rows(root, entry_id, to_target, *, pair=None, size=None, flops=None, bpb=2.6):
    """Rows whose steps_to_target are given per seed; None: the run ended above the target."""
    code = code_of(root, entry_id)
    for seed, steps in enumerate(to_target):
        row = {
            "seed": seed, "steps": 200, "val_bpb": bpb + 0.001 * seed, "steps_to_target": steps,
            "code": code, "config": "cfg-1", "host": "host-a",
        }  # fmt: skip
        row |= {"pair": f"{pair}-seed{seed}"} if pair else {}
        row |= {"size": size, "flops": flops} if size else {}
        archive.append_result(root / "archive.yaml", entry_id, row)


def test_a_run_that_never_reached_the_target_counts_as_slowest_not_missing(tmp_path):
    """The issue's case: the starter never got there in 200 steps, the idea did. That was "inconclusive
    (has 2 and 0)"; it is now a rank test that counts the starter's runs as slower than every other."""
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_target_rows(root, STARTER, [None] * 6)
    add_target_rows(root, IDEA, [187.0, 181.5, 190.2, None, 185.0, 183.3])
    (m,) = compare_json(root, "--metric", "steps_to_target")["metrics"]
    expected = scipy_stats.mannwhitneyu([187.0, 181.5, 190.2, 1e9, 185.0, 183.3], [1e9] * 6).pvalue
    assert m["test"] == "mann-whitney" and (m["n_candidate"], m["n_baseline"]) == (6, 6)
    assert (m["not_reached_candidate"], m["not_reached_baseline"]) == (1, 6)
    assert m["p_value"] == pytest.approx(expected) and m["p_value"] < 0.01 and m["verdict"] == "better"
    assert m["mean_candidate"] == pytest.approx((187.0 + 181.5 + 190.2 + 185.0 + 183.3) / 5)
    assert m["mean_baseline"] is None and m["delta"] is None  # the starter's median is past its runs
    text = _invoke(root, ["compare", IDEA, "--metric", "steps_to_target"]).stdout
    assert "never reached the target: 1 of 6 relu-squared runs, 6 of 6 grugformer-starter runs" in text


def test_paired_censored_runs_use_the_wilcoxon_signed_rank_test(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    baseline, candidate = [300.0, None, 310.0, 295.0, None], [280.0, 290.0, 301.0, 285.0, None]
    add_target_rows(root, STARTER, baseline, pair="s")
    add_target_rows(root, IDEA, candidate, pair="s")
    (m,) = compare_json(root, "--metric", "steps_to_target", "--alpha", "0.2")["metrics"]
    # Four informative pairs (the last is a tie: neither reached), all in the candidate's favour.
    expected = scipy_stats.wilcoxon([280, 290, 301, 285], [300, 1e9, 310, 295]).pvalue
    assert m["test"] == "wilcoxon" and m["p_value"] == pytest.approx(expected)
    assert (m["not_reached_candidate"], m["not_reached_baseline"]) == (1, 2)
    assert m["verdict"] == "better" and m["delta"] == pytest.approx(-15.0)  # median of -20, -inf, -9, -10


def test_when_no_run_reached_the_target_there_is_no_interval(tmp_path):
    # Every pair ties past the end: a "[0, 0]" interval would read as a measured zero difference.
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_target_rows(root, STARTER, [None] * 3, pair="s")
    add_target_rows(root, IDEA, [None] * 3, pair="s")
    (m,) = compare_json(root, "--metric", "steps_to_target")["metrics"]
    assert m["test"] == "wilcoxon" and m["verdict"] == "inconclusive" and m["p_value"] is None
    assert m["ci_low"] is None and m["ci_high"] is None
    assert m["note"] == "no run on either side reached the target"


def test_sizes_are_never_mixed_one_comparison_per_size(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE, pair="s1", size="s", flops=1.05e13)
    add_rows(root, IDEA, CANDIDATE, pair="s1", size="s", flops=1.05e13)
    add_rows(root, STARTER, [3.1, 3.12, 3.09], pair="x1", size="xs", flops=3.3e12)
    add_rows(root, IDEA, [3.0, 3.01, 2.99], pair="x1", size="xs", flops=3.3e12)
    result = _invoke(root, ["compare", IDEA, "--json", "--metric", "val_bpb"])
    xs, s = json.loads(result.stdout)
    assert (xs["size"], s["size"]) == ("xs", "s")  # fewest FLOPs first
    assert xs["metrics"][0]["n_candidate"] == 3 and s["metrics"][0]["n_candidate"] == 5
    assert xs["excluded_candidate"] == {"other size": 5} and s["excluded_candidate"] == {"other size": 3}
    assert xs["metrics"][0]["mean_baseline"] == pytest.approx(3.1033, abs=1e-3)
    text = _invoke(root, ["compare", IDEA, "--metric", "val_bpb"]).stdout
    assert "at 200 steps, size xs (alpha 0.01)" in text and "at 200 steps, size s (alpha 0.01)" in text


def test_the_leaderboard_compares_each_experiment_with_the_starter_at_its_own_size(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    add_rows(root, STARTER, BASELINE, size="s", flops=1.05e13)
    add_rows(root, IDEA, [3.0, 3.01, 2.99], size="xs", flops=3.3e12)
    board = json.loads(_invoke(root, ["archive", "status", "--json"]).stdout)["experiments"]
    idea = next(row for row in board if row["id"] == IDEA)
    assert (idea["size"], idea["seeds"], idea["delta_val_bpb"]) == ("xs", 3, None)  # no starter run at xs
    add_rows(root, STARTER, [3.1, 3.12, 3.09], size="xs", flops=3.3e12)
    board = json.loads(_invoke(root, ["archive", "status", "--json"]).stdout)["experiments"]
    idea = next(row for row in board if row["id"] == IDEA)
    assert idea["delta_val_bpb"] == pytest.approx(3.0 - 3.1033, abs=1e-3) and idea["verdict"] == "better"
