"""Peak temporary memory (XLA's memory analysis of the compiled program) and wall time of the fused
blockwise loss against the full-logits loss, value and gradients w.r.t. hidden and LM head, fp32.

    python bench/loss.py           # 8192 tokens x d512, vocab 32768 and 131072 (several minutes on 2 cores)
    python bench/loss.py --quick   # 4096 tokens x d256, vocab 8192

Targets: >= 16x less temporary memory at <= 1.1x the time.
"""

# Axes: T tokens, M model dim, V vocab.
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from grug_core.loss import full_logits_loss, next_token_loss

MEMORY_TARGET, TIME_TARGET = 16.0, 1.1


def compiled_loss_and_grad(loss_fn, hidden, lm_head, labels):
    grad_fn = jax.value_and_grad(lambda h, w: loss_fn(h, w, labels), argnums=(0, 1))
    return jax.jit(grad_fn).lower(hidden, lm_head).compile()


def median_seconds(compiled, hidden, lm_head, repeats: int) -> float:
    jax.block_until_ready(compiled(hidden, lm_head))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(hidden, lm_head))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(tokens: int, dim: int, vocab: int, repeats: int) -> None:
    keys = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(keys[0], (tokens, dim), jnp.float32)
    lm_head = 0.02 * jax.random.normal(keys[1], (dim, vocab), jnp.float32)
    labels = jax.random.randint(keys[2], (tokens,), 0, vocab)
    rows = {}
    for name, fn in (("fused", next_token_loss), ("full-logits", full_logits_loss)):
        compiled = compiled_loss_and_grad(fn, hidden, lm_head, labels)
        temp = compiled.memory_analysis().temp_size_in_bytes
        rows[name] = (temp, median_seconds(compiled, hidden, lm_head, repeats))
        print(f"  {name:>11}: temp memory {temp / 2**20:9.1f} MiB, time {rows[name][1]:7.3f} s", flush=True)
    memory_ratio = rows["full-logits"][0] / max(rows["fused"][0], 1)
    time_ratio = rows["fused"][1] / rows["full-logits"][1]
    memory_verdict = "PASS" if memory_ratio >= MEMORY_TARGET else "MISS"
    time_verdict = "PASS" if time_ratio <= TIME_TARGET else "MISS"
    print(
        f"  memory {memory_ratio:.1f}x less [{memory_verdict}: >= {MEMORY_TARGET}x], "
        f"time {time_ratio:.2f}x [{time_verdict}: <= {TIME_TARGET}x]",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, for a fast look")
    args = parser.parse_args()
    shapes = [(4096, 256, 8192)] if args.quick else [(8192, 512, 32768), (8192, 512, 131072)]
    print(f"jax {jax.__version__} on {jax.default_backend()}, fp32, loss + grads w.r.t. hidden and LM head")
    for tokens, dim, vocab in shapes:
        print(f"{tokens} tokens x d{dim} x vocab {vocab}:", flush=True)
        measure(tokens, dim, vocab, repeats=1 if vocab > 65536 else 3)


if __name__ == "__main__":
    main()
