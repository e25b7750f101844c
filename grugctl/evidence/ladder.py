"""Across sizes, one verdict: how much compute an idea is worth, with its uncertainty.

Each side's mean val bits per byte against training FLOPs is fitted with a power law (numpy, scipy):
L(C) = E + A * C^-alpha with three or more sizes (least squares, E the loss no compute removes, found
by scipy.optimize's bounded minimiser), L(C) = A * C^-alpha (a straight line in log-log) with two.
The **compute multiplier** at a size is how many times that size's FLOPs the baseline's fit needs to
reach the candidate's loss there: 2.0 means the idea is worth doubling the compute. It is given at
every size run and one rung up (extrapolated through the candidate's own fit), and the **trend** is
the slope of the loss delta (candidate - baseline) against log10 FLOPs: negative, the gain grows with
scale.

Uncertainty is a bootstrap over seeds: the seeds of each (side, size) are resampled with replacement
(pairs together when paired) and everything is refitted. The interval is Student's t at the comparison's
confidence (1 - alpha) with n - 1 degrees of freedom for n seeds, on the resamples' standard error
(in log space for multipliers), not the resamples' percentiles: with 3-5 seeds a resampled mean takes
few values and percentile intervals come out too narrow (99 % ones missed a known 1.5x on synthetic
data, tests/test_ladder.py). A resample whose fit fails or whose candidate loss lies below the
baseline's asymptote counts as an unbounded multiplier: past the interval's share, its upper end is
unbounded rather than hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The interval reads the resamples' standard error, not their far percentiles: 400 pin it to ~4 %
# (a 1,000-resample interval is 2.5x slower: ~2 s for three sizes on a 2-core Xeon).
BOOTSTRAP = 400
SEED = 0  # the same rows give the same interval


@dataclass(frozen=True)
class Fit:
    """L(C) = E + A * C^-alpha on mean val bpb per size; E = 0 when only two sizes were run."""

    e: float
    a: float
    alpha: float

    def loss(self, flops: float) -> float:
        return self.e + self.a * flops**-self.alpha

    def formula(self) -> str:
        floor = f"{self.e:.3f} + " if self.e else ""
        return f"{floor}{self.a:.3g} C^-{self.alpha:.3f}"

    def flops_for(self, loss: float) -> float:
        """The compute at which this law reaches `loss`; inf below its asymptote."""
        gap = loss - self.e
        return math.inf if gap <= 0 else (self.a / gap) ** (1 / self.alpha)


@dataclass(frozen=True)
class Multiplier:
    size: str
    flops: float
    value: float | None  # None: the candidate beat the baseline's asymptote (no finite compute matches)
    ci_low: float | None
    ci_high: float | None  # None: unbounded
    extrapolated: bool = False


@dataclass(frozen=True)
class Ladder:
    sizes: tuple[str, ...]  # the sizes both sides ran, fewest FLOPs first
    confidence: float
    baseline_fit: Fit
    candidate_fit: Fit
    multipliers: tuple[Multiplier, ...]  # one per size, then one rung up
    trend: float | None  # d(delta val bpb) / d(log10 FLOPs)
    trend_ci: tuple[float | None, float | None]
    resamples: int
    failed_resamples: int  # fits that did not converge: counted as unbounded multipliers


def fit_power_law(flops: list[float], losses: list[float]) -> Fit:
    """Least squares on one (FLOPs, mean loss) point per size; raises ValueError when loss does not fall
    with compute. With three or more sizes the floor E is found by scipy's bounded scalar minimiser over
    E in [0, min loss), A and alpha in closed form for each E (a straight line in log(L - E) against log C):
    the least-squares fit a general curve fitter would search for, fast enough for hundreds of bootstrap
    refits (curve_fit's trust-region search took 10x longer on three sizes)."""
    import numpy as np

    x, y = np.log(np.asarray(flops, float)), np.asarray(losses, float)

    def line(e: float) -> tuple[float, Fit]:
        slope, intercept = np.polyfit(x, np.log(y - e), 1)
        fit = Fit(float(e), float(math.exp(intercept)), float(-slope))
        return float(np.sum((fit.e + fit.a * np.exp(slope * x) - y) ** 2)), fit

    sse, fit = line(0.0)
    if fit.alpha <= 0:
        raise ValueError("loss does not fall with compute")
    if len(flops) < 3:
        return fit
    from scipy.optimize import minimize_scalar

    top = float(np.min(y)) * (1 - 1e-6)
    best = minimize_scalar(lambda e: line(e)[0], bounds=(0.0, top), method="bounded")
    floored_sse, floored = line(float(best.x))
    return floored if floored_sse < sse and floored.alpha > 0 else fit


def _means(points: dict[str, list[float]], sizes: list[str]) -> list[float]:
    return [sum(points[s]) / len(points[s]) for s in sizes]


def _estimate(sizes, base_flops: list[float], cand_flops: list[float], next_flops: float, base, cand):
    """(multipliers per size and one rung up, trend, baseline fit, candidate fit) for one sample. The
    multiplier divides by the candidate's own FLOPs: an idea that costs compute pays for it here."""
    import numpy as np

    base_mean, cand_mean = _means(base, sizes), _means(cand, sizes)
    base_fit, cand_fit = fit_power_law(base_flops, base_mean), fit_power_law(cand_flops, cand_mean)
    values = [base_fit.flops_for(loss) / x for loss, x in zip(cand_mean, cand_flops, strict=True)]
    values.append(base_fit.flops_for(cand_fit.loss(next_flops)) / next_flops)
    deltas = [c - b for c, b in zip(cand_mean, base_mean, strict=True)]
    trend = float(np.polyfit(np.log10(cand_flops), deltas, 1)[0])
    return values, trend, base_fit, cand_fit


def _interval(
    samples: list[float], point: float, confidence: float, seeds: int, log: bool
) -> tuple[float | None, float | None]:
    """point -/+ t(seeds - 1) x the bootstrap standard error, in log space when `log`; an upper end is
    None (unbounded) when more than the interval's tail of the resamples were unbounded."""
    import numpy as np
    from scipy import stats

    if not math.isfinite(point) or seeds < 2:
        return None, None
    finite = np.asarray([s for s in samples if math.isfinite(s) and (s > 0 or not log)], float)
    if len(finite) < 2:
        return None, None
    tail = (1 - confidence) / 2
    spread = np.log(finite) if log else finite
    se = float(np.std(spread, ddof=1)) * math.sqrt(seeds / (seeds - 1))  # the bootstrap's n-1 vs n
    half = float(stats.t.ppf(1 - tail, seeds - 1)) * se
    centre = math.log(point) if log else point
    low, high = (math.exp(centre - half), math.exp(centre + half)) if log else (centre - half, centre + half)
    unbounded = 1 - len(finite) / len(samples)
    return low, (None if unbounded > tail else high)


def ladder(
    sizes: list[str],
    flops: tuple[dict[str, float], dict[str, float]],
    baseline: dict[str, list[tuple[str | None, float]]],
    candidate: dict[str, list[tuple[str | None, float]]],
    confidence: float,
    resamples: int = BOOTSTRAP,
) -> Ladder:
    """sizes: at least two, fewest FLOPs first; flops: (baseline's, candidate's) training FLOPs per size;
    baseline/candidate: size -> [(pair id or None, val bpb)] per seed. One rung up is as far above the
    largest size as the largest is above the one below it. Raises ValueError (a sentence) when the
    ladder cannot be fitted."""
    import numpy as np

    if len(sizes) < 2:
        raise ValueError("a fit across sizes needs runs at two or more sizes on both sides")
    base_flops, cand_flops = ([side[s] for s in sizes] for side in flops)
    step = cand_flops[-1] / cand_flops[-2]
    next_rung = (f"one rung up ({step:.1f}x the FLOPs of {sizes[-1]})", cand_flops[-1] * step)
    estimate = lambda base, cand: _estimate(sizes, base_flops, cand_flops, next_rung[1], base, cand)
    values = lambda side: {s: [v for _, v in side[s]] for s in sizes}
    point, trend, base_fit, cand_fit = estimate(values(baseline), values(candidate))
    seeds = min(len(side[s]) for side in (baseline, candidate) for s in sizes)
    rng = np.random.default_rng(SEED)
    samples, trends, failed = [], [], 0
    for _ in range(resamples):
        base_s, cand_s = {}, {}
        for s in sizes:
            base_s[s], cand_s[s] = _resample(baseline[s], candidate[s], rng)
        try:
            sample, sample_trend, _, _ = estimate(base_s, cand_s)
        except (ValueError, RuntimeError):  # no fit: loss does not fall, or numpy's solver gave up
            failed += 1
            sample, sample_trend = [math.inf] * (len(sizes) + 1), math.nan
        samples.append(sample)
        if math.isfinite(sample_trend):
            trends.append(sample_trend)
    columns = list(zip(*samples, strict=True))
    names = [*sizes, next_rung[0]]
    at = [*cand_flops, next_rung[1]]
    multipliers = tuple(
        Multiplier(
            name,
            x,
            value if math.isfinite(value) else None,
            *_interval(list(column), value, confidence, seeds, log=True),
            extrapolated=name == next_rung[0],
        )  # fmt: skip
        for name, x, value, column in zip(names, at, point, columns, strict=True)
    )
    trend_ci = _interval(trends, trend, confidence, seeds, log=False) if trends else (None, None)
    return Ladder(
        tuple(sizes), confidence, base_fit, cand_fit, multipliers, trend, trend_ci, resamples, failed
    )


def _resample(base: list, cand: list, rng) -> tuple[list[float], list[float]]:
    """The seeds of one size, drawn with replacement: pairs together when both sides share pair ids."""
    pairs = {p: v for p, v in base if p}
    matched = [(pairs[p], v) for p, v in cand if p in pairs]
    if len(matched) >= 2:
        picks = rng.integers(0, len(matched), len(matched))
        return [matched[i][0] for i in picks], [matched[i][1] for i in picks]
    pick = lambda side: [side[i][1] for i in rng.integers(0, len(side), len(side))]
    return pick(base), pick(cand)
