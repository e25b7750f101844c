"""The statistics behind `grugctl compare`: t-tests, confidence intervals and power, from scipy.

Paired seeds (the same seed for baseline and candidate, run alternately on one machine) use the paired
t-test on the per-seed differences; anything else uses Welch's t-test, which does not assume equal
variances. The t-tests, intervals and power take the distributions' functions from scipy.special
(what scipy.stats wraps, same values): `archive status` judges every experiment, and importing
scipy.stats costs ~1 s there where scipy.special costs ~0.3-0.4 s. Only the rank tests import scipy.stats.
scipy is imported inside each function, so commands that judge nothing pay for neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

POWER = 0.8
MAX_SEEDS = 1000


@dataclass(frozen=True)
class Test:
    """delta = candidate - baseline (mean of differences when paired), its CI at the confidence asked
    for, and the p-value."""

    kind: str  # "paired", "welch", or for censored metrics "wilcoxon" (paired) or "mann-whitney"
    n_candidate: int
    n_baseline: int
    delta: float
    ci_low: float
    ci_high: float
    p_value: float | None
    effect_size: float | None  # delta in units of its noise (Cohen's d, or d_z when paired)


def ci_level(confidence: float) -> str:
    """A confidence as a percentage, without trailing zeros: 0.99 -> "99%", 0.995 -> "99.5%"."""
    return f"{confidence * 100:.4g}%"


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, sd


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom (scipy.stats.t.sf's function)."""
    from scipy.special import stdtr

    return float(2 * stdtr(df, -abs(t)))


def _t_quantile(q: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def paired_test(candidate: list[float], baseline: list[float], confidence: float) -> Test:
    """Same-length lists, element i of each from the same seed; needs at least two pairs. The CI at
    `confidence` = 1 - alpha excludes zero exactly when p < alpha, so interval and verdict agree."""
    diffs = [c - b for c, b in zip(candidate, baseline, strict=True)]
    n = len(diffs)
    mean, sd = mean_sd(diffs)
    if not sd:  # identical differences: no noise to test against, so no interval and no p-value
        return Test("paired", n, n, mean, math.nan, math.nan, None, None)
    stderr = sd / math.sqrt(n)
    half = _t_quantile(0.5 + confidence / 2, n - 1) * stderr
    p_value = _two_sided_p(mean / stderr, n - 1)
    return Test("paired", n, n, mean, mean - half, mean + half, _finite(p_value), mean / sd)


def welch_test(candidate: list[float], baseline: list[float], confidence: float) -> Test:
    """Independent samples of at least two each; Welch-Satterthwaite degrees of freedom for the CI (at
    `confidence` = 1 - alpha, which excludes zero exactly when p < alpha) and the p-value."""
    (mc, sc), (mb, sb) = mean_sd(candidate), mean_sd(baseline)
    nc, nb = len(candidate), len(baseline)
    delta = mc - mb
    vc, vb = sc**2 / nc, sb**2 / nb
    if vc + vb == 0:  # no noise on either side: no interval and no p-value
        return Test("welch", nc, nb, delta, math.nan, math.nan, None, None)
    df = (vc + vb) ** 2 / (vc**2 / (nc - 1) + vb**2 / (nb - 1))
    half = _t_quantile(0.5 + confidence / 2, df) * math.sqrt(vc + vb)
    p_value = _two_sided_p(delta / math.sqrt(vc + vb), df)
    pooled = math.sqrt((sc**2 + sb**2) / 2)
    return Test("welch", nc, nb, delta, delta - half, delta + half, _finite(p_value), delta / pooled)


def power(effect_size: float, n: int, alpha: float, paired: bool) -> float:
    """Chance that a two-sided t-test at `alpha` finds an effect of this size with n seeds (per side)."""
    from scipy.special import nctdtr, ndtr

    df = n - 1 if paired else 2 * n - 2
    if df < 1:
        return 0.0
    shift = abs(effect_size) * math.sqrt(n if paired else n / 2)
    critical = _t_quantile(1 - alpha / 2, df)
    # The noncentral t's mass beyond +critical and below -critical (scipy.stats.nct's sf and cdf).
    value = float(1 - nctdtr(df, shift, critical) + nctdtr(df, shift, -critical))
    if not math.isfinite(value):
        # scipy's noncentral t returns nan far out (a d of 2 at 50 pairs): with that many degrees of
        # freedom the normal approximation is exact to well below the 0.8 that matters here.
        value = float(1 - ndtr(critical - shift) + ndtr(-critical - shift))
    return value


def seeds_needed(effect_size: float | None, alpha: float, paired: bool) -> int | None:
    """The smallest seed count (pairs, or seeds per side) that finds this effect with power 0.8;
    None when the effect is zero or needs more than MAX_SEEDS."""
    if not effect_size:
        return None
    low, high = 2, MAX_SEEDS
    if power(effect_size, high, alpha, paired) < POWER:
        return None
    while low < high:  # power grows with n
        mid = (low + high) // 2
        if power(effect_size, mid, alpha, paired) >= POWER:
            high = mid
        else:
            low = mid + 1
    return low


def detectable_effect(n: int, alpha: float, paired: bool) -> float:
    """The smallest effect size (in sd units) that n seeds find with power 0.8 at alpha."""
    low, high = 0.0, 1.0
    while power(high, n, alpha, paired) < POWER:  # nct loses accuracy at huge shifts: grow gently
        low, high = high, high * 2
    for _ in range(40):
        mid = (low + high) / 2
        if power(mid, n, alpha, paired) >= POWER:
            high = mid
        else:
            low = mid
    return high


def rank_test(candidate: list[float], baseline: list[float], paired: bool) -> Test:
    """For a metric some runs never reached (math.inf: after every run that did, tied among themselves):
    the Wilcoxon signed-rank test on paired seeds, else the Mann-Whitney U test. delta is the median
    difference (paired) or the difference of medians, None-like (inf) when a median was not reached; no
    CI and no effect size, since the values past the end of a run are unknown."""
    from scipy import stats

    finite = [abs(v) for v in candidate + baseline if math.isfinite(v)]
    # A run that did not reach the target is slower than any that did, whatever the amounts: one value
    # past every finite one keeps that order for the ranks, which are all these tests read.
    beyond = 2 * max(finite, default=1.0) + 1
    capped = lambda values: [v if math.isfinite(v) else beyond for v in values]
    c, b = capped(candidate), capped(baseline)
    if paired:
        diffs = [x - y for x, y in zip(c, b, strict=True)]
        n = len(diffs)
        delta = _median([x - y for x, y in zip(candidate, baseline, strict=True) if x != y] or [0.0])
        if not any(diffs):
            return Test("wilcoxon", n, n, delta, math.nan, math.nan, None, None)
        p_value = stats.wilcoxon(c, b, zero_method="wilcox").pvalue
        return Test("wilcoxon", n, n, delta, math.nan, math.nan, _finite(p_value), None)
    delta = _median(candidate) - _median(baseline)
    delta = delta if not math.isnan(delta) else 0.0  # both medians past the end: no difference seen
    if len(set(c + b)) == 1:
        return Test("mann-whitney", len(c), len(b), delta, math.nan, math.nan, None, None)
    p_value = stats.mannwhitneyu(c, b, alternative="two-sided").pvalue
    return Test("mann-whitney", len(c), len(b), delta, math.nan, math.nan, _finite(p_value), None)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
