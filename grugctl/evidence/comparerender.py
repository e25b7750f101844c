"""Renders compare.Comparison lists as an aligned text table, Markdown for a PR comment, or an HTML
table for `grugctl plot`'s page. Returns strings; never prints."""

from __future__ import annotations

import html

from grugctl.evidence.compare import Comparison, MetricResult
from grugctl.evidence.stats import ci_level


def headers(c: Comparison) -> list[str]:
    """The table's columns; the interval is at 1 - alpha, the level at which the verdict is given."""
    return ["metric", "n", "candidate", "baseline", "delta", f"{ci_level(1 - c.alpha)} CI", "p", "verdict"]


_ANSI = {"better": "32", "worse": "31", "inconclusive": "33"}


def number(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 10:
        return f"{x:.2f}"
    return f"{x:.4f}"


def p_text(p: float | None) -> str:
    if p is None:
        return "-"
    return "<1e-4" if p < 1e-4 else f"{p:.2g}"


def _mean_sd(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return number(mean) if sd is None else f"{number(mean)} ± {number(sd)}"


def _delta(m: MetricResult) -> str:
    if m.delta is None:
        return "-"
    sign = "+" if m.delta > 0 else ""
    rel = f" ({m.relative_delta:+.1%})" if m.relative_delta is not None else ""
    return f"{sign}{number(m.delta)}{rel}"


def _verdict(m: MetricResult) -> str:
    arrow = "lower is better" if m.lower_is_better else "higher is better"
    text = m.verdict if m.verdict != "inconclusive" else "inconclusive"
    if m.seeds_needed is not None:
        more = max(m.seeds_needed - min(m.n_candidate, m.n_baseline), 0)
        unit = "pairs" if m.test == "paired" else "seeds per side"
        text += f" (~{m.seeds_needed} {unit} would find this effect: {more} more)"
    elif m.note:
        text += f" ({m.note})"
    return f"{text}; {arrow}"


def cells(m: MetricResult) -> list[str]:
    ci = "-" if m.ci_low is None else f"[{number(m.ci_low)}, {number(m.ci_high)}]"
    n = f"{m.n_candidate}/{m.n_baseline}" + (" paired" if m.test in ("paired", "wilcoxon") else "")
    return [
        m.metric, n, _mean_sd(m.mean_candidate, m.sd_candidate), _mean_sd(m.mean_baseline, m.sd_baseline),
        _delta(m), ci, p_text(m.p_value), _verdict(m),
    ]  # fmt: skip


def _left_out(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counts.items()) or "none"


def heading(c: Comparison) -> str:
    steps = f" at {c.steps} steps" if c.steps is not None else ""
    size = f", size {c.size}" if c.size is not None else ""
    data = f", data {c.data}" if c.data else ""
    settings = f", {c.settings}" if c.settings else ""
    return f"{c.candidate} vs {c.baseline}{steps}{size}{data}{settings} (alpha {c.alpha:g})"


def tuning_lines(c: Comparison) -> list[str]:
    """Which value of the tuned field each side was compared at, and whether the choice was held out."""
    t = c.tuned
    if t is None:
        return []
    tried = lambda means: ", ".join(f"{value} {mean:.4f}" for value, mean in sorted(means.items()))
    seeds = lambda chosen: ",".join(str(seed) for seed in chosen)
    lines = [
        f"tuned {t.field}: {c.candidate} at {t.candidate_value}, {c.baseline} at {t.baseline_value} "
        f"(mean val_bpb on seeds {seeds(t.selection_seeds)}: {c.candidate} {tried(t.tried_candidate)}; "
        f"{c.baseline} {tried(t.tried_baseline)})"
    ]
    if t.held_out:
        lines.append(
            f"  chosen on seeds {seeds(t.selection_seeds)}, tested on seeds {seeds(t.test_seeds)} only"
        )
    else:
        lines.append(
            "  NOT held out: the values were chosen on the same seeds they are tested on, so the p-value "
            "is optimistic (run more seeds: half choose, half test)"
        )
    return lines


def footnotes(c: Comparison) -> list[str]:
    lines = [
        f"rows used: {c.rows_candidate} of {c.candidate}, {c.rows_baseline} of {c.baseline}",
        f"left out of {c.candidate}: {_left_out(c.excluded_candidate)}",
        f"left out of {c.baseline}: {_left_out(c.excluded_baseline)}",
    ]
    for m in c.metrics:
        if m.left_out:
            lines.append(f"{m.metric}: also left out {_left_out(m.left_out)}")
        if m.not_reached_candidate or m.not_reached_baseline:
            lines.append(
                f"{m.metric}: never reached the target: {m.not_reached_candidate} of {m.n_candidate} "
                f"{c.candidate} runs, {m.not_reached_baseline} of {m.n_baseline} {c.baseline} runs "
                f"(counted as slowest, {m.test} rank test)"
            )
    return tuning_lines(c) + lines + ladder_lines(c)


def _times(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:.2f}x"


def ladder_lines(c: Comparison) -> list[str]:
    """The verdict across sizes: the fits, the compute multiplier at each size and one rung up, the trend."""
    if c.ladder_note:
        return [f"across sizes: no fit ({c.ladder_note})"]
    fit = c.ladder
    if fit is None:
        return []
    level = f"{ci_level(fit.confidence)} CI"
    lines = [
        f"across sizes {', '.join(fit.sizes)}: val_bpb fitted against training FLOPs C, "
        f"{c.baseline} {fit.baseline_fit.formula()}, {c.candidate} {fit.candidate_fit.formula()}",
        f"compute multiplier: how many times its FLOPs {c.baseline} needs to reach {c.candidate}'s loss",
    ]
    for m in fit.multipliers:
        where = f"{m.size} (extrapolated)" if m.extrapolated else m.size
        interval = f"{level} {_times(m.ci_low)} to {_times(m.ci_high)}"
        lines.append(f"  at {where}: {_times(m.value)} ({interval})")
    if fit.trend is not None:
        low, high = fit.trend_ci
        # delta = candidate - baseline, lower is better: a slope below zero moves the candidate ahead.
        grows, shrinks = high is not None and high < 0, low is not None and low > 0
        said = "no clear trend with scale"
        if grows or shrinks:
            said = f"{c.candidate}'s advantage {'grows' if grows else 'shrinks'} with scale"
        bounds = f"{low:+.4f} to {high:+.4f}" if low is not None and high is not None else "unbounded"
        lines.append(f"trend: delta val_bpb {fit.trend:+.4f} per 10x FLOPs ({level} {bounds}): {said}")
    if fit.failed_resamples:
        lines.append(
            f"{fit.failed_resamples} of {fit.resamples} bootstrap fits failed (counted as unbounded)"
        )
    return lines


def text(comparisons: list[Comparison], color: bool = False) -> str:
    """Aligned columns, whole lines (never cut), colour only when asked."""
    out = []
    for c in comparisons:
        rows = [headers(c), *(cells(m) for m in c.metrics)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        out.append(heading(c))
        for number_, row in enumerate(rows):
            line = "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False))
            verdict = row[-1]
            if color and number_ > 0:
                verdict = f"\x1b[{_ANSI[c.metrics[number_ - 1].verdict]}m{verdict}\x1b[0m"
            out.append(f"  {line}  {verdict}")
        out.extend(f"  {line}" for line in footnotes(c))
        out.append("")
    return "\n".join(out)


def markdown(comparisons: list[Comparison]) -> str:
    out = []
    for c in comparisons:
        columns = headers(c)
        out.append(f"**{heading(c)}**\n")
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + " --- |" * len(columns))
        for m in c.metrics:
            out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells(m)) + " |")
        out.append("")
        out.extend(f"- {line}" for line in footnotes(c))
        out.append("")
    return "\n".join(out)


def html_table(comparisons: list[Comparison]) -> str:
    out = []
    for c in comparisons:
        out.append(f"<h2>{html.escape(heading(c))}</h2>\n<table>")
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers(c)) + "</tr>")
        for m in c.metrics:
            row = "".join(f"<td>{html.escape(cell)}</td>" for cell in cells(m))
            out.append(f'<tr class="{m.verdict}">{row}</tr>')
        out.append("</table>\n<ul>")
        out.extend(f"<li>{html.escape(line)}</li>" for line in footnotes(c))
        out.append("</ul>")
    return "\n".join(out)
