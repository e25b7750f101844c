"""`grugctl plot`: loss curves from run records, one mean curve per experiment with a band over its seeds,
the target as a line and the mean time to target marked; or, with `--x flops`, the final loss of every
(size, seed) against its training FLOPs on a log axis, the mean per size and each side's fitted power
law (evidence/ladder.py). matplotlib (Agg) draws the PNG; the HTML page embeds that PNG beside the
compare table, with no JavaScript."""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

from grugctl.archive import Archive
from grugctl.errors import GrugError
from grugctl.evidence import compare
from grugctl.runs import records

CURVE_METRICS = ("val_bpb", "val_loss", "train_loss")
X_AXES = {"step": "step", "tokens": "tokens", "time": "seconds", "flops": None}  # keys of an eval_curve
X_LABELS = {"step": "training step", "tokens": "training tokens", "time": "training seconds"}
# The mark's x for each axis, from the summary row.
CROSSING = {"step": "steps_to_target", "tokens": "tokens_to_target", "time": "time_to_target_s"}
GRID_POINTS = 200


@dataclass(frozen=True)
class Curve:
    entry_id: str
    seeds: int
    x: tuple[float, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]  # mean - sd (the band); equal to mean with one seed
    high: tuple[float, ...]
    crossing: float | None  # mean x at which the target was reached, over seeds that reached it
    target: float | None


@dataclass(frozen=True)
class Scaling:
    """One experiment across sizes: each run's (FLOPs, final value), the mean per size, the fit."""

    entry_id: str
    seeds: int  # runs drawn, over every size
    points: tuple[tuple[float, float], ...]
    sizes: tuple[str, ...]
    flops: tuple[float, ...]  # per size
    means: tuple[float, ...]
    fit: object | None  # ladder.Fit; None for val_loss (the ladder fits val_bpb)


def _points(record: dict, metric: str, x_axis: str) -> list[tuple[float, float]]:
    if metric == "train_loss":  # [step, loss] pairs; tokens and time scale with the step
        steps, tokens, seconds = (record["metrics"][k] for k in ("steps", "tokens", "train_seconds"))
        scale = {"step": 1.0, "tokens": tokens / steps, "time": seconds / steps}[x_axis]
        return [(step * scale, loss) for step, loss in record["train_curve"]]
    key = X_AXES[x_axis]
    return [
        (p[key], p[metric])
        for p in record["eval_curve"]
        if p.get(key) is not None and p.get(metric) is not None
    ]


def _interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Linear between the two points around x; None outside the curve (no extrapolation)."""
    if not points or x < points[0][0] or x > points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def mean_curve(entry_id: str, runs: list[tuple[dict, dict]], metric: str, x_axis: str) -> Curve:
    """Every seed's curve on one grid over the x range all seeds share, then mean and sd per point."""
    curves = [_points(record, metric, x_axis) for _, record in runs]
    curves = [c for c in curves if c]
    if not curves:
        raise GrugError(
            f"'{entry_id}' has no {metric} curve in its records; run it with `grugctl run {entry_id}`"
        )
    start, stop = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    grid = (
        [start + (stop - start) * i / (GRID_POINTS - 1) for i in range(GRID_POINTS)]
        if stop > start
        else [start]
    )
    mean, low, high, xs = [], [], [], []
    for x in grid:
        ys = [y for y in (_interpolate(c, x) for c in curves) if y is not None]
        if not ys:
            continue
        m = sum(ys) / len(ys)
        sd = math.sqrt(sum((y - m) ** 2 for y in ys) / (len(ys) - 1)) if len(ys) > 1 else 0.0
        xs.append(x), mean.append(m), low.append(m - sd), high.append(m + sd)
    crossings = [row[CROSSING[x_axis]] for row, _ in runs if row.get(CROSSING[x_axis]) is not None]
    target = runs[0][1]["metrics"].get("target_val_bpb") if metric == "val_bpb" else None
    crossing = sum(crossings) / len(crossings) if crossings and metric == "val_bpb" else None
    return Curve(entry_id, len(curves), tuple(xs), tuple(mean), tuple(low), tuple(high), crossing, target)


def load_curves(
    archive: Archive, entry_ids: list[str], metric: str, x_axis: str, steps: int | None
) -> list[Curve]:
    """The usable rows of each experiment (as compare selects them) and their records' curves."""
    if metric not in CURVE_METRICS:
        raise GrugError(f"unknown curve metric '{metric}'; use one of {', '.join(CURVE_METRICS)}")
    if x_axis not in X_AXES:
        raise GrugError(f"unknown --x '{x_axis}'; use one of {', '.join(X_AXES)}")
    curves = []
    for entry_id in entry_ids:
        rows, chosen_steps, _ = compare.usable_rows(archive, entry_id, steps)
        if not rows:
            raise GrugError(
                f"'{entry_id}' has no recorded runs of its current code; `grugctl run {entry_id}` first"
            )
        steps = steps if steps is not None else chosen_steps
        runs = [(row, records.read_record(archive.root, row["record"])) for row in rows]
        curves.append(mean_curve(entry_id, runs, metric, x_axis))
    return curves


def load_scaling(
    archive: Archive, entry_ids: list[str], metric: str, tuned: str | None = None
) -> list[Scaling]:
    """Every size each experiment's current code ran (one step count and config per size, as compare
    picks them; with `tuned`, at each size the value of that swept field with the lowest mean val bpb,
    compare.tuned_choice); two sizes at least, or there is no line to draw."""
    from grugctl.evidence.ladder import fit_power_law

    if metric not in ("val_bpb", "val_loss"):
        raise GrugError(f"--x flops draws a run's final val_bpb or val_loss, not '{metric}'")
    drawn = []
    for entry_id in entry_ids:
        sizes = compare.sizes_of(archive, entry_id)
        if tuned is None:
            rows = {size: compare.usable_rows(archive, entry_id, None, size=size)[0] for size in sizes}
        else:
            rows = {size: compare.tuned_choice(archive, entry_id, tuned, size)[1] for size in sizes}
        rows = {size: [r for r in rows[size] if isinstance(r.get("flops"), (int, float))] for size in sizes}
        sizes = [size for size in sizes if rows[size]]
        if len(sizes) < 2:
            raise GrugError(
                f"--x flops needs '{entry_id}' at two or more sizes (has {len(sizes)}); "
                f"`grugctl run {entry_id} --sizes xs,s,m` records them"
            )
        flops = [rows[size][0]["flops"] for size in sizes]
        means = [sum(r[metric] for r in rows[size]) / len(rows[size]) for size in sizes]
        points = tuple((r["flops"], r[metric]) for size in sizes for r in rows[size])
        try:
            fit = fit_power_law(flops, means) if metric == "val_bpb" else None
        except ValueError:
            fit = None
        drawn.append(Scaling(entry_id, len(points), points, tuple(sizes), tuple(flops), tuple(means), fit))
    return drawn


def _axes():
    """A figure and its axes on matplotlib's file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot.subplots(figsize=(8, 5), dpi=110)


def _png(figure, axes) -> bytes:
    from matplotlib import pyplot

    axes.legend()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    return buffer.getvalue()


def scaling_png(drawn: list[Scaling], metric: str) -> bytes:
    import numpy as np

    figure, axes = _axes()
    for number, scaling in enumerate(drawn):
        color = f"C{number}"
        xs, ys = zip(*scaling.points, strict=True)
        axes.scatter(xs, ys, color=color, alpha=0.4, s=14)
        label = f"{scaling.entry_id} ({', '.join(scaling.sizes)}; {scaling.seeds} runs)"
        axes.plot(scaling.flops, scaling.means, "o", color=color, markersize=7, label=label)
        if scaling.fit is not None:
            grid = np.geomspace(min(scaling.flops) / 1.5, max(scaling.flops) * 3, GRID_POINTS)
            fit = scaling.fit
            axes.plot(
                grid, [fit.loss(x) for x in grid], color=color, linewidth=1.2, label=f"fit {fit.formula()}"
            )
    axes.set_xscale("log")
    axes.set_xlabel("training FLOPs")
    axes.set_ylabel(f"final {metric}")
    axes.set_title(f"final {metric} against compute: one dot per run, large dots the mean per size")
    axes.grid(alpha=0.3, which="both")
    return _png(figure, axes)


def png(curves: list[Curve], metric: str, x_axis: str) -> bytes:
    figure, axes = _axes()
    for number, curve in enumerate(curves):
        color = f"C{number}"
        label = f"{curve.entry_id} ({curve.seeds} seed{'s' * (curve.seeds != 1)})"
        axes.plot(curve.x, curve.mean, color=color, label=label, linewidth=1.6)
        axes.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
        if curve.crossing is not None and curve.target is not None:
            axes.axvline(curve.crossing, color=color, linestyle=":", linewidth=1)
            axes.plot([curve.crossing], [curve.target], marker="o", color=color)
    low = min(min(c.low) for c in curves)
    top = max(max(c.mean[len(c.mean) // 10 :] or c.mean) for c in curves)  # skip the steep start
    axes.set_ylim(low - 0.05 * (top - low), top + 0.1 * (top - low))
    target = next((c.target for c in curves if c.target is not None), None)
    if target is not None:
        # The y range follows the curves: a short run far above the target would be flattened by it.
        below = " (below this range)" if target < low - 0.05 * (top - low) else ""
        axes.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target} bpb{below}")
    axes.set_xlabel(X_LABELS[x_axis])
    axes.set_ylabel(metric)
    axes.set_title(f"{metric}: mean over seeds, band = ±1 sd; dotted = mean crossing of the target")
    axes.grid(alpha=0.3)
    return _png(figure, axes)


def html_page(image: bytes, table_html: str, title: str) -> str:
    encoded = base64.b64encode(image).decode()
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.better td:last-child {{ color: #070; }} tr.worse td:last-child {{ color: #a00; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<img alt="curves" src="data:image/png;base64,{encoded}">
{table_html}
</body></html>
"""


def write_plot(
    archive: Archive,
    entry_ids: list[str],
    out: Path,
    *,
    metric: str = "val_bpb",
    x_axis: str = "step",
    steps: int | None = None,
    against: str | None = None,
    dry_run: bool = False,
    tuned: str | None = None,
) -> list[Curve]:
    """Write `out` (.png or .html); the HTML page adds the comparison of each id with the baseline.
    Returns what was drawn: a Curve per experiment, or with x_axis "flops" a Scaling.
    A dry run loads and checks the curves it would draw and writes nothing."""
    from grugctl.evidence import comparerender
    from grugctl.transaction import write_bytes

    suffix = out.suffix.lower()
    if suffix not in (".png", ".html"):
        raise GrugError(f"--out {out} must end in .png or .html")
    if tuned is not None and x_axis != "flops":
        raise GrugError(
            "--tuned applies to --x flops (each size at its best value); drop it or add --x flops"
        )
    if x_axis == "flops":
        curves = load_scaling(archive, entry_ids, metric, tuned)
    else:
        curves = load_curves(archive, entry_ids, metric, x_axis, steps)
    if dry_run:
        return curves
    image = scaling_png(curves, metric) if x_axis == "flops" else png(curves, metric, x_axis)
    if suffix == ".png":
        data = image
    else:
        baseline = against or archive.starter
        candidates = [entry_id for entry_id in entry_ids if entry_id != baseline]
        comparisons = compare.compare_all(archive, candidates, against=baseline, steps=steps)
        title = f"grugctl plot {' '.join(entry_ids)}"
        data = html_page(image, comparerender.html_table(comparisons), title).encode()
    try:
        write_bytes(out, data)
    except OSError as error:
        raise GrugError(f"cannot write {out} ({error.strerror}); pick another --out path") from None
    return curves
