# The optimizer bucket's canonical home: experiments copy `optimizer` and edit their copy.
"""AdamW with linear warmup, cosine decay, weight decay on matrices only, and global-norm clipping."""

from __future__ import annotations

import jax
import optax


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
