# Axes of the device mesh: "data" (batch and FSDP parameter shards), "model" (tensor parallel).
"""Explicit sharding: a two-axis mesh, parameters placed by their PartitionSpecs, activations
constrained to batch-over-data.

Multi-host: call `jax.distributed.initialize()` on every host before anything else; `jax.devices()`
then lists every host's devices, `make_mesh` spans them all, and the same code runs unchanged (each
host builds the shards of the global batch that its own devices hold: `put_batch`).
"""

from __future__ import annotations

import math
import re

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


def parse_mesh(text: str) -> tuple[int | None, int]:
    """The --mesh flag: "data=4,model=2" -> (4, 2). A missing model axis is 1; a missing data axis is
    None, meaning "every remaining device"."""
    sizes = {}
    for part in text.split(","):
        match = re.fullmatch(r"\s*(data|model)\s*=\s*([1-9][0-9]*)\s*", part)
        if match is None or match[1] in sizes:
            raise ValueError(f"--mesh {text!r} is not of the form data=D,model=M (positive sizes, each once)")
        sizes[match[1]] = int(match[2])
    return sizes.get("data"), sizes.get("model", 1)


def training_mesh(batch_size: int, data: int | None = None, model: int = 1) -> Mesh:
    """The mesh a training run uses: data x model over the first data * model visible devices.

    With data None it takes every device the batch can split over: data = gcd(devices / model, batch),
    so 8 devices train a batch of 32 on all 8 and a smoke batch of 4 on 4 rather than failing."""
    devices = jax.devices()
    if data is None:
        data = math.gcd(len(devices) // model, batch_size)
    if data * model > len(devices):
        raise ValueError(
            f"a {data}x{model} (data x model) mesh needs {data * model} devices but only {len(devices)} "
            "are visible; pick a smaller --mesh"
        )
    if batch_size % data:
        raise ValueError(
            f"batch size {batch_size} does not split over a data axis of {data}; pick a --mesh whose "
            "data size divides it"
        )
    return make_mesh(data, model, devices[: data * model])


def check_divisible(path: str, shape: tuple[int, ...], spec: PartitionSpec, mesh: Mesh) -> None:
    """Fail with the parameter's name: XLA would otherwise pad silently or fail deep in compilation."""
    for dim, axes in enumerate(spec):
        for axis in (axes,) if isinstance(axes, str) else axes or ():
            if shape[dim] % mesh.shape[axis]:
                raise ValueError(
                    f"parameter {path}: dimension {dim} (size {shape[dim]}) is not divisible by mesh "
                    f"axis '{axis}' (size {mesh.shape[axis]})"
                )


def check_placement(tree, specs, mesh: Mesh) -> None:
    """check_divisible for every leaf; takes arrays or jax.eval_shape's shapes, so a run can refuse a
    mesh before it builds anything."""
    jax.tree_util.tree_map_with_path(
        lambda path, array, spec: check_divisible(jax.tree_util.keystr(path), array.shape, spec, mesh),
        tree,
        specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def shard(tree, specs, mesh: Mesh):
    """Place every array of `tree` on `mesh` with the matching PartitionSpec of `specs`."""
    check_placement(tree, specs, mesh)
    place = lambda array, spec: jax.device_put(array, NamedSharding(mesh, spec))
    return jax.tree.map(place, tree, specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Token batches [B, S]: batch over data, replicated over model."""
    return NamedSharding(mesh, PartitionSpec("data", None))


def put_batch(tokens: np.ndarray, mesh: Mesh) -> jax.Array:
    """A global [B, S] host batch -> a device array sharded batch-over-data. Each process builds only
    the shards its own devices hold, so under jax.distributed every host passes the same global batch
    (the data stream is seeded) and nothing crosses the network."""
    sharding = batch_sharding(mesh)
    return jax.make_array_from_callback(tokens.shape, sharding, lambda index: tokens[index])


def constrain_activations(x: jax.Array) -> jax.Array:
    """Pin [B, S, M] activations to batch-over-data when a mesh is set (jax.set_mesh); without
    a mesh (single device) this is a no-op, so the same model code serves both."""
    if jax.sharding.get_abstract_mesh().empty:
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec("data", None, None))
