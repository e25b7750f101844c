"""Tokens/s of a sharded grug_core train step on 1 device and on 8 forced CPU devices (a 8x1 and a 4x2
data x model mesh), each in its own process because XLA fixes the device count when JAX starts.

A sanity figure, not a speed-up claim: the 8 "devices" share this machine's cores, so the ratio says
what the mesh's collectives and smaller per-device matmuls cost on one CPU, not what 8 accelerators do.

    python bench/mesh.py           # the starter's shape (d128 L4, batch 32 x 128), 10 timed steps
    python bench/mesh.py --quick   # d64 L2, batch 16 x 64, 1 device and 4x2 only, 2 timed steps
"""

# Axes: B batch, S sequence.
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MESHES = (("1 device", 1, "data=1,model=1"), ("8 devices, 8x1", 8, "data=8,model=1"),
          ("8 devices, 4x2", 8, "data=4,model=2"))  # fmt: skip
SHAPES = {"full": (128, 4, 32, 128), "quick": (64, 2, 16, 64)}  # model dim, layers, batch, sequence


def measure(mesh_flag: str, repeats: int, shape: str) -> dict:
    """In this process: seconds per train step on the given mesh (median of `repeats`)."""
    import jax
    import optax

    from grug_core.loss import next_token_loss
    from grug_core.model import GrugConfig, forward, init_parameters, parameter_specs
    from grug_core.optim import optimizer
    from grug_core.sharding import parse_mesh, put_batch, shard, training_mesh

    width, layers, batch, seq = SHAPES[shape]
    cfg = GrugConfig(
        hidden_dim=width, intermediate_dim=3 * width, num_layers=layers, num_heads=4, num_kv_heads=2,
        head_dim=width // 4, max_seq_len=seq,
    )  # fmt: skip
    mesh = training_mesh(batch, *parse_mesh(mesh_flag))
    tx = optimizer(1e-3, 1000, warmup_steps=10)
    params = shard(init_parameters(cfg, jax.random.key(0)), parameter_specs(cfg), mesh)
    opt_state = tx.init(params)
    tokens = put_batch(jax.random.randint(jax.random.key(1), (batch, seq + 1), 0, 256).__array__(), mesh)

    def step(params, opt_state, tokens):
        loss_fn = lambda p: next_token_loss(forward(p, tokens[:, :-1], cfg), p.lm_head, tokens[:, 1:])
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    with jax.set_mesh(mesh):
        step = jax.jit(step, donate_argnums=(0, 1))
        params, opt_state, loss = step(params, opt_state, tokens)  # compile and warm up
    loss.block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, tokens)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
    return {"devices": len(jax.devices()), "tokens_per_s": batch * seq / statistics.median(times)}


def child(devices: int, mesh_flag: str, repeats: int, shape: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    command = [sys.executable, __file__, "--child", mesh_flag, "--repeats", str(repeats), "--shape", shape]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller shape, two meshes, 2 timed steps")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats, args.shape)))
        return
    shape, repeats = ("quick", 2) if args.quick else ("full", args.repeats)
    meshes = (MESHES[0], MESHES[2]) if args.quick else MESHES
    width, layers, batch, seq = SHAPES[shape]
    print(
        f"train step d{width} L{layers}, batch {batch} x {seq}, fp32, {os.cpu_count()} CPU cores, "
        f"median of {repeats}"
    )
    base = None
    for name, devices, flag in meshes:
        result = child(devices, flag, repeats, shape)
        assert result["devices"] == devices, result
        base = base or result["tokens_per_s"]
        print(f"{name} ({flag}): {result['tokens_per_s']:,.0f} tok/s, {result['tokens_per_s'] / base:.2f}x")


if __name__ == "__main__":
    main()
