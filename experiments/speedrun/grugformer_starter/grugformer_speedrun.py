"""grugformer starter speedrun: the living entrypoint every experiment is copied from.

Trains the grug_core transformer (on byte-level Shakespeare by default) and reports the time to reach
the target validation loss. The top-level copies of `attention`, `rms_norm`, `mlp`, `block`, `forward`,
`next_token_loss` and `optimizer` are the edit surfaces: they start identical to grug_core, and the
train loop below calls these copies, so an edit stays local and `grugctl diff` shows it.

Run:  grugctl run grugformer-starter        (records results in archive.yaml)
      python experiments/speedrun/grugformer_starter/grugformer_speedrun.py [--size NAME] [--steps N]
          [--seed S] [--out results.json] [--smoke] [--data DIR] [--set FIELD=VALUE ...]
          [--mesh data=D,model=M] [--distributed] [--describe]
          [--checkpoint-every N [--checkpoint-dir DIR] [--keep-checkpoints K] [--resume]]
Sizes: the ladder in grug_core/sizes.py (xs, s, m, ...; `s`, the default, is the model every earlier
       record used); --describe prints a size's parameters and FLOPs without training.
Data:  Shakespeare bytes by default; --data DIR takes token shards (python -m grug_core.data tokenize,
       the vocabulary then comes from the tokenizer) or a folder of .txt files. Bits per byte are exact
       either way: eval nats / ln 2 / the UTF-8 bytes the scored tokens stand for.
Checkpoints: orbax, asynchronous, in <checkpoint-dir>/<experiment>/<size>-seed<S>; SIGTERM saves and exits
       75, and the same command with --resume continues with the losses an unstopped run has.
Diff: grugctl diff grugformer-starter
"""

# Axes: B batch, S sequence, M model dim, H query heads, K kv heads, D head dim, F mlp dim, V vocab.
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grug_core.attention import (
    AttentionMask,
    apply_rotary,
    attention_kernel,
    blockwise_attention,
    cudnn_attention,
    dense_attention,
    reference_attention,
    splash_attention,
)
from grug_core.checkpoint import (
    CheckpointError,
    close_checkpoints,
    latest_step,
    open_checkpoints,
    restore_checkpoint,
    save_checkpoint,
)
from grug_core.data import CorpusMissing, Dataset, bytes_covered, eval_windows, open_dataset, train_batches
from grug_core.loss import blockwise_cross_entropy, split_into_blocks
from grug_core.model import BlockParams, GrugConfig, GrugParams, init_parameters, matmul, parameter_specs
from grug_core.sharding import (
    check_placement,
    constrain_activations,
    parse_mesh,
    put_batch,
    shard,
    training_mesh,
)
from grug_core.sizes import (
    DEFAULT_SIZE,
    SIZES,
    flops_per_token,
    padded_vocab,
    parameter_counts,
    peak_lr_for,
    rung_model,
    steps_for,
    unknown_size,
)

# ---------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class SpeedrunConfig:
    model: GrugConfig = GrugConfig(
        vocab_size=256,
        hidden_dim=128,
        intermediate_dim=384,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        max_seq_len=128,
    )
    batch_size: int = 32
    seq_len: int = 128
    steps: int = 450
    peak_lr: float = 3e-3
    # Multiplies peak_lr; a sweep tunes this rather than peak_lr, since each size has its own peak_lr
    # (grug_core/sizes.py) and one multiplier means the same thing at every size (--sweep lr_scale=0.5,1,2).
    lr_scale: float = 1.0
    warmup_steps: int = 50
    weight_decay: float = 0.1
    z_loss_weight: float = 1e-4
    eval_every: int = 50
    # Within this many bits per byte of the target, evaluate every `dense_eval_every` steps so the
    # crossing is seen to a few steps (it is then interpolated between the two evaluations around it).
    dense_eval_margin: float = 0.1
    dense_eval_every: int = 10
    # 16 x 32 x 128 = 64 KB of validation bytes, the same windows every run.
    eval_batches: int = 16
    target_val_bpb: float = 2.7
    log_every: int = 20
    train_curve_points: int = 200
    seed: int = 0
    size: str = DEFAULT_SIZE  # the rung of grug_core.sizes this config was built from (its defaults are `s`)


def size_config(name: str) -> SpeedrunConfig:
    """The ladder's rung `name` as a full config: its shape, tokens in proportion to its parameters,
    the learning rate by width (grug_core/sizes.py states the rules); `s` is the default above."""
    if name not in SIZES:
        raise ValueError(unknown_size(name))
    rung = SIZES[name]
    steps = steps_for(rung)
    ninth = max(1, round(steps / 9))
    return SpeedrunConfig(
        model=GrugConfig(**rung_model(rung)),
        batch_size=rung.batch_size,
        seq_len=rung.seq_len,
        steps=steps,
        peak_lr=peak_lr_for(rung),
        warmup_steps=ninth,
        eval_every=ninth,
        size=name,
    )


def describe(cfg: SpeedrunConfig) -> dict:
    """What a run of `cfg` costs: parameters, FLOPs per token (one function with the MFU estimate), tokens
    and total training FLOPs. Every results file carries it, so records at several sizes line up."""
    per_token = flops_per_token(cfg.model, cfg.seq_len)
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    return {
        "size": cfg.size,
        "params": parameter_counts(cfg.model),
        "flops_per_token": per_token,
        "tokens": tokens,
        "flops": per_token * tokens,
    }


def with_overrides(cfg: SpeedrunConfig, settings: list[str]) -> tuple[SpeedrunConfig, dict]:
    """`--set FIELD=VALUE` (repeatable): any scalar field of the config, `model.FIELD` for the model's;
    VALUE parsed as the field's type. Returns the config and the settings as typed values, which the
    record keeps so a sweep's runs are told apart. A bad FIELD or VALUE is a ValueError naming the fix."""
    overrides = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        owner, field = (cfg.model, name[6:]) if name.startswith("model.") else (cfg, name)
        scalars = [
            f.name for f in dataclasses.fields(owner) if isinstance(getattr(owner, f.name), (int, float, str))
        ]
        if not sep or field not in scalars or field in ("seed", "size"):
            choices = ", ".join(n for n in scalars if n not in ("seed", "size"))
            raise ValueError(
                f"--set {setting!r}: use FIELD=VALUE with FIELD one of {choices} (or model.FIELD)"
            )
        current = getattr(owner, field)
        try:
            if isinstance(current, bool):
                value = {"true": True, "false": False}[text.lower()]
            elif isinstance(current, (int, float)):
                value = float(text)
                value = int(value) if isinstance(current, int) and value.is_integer() else value
                if isinstance(current, int) and not isinstance(value, int):
                    raise ValueError
            else:
                value = text
        except (KeyError, ValueError):
            kind = type(current).__name__
            raise ValueError(f"--set {setting!r}: {name} takes a {kind} like {current!r}") from None
        overrides[name] = value
        if owner is cfg:
            cfg = dataclasses.replace(cfg, **{field: value})
        else:
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{field: value}))
    return cfg, overrides


def with_data(cfg: SpeedrunConfig, data: Dataset) -> SpeedrunConfig:
    """The model's vocabulary comes from the data (padded, grug_core/sizes.py): 256 for bytes."""
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, vocab_size=padded_vocab(data.vocab_size))
    )


# Small, but every dimension the mesh splits (batch, model dim, kv heads, F, V) divides 8, so a smoke
# run also exercises a data x model mesh on 8 devices.
SMOKE = SpeedrunConfig(
    model=GrugConfig(
        vocab_size=256,
        hidden_dim=32,
        intermediate_dim=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        max_seq_len=32,
    ),
    batch_size=8,
    seq_len=32,
    steps=2,
    warmup_steps=1,
    eval_every=2,
    eval_batches=1,
    log_every=1,
    size="smoke",
)

# ---------------------------------------------------------------- model (copies of grug_core)


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, implementation: str | None = None
) -> jax.Array:
    """q [B,S,H,D], k/v [B,T,K,D] -> [B,S,H,D] in q.dtype. implementation: None (attention_kernel's choice
    for this platform), "cudnn", "splash", "dense", "blockwise" or "reference"."""
    s, t, d = q.shape[1], k.shape[1], q.shape[3]
    implementation = implementation or attention_kernel(mask, s, t, d, q.dtype)
    if implementation == "cudnn":
        return cudnn_attention(q, k, v, mask)
    if implementation == "splash":
        return splash_attention(q, k, v, mask)
    if implementation == "dense":
        return dense_attention(q, k, v, mask)
    if implementation == "blockwise":
        return blockwise_attention(q, k, v, mask)
    if implementation == "reference":
        return reference_attention(q, k, v, mask)
    raise ValueError(
        f"implementation={implementation!r} is unknown; use None, 'cudnn', 'splash', 'dense', 'blockwise' "
        "or 'reference'."
    )


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    # The mean of squares is taken in fp32: in bf16 it underflows for small activations.
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * weight).astype(x.dtype)


def mlp(params: BlockParams, x: jax.Array) -> jax.Array:
    """x [B, S, M] in the compute dtype -> fp32 [B, S, M], the residual branch."""
    # Dots on [B*S, M] rather than [B, S, M]: XLA:CPU runs this MLP's forward and backward ~1.5x faster
    # (bench/train_step.py), and the reshape is free on every backend.
    tokens = x.reshape(-1, x.shape[-1])
    # The gate works on the fp32 sums and rounds once, to the compute dtype of the down projection.
    hidden = (jax.nn.silu(matmul(tokens, params.w_gate)) * matmul(tokens, params.w_up)).astype(x.dtype)
    return matmul(hidden, params.w_down).reshape(x.shape)


def block(
    params: BlockParams, x: jax.Array, cfg: GrugConfig, mask: AttentionMask, positions: jax.Array
) -> jax.Array:
    B, S, M = x.shape
    H, K, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    # Matmul operands are in compute_dtype and their sums fp32; the residual stream x stays fp32, so each
    # branch is added in fp32 (autocast's rule).
    attn, dtype = params.attn, cfg.compute_dtype
    h = rms_norm(x, params.attn_norm, cfg.norm_eps).astype(dtype).reshape(B * S, M)  # see mlp
    # matmul returns fp32 sums: rotary works in fp32 anyway, so q and k are rounded once, after it.
    q = apply_rotary(matmul(h, attn.w_q.reshape(M, H * D)).reshape(B, S, H, D), positions, cfg.rope_theta)
    k = apply_rotary(matmul(h, attn.w_k.reshape(M, K * D)).reshape(B, S, K, D), positions, cfg.rope_theta)
    v = matmul(h, attn.w_v.reshape(M, K * D)).reshape(B, S, K, D)
    attended = attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), mask).reshape(B * S, H * D)
    x = x + matmul(attended, attn.w_o.reshape(H * D, M)).reshape(B, S, M)
    x = constrain_activations(x)
    x = x + mlp(params, rms_norm(x, params.mlp_norm, cfg.norm_eps).astype(cfg.compute_dtype))
    return constrain_activations(x)


def forward(
    params: GrugParams, tokens: jax.Array, cfg: GrugConfig, mask: AttentionMask | None = None
) -> jax.Array:
    """tokens [B, S] int -> final hidden states [B, S, M] in compute_dtype (normed, before the LM head)."""
    seq_len = tokens.shape[1]
    if seq_len > cfg.max_seq_len:
        raise ValueError(f"sequence length {seq_len} exceeds max_seq_len={cfg.max_seq_len}")
    mask = AttentionMask(is_causal=True) if mask is None else mask
    positions = jnp.arange(seq_len, dtype=jnp.int32)
    x = constrain_activations(params.token_embed[tokens])
    for block_params in params.blocks:
        x = block(block_params, x, cfg, mask, positions)
    return rms_norm(x, params.final_norm, cfg.norm_eps).astype(cfg.compute_dtype)


# ---------------------------------------------------------------- loss (copy of grug_core.loss)


def next_token_loss(
    hidden: jax.Array,
    lm_head: jax.Array,
    labels: jax.Array,
    *,
    loss_mask: jax.Array | None = None,
    z_loss_weight: float = 0.0,
    logit_soft_cap: float | None = None,
    block_size: int = 256,
) -> jax.Array:
    """hidden [B, S, M] or [T, M], lm_head [M, V], labels [B, S] or [T] (already shifted: hidden[t]
    predicts labels[t]) -> mean over unmasked tokens of cross-entropy + z_loss_weight * logsumexp^2."""
    h_blocks, label_blocks, weights, _ = split_into_blocks(hidden, labels, loss_mask, block_size)
    return blockwise_cross_entropy(h_blocks, lm_head, label_blocks, weights, z_loss_weight, logit_soft_cap)


# ---------------------------------------------------------------- optimizer (copy of grug_core.optim)


def optimizer(
    peak_lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 100,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.95,
    eps: float = 1e-8,
    grad_clip: float = 1.0,
) -> optax.GradientTransformation:
    # Short runs (smoke tests) still need a schedule with some decay after the warmup.
    warmup_steps = min(warmup_steps, total_steps // 2)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=peak_lr * min_lr_ratio,
    )
    # Norm scales and other vectors are not decayed: pulling them to zero only fights the norm.
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.adamw(schedule, b1=beta1, b2=beta2, eps=eps, weight_decay=weight_decay, mask=decay_mask),
    )


# ---------------------------------------------------------------- train loop


def compute_loss(params: GrugParams, tokens: jax.Array, cfg: SpeedrunConfig) -> jax.Array:
    hidden = forward(params, tokens[:, :-1], cfg.model)
    return next_token_loss(hidden, params.lm_head, tokens[:, 1:], z_loss_weight=cfg.z_loss_weight)


def eval_loss(params: GrugParams, tokens: jax.Array, cfg: SpeedrunConfig) -> jax.Array:
    # Validation reports plain cross-entropy (no z-loss) so bits per byte stay comparable across runs.
    hidden = forward(params, tokens[:, :-1], cfg.model)
    return next_token_loss(hidden, params.lm_head, tokens[:, 1:])


def train_step(params, opt_state, tokens, cfg: SpeedrunConfig, tx: optax.GradientTransformation):
    loss, grads = jax.value_and_grad(compute_loss)(params, tokens, cfg)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def evaluate(eval_fn, params, eval_set) -> float:
    return float(np.mean([float(eval_fn(params, tokens)) for tokens in eval_set]))


def eval_due(step: int, last_val_bpb: float | None, reached: bool, cfg: SpeedrunConfig) -> bool:
    if step % cfg.eval_every == 0 or step == cfg.steps:
        return True
    near = last_val_bpb is not None and last_val_bpb - cfg.target_val_bpb <= cfg.dense_eval_margin
    return near and not reached and step % cfg.dense_eval_every == 0


def crossing(before: dict, after: dict, target: float) -> dict:
    """Where the val-bpb line between two evaluations meets the target: step, tokens and seconds.
    Linear in bpb; with evaluations every `dense_eval_every` steps the error is a step or two."""
    span = before["val_bpb"] - after["val_bpb"]
    frac = 1.0 if span <= 0 else min(1.0, max(0.0, (before["val_bpb"] - target) / span))
    at = lambda key: before[key] + frac * (after[key] - before[key])
    return {"steps": at("step"), "tokens": at("tokens"), "seconds": at("train_seconds")}


def measured_matmul_peak() -> float:
    """FLOP/s of a large fp32 matmul on this machine, the denominator of the MFU estimate."""
    a = jnp.ones((1024, 1024), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(5):
        matmul(a).block_until_ready()
    return 5 * 2 * 1024**3 / (time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    folder: Path  # this run's own folder: <--checkpoint-dir>/<experiment>/<size>-seed<S>[-settings]
    every: int  # steps between saves (the last step is always saved)
    keep: int
    resume: bool
    identity: dict  # what the folder may hold: experiment, config, data and this file's hash


class Preempted(Exception):
    """SIGTERM arrived; the checkpoint of `step` is durable."""

    def __init__(self, step: int, folder: Path):
        super().__init__(step, folder)
        self.step, self.folder = step, folder


PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after a checkpoint; the same command with --resume goes on


def resume_state(ckpt: Checkpointing | None, state: dict) -> tuple[object, dict, dict]:
    """(manager, state, meta): the latest checkpoint's state and meta when resuming, else `state` and
    {}. A folder that holds this run's checkpoints without --resume is refused: starting again would
    mix two runs in it."""
    if ckpt is None:
        return None, state, {}
    manager = open_checkpoints(ckpt.folder, ckpt.identity, keep=ckpt.keep)
    step = latest_step(manager)
    if step is None:
        return manager, state, {}
    if not ckpt.resume:
        raise CheckpointError(
            f"{ckpt.folder} already holds checkpoints of this run (up to step {step}); pass --resume to "
            "continue it, or delete the folder to start again"
        )
    return manager, *restore_checkpoint(manager, step, state)


def train(
    cfg: SpeedrunConfig, data: Dataset, progress, mesh: jax.sharding.Mesh, ckpt: Checkpointing | None = None
) -> dict:
    """Train on `mesh`: the batch split over "data", parameters (and so the AdamW moments) placed by
    grug_core's parameter_specs. One device is the 1x1 mesh; the losses match to fp32 rounding. With
    `ckpt`, saves every `ckpt.every` steps and at the end, resumes where the folder's latest left off
    (the same losses as without a stop: the batches are a function of seed and step), and on SIGTERM
    saves and raises Preempted."""
    lr = cfg.peak_lr * cfg.lr_scale
    tx = optimizer(lr, cfg.steps, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay)
    params = shard(init_parameters(cfg.model, jax.random.key(cfg.seed)), parameter_specs(cfg.model), mesh)
    opt_state = tx.init(params)  # zeros_like keeps each parameter's sharding
    manager, state, meta = resume_state(ckpt, {"params": params, "opt_state": opt_state})
    params, opt_state, start = state["params"], state["opt_state"], meta.get("step", 0)
    train_data = train_batches(data, cfg.batch_size, cfg.seq_len, cfg.seed, start=start)
    eval_set = eval_windows(data, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
    # Exact bits per byte: eval nats / ln 2 / the bytes the scored tokens stand for (1 per token for text).
    eval_tokens, eval_bytes = sum(w[:, 1:].size for w in eval_set), bytes_covered(data, eval_set)
    tokens_per_byte = eval_tokens / eval_bytes
    eval_set = [put_batch(tokens, mesh) for tokens in eval_set]

    compile_start = time.perf_counter()
    first = put_batch(next(train_data), mesh)
    with jax.set_mesh(mesh):  # constrain_activations pins activations to the mesh while tracing
        step_fn = jax.jit(train_step, static_argnums=(3, 4), donate_argnums=(0, 1))
        step_fn = step_fn.lower(params, opt_state, first, cfg, tx).compile()
        eval_fn = jax.jit(eval_loss, static_argnums=2).lower(params, eval_set[0], cfg).compile()
    compile_seconds = time.perf_counter() - compile_start

    tokens_per_step = cfg.batch_size * cfg.seq_len
    train_every = max(1, math.ceil(cfg.steps / cfg.train_curve_points))
    curve, train_curve = meta.get("curve", []), meta.get("train_curve", [])
    train_seconds, reached, tokens = meta.get("train_seconds", 0.0), meta.get("reached"), first
    stop = preemption_flag() if ckpt is not None else {}

    def read(step: int, loss: jax.Array) -> float:
        loss = float(loss)
        if step % train_every == 0 or step == cfg.steps:
            train_curve.append([step, round(loss, 4)])
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {step}: loss is {loss}")
        return loss

    # Step k+1 is dispatched before step k's loss is read, and the next batch is put on the devices
    # while a step runs, so the host never leaves the devices idle between steps. The clock stops only
    # where the host waits for the devices anyway: before an evaluation; a checkpoint's save is counted.
    clock, pending, saved = time.perf_counter(), None, start
    for step in range(start + 1, cfg.steps + 1):
        params, opt_state, loss = step_fn(params, opt_state, tokens)
        tokens = put_batch(next(train_data), mesh)
        if pending is not None:
            done_step, done_loss = pending
            seconds = train_seconds + time.perf_counter() - clock
            progress(done_step, read(done_step, done_loss), None, seconds, None)
        pending = (step, loss)
        last_bpb = curve[-1]["val_bpb"] if curve else None
        if eval_due(step, last_bpb, reached is not None, cfg):
            loss, pending = read(step, loss), None  # waits for this step
            train_seconds += time.perf_counter() - clock
            val = evaluate(eval_fn, params, eval_set)
            point = {"step": step, "tokens": step * tokens_per_step, "train_seconds": train_seconds}
            bpb = val * tokens_per_byte / math.log(2)
            curve.append(point | {"train_loss": loss, "val_loss": val, "val_bpb": bpb})
            newly_reached = None
            if reached is None and bpb <= cfg.target_val_bpb:
                before = curve[-2] if len(curve) > 1 else curve[-1]
                reached = newly_reached = crossing(before, curve[-1], cfg.target_val_bpb)
            progress(step, loss, val * tokens_per_byte, train_seconds, newly_reached)
            clock = time.perf_counter()
        if manager is None or not (step % ckpt.every == 0 or step == cfg.steps or stop.get("term")):
            continue
        if pending is not None:  # the meta holds the train curve up to this step
            progress(step, read(*pending), None, train_seconds + time.perf_counter() - clock, None)
            pending = None
        elapsed = train_seconds + time.perf_counter() - clock
        meta = {"step": step, "seed": cfg.seed, "train_seconds": elapsed, "curve": curve,
                "train_curve": train_curve, "reached": reached}  # fmt: skip
        save_checkpoint(manager, step, {"params": params, "opt_state": opt_state}, meta)
        saved = step
        if stop.get("term"):
            close_checkpoints(manager)
            raise Preempted(step, ckpt.folder)
    if manager is not None:
        close_checkpoints(manager)  # the last save is durable before the results say it exists

    total_tokens = cfg.steps * tokens_per_step
    val_loss = curve[-1]["val_loss"]
    # The attention kernel forward() ran on this platform: cuDNN, splash, dense or blockwise.
    causal, model = AttentionMask(is_causal=True), cfg.model
    kernel = attention_kernel(causal, cfg.seq_len, cfg.seq_len, model.head_dim, model.compute_dtype)
    return {
        "steps": cfg.steps,
        "tokens": total_tokens,
        "compile_seconds": compile_seconds,
        "train_seconds": train_seconds,
        "tokens_per_s": total_tokens / train_seconds,
        "mfu": total_tokens
        * flops_per_token(cfg.model, cfg.seq_len)
        / train_seconds
        / measured_matmul_peak(),
        "final_train_loss": curve[-1]["train_loss"],
        "val_loss": val_loss,
        "val_bpb": curve[-1]["val_bpb"],
        "target_val_bpb": cfg.target_val_bpb,
        "steps_to_target": reached and reached["steps"],
        "tokens_to_target": reached and reached["tokens"],
        "time_to_target_s": reached and reached["seconds"],
        "curve": curve,
        "train_curve": train_curve,
        "data": data.record() | {"eval_tokens": eval_tokens, "eval_bytes": eval_bytes},
        "attention_kernel": kernel,
        "checkpoint": None if ckpt is None else {"dir": str(ckpt.folder), "step": saved},
        "resumed_from": start or None,
    }


def preemption_flag() -> dict:
    """{"term": True} once SIGTERM arrives (a spot or TPU preemption, a scheduler's stop): the loop then
    saves a checkpoint at the step it is on and stops, instead of dying with the step's work lost."""
    flag: dict = {}
    signal.signal(signal.SIGTERM, lambda signum, frame: flag.update(term=True))
    return flag


# ---------------------------------------------------------------- progress and results


def make_progress(cfg: SpeedrunConfig):
    """A rich bar on a terminal, plain log lines when piped; both on stderr, in bits per byte (the
    target's unit), with the training time so far and one line when the target is reached."""
    target_line = lambda reached: (
        f"target {cfg.target_val_bpb} bpb reached at step {reached['steps']:.0f} after "
        f"{reached['seconds']:.1f} s of training"
    )
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        bar.start()
        task = bar.add_task("train", total=cfg.steps, status="compiling")
        best = {"val": ""}

        def report(step, loss, val, seconds, reached):
            if val is not None:
                best["val"] = f" val {val / math.log(2):.3f} bpb"
            if reached is not None:
                bar.console.print(target_line(reached), markup=False, highlight=False)
            status = f"loss {loss:.3f}{best['val']} | {seconds:.0f} s train"
            bar.update(task, completed=step, status=status)
            if step == cfg.steps:
                bar.stop()

        return report

    def log(step, loss, val, seconds, reached):
        if step % cfg.log_every == 0 or val is not None or step == cfg.steps:
            val_text = f" val_bpb {val / math.log(2):.4f}" if val is not None else ""
            line = f"step {step}/{cfg.steps} loss {loss:.4f}{val_text} train {seconds:.1f} s"
            print(line, file=sys.stderr, flush=True)
        if reached is not None:
            print(target_line(reached), file=sys.stderr, flush=True)

    return log


def host_fingerprint() -> dict:
    """What a timing depends on: the CPU, the accelerators, JAX, and how busy the machine was."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    devices = jax.devices()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "accelerator": devices[0].device_kind,
        "accelerator_count": len(devices),
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        # A hash, not the name: enough to tell runs from one machine apart from others.
        "id": hashlib.sha256(f"{platform.node()}|{cpu}".encode()).hexdigest()[:12],
    }


def git_state() -> tuple[str | None, bool | None]:
    git = lambda *args: subprocess.run(
        ["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        # archive.yaml and runs/ are the paper trail, not code: recording one seed must not mark the
        # next dirty.
        paper_trail = (":(top,exclude)archive.yaml", ":(top,exclude)runs")
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", ":(top)", *paper_trail))
    except (OSError, subprocess.CalledProcessError):
        return None, None


def write_json_atomically(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=DEFAULT_SIZE, help=f"model size: {', '.join(SIZES)}")
    parser.add_argument("--steps", type=int, help="training steps (default: the size's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="results JSON (default: runs/<id>/<time>-seed<S>.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny config, 2 steps: checks the file runs")
    parser.add_argument(
        "--data",
        type=Path,
        help="a folder of token shards (python -m grug_core.data tokenize) or of .txt files",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set a scalar config field, e.g. --set peak_lr=1e-2 (repeatable; model.FIELD for the model)",
    )
    parser.add_argument(
        "--mesh",
        default="",
        help="device mesh, e.g. data=4,model=2 (default: every local device the batch splits over, on data)",
    )
    parser.add_argument(
        "--describe", action="store_true", help="print the size's params and FLOPs; no training"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="save a checkpoint every N steps (0: never)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path("checkpoints"),
        help="where checkpoints go, one folder per run under <dir>/<experiment>/ (never in git)",
    )
    parser.add_argument("--keep-checkpoints", type=int, default=3, metavar="K", help="keep the last K")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the run's latest checkpoint (none: start afresh)"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: call jax.distributed.initialize() first (start this file once per host)",
    )
    args = parser.parse_args(argv)
    if args.distributed:
        # On SLURM, Open MPI and Cloud TPU, JAX finds the coordinator and this process's id itself;
        # elsewhere pass coordinator_address, num_processes and process_id here. jax.devices() then
        # spans every host, and the default mesh with it.
        jax.distributed.initialize()

    try:
        cfg = dataclasses.replace(SMOKE if args.smoke else size_config(args.size), seed=args.seed)
        if args.steps is not None:
            # A shortened run still evaluates about ten times, so its curve has a shape to plot.
            eval_every = min(cfg.eval_every, max(1, args.steps // 10))
            cfg = dataclasses.replace(cfg, steps=args.steps, eval_every=eval_every)
        cfg, overrides = with_overrides(cfg, args.set)
        # --describe without --data needs no corpus on disk: text is always vocab 256.
        data = None if args.describe and args.data is None else open_dataset(args.data)
        cfg = cfg if data is None else with_data(cfg, data)
    except (ValueError, CorpusMissing) as error:  # ShardError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    experiment_id = os.environ.get("GRUG_EXPERIMENT_ID") or Path(__file__).parent.name.replace("_", "-")
    if args.describe:
        print(json.dumps(describe(cfg)))
        return 0
    try:
        mesh = training_mesh(cfg.batch_size, *(parse_mesh(args.mesh) if args.mesh else (None, 1)))
        shapes = jax.eval_shape(init_parameters, cfg.model, jax.random.key(0))
        check_placement(shapes, parameter_specs(cfg.model), mesh)
    except ValueError as error:  # a mesh that does not fit the devices, the batch or a parameter
        print(f"error: {error}", file=sys.stderr)
        return 2
    ckpt = None
    if args.checkpoint_every > 0 or args.resume:
        if args.checkpoint_every <= 0:
            print(
                "error: --resume needs --checkpoint-every N (the interval the run saves at)", file=sys.stderr
            )
            return 2
        name = "-".join([cfg.size, f"seed{cfg.seed}", *(f"{k}={v}" for k, v in sorted(overrides.items()))])
        name += "" if data.name == "shakespeare" and data.kind == "bytes" else f"-{data.name}"
        source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
        identity = {"experiment": experiment_id, "config": dataclasses.asdict(cfg), "data": data.record(),
                    "code": source}  # fmt: skip
        folder = args.checkpoint_dir / experiment_id / name
        ckpt = Checkpointing(folder, args.checkpoint_every, args.keep_checkpoints, args.resume, identity)
    host = host_fingerprint()  # before training: the load average says how busy the machine was
    try:
        summary = train(cfg, data, make_progress(cfg), mesh, ckpt)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Preempted as stopped:
        print(
            f"preempted (SIGTERM) at step {stopped.step}: checkpoint in {stopped.folder}; "
            "run the same command with --resume to continue",
            file=sys.stderr,
            flush=True,
        )
        return PREEMPTED
    commit, dirty = git_state()
    results = {
        "experiment": experiment_id,
        "commit": commit,
        "dirty": dirty,
        "seed": cfg.seed,
        "smoke": args.smoke,
        "config": dataclasses.asdict(cfg),
        "overrides": overrides,
        **summary,
        **describe(cfg),
        "jax_version": jax.__version__,
        "platform": f"{jax.default_backend()} ({platform.machine()}, {len(jax.devices())} devices)",
        "host": host,
        "mesh": dict(mesh.shape),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # By hand, full results go to the git-ignored scratch folder; `grugctl run` writes the tracked record.
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = args.out or Path("runs") / ".scratch" / experiment_id / f"{stamp}-seed{cfg.seed}.json"
    if jax.process_index() != 0:  # every host trained the same global run; one writes it
        return 0
    write_json_atomically(out, results)
    reached = summary["time_to_target_s"]
    target = f"{reached:.1f} s" if reached is not None else "not reached"
    print(
        f"val_bpb {summary['val_bpb']:.4f} (target {cfg.target_val_bpb}) time to target {target}; "
        f"{summary['tokens_per_s']:,.0f} tok/s; results in {out}",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # One line, not JAX's traceback. grugctl forwards a second SIGINT, which must not reach JAX's
        # atexit hooks; under grugctl (GRUG_EXPERIMENT_ID set) grugctl prints the line itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if "GRUG_EXPERIMENT_ID" not in os.environ:
            print("interrupted; nothing written", file=sys.stderr)
        sys.exit(130)
