"""Run on 8 forced CPU devices by tests/test_grugformer_sharding.py (XLA_FLAGS must be set before
JAX starts, hence the separate process)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from grug_core.loss import next_token_loss
from grug_core.model import GrugConfig, forward, init_parameters, parameter_specs
from grug_core.sharding import batch_sharding, make_mesh, shard

CFG = GrugConfig(
    vocab_size=64,
    hidden_dim=32,
    intermediate_dim=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    max_seq_len=32,
)


def loss_fn(params, tokens):
    hidden = forward(params, tokens[:, :-1], CFG)
    return next_token_loss(hidden, params.lm_head, tokens[:, 1:], block_size=16)


def test_eight_devices_are_visible():
    assert len(jax.devices()) == 8


def test_sharded_forward_loss_and_grads_equal_single_device():
    params = init_parameters(CFG, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 17), 0, CFG.vocab_size, jnp.int32)
    expected_hidden = jax.jit(forward, static_argnums=2)(params, tokens[:, :-1], CFG)
    expected_loss, expected_grads = jax.jit(jax.value_and_grad(loss_fn))(params, tokens)

    mesh = make_mesh(data=4, model=2)
    sharded_params = shard(params, parameter_specs(CFG), mesh)
    sharded_tokens = jax.device_put(tokens, batch_sharding(mesh))
    with jax.set_mesh(mesh):
        hidden = jax.jit(forward, static_argnums=2)(sharded_params, sharded_tokens[:, :-1], CFG)
        loss, grads = jax.jit(jax.value_and_grad(loss_fn))(sharded_params, sharded_tokens)

    assert hidden.sharding.spec[0] == "data"
    np.testing.assert_allclose(hidden, expected_hidden, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_parameters_carry_the_intended_specs():
    mesh = make_mesh(data=4, model=2)
    params = shard(init_parameters(CFG, jax.random.key(0)), parameter_specs(CFG), mesh)
    attn = params.blocks[0].attn
    assert attn.w_q.sharding == NamedSharding(mesh, PartitionSpec("data", "model", None))
    assert attn.w_o.sharding == NamedSharding(mesh, PartitionSpec("model", None, "data"))
    assert params.blocks[1].w_down.sharding == NamedSharding(mesh, PartitionSpec("model", "data"))
    assert params.lm_head.sharding == NamedSharding(mesh, PartitionSpec("data", "model"))
    # FSDP: each device holds a quarter of the model dim and half of the heads of w_q.
    assert attn.w_q.addressable_shards[0].data.shape == (8, 2, 8)


def test_non_dividing_mesh_fails_with_the_parameter_dimension_and_axis():
    cfg = GrugConfig(
        vocab_size=64,
        hidden_dim=32,
        intermediate_dim=64,
        num_layers=1,
        num_heads=4,
        num_kv_heads=1,
        head_dim=8,
        max_seq_len=32,
    )
    mesh = make_mesh(data=4, model=2)
    with pytest.raises(ValueError) as error:
        shard(init_parameters(cfg, jax.random.key(0)), parameter_specs(cfg), mesh)
    message = str(error.value)
    assert ".blocks[0].attn.w_k" in message
    assert "dimension 1 (size 1)" in message and "mesh axis 'model' (size 2)" in message


def test_mesh_of_the_wrong_size_fails_loudly():
    with pytest.raises(ValueError, match="needs 6 devices but 8"):
        make_mesh(data=3, model=2)


def test_splash_attention_runs_per_shard_under_a_mesh_and_matches_one_device():
    """Pallas kernels are opaque to XLA's partitioner, so splash_attention runs them through shard_map:
    batch over "data", heads over "model". Pallas' interpreter stands in for the TPU."""
    from grug_core.attention import AttentionMask, reference_attention, splash_attention

    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((4, 128, 4, 16), np.float32))
    k, v = (jnp.asarray(rng.standard_normal((4, 128, 2, 16), np.float32)) for _ in range(2))
    segments = np.repeat(np.array([[0, 1]]), 64, axis=1).repeat(4, axis=0).astype(np.int32)
    segments[1, -8:] = -1  # padding: exact zeros
    mask = AttentionMask(is_causal=True, segment_ids=jnp.asarray(segments))
    expected = jax.jit(lambda q, k, v: reference_attention(q, k, v, mask))(q, k, v)

    mesh = make_mesh(data=4, model=2)
    spec = NamedSharding(mesh, PartitionSpec("data", None, "model", None))
    q, k, v = (jax.device_put(x, spec) for x in (q, k, v))
    with jax.set_mesh(mesh):
        out = jax.jit(lambda q, k, v: splash_attention(q, k, v, mask, interpret=True))(q, k, v)
    assert out.sharding.spec[0] == "data"
    np.testing.assert_allclose(out, expected, atol=2e-5)
    assert not np.asarray(out[1, -8:]).any()
