"""The blockwise fused loss against an independent full-logits reference, in value and gradients, and
proof that no [T, V] array exists in its forward or backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grug_core.loss import full_logits_loss, next_token_loss

T, M, V = 22, 16, 40  # T is not a multiple of the block sizes used below, so padding is exercised


def inputs(seed=0, batched=False):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(T, M)).astype(np.float32)
    lm_head = (0.4 * rng.normal(size=(M, V))).astype(np.float32)
    labels = rng.integers(0, V, size=T).astype(np.int32)
    mask = rng.random(T) < 0.7
    if batched:
        return hidden.reshape(2, T // 2, M), lm_head, labels.reshape(2, T // 2), mask.reshape(2, T // 2)
    return hidden, lm_head, labels, mask


def log_softmax_reference(hidden, lm_head, labels, mask, z_loss_weight, cap):
    """Written independently of grug_core: full logits through jax.nn.log_softmax."""
    logits = hidden @ lm_head
    if cap is not None:
        logits = cap * jnp.tanh(logits / cap)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1)[..., 0]
    z = jax.nn.logsumexp(logits, axis=-1) ** 2
    weights = jnp.ones(labels.shape) if mask is None else mask.astype(jnp.float32)
    return jnp.sum(weights * (nll + z_loss_weight * z)) / jnp.maximum(weights.sum(), 1.0)


CASES = [
    dict(z_loss_weight=0.0, cap=None, masked=False),
    dict(z_loss_weight=1e-2, cap=None, masked=False),
    dict(z_loss_weight=0.0, cap=3.0, masked=False),
    dict(z_loss_weight=0.0, cap=None, masked=True),
    dict(z_loss_weight=1e-2, cap=3.0, masked=True),
]


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"z{c['z_loss_weight']}-cap{c['cap']}-mask{c['masked']}"
)
@pytest.mark.parametrize("block_size", [4, 8, 1024])
def test_fused_equals_reference_in_value_and_gradients(case, block_size):
    hidden, lm_head, labels, mask = inputs()
    mask = mask if case["masked"] else None
    kwargs = dict(loss_mask=mask, z_loss_weight=case["z_loss_weight"], logit_soft_cap=case["cap"])
    fused = jax.jit(
        jax.value_and_grad(
            lambda h, w: next_token_loss(h, w, labels, block_size=block_size, **kwargs), argnums=(0, 1)
        )
    )
    reference = jax.value_and_grad(
        lambda h, w: log_softmax_reference(h, w, labels, mask, case["z_loss_weight"], case["cap"]),
        argnums=(0, 1),
    )
    (value, (d_hidden, d_head)), (want, (want_hidden, want_head)) = (
        fused(hidden, lm_head),
        reference(hidden, lm_head),
    )
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_hidden, want_hidden, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d_head, want_head, rtol=1e-4, atol=1e-6)
    # The primal path (no differentiation) gives the same value.
    np.testing.assert_allclose(
        next_token_loss(hidden, lm_head, labels, block_size=block_size, **kwargs), want, rtol=1e-5, atol=1e-6
    )


def test_batched_input_matches_flat_input_and_the_plain_reference():
    hidden, lm_head, labels, mask = inputs(seed=1, batched=True)
    batched = next_token_loss(hidden, lm_head, labels, loss_mask=mask, block_size=5)
    flat = next_token_loss(hidden.reshape(T, M), lm_head, labels.reshape(T), loss_mask=mask.reshape(T))
    np.testing.assert_allclose(batched, flat, rtol=1e-6)
    np.testing.assert_allclose(batched, full_logits_loss(hidden, lm_head, labels, loss_mask=mask), rtol=1e-5)


def test_scaled_cotangent_scales_the_gradients():
    hidden, lm_head, labels, _ = inputs(seed=2)
    grad = lambda scale: jax.grad(lambda h: scale * next_token_loss(h, lm_head, labels, block_size=8))(hidden)
    np.testing.assert_allclose(grad(3.0), 3.0 * grad(1.0), rtol=1e-5, atol=1e-7)


def test_fully_masked_loss_is_zero_with_finite_gradients():
    hidden, lm_head, labels, _ = inputs(seed=3)
    mask = np.zeros(T, bool)
    value, grads = jax.value_and_grad(
        lambda h, w: next_token_loss(h, w, labels, loss_mask=mask, block_size=8), argnums=(0, 1)
    )(hidden, lm_head)
    assert float(value) == 0.0
    assert all(bool(jnp.all(g == 0)) for g in grads)


def test_bf16_hidden_keeps_its_dtype_in_the_gradient():
    hidden, lm_head, labels, _ = inputs(seed=4)
    d_hidden = jax.grad(lambda h: next_token_loss(h, lm_head, labels, block_size=8))(
        hidden.astype(jnp.bfloat16)
    )
    assert d_hidden.dtype == jnp.bfloat16
    want = jax.grad(lambda h: full_logits_loss(h, lm_head, labels))(hidden)
    np.testing.assert_allclose(np.asarray(d_hidden, np.float32), want, atol=2e-3)


def largest_intermediate(fn, *args) -> int:
    """Element count of the largest array any equation (scan and jit bodies included) produces."""
    largest = 0

    def walk(jaxpr):
        nonlocal largest
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()) or (1,))))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    if hasattr(sub, "jaxpr"):
                        walk(sub.jaxpr if hasattr(sub.jaxpr, "eqns") else sub.jaxpr.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return largest


def test_no_tokens_by_vocab_array_in_forward_or_backward():
    tokens, dim, vocab, block = 512, 8, 64, 32
    hidden = jnp.ones((tokens, dim))
    lm_head = jnp.ones((dim, vocab))
    labels = jnp.zeros((tokens,), jnp.int32)
    fused = jax.value_and_grad(lambda h, w: next_token_loss(h, w, labels, block_size=block), argnums=(0, 1))
    # The largest arrays allowed are one block's logits and hidden-sized ones ([T, M] for d_hidden).
    assert largest_intermediate(fused, hidden, lm_head) <= max(block * vocab, tokens * dim) < tokens * vocab
    # The same probe does see the [T, V] logits of the naive loss, so it can fail.
    naive = jax.value_and_grad(lambda h, w: full_logits_loss(h, w, labels), argnums=(0, 1))
    assert largest_intermediate(naive, hidden, lm_head) >= tokens * vocab
