"""What the starter's train loop gains by never waiting on the host: its step function at a size, run
two ways in one process, alternately, from the same initial parameters and batches:

- wait:  read each step's loss (float) before preparing and dispatching the next, as the loop did;
- ahead: dispatch step k+1, and put its batch on the devices, before reading step k's loss (the loop
  now in grugformer_speedrun.py).

Prints tokens/s of each, the ratio, and whether the losses are identical (they must be).

    python bench/loop.py                 # sizes 3xs (overhead-heavy) and s (the default), 60 steps
    python bench/loop.py --quick         # 3xs, 6 steps: checks the script runs
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import jax

STARTER = (
    Path(__file__).resolve().parents[1] / "experiments/speedrun/grugformer_starter/grugformer_speedrun.py"
)


def load_starter():
    spec = importlib.util.spec_from_file_location("grugformer_speedrun", STARTER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def compiled_step(run, size: str, steps: int):
    """The starter's own step, compiled as its train() compiles it, and a fresh-state factory."""
    cfg = run.size_config(size)
    mesh = run.training_mesh(cfg.batch_size, None, 1)
    tx = run.optimizer(cfg.peak_lr, cfg.steps, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay)
    data = run.open_dataset(None)

    def fresh():
        params = run.shard(
            run.init_parameters(cfg.model, jax.random.key(0)), run.parameter_specs(cfg.model), mesh
        )
        return params, tx.init(params)

    # Host batches: each loop puts them on the devices itself, where the starter's loop does.
    source = run.train_batches(data, cfg.batch_size, cfg.seq_len, 0)
    batches = [next(source) for _ in range(steps + 1)]
    params, opt_state = fresh()
    with jax.set_mesh(mesh):
        step_fn = jax.jit(run.train_step, static_argnums=(3, 4), donate_argnums=(0, 1))
        step_fn = step_fn.lower(params, opt_state, run.put_batch(batches[0], mesh), cfg, tx).compile()
    return cfg, step_fn, fresh, batches, mesh


def wait_loop(step_fn, params, opt_state, batches, put):
    losses, tokens = [], put(batches[0])
    for k in range(len(batches) - 1):
        params, opt_state, loss = step_fn(params, opt_state, tokens)
        losses.append(float(loss))  # the host waits here for every step
        tokens = put(batches[k + 1])
    return losses


def ahead_loop(step_fn, params, opt_state, batches, put):
    losses, tokens, pending = [], put(batches[0]), None
    for k in range(len(batches) - 1):
        params, opt_state, loss = step_fn(params, opt_state, tokens)
        tokens = put(batches[k + 1])
        if pending is not None:
            losses.append(float(pending))
        pending = loss
    losses.append(float(pending))
    return losses


def measure(run, size: str, steps: int, rounds: int) -> dict:
    cfg, step_fn, fresh, batches, mesh = compiled_step(run, size, steps)
    put = lambda b: run.put_batch(b, mesh)
    times = {"wait": [], "ahead": []}
    losses = {}
    for _ in range(rounds):
        for name, loop in (("wait", wait_loop), ("ahead", ahead_loop)):
            params, opt_state = fresh()
            start = time.perf_counter()
            losses[name] = loop(step_fn, params, opt_state, batches, put)
            times[name].append(time.perf_counter() - start)
    tokens = steps * cfg.batch_size * cfg.seq_len
    wait, ahead = (tokens / statistics.median(times[k]) for k in ("wait", "ahead"))
    return {
        "size": size,
        "wait": wait,
        "ahead": ahead,
        "ratio": ahead / wait,
        "same": losses["wait"] == losses["ahead"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="3xs, 6 steps, one round: checks the script runs"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run = load_starter()
    sizes, steps, rounds = (("3xs",), 6, 1) if args.quick else (("3xs", "s"), args.steps, args.rounds)
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    print(f"{cpu}, {os.cpu_count()} cores, JAX {jax.__version__}, backend {jax.default_backend()}")
    print(f"{'size':5} {'wait tok/s':>11} {'ahead tok/s':>12} {'ahead/wait':>11}  losses")
    for size in sizes:
        row = measure(run, size, steps, rounds)
        same = "identical" if row["same"] else "DIFFER"
        print(f"{size:5} {row['wait']:11,.0f} {row['ahead']:12,.0f} {row['ratio']:10.2f}x  {same}")
        if not row["same"]:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
