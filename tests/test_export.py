"""grug_core.export: an exported folder loads in transformers' LlamaForCausalLM and computes grug_core's
logits to fp32 rounding, from parameters in memory and from a real orbax checkpoint, through
`python -m grug_core.export`. Loading needs the hf extra (`pip install -e '.[hf]'`, in the dev install)."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from grug_core.checkpoint import close_checkpoints, open_checkpoints, save_checkpoint
from grug_core.export import CONFIG_FILE, WEIGHTS_FILE, ExportError, hf_config, hf_weights, write_hf
from grug_core.model import GrugConfig, init_parameters, logits

REPO = Path(__file__).resolve().parents[1]
# Non-default theta and eps, so a config that dropped either would not match.
MHA = GrugConfig(
    vocab_size=64, hidden_dim=32, intermediate_dim=80, num_layers=2, num_heads=4, num_kv_heads=4,
    head_dim=8, max_seq_len=32, rope_theta=500.0, norm_eps=1e-6,
)  # fmt: skip
GQA = GrugConfig(
    vocab_size=72, hidden_dim=48, intermediate_dim=96, num_layers=3, num_heads=6, num_kv_heads=2,
    head_dim=16, max_seq_len=64, rope_theta=10000.0,
)  # fmt: skip


def random_params(cfg: GrugConfig, seed: int = 0):
    """Normal noise of scale 0.2 in every parameter's shape, norm scales around one (exactly one would
    hide a swapped norm). numpy's generator: compiling JAX's threefry for every shape took 15 s."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(init_parameters, cfg, jax.random.key(0))
    draw = lambda s: (s.ndim == 1) + 0.2 * rng.standard_normal(s.shape, dtype=np.float32)
    return jax.tree.map(lambda s: jax.numpy.asarray(draw(s)), shapes)


def hf_logits(folder: Path, tokens: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip(
        "torch", reason="loading an export needs the hf extra: pip install -e '.[hf]'"
    )
    transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")
    model = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    assert model.dtype == torch.float32
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


def assert_same_logits(folder: Path, params, cfg: GrugConfig, seq_len: int) -> None:
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, seq_len))
    ours = np.asarray(jax.jit(logits, static_argnums=2)(params, tokens, cfg))
    theirs = hf_logits(folder, tokens)
    assert theirs.shape == ours.shape
    relative = np.abs(theirs - ours).max() / np.abs(ours).max()
    assert relative < 1e-5, relative


def test_hf_config_carries_every_field_llama_needs():
    config = hf_config(GQA)
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (48, 96, 3)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (6, 2, 16)
    assert (config["vocab_size"], config["max_position_embeddings"]) == (72, 64)
    assert (config["rope_theta"], config["rms_norm_eps"]) == (10000.0, 1e-5)
    assert config["tie_word_embeddings"] is False and config["hidden_act"] == "silu"
    assert config["attention_bias"] is False and config["mlp_bias"] is False
    assert config["torch_dtype"] == "float32"


def test_hf_weights_have_torch_shapes():
    weights = hf_weights(random_params(GQA), GQA)
    assert weights["model.embed_tokens.weight"].shape == (72, 48)
    assert weights["model.layers.2.self_attn.q_proj.weight"].shape == (6 * 16, 48)
    assert weights["model.layers.2.self_attn.k_proj.weight"].shape == (2 * 16, 48)
    assert weights["model.layers.2.self_attn.o_proj.weight"].shape == (48, 6 * 16)
    assert weights["model.layers.0.mlp.down_proj.weight"].shape == (48, 96)
    assert weights["lm_head.weight"].shape == (72, 48)
    assert len(weights) == 2 + 9 * 3 + 1
    assert all(w.dtype == np.float32 and w.flags.c_contiguous for w in weights.values())


@pytest.mark.parametrize("cfg", [MHA, GQA], ids=["mha", "gqa"])
def test_llama_for_causal_lm_computes_grug_cores_logits(tmp_path, cfg):
    params = random_params(cfg)
    write_hf(tmp_path / "hf", params, cfg)
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert_same_logits(tmp_path / "hf", params, cfg, seq_len=cfg.max_seq_len)


def test_write_refuses_a_non_empty_folder_unless_forced_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    params = random_params(MHA)
    with pytest.raises(ExportError, match=r"hf is not empty; pass another --out, or --force to replace it"):
        write_hf(out, params, MHA)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    write_hf(out, params, MHA, force=True)
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no staging or old folder left
    assert json.loads((out / CONFIG_FILE).read_text())["rope_theta"] == 500.0


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grug_core.export", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def test_python_m_export_writes_a_checkpoints_parameters_that_llama_loads(tmp_path):
    params = random_params(GQA)
    identity = {"experiment": "grugformer-starter", "config": {"model": GQA.__dict__}, "code": "c0"}
    manager = open_checkpoints(tmp_path / "ckpt", identity)
    for step in (4, 8):
        state = {"params": random_params(GQA, seed=step), "opt_state": {"mu": random_params(GQA, seed=9)}}
        save_checkpoint(manager, step, state if step == 4 else {**state, "params": params}, {"step": step})
    close_checkpoints(manager)

    done = export("--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["step"] == 8 and summary["experiment"] == "grugformer-starter"
    assert summary["params"] == sum(x.size for x in jax.tree.leaves(params))
    assert_same_logits(tmp_path / "hf", params, GQA, seq_len=16)

    again = export("--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf"), "--step", "4")
    assert again.returncode == 2
    assert (
        again.stderr
        == f"error: {tmp_path / 'hf'} is not empty; pass another --out, or --force to replace it\n"
    )
    forced = export(
        "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf"), "--step", "4", "--force"
    )
    assert forced.returncode == 0 and json.loads(forced.stdout)["step"] == 4, forced.stderr
    assert_same_logits(tmp_path / "hf", random_params(GQA, seed=4), GQA, seq_len=16)


def test_python_m_export_refuses_a_folder_that_is_no_checkpoint_in_one_line(tmp_path):
    (tmp_path / "plain").mkdir()
    done = export("--checkpoint", str(tmp_path / "plain"), "--out", str(tmp_path / "hf"))
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: {tmp_path / 'plain'} has no identity.json, so it is not a checkpoint"
    )
    assert done.stderr.count("\n") == 1 and not (tmp_path / "hf").exists()


@pytest.mark.slow
def test_a_starter_run_that_kept_checkpoints_exports_to_llama_with_its_logits(tmp_path):
    """The README's path end to end: `grugctl run --checkpoint-every` trains and records where its
    weights are, `grugctl export ID --hf DIR` finds them from the record, and LlamaForCausalLM computes
    the same logits as grug_core on the trained weights."""
    from repo_copy import make_repo

    from grug_core.checkpoint import read_checkpoints, read_identity, restore_checkpoint
    from grug_core.export import model_config
    from grug_core.model import init_parameters

    root = make_repo(tmp_path / "repo")
    grugctl = [sys.executable, "-m", "grugctl.cli"]
    run = ["run", "grugformer-starter", "--smoke", "--record", "--steps", "6", "--checkpoint-every", "4"]
    trained = subprocess.run([*grugctl, *run], cwd=root, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "hf"
    exported = subprocess.run([*grugctl, "export", "grugformer-starter", "--hf", str(out)], cwd=root,
                              capture_output=True, text=True)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (
        exported.stdout.startswith("exported step 6 of ")
        and "grugformer-starter/smoke-seed0" in exported.stdout
    )

    folder = root / "checkpoints" / "grugformer-starter" / "smoke-seed0"
    cfg = model_config(read_identity(folder), folder)
    like = {"params": jax.eval_shape(init_parameters, cfg, jax.random.key(0))}
    state, meta = restore_checkpoint(read_checkpoints(folder), None, like)
    assert meta["step"] == 6
    assert_same_logits(out, state["params"], cfg, seq_len=16)
