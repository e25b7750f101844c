"""The model's forward pass, causality, the loss against a full-logits reference, and a few real
optimizer steps on a tiny config."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grug_core.attention import AttentionMask
from grug_core.loss import next_token_loss
from grug_core.model import GrugConfig, GrugParams, forward, init_parameters, logits, parameter_specs
from grug_core.optim import optimizer

TINY = GrugConfig(
    vocab_size=64,
    hidden_dim=32,
    intermediate_dim=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    max_seq_len=32,
)


def tokens_for(cfg, batch=2, seq=16, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, seq), 0, cfg.vocab_size, jnp.int32)


def test_forward_and_logits_shapes_and_dtypes():
    params = init_parameters(TINY, jax.random.key(0))
    tokens = tokens_for(TINY)
    hidden = jax.jit(forward, static_argnums=2)(params, tokens, TINY)
    assert hidden.shape == (2, 16, TINY.hidden_dim) and hidden.dtype == jnp.float32
    out = jax.jit(logits, static_argnums=2)(params, tokens, TINY)
    assert out.shape == (2, 16, TINY.vocab_size)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_parameters_have_the_documented_shapes():
    params = init_parameters(TINY, jax.random.key(0))
    block = params.blocks[0]
    assert params.token_embed.shape == (64, 32) and params.lm_head.shape == (32, 64)
    assert block.attn.w_q.shape == (32, 4, 8) and block.attn.w_k.shape == (32, 2, 8)
    assert block.attn.w_o.shape == (4, 8, 32)
    assert block.w_gate.shape == (32, 64) and block.w_down.shape == (64, 32)
    assert len(params.blocks) == TINY.num_layers
    specs = parameter_specs(TINY)
    assert jax.tree.structure(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) == (
        jax.tree.structure(params)
    )


def test_forward_is_causal():
    params = init_parameters(TINY, jax.random.key(1))
    tokens = tokens_for(TINY, batch=1, seq=12)
    changed = tokens.at[0, 7].set((tokens[0, 7] + 1) % TINY.vocab_size)
    before, after = forward(params, tokens, TINY), forward(params, changed, TINY)
    np.testing.assert_allclose(before[0, :7], after[0, :7], atol=1e-6)
    assert not np.allclose(before[0, 7:], after[0, 7:], atol=1e-4)


def test_document_mask_isolates_segments():
    params = init_parameters(TINY, jax.random.key(2))
    tokens = tokens_for(TINY, batch=1, seq=12)
    segments = jnp.array([[0] * 6 + [1] * 6], jnp.int32)
    mask = AttentionMask(is_causal=True, segment_ids=segments)
    changed = tokens.at[0, 2].set((tokens[0, 2] + 5) % TINY.vocab_size)
    before, after = forward(params, tokens, TINY, mask), forward(params, changed, TINY, mask)
    np.testing.assert_allclose(before[0, 6:], after[0, 6:], atol=1e-6)


def test_sequence_longer_than_max_seq_len_fails_loudly():
    params = init_parameters(TINY, jax.random.key(0))
    with pytest.raises(ValueError, match="max_seq_len"):
        forward(params, tokens_for(TINY, seq=TINY.max_seq_len + 1), TINY)


def test_config_rejects_heads_not_divisible_by_kv_heads():
    with pytest.raises(ValueError, match="num_kv_heads"):
        dataclasses.replace(TINY, num_heads=3)


@pytest.mark.parametrize("z_loss_weight", [0.0, 1e-3])
def test_next_token_loss_matches_full_logits_reference(z_loss_weight):
    params = init_parameters(TINY, jax.random.key(3))
    tokens = tokens_for(TINY, batch=2, seq=17)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    hidden = forward(params, inputs, TINY)
    fused = next_token_loss(hidden, params.lm_head, labels, z_loss_weight=z_loss_weight, block_size=8)
    full = jnp.einsum("bsm,mv->bsv", hidden, params.lm_head)
    log_probs = jax.nn.log_softmax(full, axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    lse = jax.nn.logsumexp(full, axis=-1)
    reference = jnp.mean(nll + z_loss_weight * lse**2)
    np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-6)


def test_untrained_loss_is_near_log_vocab():
    params = init_parameters(TINY, jax.random.key(4))
    tokens = tokens_for(TINY, batch=4, seq=17)
    loss = next_token_loss(forward(params, tokens[:, :-1], TINY), params.lm_head, tokens[:, 1:])
    assert abs(float(loss) - np.log(TINY.vocab_size)) < 0.1


def test_adamw_steps_lower_the_loss_on_a_repeated_batch():
    params = init_parameters(TINY, jax.random.key(5))
    tokens = tokens_for(TINY, batch=4, seq=17, seed=9)
    tx = optimizer(3e-3, total_steps=30, warmup_steps=3)
    opt_state = tx.init(params)

    def loss_fn(params: GrugParams):
        hidden = forward(params, tokens[:, :-1], TINY)
        return next_token_loss(hidden, params.lm_head, tokens[:, 1:])

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(30):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 1.0, losses


def test_weight_decay_skips_vectors():
    params = init_parameters(TINY, jax.random.key(6))
    tx = optimizer(1e-2, total_steps=10, warmup_steps=0, weight_decay=0.5)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # With zero gradients only decoupled weight decay moves a parameter.
    assert float(jnp.abs(updates.final_norm).max()) == 0.0
    assert float(jnp.abs(updates.lm_head).max()) > 0.0
