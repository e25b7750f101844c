"""Tokens/s and MFU of a full grug_core train step against a naive plain-JAX transformer of the same
shape, all measured here in one process with steps interleaved (one step of each variant per round, so a
change in the machine's load hits every variant alike), with MFU against a matmul peak measured in the
same process, and each ratio the median of its rounds' ratios; grug_core with compute_dtype="bfloat16"
beside its fp32 row; and grug_core against the
naive model at every sequence length from 128 to 2048 (same tokens per step).

    python bench/train_step.py            # both shapes and every length
    python bench/train_step.py --quick    # the small shape and two lengths, fewer rounds

Targets: grug_core >= 1.5x the naive model's tokens/s at both shapes and >= 1.0x at every length; MFU
>= 60% at d256; bf16 >= 1.3x fp32 where the CPU has bf16 matrix units (AVX512-BF16 or AMX). Without
them XLA:CPU converts bf16 dots to fp32, so there is no bf16 target, only the figure.
"""

# Axes: B batch, S sequence, M model dim, H heads, K kv heads, D head dim, F mlp dim, V vocab.
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from grug_core.loss import next_token_loss
from grug_core.model import GrugConfig, forward, init_parameters
from grug_core.optim import optimizer
from grug_core.sizes import flops_per_token

TARGET_RATIO = 1.5
LENGTH_TARGET_RATIO = 1.0
MFU_TARGET = 0.6  # at the first (d256) shape
BF16_TARGET_RATIO = 1.3
LENGTHS = (128, 256, 512, 1024, 2048)
LENGTH_TOKENS = 4096  # batch x length at every length, so rows differ only in how the tokens are cut
PEAK_N = 1024  # the peak matmul's size
PEAK_CALLS = 16  # single matmuls a round; their median is the round's peak
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    cfg: GrugConfig
    batch: int


SHAPES = (
    Shape(
        "d256 L4 T256 B16",
        GrugConfig(
            hidden_dim=256,
            intermediate_dim=768,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            head_dim=64,
            max_seq_len=256,
        ),
        16,
    ),
    Shape(
        "d384 L6 T512 B8",
        GrugConfig(
            hidden_dim=384,
            intermediate_dim=1024,
            num_layers=6,
            num_heads=6,
            num_kv_heads=2,
            head_dim=64,
            max_seq_len=512,
        ),
        8,
    ),
)


# ---------------------------------------------------------------- the naive reference


def naive_rope(x, theta):
    d = x.shape[-1]
    angles = jnp.arange(x.shape[1])[:, None] * (1.0 / theta ** (jnp.arange(0, d, 2) / d))[None, :]
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def naive_norm(x, w, eps):
    return x / jnp.sqrt(jnp.mean(x**2, axis=-1, keepdims=True) + eps) * w


def naive_loss(params, tokens, cfg: GrugConfig):
    """What a first implementation looks like: repeated K/V, a full [S, S] mask, full logits."""
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    s = inputs.shape[1]
    x = params.token_embed[inputs]
    causal = jnp.tril(jnp.ones((s, s), bool))
    for p in params.blocks:
        h = naive_norm(x, p.attn_norm, cfg.norm_eps)
        q = naive_rope(jnp.einsum("bsm,mhd->bshd", h, p.attn.w_q), cfg.rope_theta)
        k = naive_rope(jnp.einsum("bsm,mkd->bskd", h, p.attn.w_k), cfg.rope_theta)
        v = jnp.einsum("bsm,mkd->bskd", h, p.attn.w_v)
        repeat = cfg.num_heads // cfg.num_kv_heads
        k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.head_dim)
        weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        x = x + jnp.einsum("bqhd,hdm->bqm", jnp.einsum("bhqk,bkhd->bqhd", weights, v), p.attn.w_o)
        h = naive_norm(x, p.mlp_norm, cfg.norm_eps)
        x = x + (jax.nn.silu(h @ p.w_gate) * (h @ p.w_up)) @ p.w_down
    logits = naive_norm(x, params.final_norm, cfg.norm_eps) @ params.lm_head
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))


def grug_loss(params, tokens, cfg: GrugConfig):
    hidden = forward(params, tokens[:, :-1], cfg)
    return next_token_loss(hidden, params.lm_head, tokens[:, 1:])


# ---------------------------------------------------------------- measurement


def make_step(loss_fn, cfg: GrugConfig, tx: optax.GradientTransformation):
    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, cfg)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def compiled_step(loss_fn, shape: Shape):
    """A warmed-up step and its state: step() runs one training step and waits for it."""
    cfg = shape.cfg
    tx = optimizer(1e-3, 1000, warmup_steps=10)
    params = init_parameters(cfg, jax.random.key(0))
    state = [params, tx.init(params)]
    tokens = jax.random.randint(jax.random.key(1), (shape.batch, cfg.max_seq_len + 1), 0, cfg.vocab_size)
    step = make_step(loss_fn, cfg, tx)

    def run_once():
        state[0], state[1], loss = step(state[0], state[1], tokens)
        loss.block_until_ready()

    run_once()  # compile and warm up
    return run_once


def interleaved_seconds(variants: dict, rounds: int, with_peak: bool = False) -> dict[str, list[float]]:
    """{name: (loss_fn, shape)} -> {name: seconds of each round's step}; with_peak adds "peak", each round's
    steady-state seconds for one fp32 matmul, so MFU's denominator drifts with the steps it divides."""
    runs = {name: compiled_step(loss_fn, shape) for name, (loss_fn, shape) in variants.items()}
    if with_peak:
        runs["peak"] = compiled_matmul(PEAK_N)
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run_once in runs.items():
            start = time.perf_counter()
            own_seconds = run_once()
            times[name].append(own_seconds if own_seconds is not None else time.perf_counter() - start)
    return times


def tokens_per_s(shape: Shape, seconds: list[float]) -> float:
    return shape.batch * shape.cfg.max_seq_len / statistics.median(seconds)


def speedup(seconds: dict[str, list[float]], fast: str, slow: str) -> float:
    """The median over rounds of slow / fast step time: each round's two steps ran back to back, so the
    ratio of one round is free of the drift between rounds (this machine's speed wanders by 1.5x)."""
    return statistics.median(s / f for f, s in zip(seconds[fast], seconds[slow], strict=True))


def at_length(shape: Shape, length: int) -> Shape:
    cfg = dataclasses.replace(shape.cfg, max_seq_len=length)
    return Shape(f"T{length} B{LENGTH_TOKENS // length}", cfg, LENGTH_TOKENS // length)


def verdict(value: float, target: float, shown: str) -> str:
    return f"{'PASS' if value >= target else 'MISS'}: target >= {shown}"


def compiled_matmul(n: int):
    """run() times PEAK_CALLS warmed-up fp32 [n, n] x [n, n] matmuls one by one and returns the median
    call's seconds. The first calls after a training step run at half speed or less (caches, thread
    wake-up; 60-140 against 190-220 GFLOP/s here), so a burst's total understates the peak and its
    fastest round overstates it; the median call is the steady rate."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()

    def run() -> float:
        calls = []
        for _ in range(PEAK_CALLS):
            start = time.perf_counter()
            matmul(a).block_until_ready()
            calls.append(time.perf_counter() - start)
        return statistics.median(calls)

    return run


def peak_flops(seconds: dict[str, list[float]], n: int = PEAK_N) -> float:
    """The machine's steady fp32 matmul rate as this run saw it: the median round's."""
    return 2 * n**3 / statistics.median(seconds["peak"])


def mfu(seconds: dict[str, list[float]], name: str, flops_per_step: float, n: int = PEAK_N) -> float:
    """The median over rounds of the step's FLOP/s over the same round's peak, as ratios are taken."""
    rounds = zip(seconds[name], seconds["peak"], strict=True)
    return statistics.median((flops_per_step / step) / (2 * n**3 / peak) for step, peak in rounds)


def bf16_matrix_units() -> list[str]:
    """The CPU flags for bf16 matrix instructions that this machine has (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in BF16_FLAGS if flag in flags]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small shape and two lengths, fewer rounds")
    args = parser.parse_args()
    shapes, lengths, rounds = (SHAPES[:1], LENGTHS[:2], 3) if args.quick else (SHAPES, LENGTHS, 9)
    units = bf16_matrix_units()
    print(
        f"jax {jax.__version__} on {jax.default_backend()}; "
        f"bf16 matrix units: {', '.join(units) if units else 'none (no avx512_bf16 or amx_bf16)'}"
    )
    for index, shape in enumerate(shapes):
        bf16_shape = dataclasses.replace(shape, cfg=dataclasses.replace(shape.cfg, compute_dtype="bfloat16"))
        variants = {"grug": (grug_loss, shape), "bf16": (grug_loss, bf16_shape), "naive": (naive_loss, shape)}
        seconds = interleaved_seconds(variants, rounds, with_peak=True)
        peak = peak_flops(seconds)
        tps = {name: tokens_per_s(shape, seconds[name]) for name in variants}
        per_step = flops_per_token(shape.cfg, shape.cfg.max_seq_len) * shape.batch * shape.cfg.max_seq_len
        mfus = {name: mfu(seconds, name, per_step) for name in variants}
        mfu_note = f" [{verdict(mfus['grug'], MFU_TARGET, f'{MFU_TARGET:.0%}')}]" if index == 0 else ""
        ratio = speedup(seconds, "grug", "naive")
        print(
            f"{shape.name}: grug_core {tps['grug']:,.0f} tok/s (MFU {mfus['grug']:.1%}){mfu_note}, "
            f"naive {tps['naive']:,.0f} tok/s (MFU {mfus['naive']:.1%}), "
            f"ratio {ratio:.2f}x  [{verdict(ratio, TARGET_RATIO, f'{TARGET_RATIO}x')}]; "
            f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s"
        )
        bf16_ratio = speedup(seconds, "bf16", "grug")
        bf16_note = "no target: no bf16 matrix units"
        if units:
            bf16_note = verdict(bf16_ratio, BF16_TARGET_RATIO, f"{BF16_TARGET_RATIO}x")
        print(
            f"{shape.name}: grug_core bf16 {tps['bf16']:,.0f} tok/s, fp32 {tps['grug']:,.0f} tok/s, "
            f"ratio {bf16_ratio:.2f}x  [{bf16_note}]"
        )
    for length in lengths:
        shape = at_length(SHAPES[0], length)
        seconds = interleaved_seconds({"grug": (grug_loss, shape), "naive": (naive_loss, shape)}, rounds)
        ratio = speedup(seconds, "grug", "naive")
        print(
            f"d256 L4 {shape.name}: grug_core {tokens_per_s(shape, seconds['grug']):,.0f} tok/s, "
            f"naive {tokens_per_s(shape, seconds['naive']):,.0f} tok/s, "
            f"ratio {ratio:.2f}x  [{verdict(ratio, LENGTH_TARGET_RATIO, f'{LENGTH_TARGET_RATIO}x')}]"
        )


if __name__ == "__main__":
    main()
