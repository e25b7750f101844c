"""`grugctl compare`: is an experiment better than its baseline, metric by metric, with the evidence.

Reads only archive.yaml's summary rows (records.summary_row). Rows that must not be mixed are left out
and counted: failed runs, smoke runs, damaged records, runs of other code than the file now on disk,
other sizes, step counts or configs, and, for wall-time metrics, other machines and runs whose machine
ran other runs at once (`shared_host`, set by hostjobs). Rows that share a `pair` id ran back to back
on one machine with the same seed, and are compared with the paired t-test; otherwise Welch's t-test.

Sizes are never mixed: an experiment with runs at several sizes of the ladder gets one comparison per
size. A run that never reached the target is not dropped from the *_to_target metrics: it counts as
slower than every run that did (censored), and those metrics then use rank tests (Wilcoxon signed-rank
on pairs, Mann-Whitney U otherwise) and say how many runs on each side never got there.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, replace

from grugctl.archive import Archive, get_entry
from grugctl.errors import GrugError
from grugctl.evidence import stats
from grugctl.evidence.ladder import Ladder, ladder
from grugctl.runs import records


@dataclass(frozen=True)
class Metric:
    name: str
    lower_is_better: bool
    timing: bool  # depends on the machine: compared only within one host
    description: str


METRICS = (
    Metric("val_bpb", True, False, "final validation bits per byte"),
    Metric("steps_to_target", True, False, "training steps to the target bits per byte"),
    Metric("tokens_to_target", True, False, "training tokens to the target bits per byte"),
    Metric("time_to_target_s", True, True, "training seconds to the target bits per byte"),
    Metric("tokens_per_s", False, True, "training tokens per second"),
    Metric("val_loss", True, False, "final validation loss in nats"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
DEFAULT_METRICS = ("val_bpb", "steps_to_target", "time_to_target_s")
# What promote's gate and the leaderboard judge by: the run's final validation bits per byte at an
# equal step count, which does not depend on the machine and is defined even when the target is not.
SPEEDRUN_METRIC = "val_bpb"
DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class MetricResult:
    metric: str
    lower_is_better: bool
    test: str | None  # "paired", "welch", or None when there are too few seeds
    n_candidate: int
    n_baseline: int
    mean_candidate: float | None
    sd_candidate: float | None
    mean_baseline: float | None
    sd_baseline: float | None
    delta: float | None
    relative_delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: str  # "better", "worse" or "inconclusive"
    seeds_needed: int | None  # for an inconclusive result: the seeds the observed effect would need
    left_out: dict[str, int]
    note: str | None
    not_reached_candidate: int = 0  # runs that ended above the target (censored, not dropped)
    not_reached_baseline: int = 0


@dataclass(frozen=True)
class Comparison:
    candidate: str
    baseline: str
    alpha: float
    steps: int | None
    rows_candidate: int
    rows_baseline: int
    excluded_candidate: dict[str, int]
    excluded_baseline: dict[str, int]
    metrics: tuple[MetricResult, ...]
    size: str | None = None  # the rung of the size ladder every row compared here ran at
    # Across sizes (on the largest size's comparison only): the fits, the compute multiplier and trend.
    ladder: Ladder | None = None
    ladder_note: str | None = None  # why there is no ladder although several sizes were run


def current_code(archive: Archive, entry) -> str | None:
    """The id the rows of the file as it is now carry; a missing file falls back to its newest row's."""
    if (archive.root / entry.path).is_file():
        return records.code_id(archive.root, entry.path)[:12]
    coded = [row.get("code") for row in entry.results if row.get("code")]
    return coded[-1] if coded else None


def row_size(row: dict) -> str:
    return row.get("size") or records.DEFAULT_SIZE


def usable_rows(
    archive: Archive, entry_id: str, steps: int | None, code: str | None = None, size: str | None = None
) -> tuple[list[dict], int | None, Counter]:
    """The rows that measure the current code (or the file version `code` names) at one size, step count
    and config, and why the rest were left out. size=None and steps=None take the newest usable row's."""
    entry = get_entry(archive, entry_id)
    code = code or current_code(archive, entry)
    rows, excluded = [], Counter()
    for row in entry.results:
        if row.get("status") == "failed":
            excluded["failed run"] += 1
        elif row.get("smoke"):
            excluded["smoke run"] += 1
        elif row.get("code") != code or code is None:
            excluded["other code than the current file"] += 1
        elif not isinstance(row.get("val_bpb"), (int, float)):
            excluded["no val_bpb"] += 1
        elif records.row_problem(archive.root, entry_id, row) is not None:
            excluded["damaged run record (see grugctl check)"] += 1
        else:
            rows.append(row)
    if size is None and rows:
        size = row_size(rows[-1])
    same_size = [row for row in rows if row_size(row) == size]
    excluded["other size"] += len(rows) - len(same_size)
    rows = same_size
    if steps is None and rows:
        steps = rows[-1].get("steps")
    same_steps = [row for row in rows if row.get("steps") == steps]
    excluded["other step count"] += len(rows) - len(same_steps)
    config = same_steps[-1].get("config") if same_steps else None
    same_config = [row for row in same_steps if row.get("config") == config]
    excluded["other config"] += len(same_steps) - len(same_config)
    return same_config, steps, +excluded


def _values(rows: list[dict], name: str) -> list[float]:
    return [row[name] for row in rows if isinstance(row.get(name), (int, float))]


def _main_host(rows: list[dict]) -> str | None:
    hosts = Counter(row.get("host") for row in rows if row.get("host"))
    return hosts.most_common(1)[0][0] if hosts else None


def _verdict(test: stats.Test, metric: Metric, alpha: float) -> str:
    if test.p_value is None or test.p_value >= alpha:
        return "inconclusive"
    improved = test.delta < 0 if metric.lower_is_better else test.delta > 0
    return "better" if improved else "worse"


def _value(row: dict, metric: Metric) -> float | None:
    """The row's value; for a *_to_target metric a finished run that never reached the target is
    math.inf (censored: slower than every run that did), not missing."""
    value = row.get(metric.name)
    if isinstance(value, (int, float)):
        return value
    reached_nothing = value is None and "target" in metric.name
    return math.inf if reached_nothing and isinstance(row.get("val_bpb"), (int, float)) else None


def compare_metric(candidate: list[dict], baseline: list[dict], metric: Metric, alpha: float) -> MetricResult:
    """One metric's test over rows already selected by usable_rows."""
    left_out: Counter = Counter()
    if metric.timing:  # wall time only compares within one machine, and one running a job at a time
        shared = [row for row in candidate + baseline if row.get("shared_host")]
        left_out["host ran other jobs at once"] += len(shared)
        candidate = [row for row in candidate if not row.get("shared_host")]
        baseline = [row for row in baseline if not row.get("shared_host")]
        host = _main_host(candidate)
        left_out["other host"] += sum(row.get("host") != host for row in candidate + baseline)
        candidate = [row for row in candidate if row.get("host") == host]
        baseline = [row for row in baseline if row.get("host") == host]
    left_out["no value"] += sum(_value(row, metric) is None for row in candidate + baseline)
    candidate = [row for row in candidate if _value(row, metric) is not None]
    baseline = [row for row in baseline if _value(row, metric) is not None]
    by_pair = {row["pair"]: row for row in baseline if row.get("pair")}
    pairs = [
        (_value(row, metric), _value(by_pair[row["pair"]], metric))
        for row in candidate
        if row.get("pair") in by_pair
    ]
    all_c = [_value(row, metric) for row in candidate]
    all_b = [_value(row, metric) for row in baseline]
    censored = math.inf in all_c + all_b
    values_c = [v for v in all_c if math.isfinite(v)]
    values_b = [v for v in all_b if math.isfinite(v)]
    test, note = None, None
    if len(pairs) >= 2:
        paired_c, paired_b = [c for c, _ in pairs], [b for _, b in pairs]
        if censored:
            test = stats.rank_test(paired_c, paired_b, paired=True)
        else:
            test = stats.paired_test(paired_c, paired_b)
        left_out["unpaired (paired test used)"] += len(all_c) + len(all_b) - 2 * len(pairs)
    elif len(all_c) >= 2 and len(all_b) >= 2:
        test = stats.rank_test(all_c, all_b, paired=False) if censored else stats.welch_test(all_c, all_b)
    else:
        note = f"needs at least 2 seeds on each side (has {len(all_c)} and {len(all_b)})"
    mean_c, sd_c = stats.mean_sd(values_c) if values_c else (None, None)
    mean_b, sd_b = stats.mean_sd(values_b) if values_b else (None, None)
    verdict = "inconclusive" if test is None else _verdict(test, metric, alpha)
    if test is not None and test.p_value is None:
        note = "no seed-to-seed variation to test against"
        if censored and not values_c + values_b:
            note = "no run on either side reached the target"
    needed = None
    if test is not None and verdict == "inconclusive" and test.effect_size is not None:
        needed = stats.seeds_needed(test.effect_size, alpha, paired=test.kind == "paired")
        if needed is None and test.effect_size:
            note = f"the observed effect would need more than {stats.MAX_SEEDS} seeds"
    if censored and note is None:
        note = "runs that never reached the target rank last; means are over the runs that did"
    delta = test.delta if test else (mean_c - mean_b if values_c and values_b else None)
    delta = delta if delta is None or math.isfinite(delta) else None
    return MetricResult(
        metric=metric.name,
        lower_is_better=metric.lower_is_better,
        test=test.kind if test else None,
        n_candidate=test.n_candidate if test else len(all_c),
        n_baseline=test.n_baseline if test else len(all_b),
        mean_candidate=mean_c,
        sd_candidate=sd_c,
        mean_baseline=mean_b,
        sd_baseline=sd_b,
        delta=delta,
        # A median difference over a mean of the runs that reached the target would mix two things.
        relative_delta=delta / mean_b if delta is not None and mean_b and not censored else None,
        ci_low=test.ci_low if test and math.isfinite(test.ci_low) else None,
        ci_high=test.ci_high if test and math.isfinite(test.ci_high) else None,
        p_value=test.p_value if test else None,
        verdict=verdict,
        seeds_needed=needed,
        left_out=dict(+left_out),
        note=note,
        not_reached_candidate=all_c.count(math.inf),
        not_reached_baseline=all_b.count(math.inf),
    )


def _metric(name: str) -> Metric:
    for metric in METRICS:
        if metric.name == name:
            return metric
    raise GrugError(f"unknown metric '{name}'; use one of {', '.join(METRIC_NAMES)}")


def compare(
    archive: Archive,
    candidate: str,
    *,
    against: str | None = None,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    alpha: float = DEFAULT_ALPHA,
    steps: int | None = None,
    size: str | None = None,
) -> Comparison:
    if not 0 < alpha < 1:
        raise GrugError(f"--alpha {alpha} must be between 0 and 1, e.g. 0.01")
    chosen = [_metric(name) for name in metrics]
    baseline = against or archive.starter
    if baseline == candidate:
        raise GrugError(f"'{candidate}' is its own baseline; name another with --against")
    rows_c, steps, excluded_c = usable_rows(archive, candidate, steps, size=size)
    size = row_size(rows_c[0]) if rows_c else size
    rows_b, _, excluded_b = usable_rows(archive, baseline, steps, size=size)
    return Comparison(
        candidate=candidate,
        baseline=baseline,
        alpha=alpha,
        steps=steps,
        rows_candidate=len(rows_c),
        rows_baseline=len(rows_b),
        excluded_candidate=dict(excluded_c),
        excluded_baseline=dict(excluded_b),
        metrics=tuple(compare_metric(rows_c, rows_b, metric, alpha) for metric in chosen),
        size=size,
    )


def sizes_of(archive: Archive, entry_id: str) -> list[str]:
    """The sizes the current code of `entry_id` has usable runs at, smallest (fewest FLOPs) first."""
    entry = get_entry(archive, entry_id)
    code = current_code(archive, entry)
    flops: dict[str, float] = {}
    for row in entry.results:
        if row.get("status") == "failed" or row.get("smoke") or row.get("code") != code:
            continue
        size = row_size(row)
        flops[size] = min(flops.get(size, math.inf), row.get("flops") or 0)
    return sorted(flops, key=lambda size: flops[size])


def compare_all(
    archive: Archive,
    candidates: list[str],
    *,
    against: str | None = None,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    alpha: float = DEFAULT_ALPHA,
    steps: int | None = None,
    size: str | None = None,
) -> list[Comparison]:
    """One comparison per candidate, or per (candidate, size) when its runs span several sizes (each
    at its own newest step count; `steps` applies to one size at a time)."""
    for entry_id in [*candidates, *([against] if against else [])]:
        get_entry(archive, entry_id)
    comparisons = []
    for candidate in candidates:
        sizes = [size] if size is not None else sizes_of(archive, candidate) or [None]
        judged = [
            compare(archive, candidate, against=against, metrics=metrics, alpha=alpha, steps=steps, size=at)
            for at in sizes
        ]
        if len(sizes) > 1:
            judged[-1] = with_ladder(archive, judged[-1], sizes, alpha)
        comparisons += judged
    return comparisons


def with_ladder(archive: Archive, largest: Comparison, sizes: list[str], alpha: float) -> Comparison:
    """The largest size's comparison with the fit across every size both sides ran (or why not)."""
    sides: tuple[dict, dict] = ({}, {})
    flops: tuple[dict, dict] = ({}, {})
    for at in sizes:
        rows_c, steps, _ = usable_rows(archive, largest.candidate, None, size=at)
        rows_b, _, _ = usable_rows(archive, largest.baseline, steps, size=at)
        for side, side_flops, rows in zip(sides, flops, (rows_b, rows_c), strict=True):
            if rows:
                side[at] = [(row.get("pair"), row["val_bpb"]) for row in rows]
                side_flops[at] = rows[0].get("flops")
    both = [at for at in sizes if at in sides[0] and at in sides[1]]
    if len(both) < 2:
        return replace(largest, ladder_note=f"{largest.baseline} has runs at fewer than two of these sizes")
    if any(not isinstance(side_flops.get(at), (int, float)) for side_flops in flops for at in both):
        return replace(largest, ladder_note="some rows carry no FLOPs (recorded before the size ladder)")
    try:
        fitted = ladder(both, flops, sides[0], sides[1], confidence=1 - alpha)
    except ValueError as error:
        return replace(largest, ladder_note=str(error))
    return replace(largest, ladder=fitted)


def as_json(comparisons: list[Comparison]) -> list[dict]:
    return [asdict(c) for c in comparisons]


def evidence_for_promotion(archive: Archive, entry_id: str, alpha: float = DEFAULT_ALPHA) -> Comparison:
    """The comparison promote shows and judges by: the speedrun metric against the starter, at the
    largest size run, with the fit across sizes when there are several."""
    metrics = (SPEEDRUN_METRIC, "steps_to_target")
    return compare_all(archive, [entry_id], metrics=metrics, alpha=alpha)[-1]


def largest_multiplier(comparison: Comparison):
    """The compute multiplier at the largest size run (not the extrapolated one), or None."""
    if comparison.ladder is None:
        return None
    return [m for m in comparison.ladder.multipliers if not m.extrapolated][-1]


LEADERBOARD_SORTS = ("archive", "val_bpb", "steps_to_target", "delta", "seeds")


def leaderboard(archive: Archive, entry_ids: list[str], alpha: float = DEFAULT_ALPHA) -> dict[str, dict]:
    """Per experiment: seeds of its current code at its newest size, mean val bpb, mean steps to target,
    and the delta in val bpb against the starter at that size and step count with its verdict. Entries
    without results cost nothing (no scipy)."""
    board, baselines = {}, {}  # the starter's rows once per (steps, size), not once per entry
    metric = _metric(SPEEDRUN_METRIC)
    for entry_id in entry_ids:
        entry = get_entry(archive, entry_id)
        rows, steps, _ = usable_rows(archive, entry_id, None) if entry.results else ([], None, None)
        size = row_size(rows[0]) if rows else None
        bpb, to_target = _values(rows, "val_bpb"), _values(rows, "steps_to_target")
        line = {
            "seeds": len(rows),
            "size": size,
            "steps": steps,
            "mean_val_bpb": sum(bpb) / len(bpb) if bpb else None,
            "mean_steps_to_target": sum(to_target) / len(to_target) if to_target else None,
            "delta_val_bpb": None,
            "verdict": None,
        }
        if rows and entry_id != archive.starter and archive.starter in archive.experiments:
            if (steps, size) not in baselines:
                baselines[steps, size] = usable_rows(archive, archive.starter, steps, size=size)[0]
            baseline = baselines[steps, size]
            if baseline:
                result = compare_metric(rows, baseline, metric, alpha)
                line["delta_val_bpb"], line["verdict"] = result.delta, result.verdict
        board[entry_id] = line
    return board


def sort_rows(rows: list[dict], sort_by: str) -> list[dict]:
    """Best first; rows without the figure go last, in archive order."""
    if sort_by not in LEADERBOARD_SORTS:
        raise GrugError(f"--sort-by '{sort_by}' is not one of {', '.join(LEADERBOARD_SORTS)}")
    if sort_by == "archive":
        return rows
    key = {"val_bpb": "mean_val_bpb", "steps_to_target": "mean_steps_to_target", "delta": "delta_val_bpb"}
    if sort_by == "seeds":
        return sorted(rows, key=lambda row: -row["seeds"])
    field = key[sort_by]
    return sorted(rows, key=lambda row: (row[field] is None, row[field] if row[field] is not None else 0))
