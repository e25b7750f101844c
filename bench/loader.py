"""Does the input ever stall the step? The loaders' tokens/s next to what the starter consumes, and the
share of step time spent waiting for the next batch, with and without the prefetching thread.

- Throughput: int32 [32, 129] windows per second from byte-level Shakespeare (grug_core.data.batches)
  and from token shards (grug_core.shards, 16 M synthetic uint16 tokens in 4 memory-mapped shards).
- Waiting: a loop that "trains" for the starter's step time (time.sleep, which like a running XLA
  step releases the GIL) and takes the next batch between steps; the share is the time in next()
  over the whole loop. The starter's step time is its records' tokens/s on this machine.

Run: .venv/bin/python bench/loader.py [--steps 200] [--step-seconds 0.45] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grug_core import data, shards  # noqa: E402

BATCH, SEQ = 32, 128  # the starter's default size
TARGET_WAIT = 0.01


def throughput(source, count: int) -> float:
    next(source)
    start = time.perf_counter()
    for _ in range(count):
        next(source)
    return count * BATCH * SEQ / (time.perf_counter() - start)


def waiting_share(source, steps: int, step_seconds: float) -> float:
    next(source)
    waited, start = 0.0, time.perf_counter()
    for _ in range(steps):
        time.sleep(step_seconds)  # the step: XLA runs, the GIL is free
        asked = time.perf_counter()
        next(source)
        waited += time.perf_counter() - asked
    return waited / (time.perf_counter() - start)


def synthetic_shards(folder: Path, tokens: int, count: int) -> shards.ShardSet:
    rng = np.random.default_rng(0)
    for number in range(count):
        shards.write_shard(folder / f"bench_train_{number:06d}.bin", rng.integers(0, 50257, tokens // count))
    return shards.shard_set(folder, "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=4096 / 9000,
        help="the starter's step (4,096 tokens at ~9k tok/s)",
    )
    parser.add_argument("--quick", action="store_true", help="20 steps of 10 ms: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.step_seconds = 20, 0.01
    print(f"{os.cpu_count()} cores; batch {BATCH} x {SEQ}; a step of {args.step_seconds * 1000:.0f} ms")
    consumed = BATCH * SEQ / args.step_seconds
    with tempfile.TemporaryDirectory() as tmp:
        shard_set = synthetic_shards(Path(tmp), 1_000_000 if args.quick else 16_000_000, 4)
        sources = {
            "bytes (Shakespeare)": lambda prefetch: (
                data.batches("train", BATCH, SEQ, 0) if prefetch
                else data._random_windows(data.load_split("train"), BATCH, SEQ, 0)
            ),
            "token shards": lambda prefetch: (
                data.prefetched(shards.shard_windows(shard_set, BATCH, SEQ, 0)) if prefetch
                else shards.shard_windows(shard_set, BATCH, SEQ, 0)
            ),
        }  # fmt: skip
        for name, make in sources.items():
            rate = throughput(make(False), args.steps)
            print(f"{name}: {rate:,.0f} tokens/s made, {rate / consumed:,.0f}x what the starter consumes")
            for prefetch in (False, True):
                share = waiting_share(make(prefetch), args.steps, args.step_seconds)
                verdict = "PASS" if share < TARGET_WAIT else "MISS"
                how = "prefetched" if prefetch else "inline"
                target = f"target < {TARGET_WAIT:.0%}"
                print(f"  {how}: {share:.3%} of the loop waiting on data ({verdict}, {target})")


if __name__ == "__main__":
    main()
