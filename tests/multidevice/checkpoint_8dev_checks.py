"""Run on 8 forced CPU devices by tests/test_checkpoint.py (XLA_FLAGS must be set before JAX starts,
hence the separate process): sharded parameters and AdamW moments save and restore with their
shardings and values, onto the mesh a resumed run (or the export) builds."""

import jax
import numpy as np
from jax.sharding import NamedSharding
from sharding_8dev_checks import CFG  # the same small model the sharding checks place

from grug_core.checkpoint import (
    close_checkpoints,
    latest_step,
    open_checkpoints,
    restore_checkpoint,
    save_checkpoint,
)
from grug_core.model import init_parameters, parameter_specs
from grug_core.optim import optimizer
from grug_core.sharding import make_mesh, shard

IDENTITY = {"experiment": "sharded", "config": {"model": CFG.__dict__}, "code": "c0"}


def sharded_state(mesh, seed=0):
    # numpy's generator: JAX's init, eager or jitted, costs seconds of dispatch or compilation here.
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(init_parameters, CFG, jax.random.key(0))
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape, dtype=np.float32), shapes)
    params = shard(params, parameter_specs(CFG), mesh)
    tx = optimizer(1e-2, 10, warmup_steps=1)
    # One real update, so the moments are not zeros that any restore would reproduce. Jitted: optax's
    # ops one by one on 8 devices took 14 s.
    grads = jax.tree.map(lambda p: p * 0.5, params)
    _, opt_state = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
    return {"params": params, "opt_state": opt_state}


def assert_same(restored, expected):
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
        assert got.sharding.is_equivalent_to(want.sharding, want.ndim), (got.sharding, want.sharding)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_sharded_state_restores_with_its_shardings_and_values(tmp_path):
    mesh = make_mesh(data=4, model=2)
    state = sharded_state(mesh)
    # Matrices really are split: a restore onto one device would not pass assert_same.
    w_q = state["params"].blocks[0].attn.w_q
    assert isinstance(w_q.sharding, NamedSharding) and len(w_q.addressable_shards) == 8
    assert w_q.addressable_shards[0].data.shape == (8, 2, 8)
    manager = open_checkpoints(tmp_path / "ckpt", IDENTITY, keep=2)
    save_checkpoint(manager, 10, state, {"step": 10, "seed": 0})
    close_checkpoints(manager)
    assert latest_step(tmp_path / "ckpt") == 10

    like = sharded_state(mesh, seed=1)  # other values, the same shardings
    manager = open_checkpoints(tmp_path / "ckpt", IDENTITY)
    restored, meta = restore_checkpoint(manager, None, like)
    manager.close()
    assert meta == {"step": 10, "seed": 0}
    assert_same(restored, state)


def test_a_sharded_checkpoint_restores_onto_another_mesh_and_one_device(tmp_path):
    state = sharded_state(make_mesh(data=4, model=2))
    manager = open_checkpoints(tmp_path / "ckpt", IDENTITY)
    save_checkpoint(manager, 3, state, {"step": 3})
    close_checkpoints(manager)

    manager = open_checkpoints(tmp_path / "ckpt", IDENTITY)
    other = sharded_state(make_mesh(data=8, model=1), seed=1)
    restored, _ = restore_checkpoint(manager, 3, other)
    leaves = zip(jax.tree.leaves(restored), jax.tree.leaves(state), jax.tree.leaves(other), strict=True)
    for got, want, placed in leaves:
        assert got.sharding.is_equivalent_to(placed.sharding, placed.ndim)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    # The export's restore: abstract shapes without shardings, the parameters alone, on one device.
    abstract = {"params": jax.eval_shape(init_parameters, CFG, jax.random.key(0))}
    restored, _ = restore_checkpoint(manager, 3, abstract)
    manager.close()
    for got, want in zip(jax.tree.leaves(restored["params"]), jax.tree.leaves(state["params"]), strict=True):
        assert got.sharding.device_set == {jax.devices()[0]}
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
