"""What checkpointing costs the starter's default model (size `s`: d128 L4, batch 32 x 128): a jitted
grug_core train step, the time an async save adds to the training loop, the write's own time until it
is durable, its size on disk, and the time to resume (open the folder, restore params and AdamW state).

The loop's cost per save is measured in pairs of blocks of BLOCK steps, one plain and one that saves
at its first step (the write then runs in the background while the block trains, as in a run), so a
machine whose speed drifts does not bias it; the median over pairs, less the plain block, is the cost
of one save. The overhead at an interval of N steps is that cost over N steps' training time.

    python bench/checkpoint.py [--interval 100] [--pairs 8] [--quick]

Target: < 5 % of training time at the default interval, 100 steps (a 450-step run saves four times
and a preemption loses at most 100 steps, ~45 s on 2 CPU cores).
"""

# Axes: B batch, S sequence.
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grug_core.checkpoint import (  # noqa: E402
    close_checkpoints,
    open_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    wait_for_checkpoints,
)
from grug_core.loss import next_token_loss  # noqa: E402
from grug_core.model import GrugConfig, forward, init_parameters  # noqa: E402
from grug_core.optim import optimizer  # noqa: E402
from grug_core.sizes import SIZES, rung_model  # noqa: E402

DEFAULT_INTERVAL = 100
TARGET_OVERHEAD = 0.05
BLOCK = 10  # steps per block; a save's background write ends well inside one (see the write time)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            name = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), ""
            )
    except OSError:
        name = ""
    return f"{name or 'unknown CPU'}, {os.cpu_count()} cores"


def make_step(cfg: GrugConfig, tx: optax.GradientTransformation):
    def loss_fn(params, tokens):
        hidden = forward(params, tokens[:, :-1], cfg)
        return next_token_loss(hidden, params.lm_head, tokens[:, 1:], z_loss_weight=1e-4)

    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))  # donated, as in the starter: save must copy first


def run_block(step, state, tokens, steps: int, manager=None, at: int = 0):
    """`steps` train steps; with a manager, a save at the first one. Returns (state, seconds, save_s)."""
    params, opt_state = state
    start, save_seconds = time.perf_counter(), 0.0
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, tokens)
        float(loss)  # wait for the step, as the starter does
        if manager is not None and i == 0:
            before = time.perf_counter()
            save_checkpoint(manager, at, {"params": params, "opt_state": opt_state}, {"step": at})
            save_seconds = time.perf_counter() - before
    return (params, opt_state), time.perf_counter() - start, save_seconds


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=int, default=DEFAULT_INTERVAL, help="steps between saves")
    parser.add_argument("--pairs", type=int, default=8, help="pairs of blocks (plain, with a save)")
    parser.add_argument("--quick", action="store_true", help="3 pairs")
    args = parser.parse_args()
    pairs = 3 if args.quick else args.pairs

    rung = SIZES["s"]
    cfg = GrugConfig(**rung_model(rung))
    tx = optimizer(3e-3, 1000, warmup_steps=10)
    params = init_parameters(cfg, jax.random.key(0))
    state = (params, tx.init(params))
    tokens = jax.random.randint(jax.random.key(1), (rung.batch_size, rung.seq_len + 1), 0, cfg.vocab_size)
    step = make_step(cfg, tx)
    state, _, _ = run_block(step, state, tokens, 3)  # compile and warm up
    n_params = sum(x.size for x in jax.tree.leaves(state[0]))
    print(f"{cpu_name()}; jax {jax.__version__} on {jax.default_backend()}")
    print(
        f"model s: {n_params:,} parameters, batch {rung.batch_size} x {rung.seq_len}, AdamW (3 copies saved)"
    )

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "ckpt"
        identity = {"experiment": "bench", "config": {"model": cfg.__dict__}, "code": "bench"}
        manager = open_checkpoints(directory, identity, keep=2)

        # The write alone, until durable (no training beside it).
        start = time.perf_counter()
        save_checkpoint(manager, 0, {"params": state[0], "opt_state": state[1]}, {"step": 0})
        wait_for_checkpoints(manager)
        write_seconds = time.perf_counter() - start
        size = folder_bytes(directory / "0")

        plain, saving, blocking = [], [], []
        for pair in range(pairs):
            state, seconds, _ = run_block(step, state, tokens, BLOCK)
            plain.append(seconds)
            state, seconds, save_seconds = run_block(step, state, tokens, BLOCK, manager, at=pair + 1)
            saving.append(seconds)
            blocking.append(save_seconds)
        close_checkpoints(manager)

        start = time.perf_counter()
        manager = open_checkpoints(directory, identity)
        restored, meta = restore_checkpoint(manager, None, {"params": state[0], "opt_state": state[1]})
        jax.block_until_ready(restored)
        resume_seconds = time.perf_counter() - start
        manager.close()

    step_seconds = statistics.median(plain) / BLOCK
    per_save = max(0.0, statistics.median(b - a for a, b in zip(plain, saving, strict=True)))
    overhead = per_save / (args.interval * step_seconds)
    verdict = "PASS" if overhead < TARGET_OVERHEAD else "MISS"
    print(f"train step {step_seconds * 1000:.1f} ms ({BLOCK * pairs} steps timed in {pairs} pairs of blocks)")
    print(f"checkpoint size {size / 2**20:.2f} MiB on disk; write until durable {write_seconds:.3f} s")
    print(
        f"async save: the call blocks {statistics.median(blocking) * 1000:.1f} ms, "
        f"the loop pays {per_save * 1000:.1f} ms a save (= {per_save / step_seconds:.2f} steps)"
    )
    print(
        f"overhead at a save every {args.interval} steps: {overhead * 100:.2f}% of training time "
        f"({verdict}: target < {TARGET_OVERHEAD:.0%})"
    )
    print(f"resume (open and restore params + AdamW, step {meta['step']}): {resume_seconds:.3f} s")


if __name__ == "__main__":
    main()
