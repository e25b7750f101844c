# Axes of the device mesh: "data" (batch and FSDP parameter shards), "model" (tensor parallel).
"""Explicit sharding: a two-axis mesh, parameters placed by their PartitionSpecs, activations
constrained to batch-over-data.

Multi-host: call `jax.distributed.initialize()` on every host before anything else; `jax.devices()`
then lists every host's devices, `make_mesh` spans them all, and the same code runs unchanged (each
host feeds its slice of the batch, e.g. via `jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "model")


def make_mesh(data: int, model: int = 1, devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    if data * model != len(devices):
        raise ValueError(
            f"a {data}x{model} (data x model) mesh needs {data * model} devices but {len(devices)} "
            "are visible; pick sizes whose product is the device count"
        )
    return Mesh(np.asarray(devices).reshape(data, model), MESH_AXES)


def check_divisible(path: str, shape: tuple[int, ...], spec: PartitionSpec, mesh: Mesh) -> None:
    """Fail with the parameter's name: XLA would otherwise pad silently or fail deep in compilation."""
    for dim, axes in enumerate(spec):
        for axis in (axes,) if isinstance(axes, str) else axes or ():
            if shape[dim] % mesh.shape[axis]:
                raise ValueError(
                    f"parameter {path}: dimension {dim} (size {shape[dim]}) is not divisible by mesh "
                    f"axis '{axis}' (size {mesh.shape[axis]})"
                )


def shard(tree, specs, mesh: Mesh):
    """Place every array of `tree` on `mesh` with the matching PartitionSpec of `specs`."""

    def place(path, array, spec):
        check_divisible(jax.tree_util.keystr(path), array.shape, spec, mesh)
        return jax.device_put(array, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(
        place, tree, specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Token batches [B, S]: batch over data, replicated over model."""
    return NamedSharding(mesh, PartitionSpec("data", None))


def constrain_activations(x: jax.Array) -> jax.Array:
    """Pin [B, S, M] activations to batch-over-data when a mesh is set (jax.set_mesh); without
    a mesh (single device) this is a no-op, so the same model code serves both."""
    if jax.sharding.get_abstract_mesh().empty:
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec("data", None, None))
