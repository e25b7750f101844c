"""grug_core.checkpoint: real orbax checkpoints of real parameters and AdamW state on disk, the folder's
identity, and the bad input a run meets (another run's folder, a truncated file, a disk that fills
mid-write): each is one sentence, and the checkpoint before it still restores."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from grug_core.checkpoint import (
    CheckpointError,
    close_checkpoints,
    latest_step,
    open_checkpoints,
    read_identity,
    restore_checkpoint,
    save_checkpoint,
    wait_for_checkpoints,
)
from grug_core.model import GrugConfig, GrugParams, init_parameters
from grug_core.optim import optimizer

REPO = Path(__file__).resolve().parents[1]
CFG = GrugConfig(
    vocab_size=64, hidden_dim=32, intermediate_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=8, max_seq_len=32,
)  # fmt: skip
IDENTITY = {"experiment": "grugformer-starter", "config": {"model": CFG.__dict__, "steps": 10}, "code": "c0"}


def random_params(seed: int):
    """Parameters of CFG's shapes from numpy's generator: compiling JAX's init for them took seconds."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(init_parameters, CFG, jax.random.key(0))
    return jax.tree.map(lambda s: jax.numpy.asarray(rng.standard_normal(s.shape, dtype=np.float32)), shapes)


def train_state(seed: int = 0) -> dict:
    params = random_params(seed)
    tx = optimizer(1e-2, 10, warmup_steps=1)
    grads = jax.tree.map(lambda p: p * 0.5, params)
    _, opt_state = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
    return {"params": params, "opt_state": opt_state}


def on_host(tree):
    return jax.tree.map(np.asarray, tree)


def assert_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def saved_steps(directory: Path, steps, keep: int = 3) -> dict[int, dict]:
    """Save a different state at each step; returns what each step holds, on the host."""
    manager = open_checkpoints(directory, IDENTITY, keep=keep)
    held = {}
    bump = jax.jit(lambda tree: jax.tree.map(lambda x: x + 1, tree), donate_argnums=0)
    state = train_state()
    for step in steps:
        held[step] = on_host(state)
        save_checkpoint(manager, step, state, {"step": step, "curve": [[step, 1.5]]})
        state = bump(state)  # donated while the write may still run: the save must have copied it
    close_checkpoints(manager)
    return held


def test_save_keeps_the_last_k_and_restores_state_and_meta_exactly(tmp_path):
    directory = tmp_path / "ckpt"
    held = saved_steps(directory, [10, 20, 30, 40], keep=2)
    assert sorted(os.listdir(directory)) == ["30", "40", "identity.json"]
    assert latest_step(directory) == 40
    assert read_identity(directory) == json.loads(json.dumps(IDENTITY))

    manager = open_checkpoints(directory, IDENTITY)
    assert latest_step(manager) == 40
    state, meta = restore_checkpoint(manager, None, train_state(seed=1))
    assert meta == {"step": 40, "curve": [[40, 1.5]]}
    assert isinstance(state["params"], GrugParams)
    assert_equal(state, held[40])
    # The parameters alone, from abstract shapes (the export's restore), of an earlier step.
    params_only, meta = restore_checkpoint(
        manager, 30, {"params": jax.eval_shape(init_parameters, CFG, jax.random.key(0))}
    )
    assert list(params_only) == ["params"] and meta["step"] == 30
    assert_equal(params_only["params"], held[30]["params"])
    with pytest.raises(CheckpointError, match=r"has no checkpoint of step 10 \(it has: 30, 40\)"):
        restore_checkpoint(manager, 10, train_state())
    manager.close()


def test_an_empty_folder_has_no_latest_step_and_resume_says_so(tmp_path):
    manager = open_checkpoints(tmp_path / "ckpt", IDENTITY)
    assert latest_step(manager) is None and latest_step(tmp_path / "ckpt") is None
    with pytest.raises(CheckpointError, match="holds no finished checkpoint; run without --resume"):
        restore_checkpoint(manager, None, train_state())
    manager.close()


@pytest.mark.parametrize(
    "change, sentence",
    [
        ({"experiment": "relu-squared"},
         "holds checkpoints of experiment 'grugformer-starter' (this run is 'relu-squared')"),
        ({"config": {"model": {**CFG.__dict__, "hidden_dim": 64}, "steps": 10}},
         "holds checkpoints of another config (config.model.hidden_dim is 32 there, 64 in this run)"),
        ({"code": "c1"}, "holds checkpoints of other code ('c0' there, 'c1' in this run)"),
    ],
)  # fmt: skip
def test_a_folder_of_another_run_is_refused_in_one_sentence(tmp_path, change, sentence):
    directory = tmp_path / "ckpt"
    saved_steps(directory, [5])
    with pytest.raises(CheckpointError) as refused:
        open_checkpoints(directory, {**IDENTITY, **change})
    message = str(refused.value)
    assert message == f"{directory} {sentence}; pass another --checkpoint-dir or delete it"
    assert "\n" not in message
    # Nothing was touched: the folder still opens for its own run and restores.
    assert read_identity(directory) == json.loads(json.dumps(IDENTITY))
    manager = open_checkpoints(directory, IDENTITY)
    assert restore_checkpoint(manager, None, train_state())[1]["step"] == 5
    manager.close()


def test_a_folder_without_checkpoints_takes_the_new_identity(tmp_path):
    open_checkpoints(tmp_path / "ckpt", IDENTITY).close()
    other = {**IDENTITY, "experiment": "relu-squared"}
    open_checkpoints(tmp_path / "ckpt", other).close()
    assert read_identity(tmp_path / "ckpt")["experiment"] == "relu-squared"


def test_a_truncated_file_names_the_step_and_the_earlier_one_that_restores(tmp_path):
    directory = tmp_path / "ckpt"
    held = saved_steps(directory, [10, 20])
    largest = max((p for p in (directory / "20").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(largest, largest.stat().st_size // 2)

    manager = open_checkpoints(directory, IDENTITY)
    with pytest.raises(CheckpointError) as damaged:
        restore_checkpoint(manager, None, train_state())
    message = str(damaged.value)
    assert message.startswith(f"checkpoint step 20 in {directory} is damaged or truncated (")
    assert message.endswith(f"delete {directory / '20'} to resume from step 10, the newest that restores")
    assert "\n" not in message
    state, meta = restore_checkpoint(manager, 10, train_state())  # what the sentence promises
    assert meta["step"] == 10
    assert_equal(state, held[10])
    manager.close()


def test_a_truncated_json_file_is_the_same_sentence(tmp_path):
    directory = tmp_path / "ckpt"
    saved_steps(directory, [1, 2])
    metadata = next((directory / "2" / "params").glob("_METADATA"))
    metadata.write_bytes(metadata.read_bytes()[:100])
    manager = open_checkpoints(directory, IDENTITY)
    with pytest.raises(CheckpointError, match=r"checkpoint step 2 .* to resume from step 1, the newest"):
        restore_checkpoint(manager, 2, train_state())
    manager.close()


# The disk filling mid-write, for real: RLIMIT_FSIZE makes the kernel fail every write past 4 KB (EFBIG,
# the same path through orbax and TensorStore as ENOSPC) without root or a small file system. The
# limit covers the whole process, so the writer runs in its own.
FULL_DISK_WRITER = textwrap.dedent(
    """
    import resource, signal, sys
    import jax
    sys.path.insert(0, sys.argv[2])
    from test_checkpoint import IDENTITY, train_state
    from grug_core.checkpoint import CheckpointError, open_checkpoints, save_checkpoint, wait_for_checkpoints

    manager = open_checkpoints(sys.argv[1], IDENTITY, keep=1)
    save_checkpoint(manager, 1, train_state(), {"step": 1})
    wait_for_checkpoints(manager)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    try:
        save_checkpoint(manager, 2, train_state(seed=1), {"step": 2})
        wait_for_checkpoints(manager)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    """
)


def test_a_disk_that_fills_mid_write_is_one_sentence_and_the_previous_checkpoint_restores(tmp_path):
    directory = tmp_path / "ckpt"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(directory), str(Path(__file__).parent)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    # One line: orbax's thread tracebacks are not printed around it.
    assert done.stderr.strip().splitlines() == [
        f"error: writing a checkpoint to {directory} failed (File too large); step 1 is still restorable: "
        "free disk space or pass another --checkpoint-dir"
    ], done.stderr
    assert any(name.startswith("2.orbax-checkpoint-tmp") for name in os.listdir(directory))  # half written
    assert latest_step(directory) == 1

    manager = open_checkpoints(directory, IDENTITY)  # and the next run clears the half-written step
    assert sorted(os.listdir(directory)) == ["1", "identity.json"]
    state, meta = restore_checkpoint(manager, None, train_state(seed=2))
    assert meta == {"step": 1}
    assert_equal(state, on_host(train_state()))
    manager.close()


def test_save_refuses_the_reserved_meta_key(tmp_path):
    manager = open_checkpoints(tmp_path / "ckpt", IDENTITY)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(manager, 1, {"meta": train_state()["params"]}, {})
    wait_for_checkpoints(manager)
    manager.close()


def test_sharded_checkpoints_on_8_forced_cpu_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    check = Path(__file__).parent / "multidevice" / "checkpoint_8dev_checks.py"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n0", str(check)],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "2 passed" in result.stdout, result.stdout[-3000:]
