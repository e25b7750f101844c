"""A plain nanoGPT-style baseline of the starter's size (learned positions, LayerNorm, GELU MLP, full
multi-head attention, AdamW with a constant learning rate after warmup, no tricks), trained to the
same validation target on the same data, next to the starter speedrun itself, in one run.

    python bench/baseline.py               # both runs at the starter's default config (~10 min)
    python bench/baseline.py --steps 300   # shorter
    python bench/baseline.py --quick       # 10 steps each: checks the script runs
"""

# Axes: B batch, S sequence, M model dim, H heads, D head dim, V vocab.
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grug_core.data import batches, eval_batches

STARTER = (
    Path(__file__).resolve().parents[1] / "experiments/speedrun/grugformer_starter/grugformer_speedrun.py"
)


def starter_config():
    spec = importlib.util.spec_from_file_location("grugformer_speedrun", STARTER)
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the defining module up in sys.modules while building SpeedrunConfig.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.SpeedrunConfig()


def init(cfg, key):
    m, v, s, f = cfg.model.hidden_dim, cfg.model.vocab_size, cfg.seq_len, 4 * cfg.model.hidden_dim
    keys = iter(jax.random.split(key, 3 + 4 * cfg.model.num_layers))
    normal = lambda shape: 0.02 * jax.random.normal(next(keys), shape)
    layer = lambda: {
        "ln1": jnp.ones(m),
        "qkv": normal((m, 3 * m)),
        "proj": normal((m, m)),
        "ln2": jnp.ones(m),
        "fc": normal((m, f)),
        "out": normal((f, m)),
    }
    return {
        "wte": normal((v, m)),
        "wpe": normal((s, m)),
        "layers": [layer() for _ in range(cfg.model.num_layers)],
        "ln_f": jnp.ones(m),
        "head": normal((m, v)),
    }


def layer_norm(x, w):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * w


def loss_fn(params, tokens, heads):
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    b, s = inputs.shape
    x = params["wte"][inputs] + params["wpe"][:s]
    causal = jnp.tril(jnp.ones((s, s), bool))
    for p in params["layers"]:
        q, k, v = jnp.split(layer_norm(x, p["ln1"]) @ p["qkv"], 3, axis=-1)
        q, k, v = (t.reshape(b, s, heads, -1) for t in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        att = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        x = x + jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, s, -1) @ p["proj"]
        x = x + jax.nn.gelu(layer_norm(x, p["ln2"]) @ p["fc"]) @ p["out"]
    logits = layer_norm(x, params["ln_f"]) @ params["head"]
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1).mean()


def train_baseline(cfg, steps: int) -> dict:
    schedule = optax.linear_schedule(0.0, cfg.peak_lr, cfg.warmup_steps)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=cfg.weight_decay))
    params = init(cfg, jax.random.key(cfg.seed))
    opt_state = tx.init(params)
    heads = cfg.model.num_heads

    @jax.jit
    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, heads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    evaluate = jax.jit(lambda p, t: loss_fn(p, t, heads))
    data = batches("train", cfg.batch_size, cfg.seq_len, cfg.seed)
    eval_set = [jnp.asarray(t) for t in eval_batches("val", cfg.batch_size, cfg.seq_len, cfg.eval_batches)]
    step(params, opt_state, jnp.asarray(next(data)))  # compile outside the timed region
    train_seconds, time_to_target, val = 0.0, None, float("nan")
    for i in range(1, steps + 1):
        tokens = jnp.asarray(next(data))
        start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, tokens)
        float(loss)
        train_seconds += time.perf_counter() - start
        if i % cfg.eval_every == 0 or i == steps:
            val = float(np.mean([float(evaluate(params, t)) for t in eval_set]))
            if time_to_target is None and val / math.log(2) <= cfg.target_val_bpb:
                time_to_target = train_seconds
    return {"val_bpb": val / math.log(2), "time_to_target_s": time_to_target, "train_seconds": train_seconds}


def run_starter(steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "starter.json"
        subprocess.run(
            [sys.executable, str(STARTER), "--steps", str(steps), "--out", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="steps for both runs (default: the starter's)")
    parser.add_argument("--quick", action="store_true", help="10 steps each: checks the script runs")
    args = parser.parse_args()
    cfg = starter_config()
    steps = 10 if args.quick else args.steps or cfg.steps
    print(f"target val_bpb {cfg.target_val_bpb}; {steps} steps of {cfg.batch_size}x{cfg.seq_len} tokens each")
    for name, result in (
        ("grugformer starter", run_starter(steps)),
        ("nanoGPT baseline", train_baseline(cfg, steps)),
    ):
        reached = result["time_to_target_s"]
        target = f"{reached:.1f} s" if reached is not None else "not reached"
        print(
            f"{name:>18}: time to target {target:>12}, final val_bpb {result['val_bpb']:.4f}, "
            f"train {result['train_seconds']:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
