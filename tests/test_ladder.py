"""The verdict across sizes: power-law fits, the compute multiplier with a bootstrap CI, the trend.

Synthetic losses with a known answer: the candidate's loss at C FLOPs is the baseline's at 1.5 C, plus
seed noise, so the multiplier is 1.5 at every size; the multiplier's interval must contain it."""

import json
import random

import pytest
from test_compare import IDEA, STARTER, code_of
from test_diff import _invoke, commit_all, make_repo, new_experiment

from grugctl import archive
from grugctl.evidence.ladder import fit_power_law, ladder

FLOPS = {"xs": 3.34e12, "s": 1.05e13, "m": 2.25e13, "l": 7.39e13}


def power_law(c: float) -> float:
    return 40.0 * c**-0.12


def seeds(law, sizes, multiplier: float, noise: float, n: int = 5, seed: int = 1) -> dict:
    rng = random.Random(seed)
    return {s: [(f"p{i}", law(multiplier * FLOPS[s]) + rng.gauss(0, noise)) for i in range(n)] for s in sizes}


@pytest.mark.parametrize(
    "sizes", [["xs", "s"], ["xs", "s", "m"], pytest.param(["xs", "s", "m", "l"], marks=pytest.mark.slow)]
)
def test_a_known_multiplier_comes_back_inside_the_interval(sizes):
    """Over ten independent data sets, the 99% intervals hold the true 1.5 (one miss in a hundred is
    what 99% means: at most one is allowed here), and the points centre on it."""
    flops = {s: FLOPS[s] for s in sizes}
    misses, points = 0, []
    for replicate in range(10):
        base = seeds(power_law, sizes, 1.0, 0.005, seed=2 * replicate)
        cand = seeds(power_law, sizes, 1.5, 0.005, seed=2 * replicate + 1)
        fitted = ladder(sizes, (flops, flops), base, cand, confidence=0.99, resamples=100)
        assert len(fitted.multipliers) == len(sizes) + 1 and fitted.multipliers[-1].extrapolated
        for m in fitted.multipliers:
            misses += not (m.ci_low < 1.5 and (m.ci_high is None or m.ci_high > 1.5))
        points += [m.value for m in fitted.multipliers if not m.extrapolated]
    assert misses <= 1, misses
    assert sorted(points)[len(points) // 2] == pytest.approx(1.5, rel=0.05)
    # No idea at all: the interval holds 1.
    null = ladder(sizes, (flops, flops), base, seeds(power_law, sizes, 1.0, 0.005, seed=99), 0.99, 100)
    assert all(m.ci_low < 1.0 and (m.ci_high is None or m.ci_high > 1.0) for m in null.multipliers)


def test_a_saturating_law_is_recovered_from_three_or_more_sizes():
    sizes = ["xs", "s", "m", "l"]
    truth = lambda c: 1.5 + 30.0 * c**-0.1
    fit = fit_power_law([FLOPS[s] for s in sizes], [truth(FLOPS[s]) for s in sizes])
    assert fit.e == pytest.approx(1.5, abs=0.05) and fit.alpha == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError, match="does not fall with compute"):
        fit_power_law([1e12, 1e13], [2.0, 2.1])


def record_ladder(root, multiplier: float, sizes=("xs", "s", "m"), noise: float = 0.004) -> None:
    """Rows as `grugctl run --sizes ... --paired` writes them: the starter on the power law, the idea
    at `multiplier` times the compute."""
    for entry_id, factor, seed in ((STARTER, 1.0, 5), (IDEA, multiplier, 6)):
        code = code_of(root, entry_id)
        for size, values in seeds(power_law, sizes, factor, noise, n=4, seed=seed).items():
            for number, (pair, value) in enumerate(values):
                row = {
                    "seed": number, "steps": 100, "val_bpb": value, "steps_to_target": None, "code": code,
                    "config": f"cfg-{size}", "host": "h", "pair": f"{size}-{pair}", "size": size,
                    "flops": FLOPS[size],
                }  # fmt: skip
                archive.append_result(root / "archive.yaml", entry_id, row)


def test_compare_prints_the_multiplier_and_the_trend_across_sizes(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    sizes = ["xs", "s", "m"]
    record_ladder(root, 1.5, sizes)
    result = _invoke(root, ["compare", IDEA, "--json", "--metric", "val_bpb"])
    assert result.exit_code == 0, result.output
    comparisons = json.loads(result.stdout)
    assert [c["size"] for c in comparisons] == sizes
    assert comparisons[0]["ladder"] is None and comparisons[-1]["ladder"]["sizes"] == sizes
    multipliers = comparisons[-1]["ladder"]["multipliers"]
    assert [m["size"] for m in multipliers[:3]] == sizes and multipliers[3]["extrapolated"]
    assert all(m["ci_low"] < 1.5 and (m["ci_high"] is None or m["ci_high"] > 1.5) for m in multipliers)
    text = _invoke(root, ["compare", IDEA, "--metric", "val_bpb"]).stdout
    assert "compute multiplier: how many times its FLOPs grugformer-starter needs" in text
    assert "  at m: " in text and "99% CI" in text and "trend: delta val_bpb" in text
    assert "  at one rung up (2.1x the FLOPs of m) (extrapolated): " in text


@pytest.mark.parametrize("multiplier, refused", [(1.0, True), (2.0, False)])
def test_promote_reads_the_ladder_at_its_largest_size(tmp_path, multiplier, refused):
    root = make_repo(tmp_path)
    path = new_experiment(root, IDEA, "--bucket", "mlp")
    path.write_text(path.read_text().replace("jax.nn.silu(", "jax.nn.gelu(", 1))
    commit_all(root, "idea")
    record_ladder(root, multiplier)
    result = _invoke(root, ["promote", IDEA, "--dry-run"])
    assert "  at m: " in result.output and "compute multiplier: how many times" in result.output
    if refused:
        assert (
            result.exit_code == 1
            and "is not shown to be worth compute at the largest size run" in result.output
        )
        assert "compute multiplier at m has a 99% interval starting at" in result.output
    else:
        assert result.exit_code == 0, result.output


def test_plot_x_flops_draws_every_run_the_means_and_the_fits(tmp_path):
    from matplotlib import image as mpimg

    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    record_ladder(root, 1.5)
    out = tmp_path / "scaling.png"
    result = _invoke(root, ["plot", IDEA, STARTER, "--x", "flops", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "relu-squared (12 seeds), grugformer-starter (12 seeds)" in result.output
    pixels = mpimg.imread(out)[..., :3]
    blue, orange = [0.12, 0.47, 0.71], [1.0, 0.5, 0.05]
    for colour in (blue, orange):
        assert (abs(pixels - colour).max(axis=-1) < 0.08).sum() > 100
    # One size is no line: one sentence, exit 2, nothing written.
    lone = tmp_path / "lone.png"
    new_experiment(root, "solo", "--bucket", "mlp")
    result = _invoke(root, ["plot", "solo", "--x", "flops", "--out", str(lone)])
    assert result.exit_code == 2 and not lone.exists()
    assert "--x flops needs 'solo' at two or more sizes (has 0)" in result.output
