"""`grugctl compare`: is an experiment better than its baseline, metric by metric, with the evidence.

Reads only archive.yaml's summary rows (records.summary_row). Rows that must not be mixed are left out
and counted: failed runs, smoke runs, damaged records, runs of other code than the file now on disk,
other sizes, step counts or configs, and, for wall-time metrics, other machines, other versions of the
core (`core`, its git tree) and runs whose machine ran other runs at once (`shared_host`, set by
hostjobs). Rows that share a `pair` id ran back to back on one machine with the same seed, and are
compared with the paired t-test; otherwise Welch's t-test.

Sizes, data and settings are never mixed: an experiment with runs at several sizes of the ladder gets
one comparison per size; the baseline's rows must have trained on the same data (dataset and tokenizer)
with the same `--set`/`--sweep` settings as the candidate's. Without --tuned, the file's own settings
are compared when they were run. With `--tuned FIELD` each side is compared at its own best value of
a swept field, chosen on some seeds and tested on the others (compare_tuned).

A run that never reached the target is not dropped from the *_to_target metrics: it counts as
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
    data: str | None = None  # records.data_key of every row compared here (None: Shakespeare bytes)
    settings: str | None = None  # the --set/--sweep settings every row compared here ran with
    tuned: Tuning | None = None  # with --tuned: what each side's best setting was and how it was chosen


@dataclass(frozen=True)
class Tuning:
    """How `compare --tuned FIELD` chose each side's setting: the value with the lowest mean val bpb on
    the selection seeds; the test then uses only the other seeds, so the p-value is not inflated by the
    choice. held_out is False when there were no other seeds (then it says so)."""

    field: str
    candidate_value: str
    baseline_value: str
    selection_seeds: tuple[int, ...]
    test_seeds: tuple[int, ...]
    held_out: bool
    tried_candidate: dict[str, float]  # value -> mean val bpb on the selection seeds
    tried_baseline: dict[str, float]


def current_code(archive: Archive, entry) -> str | None:
    """The id the rows of the file as it is now carry; a missing file falls back to its newest row's."""
    if (archive.root / entry.path).is_file():
        return records.code_id(archive.root, entry.path)[:12]
    coded = [row.get("code") for row in entry.results if row.get("code")]
    return coded[-1] if coded else None


def row_size(row: dict) -> str:
    return row.get("size") or records.DEFAULT_SIZE


ANY_SETTINGS = "*"  # usable_rows: keep every setting (and config), for tuned_rows to group


def row_data(row: dict) -> str:
    return row.get("data") or ""


def row_settings(row: dict) -> str:
    return row.get("settings") or ""


def usable_rows(
    archive: Archive,
    entry_id: str,
    steps: int | None,
    code: str | None = None,
    size: str | None = None,
    data: str | None = None,
    settings: str | None = None,
) -> tuple[list[dict], int | None, Counter]:
    """The rows that measure the current code (or the file version `code` names) at one size, data,
    setting, step count and config, and why the rest were left out. None takes the newest usable row's
    size, data and step count, and the file's own settings ("") when any row ran them."""
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
    if data is None and rows:
        data = row_data(rows[-1])
    same_data = [row for row in rows if row_data(row) == data]
    excluded["other data"] += len(rows) - len(same_data)
    rows = same_data
    if settings is None and rows:
        settings = "" if any(row_settings(row) == "" for row in rows) else row_settings(rows[-1])
    if settings != ANY_SETTINGS:
        same_settings = [row for row in rows if row_settings(row) == settings]
        excluded["other settings (compare --tuned FIELD weighs a sweep)"] += len(rows) - len(same_settings)
        rows = same_settings
    if steps is None and rows:
        steps = rows[-1].get("steps")
    same_steps = [row for row in rows if row.get("steps") == steps]
    excluded["other step count"] += len(rows) - len(same_steps)
    if settings == ANY_SETTINGS:  # each setting is its own config by design; _tuning_groups sorts them out
        return same_steps, steps, +excluded
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
        # An experiment's code id covers its own file, not the core it imports: a core that got faster
        # under the same starter code (host memory, rotary tables) would pass for a faster idea. The
        # newest candidate row names the core to compare on; rows written before rows named their core
        # have none, and compare only with each other.
        core = candidate[-1].get("core") if candidate else None
        left_out["other core"] += sum(row.get("core") != core for row in candidate + baseline)
        candidate = [row for row in candidate if row.get("core") == core]
        baseline = [row for row in baseline if row.get("core") == core]
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
            test = stats.paired_test(paired_c, paired_b, confidence=1 - alpha)
        left_out["unpaired (paired test used)"] += len(all_c) + len(all_b) - 2 * len(pairs)
    elif len(all_c) >= 2 and len(all_b) >= 2:
        if censored:
            test = stats.rank_test(all_c, all_b, paired=False)
        else:
            test = stats.welch_test(all_c, all_b, confidence=1 - alpha)
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
    data: str | None = None,
) -> Comparison:
    if not 0 < alpha < 1:
        raise GrugError(f"--alpha {alpha} must be between 0 and 1, e.g. 0.01")
    chosen = [_metric(name) for name in metrics]
    baseline = against or archive.starter
    if baseline == candidate:
        raise GrugError(f"'{candidate}' is its own baseline; name another with --against")
    rows_c, steps, excluded_c = usable_rows(archive, candidate, steps, size=size, data=data)
    size = row_size(rows_c[0]) if rows_c else size
    data, settings = (row_data(rows_c[0]), row_settings(rows_c[0])) if rows_c else (data, None)
    rows_b, _, excluded_b = usable_rows(archive, baseline, steps, size=size, data=data, settings=settings)
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
        data=data or None,
        settings=settings or None,
    )


def _tuning_groups(rows: list[dict], field: str) -> tuple[dict[str, list[dict]], int]:
    """value of `field` -> rows, among the rows whose other settings are the newest row's; rows of the
    file's own settings count under "default" (or under the swept value with the same config). Also
    how many rows other settings left out."""
    split = lambda row: dict(item.split("=", 1) for item in row_settings(row).split(",") if item)
    others = lambda row: {k: v for k, v in split(row).items() if k != field}
    kept = [row for row in rows if others(row) == others(rows[-1])] if rows else []
    label_of_config = {row.get("config"): split(row)[field] for row in kept if field in split(row)}
    groups: dict[str, list[dict]] = {}
    for row in kept:
        groups.setdefault(label_of_config.get(row.get("config"), "default"), []).append(row)
    return groups, len(rows) - len(kept)


def _choose(groups: dict[str, list[dict]], seeds: tuple[int, ...]) -> tuple[str, dict[str, float]]:
    """The value with the lowest mean val bpb over `seeds`, and every value's mean."""
    tried = {
        value: sum(row["val_bpb"] for row in rows if row["seed"] in seeds)
        / max(1, sum(row["seed"] in seeds for row in rows))
        for value, rows in groups.items()
    }
    return min(tried, key=tried.get), tried


def compare_tuned(
    archive: Archive,
    candidate: str,
    field: str,
    *,
    against: str | None = None,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    alpha: float = DEFAULT_ALPHA,
    size: str | None = None,
    data: str | None = None,
    select_seeds: int | None = None,
) -> tuple[Comparison, list[dict], list[dict]]:
    """Each side at its own best value of `field` (a --sweep): the value is chosen on the lowest
    `select_seeds` seeds that every value of both sides ran (default: half of them), and the test uses
    the other seeds at the chosen values, paired by seed (the same init and batches). Also returns the
    rows tested, for the fit across sizes."""
    chosen = [_metric(name) for name in metrics]
    baseline = against or archive.starter
    rows_c, steps, excluded_c = usable_rows(
        archive, candidate, None, size=size, data=data, settings=ANY_SETTINGS
    )
    size = row_size(rows_c[0]) if rows_c else size
    data = row_data(rows_c[0]) if rows_c else data
    rows_b, _, excluded_b = usable_rows(archive, baseline, steps, size=size, data=data, settings=ANY_SETTINGS)
    (groups_c, other_c), (groups_b, other_b) = _tuning_groups(rows_c, field), _tuning_groups(rows_b, field)
    if len(groups_c) < 2 and len(groups_b) < 2:
        raise GrugError(
            f"--tuned {field}: neither {candidate} nor {baseline} ran two values of {field} at size {size}; "
            f"run a sweep first, e.g. grugctl run {candidate} --paired --seeds 4 --sweep {field}=V1,V2"
        )
    seed_sets = [{row["seed"] for row in rows} for rows in [*groups_c.values(), *groups_b.values()]]
    common = tuple(sorted(set.intersection(*seed_sets)))
    if not common:
        raise GrugError(
            f"--tuned {field}: no seed ran at every value on both sides; run the sweep's seeds on both"
        )
    count = len(common) // 2 if select_seeds is None else select_seeds
    if not 0 <= count <= len(common):
        raise GrugError(
            f"--select-seeds {select_seeds} must be between 0 and {len(common)} (the shared seeds)"
        )
    held_out = 0 < count < len(common)
    selection = common[:count] if held_out else common
    value_c, tried_c = _choose(groups_c, selection)
    value_b, tried_b = _choose(groups_b, selection)
    tested = lambda rows: [
        row | {"pair": f"seed{row['seed']}"} for row in rows if not held_out or row["seed"] not in selection
    ]
    test_c, test_b = tested(groups_c[value_c]), tested(groups_b[value_b])
    excluded_c["other settings"] += other_c
    excluded_b["other settings"] += other_b
    excluded_c["not the chosen value or a selection seed"] += len(rows_c) - other_c - len(test_c)
    excluded_b["not the chosen value or a selection seed"] += len(rows_b) - other_b - len(test_b)
    tuning = Tuning(field, value_c, value_b, selection, tuple(sorted({r["seed"] for r in test_c})), held_out,
                    tried_c, tried_b)  # fmt: skip
    comparison = Comparison(
        candidate=candidate, baseline=baseline, alpha=alpha, steps=steps, rows_candidate=len(test_c),
        rows_baseline=len(test_b), excluded_candidate=dict(+excluded_c), excluded_baseline=dict(+excluded_b),
        # Wall time only compares runs made back to back; tuned runs pair by seed across the sweep.
        metrics=tuple(compare_metric(test_c, test_b, m, alpha) for m in chosen if not m.timing),
        size=size, data=data or None, tuned=tuning,
    )  # fmt: skip
    return comparison, test_c, test_b


def data_of(archive: Archive, entry_id: str) -> list[str]:
    """The data (records.data_key, "" for Shakespeare) the current code of `entry_id` ran on, in the
    order first run; one comparison each, since losses on different data do not compare."""
    entry = get_entry(archive, entry_id)
    code = current_code(archive, entry)
    ran = [row_data(row) for row in entry.results if row.get("code") == code and not row.get("smoke")]
    return list(dict.fromkeys(ran))


def tuned_choice(archive: Archive, entry_id: str, field: str, size: str) -> tuple[str | None, list[dict]]:
    """The best value of `field` for `entry_id` at `size` (lowest mean val bpb over the seeds every value
    ran) and its rows, for drawing and the leaderboard; compare_tuned is the test, seeds held out."""
    rows, _, _ = usable_rows(archive, entry_id, None, size=size, settings=ANY_SETTINGS)
    groups, _ = _tuning_groups(rows, field)
    if not groups:
        return None, []
    common = tuple(sorted(set.intersection(*({row["seed"] for row in g} for g in groups.values()))))
    best, _ = _choose(groups, common or tuple(row["seed"] for row in rows))
    return best, groups[best]


def sizes_of(archive: Archive, entry_id: str, data: str | None = None) -> list[str]:
    """The sizes the current code of `entry_id` has usable runs at (on `data`, if given), smallest
    (fewest FLOPs) first."""
    entry = get_entry(archive, entry_id)
    code = current_code(archive, entry)
    flops: dict[str, float] = {}
    for row in entry.results:
        if row.get("status") == "failed" or row.get("smoke") or row.get("code") != code:
            continue
        if data is not None and row_data(row) != data:
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
    tuned: str | None = None,
    select_seeds: int | None = None,
) -> list[Comparison]:
    """One comparison per candidate, or per (candidate, size) when its runs span several sizes (each
    at its own newest step count; `steps` applies to one size at a time). tuned: the swept field each
    side is compared at its own best value of (compare_tuned)."""
    if not 0 < alpha < 1:
        raise GrugError(f"--alpha {alpha} must be between 0 and 1, e.g. 0.01")
    for entry_id in [*candidates, *([against] if against else [])]:
        get_entry(archive, entry_id)
    comparisons = []
    for candidate in candidates:
        for data in data_of(archive, candidate) or [None]:
            comparisons += _across_sizes(archive, candidate, data, against=against, metrics=metrics,
                                         alpha=alpha, steps=steps, size=size, tuned=tuned,
                                         select_seeds=select_seeds)  # fmt: skip
    return comparisons


def _across_sizes(archive: Archive, candidate: str, data: str | None, *, size: str | None, tuned: str | None,
                  select_seeds: int | None, **options) -> list[Comparison]:  # fmt: skip
    """One comparison per size run on `data`, the largest with the fit across sizes when several. Without
    `tuned`, a size where the candidate swept one field is still compared at each side's best value of
    it (as promote judges), when the baseline ran the sweep too: one value of a sweep is not a verdict."""
    sizes = [size] if size is not None else sizes_of(archive, candidate, data) or [None]
    field = tuned or swept_field(archive, candidate)
    judged, tested = [], {}
    for at in sizes:
        if field is None or (tuned is None and not _swept_at(archive, candidate, field, at)):
            judged.append(compare(archive, candidate, size=at, data=data, **options))
            continue
        options_tuned = {k: v for k, v in options.items() if k != "steps"}
        try:
            comparison, rows_c, rows_b = compare_tuned(
                archive, candidate, field, size=at, data=data, select_seeds=select_seeds, **options_tuned
            )
        except GrugError:
            if tuned is not None:
                raise
            judged.append(compare(archive, candidate, size=at, data=data, **options))
            continue
        judged.append(comparison)
        tested[at] = (rows_c, rows_b)
    if len(sizes) > 1:
        largest = judged[-1]
        rows_at = lambda at: tested.get(at) or _rows_at(archive, largest, at)
        judged[-1] = with_ladder(largest, sizes, options["alpha"], rows_at)
    return judged


def _rows_at(archive: Archive, largest: Comparison, at: str) -> tuple[list[dict], list[dict]]:
    rows_c, steps, _ = usable_rows(archive, largest.candidate, None, size=at, data=largest.data or "")
    data, settings = (row_data(rows_c[0]), row_settings(rows_c[0])) if rows_c else (None, None)
    rows_b, _, _ = usable_rows(archive, largest.baseline, steps, size=at, data=data, settings=settings)
    return rows_c, rows_b


def with_ladder(largest: Comparison, sizes: list[str], alpha: float, rows_at) -> Comparison:
    """The largest size's comparison with the fit across every size both sides ran (or why not);
    rows_at(size) gives the (candidate, baseline) rows compared at that size."""
    sides: tuple[dict, dict] = ({}, {})
    flops: tuple[dict, dict] = ({}, {})
    for at in sizes:
        rows_c, rows_b = rows_at(at) or ([], [])
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
    """Each comparison's fields, with the confidence of every metric's ci_low / ci_high (1 - alpha)."""
    return [asdict(c) | {"confidence": 1 - c.alpha} for c in comparisons]


def swept_field(archive: Archive, entry_id: str) -> str | None:
    """The one config field the current code of `entry_id` ran at two or more values (`--sweep`), else
    None: promotion then judges each side at its own best value of it, as `compare --tuned` does."""
    entry = get_entry(archive, entry_id)
    code = current_code(archive, entry)
    values: dict[str, set[str]] = {}
    for row in entry.results:
        if row.get("code") == code and not row.get("smoke") and row.get("status") != "failed":
            for item in filter(None, row_settings(row).split(",")):
                name, _, value = item.partition("=")
                values.setdefault(name, set()).add(value)
    swept = [name for name, seen in values.items() if len(seen) > 1]
    return swept[0] if len(swept) == 1 else None


def evidence_for_promotion(archive: Archive, entry_id: str, alpha: float = DEFAULT_ALPHA) -> Comparison:
    """The comparison promote shows and judges by: the speedrun metric against the starter, at the
    largest size run, with the fit across sizes when there are several, and against the tuned
    baseline when the experiment swept one field (a win at one learning rate is not a win)."""
    metrics = (SPEEDRUN_METRIC, "steps_to_target")
    return compare_all(
        archive, [entry_id], metrics=metrics, alpha=alpha, tuned=swept_field(archive, entry_id)
    )[-1]


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
        field = swept_field(archive, entry_id) if rows else None
        tuned = None
        if field is not None and _swept_at(archive, entry_id, field, size):
            # the runs at its best value, and against the tuned starter (as promote judges)
            rows, tuned = _tuned_line(archive, entry_id, field, size, alpha)
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
        if tuned is not None:
            line["tuned"] = tuned["setting"]
            line["delta_val_bpb"], line["verdict"] = tuned.get("delta"), tuned.get("verdict")
        elif rows and entry_id != archive.starter and archive.starter in archive.experiments:
            if (steps, size) not in baselines:
                baselines[steps, size] = usable_rows(archive, archive.starter, steps, size=size)[0]
            baseline = baselines[steps, size]
            if baseline:
                result = compare_metric(rows, baseline, metric, alpha)
                line["delta_val_bpb"], line["verdict"] = result.delta, result.verdict
        board[entry_id] = line
    return board


def _swept_at(archive: Archive, entry_id: str, field: str, size: str) -> bool:
    rows, _, _ = usable_rows(archive, entry_id, None, size=size, settings=ANY_SETTINGS)
    return len(_tuning_groups(rows, field)[0]) > 1


def _tuned_line(
    archive: Archive, entry_id: str, field: str, size: str, alpha: float
) -> tuple[list[dict], dict]:
    """A swept experiment's leaderboard rows (its best value's held-out runs) and its verdict against
    the starter at the starter's own best value; the starter itself shows its best value's runs."""
    if entry_id == archive.starter or archive.starter not in archive.experiments:
        value, rows = tuned_choice(archive, entry_id, field, size)
        return rows, {"setting": f"{field}={value}"}
    try:
        comparison, rows, _ = compare_tuned(
            archive, entry_id, field, metrics=(SPEEDRUN_METRIC,), alpha=alpha, size=size
        )
    except GrugError:  # the starter never ran the sweep: there is no tuned baseline to judge against
        value, rows = tuned_choice(archive, entry_id, field, size)
        return rows, {"setting": f"{field}={value} (starter not swept)"}
    result, tuning = comparison.metrics[0], comparison.tuned
    setting = f"{field}={tuning.candidate_value} vs {tuning.baseline_value}"
    return rows, {"setting": setting, "delta": result.delta, "verdict": result.verdict}


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
