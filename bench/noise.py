"""Seed-to-seed noise of the speedrun metrics, and the smallest effect a paired comparison can find.

Reads the recorded runs of one experiment (default: the starter) from archive.yaml: the rows
`grugctl compare` would use (current code, one step count and config, no smoke runs). For each metric
it prints n, mean, sd, and the smallest relative effect that 5 and 10 paired seeds detect with
power 0.8 at alpha 0.01. With only unpaired runs of one side, the paired noise is bounded by
sd_diff = sqrt(2) * sd (seeds as independent), which is what it prints; pairs of the same seed share
their data order and initialisation, so their measured differences are usually quieter.

    python bench/noise.py                      # the starter's recorded runs
    python bench/noise.py --id relu-squared --steps 200
    python bench/noise.py --code 7dc3d0a79d23  # the starter's five recorded seeds at 432b036
    python bench/noise.py --quick              # the same, for the test suite (reads only the archive)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grugctl import archive  # noqa: E402
from grugctl.evidence import compare, stats  # noqa: E402

ALPHA = 0.01
METRICS = ("val_bpb", "steps_to_target", "tokens_to_target", "time_to_target_s", "tokens_per_s")


def noise_table(
    loaded, entry_id: str, steps: int | None, seed_counts: tuple[int, ...], code: str | None = None
) -> list[str]:
    rows, steps, excluded = compare.usable_rows(loaded, entry_id, steps, code)
    lines = [f"{entry_id}: {len(rows)} usable runs at {steps} steps (left out: {dict(excluded) or 'none'})"]
    header = "| metric | n | mean | sd | sd / mean |" + "".join(f" MDE {n} pairs |" for n in seed_counts)
    lines += [header, "|" + " --- |" * (5 + len(seed_counts))]
    for name in METRICS:
        values = [row[name] for row in rows if isinstance(row.get(name), (int, float))]
        if len(values) < 2:
            lines.append(f"| {name} | {len(values)} | - | - | - |" + " - |" * len(seed_counts))
            continue
        mean, sd = stats.mean_sd(values)
        sd_diff = math.sqrt(2) * sd
        mde = [stats.detectable_effect(n, ALPHA, paired=True) * sd_diff / abs(mean) for n in seed_counts]
        cells = "".join(f" {m:.2%} |" for m in mde)
        lines.append(f"| {name} | {len(values)} | {mean:.4g} | {sd:.3g} | {sd / abs(mean):.2%} |{cells}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ROOT / "archive.yaml")
    parser.add_argument("--id", default=None, help="experiment id (default: the starter)")
    parser.add_argument("--steps", type=int, default=None, help="runs of this length (default: newest)")
    parser.add_argument("--code", help="rows of this file version (a row's `code`), not the file on disk")
    parser.add_argument("--quick", action="store_true", help="the same figures; kept for the test suite")
    args = parser.parse_args(argv)
    loaded = archive.load_archive(args.archive)
    entry_id = args.id or loaded.starter
    counts = (5,) if args.quick else (5, 10)
    print("\n".join(noise_table(loaded, entry_id, args.steps, counts, args.code)))
    print(f"MDE: smallest relative effect found with power 0.8 at alpha {ALPHA} (paired t, sd_diff = √2·sd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
