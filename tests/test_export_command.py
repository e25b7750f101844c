"""grugctl export in temporary repositories: a checkpoint grug_core.checkpoint wrote (real orbax files)
is exported by the real `python -m grug_core.export` child; the record lookup, the refusal of an
experiment Llama does not compute, and the one-sentence errors. Loading in transformers is
tests/test_export.py's job; here the written tensors are held to grug_core.export's mapping."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from repo_copy import commit_all, make_repo
from test_diff import _invoke, edit_definition, new_experiment, surface_edit
from test_plot import fake_results

from grug_core.checkpoint import close_checkpoints, open_checkpoints, save_checkpoint
from grug_core.export import hf_weights
from grug_core.model import GrugConfig, init_parameters
from grugctl import archive
from grugctl.runs import records
from grugctl.runs.runner import record_run

STARTER = "grugformer-starter"
CFG = GrugConfig(
    vocab_size=64, hidden_dim=32, intermediate_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=8, max_seq_len=32,
)  # fmt: skip


def write_checkpoint(folder: Path, experiment: str, steps=(4, 8)) -> dict:
    """A real checkpoint folder as a run writes it; returns each step's parameters on the host."""
    identity = {"experiment": experiment, "config": {"model": CFG.__dict__}, "code": "c0"}
    shapes = jax.eval_shape(init_parameters, CFG, jax.random.key(0))
    manager = open_checkpoints(folder, identity)
    held = {}
    for step in steps:
        draw = np.random.default_rng(step).standard_normal
        params = jax.tree.map(lambda s, draw=draw: draw(s.shape, dtype=np.float32), shapes)
        save_checkpoint(manager, step, {"params": params, "opt_state": {"mu": params}}, {"step": step})
        held[step] = params
    close_checkpoints(manager)
    return held


def assert_exported(folder: Path, params) -> None:
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
    written, expected = load_file(folder / "model.safetensors"), hf_weights(params, CFG)
    assert sorted(written) == sorted(expected)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(written[name], tensor, err_msg=name)


def record_with_checkpoint(root: Path, entry_id: str, checkpoint: dict | None, seed: int = 0) -> str:
    """A run record written by grugctl run's own recording code, with the starter's `checkpoint` field."""
    loaded = archive.load_archive(root / "archive.yaml")
    source = records.provenance(root, loaded.experiments[entry_id].path, loaded.core)
    built = records.build_record(fake_results(seed, 0.02), source, entry_id=entry_id, pair=None)
    if checkpoint is not None:
        built["checkpoint"] = checkpoint
    return record_run(loaded, entry_id, built)["record"]


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


def test_export_of_a_checkpoint_folder_writes_its_latest_parameters(repo, tmp_path):
    held = write_checkpoint(tmp_path / "ckpt", STARTER)
    out = tmp_path / "hf"
    result = _invoke(repo, ["export", STARTER, "--checkpoint", str(tmp_path / "ckpt"), "--hf", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"exported step 8 of {tmp_path / 'ckpt'} to {out}\n")
    assert "model.safetensors (" in result.stdout and "from_pretrained" in result.stderr
    assert_exported(out, held[8])

    # An occupied folder needs --yes (no terminal to ask), then an earlier step replaces it.
    args = ["export", STARTER, "--checkpoint", str(tmp_path / "ckpt"), "--hf", str(out), "--step", "4"]
    refused = _invoke(repo, args)
    assert refused.exit_code == 2
    assert (
        refused.stderr
        == f"error: no terminal to answer 'Replace {out}?'; pass --yes to go ahead (nothing changed)\n"
    )
    assert_exported(out, held[8])
    replaced = _invoke(repo, [*args, "--yes", "--json"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(replaced.stdout)["step"] == 4
    assert_exported(out, held[4])


def test_export_finds_the_newest_record_that_kept_a_checkpoint(repo, tmp_path):
    held = write_checkpoint(repo / "checkpoints" / "run", STARTER)
    record_with_checkpoint(repo, STARTER, None, seed=0)
    path = record_with_checkpoint(repo, STARTER, {"dir": "checkpoints/run", "step": 4}, seed=1)
    record_with_checkpoint(repo, STARTER, None, seed=2)  # newer, but it kept none
    commit_all(repo, "runs")

    planned = _invoke(repo, ["export", STARTER, "--hf", str(tmp_path / "hf"), "--dry-run", "--json"])
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.stdout) == {
        "experiment": STARTER, "checkpoint": str(repo / "checkpoints" / "run"), "step": 4,
        "out": str(tmp_path / "hf"), "source": path,
    }  # fmt: skip
    assert not (tmp_path / "hf").exists()

    done = _invoke(repo, ["export", STARTER, "--record", path, "--hf", str(tmp_path / "hf")])
    assert done.exit_code == 0, done.output
    assert_exported(tmp_path / "hf", held[4])  # the record's step, not the folder's latest


def test_dry_run_says_what_it_would_do_and_writes_nothing(repo, tmp_path):
    write_checkpoint(tmp_path / "ckpt", STARTER, steps=(3,))
    out = tmp_path / "hf"
    result = _invoke(
        repo, ["export", STARTER, "--checkpoint", str(tmp_path / "ckpt"), "--hf", str(out), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert (
        result.stdout == f"would export the latest step of {tmp_path / 'ckpt'} (from --checkpoint) to {out}\n"
    )
    assert not out.exists()


def test_no_record_with_a_checkpoint_is_one_sentence(repo, tmp_path):
    record_with_checkpoint(repo, STARTER, None)
    result = _invoke(repo, ["export", STARTER, "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: no run of '{STARTER}' kept a checkpoint; run it with "
        f"`grugctl run {STARTER} --checkpoint-every N` first\n"
    )


def test_an_experiment_that_changes_the_mlp_is_refused_naming_it(repo, tmp_path):
    path = new_experiment(repo, "relu-squared", "--bucket", "mlp")
    surface_edit(path, "mlp")
    surface_edit(path, "rms_norm")
    commit_all(repo, "relu-squared: edit mlp")
    write_checkpoint(tmp_path / "ckpt", "relu-squared")
    out = tmp_path / "hf"
    result = _invoke(
        repo, ["export", "relu-squared", "--checkpoint", str(tmp_path / "ckpt"), "--hf", str(out)]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: 'relu-squared' changes rms_norm, mlp, which LlamaForCausalLM does not compute; export would "
        "write weights that load and compute something else\n"
    )
    assert not out.exists()


def test_a_loss_or_optimizer_change_exports(repo, tmp_path):
    path = new_experiment(repo, "z-loss-tweak", "--bucket", "loss")
    surface_edit(path, "next_token_loss")
    edit_definition(path, "optimizer", "grad_clip: float = 1.0", "grad_clip: float = 0.5")
    commit_all(repo, "z-loss-tweak: edit the loss and the optimizer")
    write_checkpoint(tmp_path / "ckpt", "z-loss-tweak", steps=(2,))
    args = ["export", "z-loss-tweak", "--checkpoint", str(tmp_path / "ckpt"), "--hf", str(tmp_path / "hf")]
    result = _invoke(repo, ["diff", "z-loss-tweak", "--stat"])
    assert "next_token_loss" in result.stdout and "optimizer" in result.stdout
    result = _invoke(repo, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("would export the latest step of")


def test_a_checkpoint_folder_of_another_experiment_is_refused(repo, tmp_path):
    new_experiment(repo, "relu-squared", "--bucket", "mlp")
    write_checkpoint(tmp_path / "ckpt", STARTER, steps=(2,))
    result = _invoke(repo, ["export", "relu-squared", "--checkpoint", str(tmp_path / "ckpt"), "--hf", "hf"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {tmp_path / 'ckpt'} holds checkpoints of '{STARTER}', not 'relu-squared'; export it as "
        f"`grugctl export {STARTER}` or pass another folder\n"
    )


def test_a_damaged_checkpoint_is_the_childs_one_sentence(repo, tmp_path):
    write_checkpoint(tmp_path / "ckpt", STARTER, steps=(4, 8))
    step = tmp_path / "ckpt" / "8" / "params"
    largest = max((p for p in step.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    result = _invoke(
        repo, ["export", STARTER, "--checkpoint", str(tmp_path / "ckpt"), "--hf", str(tmp_path / "hf")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: checkpoint step 8 in {tmp_path / 'ckpt'} is damaged or truncated ("
    )
    assert result.stderr.endswith("to resume from step 4, the newest that restores\n")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "hf").exists()
