"""compute_dtype="bfloat16": the matmuls run in bf16 while the parameters, the optimizer state, the
residual stream, the norm statistics, the softmax and the loss stay fp32; a few real training steps on
the Shakespeare bytes track the fp32 run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grug_core.data import batches
from grug_core.loss import next_token_loss
from grug_core.model import GrugConfig, forward, init_parameters
from grug_core.optim import optimizer

FP32 = GrugConfig(
    vocab_size=256,
    hidden_dim=64,
    intermediate_dim=192,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    max_seq_len=64,
)
BF16 = dataclasses.replace(FP32, compute_dtype="bfloat16")
STEPS = 8
# Over these 8 AdamW steps (5.54 -> 3.56 nats) bf16's per-step losses were measured within 4e-4 nats
# of fp32's; the bound leaves 25x room for other CPUs' bf16 kernels, and is still 0.3% of the loss.
LOSS_TOLERANCE = 0.01


def loss_fn(params, tokens, cfg):
    hidden = forward(params, tokens[:, :-1], cfg)
    return next_token_loss(hidden, params.lm_head, tokens[:, 1:])


def train_losses(cfg: GrugConfig) -> tuple[list[float], object, object]:
    tx = optimizer(1e-2, STEPS, warmup_steps=2)
    params = init_parameters(cfg, jax.random.key(0))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, cfg)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses, data = [], batches("train", 8, 64, seed=3)
    for _ in range(STEPS):
        params, opt_state, loss = step(params, opt_state, jnp.asarray(next(data)))
        losses.append(float(loss))
    return losses, params, opt_state


def all_equations(jaxpr):
    """Every equation, including those inside jit, scan and custom_vjp bodies."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from all_equations(inner)


def test_unknown_compute_dtype_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="compute_dtype='float16' is not supported; use one of float32"):
        GrugConfig(compute_dtype="float16")


def test_bf16_runs_its_matmuls_in_bf16_and_keeps_loss_and_gradients_fp32():
    params = init_parameters(BF16, jax.random.key(0))
    tokens = next(batches("train", 2, 33, seed=0))
    jaxpr = jax.make_jaxpr(jax.value_and_grad(loss_fn), static_argnums=2)(params, tokens, BF16)
    dots = [eqn for eqn in all_equations(jaxpr.jaxpr) if eqn.primitive.name == "dot_general"]
    bf16 = lambda eqn: [v.aval.dtype == jnp.bfloat16 for v in eqn.invars]
    # The rotary tables (cos and sin, for q and k, in every layer) are widened by an exact fp32 dot: the
    # angles stay fp32 in either dtype.
    highest = (jax.lax.Precision.HIGHEST,) * 2
    tables = [eqn for eqn in dots if eqn.params["precision"] == highest]
    assert len(tables) == 4 * BF16.num_layers and not any(any(bf16(eqn)) for eqn in tables)
    dots = [eqn for eqn in dots if eqn.params["precision"] != highest]
    # Projections, MLP and LM head (2-D dots), forward and backward, are bf16 x bf16. Attention's
    # backward contracts the fp32 cotangents of its fp32 scores, so there only one operand is bf16.
    assert dots and all(any(bf16(eqn)) for eqn in dots)
    assert all(all(bf16(eqn)) for eqn in dots if eqn.invars[0].aval.ndim == 2)
    # Dtypes are static, so shapes-only evaluation answers without compiling.
    assert jax.eval_shape(forward, params, tokens[:, :-1], BF16).dtype == jnp.bfloat16
    loss, grads = jax.eval_shape(jax.value_and_grad(loss_fn), params, tokens, BF16)
    assert loss.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


def test_a_few_bf16_steps_track_the_fp32_loss():
    fp32_losses, _, _ = train_losses(FP32)
    bf16_losses, params, opt_state = train_losses(BF16)
    assert fp32_losses[-1] < fp32_losses[0] - 0.5, fp32_losses  # it really trains
    gaps = np.abs(np.array(bf16_losses) - np.array(fp32_losses))
    assert gaps.max() <= LOSS_TOLERANCE, (fp32_losses, bf16_losses)
    assert gaps.max() > 0, "bf16 gave bit-identical losses: the compute dtype had no effect"
    master = jax.tree.leaves(params) + [leaf for leaf in jax.tree.leaves(opt_state) if leaf.ndim]
    assert {leaf.dtype for leaf in master} == {jnp.dtype(jnp.float32)}
