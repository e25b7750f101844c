# Axes: T tokens (batch and sequence flattened), C tokens per block, N = T / C blocks, M model dim, V vocab.
"""Next-token cross-entropy that never materialises the [T, V] logits, forward or backward.

Tokens are processed in blocks of C: each block makes its own [C, V] logits, reduces them and drops
them. Under differentiation the forward pass also produces the gradients block by block (softmax
minus one-hot is at hand right after the logsumexp), keeps grad_hidden [T, M] and grad_lm_head [M, V]
as residuals, and the backward pass only scales them by the incoming cotangent. That costs the same
three matmuls as the naive loss (logits, d_hidden, d_lm_head) instead of recomputing the logits,
and nothing of size T * V is ever live. Without differentiation only the loss is computed.

block_size 256: one block's [C, V] logits and their softmax are the largest temporaries, so smaller
blocks cut memory linearly; at d512 the [256, M] x [M, V] dots still run at full matmul speed
(bench/loss.py: see bench/README.md for the measured memory and time).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _block_loss(h, lm_head, labels, weights, z_loss_weight, cap):
    """h [C, M] -> (sum over the block of weight * (lse - z[label] + z_w * lse^2), (z, softmax, lse)).
    One exp pass over the [C, V] logits serves both the logsumexp and the softmax. The matmul runs in
    h's dtype (bf16 under mixed precision); the logits and everything after them are fp32."""
    z = jnp.einsum("cm,mv->cv", h, lm_head.astype(h.dtype), preferred_element_type=jnp.float32)
    if cap is not None:
        z = cap * jnp.tanh(z / cap)
    z_max = jax.lax.stop_gradient(z.max(axis=-1, keepdims=True))
    exp = jnp.exp(z - z_max)
    sum_exp = exp.sum(axis=-1)
    lse = jnp.log(sum_exp) + z_max[:, 0]
    target = jnp.take_along_axis(z, labels[:, None], axis=-1)[:, 0]
    loss = jnp.sum(weights * (lse - target + z_loss_weight * lse**2))
    return loss, (z, exp / sum_exp[:, None], lse)


def split_into_blocks(hidden, labels, loss_mask, block_size):
    """Flatten to tokens, pad to a whole number of blocks (padding weighs 0) and split into blocks."""
    m = hidden.shape[-1]
    hidden, labels = hidden.reshape(-1, m), labels.reshape(-1).astype(jnp.int32)
    weights = jnp.ones(labels.shape, jnp.float32) if loss_mask is None else loss_mask.reshape(-1)
    weights = weights.astype(jnp.float32)
    t = labels.shape[0]
    c = min(block_size, t)
    pad = -t % c
    hidden = jnp.pad(hidden, ((0, pad), (0, 0)))
    labels, weights = jnp.pad(labels, (0, pad)), jnp.pad(weights, (0, pad))
    n = (t + pad) // c
    return hidden.reshape(n, c, m), labels.reshape(n, c), weights.reshape(n, c), t


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def blockwise_cross_entropy(h_blocks, lm_head, labels, weights, z_loss_weight, cap):
    """h_blocks [N, C, M], labels and weights [N, C] -> scalar weighted mean loss."""

    def body(total, block):
        h, y, w = block
        loss, _ = _block_loss(h, lm_head, y, w, z_loss_weight, cap)
        return total + loss, None

    total, _ = jax.lax.scan(body, jnp.float32(0.0), (h_blocks, labels, weights))
    return total / jnp.maximum(weights.sum(), 1.0)


def blockwise_cross_entropy_fwd(h_blocks, lm_head, labels, weights, z_loss_weight, cap):
    scale = 1.0 / jnp.maximum(weights.sum(), 1.0)

    def body(carry, block):
        total, d_lm_head = carry
        h, y, w = block
        loss, (z, probs, lse) = _block_loss(h, lm_head, y, w, z_loss_weight, cap)
        # d loss / d z = (softmax * (1 + 2 z_w lse) - onehot(label)) * weight * scale; the one-hot is a
        # scatter into the label column rather than another [C, V] array.
        token_scale = w * scale
        d_z = probs * (token_scale * (1.0 + 2.0 * z_loss_weight * lse))[:, None]
        d_z = d_z.at[jnp.arange(y.shape[0]), y].add(-token_scale)
        if cap is not None:
            d_z = d_z * (1.0 - (z / cap) ** 2)  # tanh' expressed through the capped logits
        # Both gradient matmuls take their operands in h's dtype, like the forward one, and accumulate
        # in fp32; d_lm_head is summed over blocks in fp32 before it reaches the fp32 parameter.
        d_z_mm, lm_head_mm = d_z.astype(h.dtype), lm_head.astype(h.dtype)
        d_h = jnp.einsum("cv,mv->cm", d_z_mm, lm_head_mm, preferred_element_type=jnp.float32)
        d_lm_head = d_lm_head + jnp.einsum("cm,cv->mv", h, d_z_mm, preferred_element_type=jnp.float32)
        return (total + loss, d_lm_head), d_h.astype(h.dtype)

    init = (jnp.float32(0.0), jnp.zeros(lm_head.shape, jnp.float32))
    (total, d_lm_head), d_h = jax.lax.scan(body, init, (h_blocks, labels, weights))
    residuals = (d_h, d_lm_head.astype(lm_head.dtype), labels, weights)
    return total * scale, residuals


def blockwise_cross_entropy_bwd(z_loss_weight, cap, residuals, g):
    d_h, d_lm_head, labels, weights = residuals
    # Labels are integers (no tangent space: float0); the loss mask is treated as a constant.
    d_labels = jnp.zeros(labels.shape, jax.dtypes.float0)
    return (
        (g * d_h).astype(d_h.dtype),
        (g * d_lm_head).astype(d_lm_head.dtype),
        d_labels,
        jnp.zeros_like(weights),
    )


blockwise_cross_entropy.defvjp(blockwise_cross_entropy_fwd, blockwise_cross_entropy_bwd)


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


def full_logits_loss(
    hidden: jax.Array,
    lm_head: jax.Array,
    labels: jax.Array,
    *,
    loss_mask: jax.Array | None = None,
    z_loss_weight: float = 0.0,
    logit_soft_cap: float | None = None,
) -> jax.Array:
    """The naive reference: materialises [T, V] logits. For tests and benchmarks only."""
    z = jnp.einsum("...m,mv->...v", hidden, lm_head, preferred_element_type=jnp.float32)
    if logit_soft_cap is not None:
        z = logit_soft_cap * jnp.tanh(z / logit_soft_cap)
    lse = jax.nn.logsumexp(z, axis=-1)
    target = jnp.take_along_axis(z, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    weights = jnp.ones(labels.shape, jnp.float32) if loss_mask is None else loss_mask.astype(jnp.float32)
    return jnp.sum(weights * (lse - target + z_loss_weight * lse**2)) / jnp.maximum(weights.sum(), 1.0)
