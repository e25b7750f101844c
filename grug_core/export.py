# Axes: M model dim, H query heads, K kv heads, D head dim, F mlp dim, V vocab.
"""Export grug_core parameters as a Hugging Face `LlamaForCausalLM` folder: `model.safetensors` and
`config.json`, which `LlamaForCausalLM.from_pretrained(folder)` loads and computes the same logits
from (to fp32 rounding; tests/test_export.py). Writing needs numpy and safetensors, not torch.

The weight mapping is grug_core/model.py's docstring table. grug_core's RoPE is already HF Llama's
rotate-half layout, and query head h uses kv head h // (H / K) as HF's repeat_kv does, so no
projection is permuted: each one is only reshaped to [M, out] and transposed to torch's [out, in].

    python -m grug_core.export --checkpoint checkpoints/run [--step N] --out hf/ [--force]

The tokenizer is the identity on bytes (token id = byte value, vocab 256), so no tokenizer file is
written: `list(text.encode())` are the input ids.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from grug_core.model import GrugConfig, GrugParams

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class ExportError(ValueError):
    """An export that cannot be written as asked: one sentence naming what and the fix."""


def hf_config(cfg: GrugConfig) -> dict:
    """LlamaConfig fields for `cfg`. The weights are fp32 whatever the run's compute dtype."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_dim,
        "intermediate_size": cfg.intermediate_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        # Byte-level tokens: no id is reserved for a beginning or end of text.
        "bos_token_id": None,
        "eos_token_id": None,
        "torch_dtype": "float32",
    }


def hf_weights(params: GrugParams, cfg: GrugConfig) -> dict[str, np.ndarray]:
    """HF Llama state dict (name -> fp32 array, torch's [out, in] for projections) of `params`."""
    M, H, D = cfg.hidden_dim, cfg.num_heads, cfg.head_dim
    host = lambda x: np.asarray(x, dtype=np.float32)
    torch_linear = lambda w, fan_in: np.ascontiguousarray(
        host(w).reshape(fan_in, -1).T
    )  # [in, out] -> [out, in]
    weights = {"model.embed_tokens.weight": host(params.token_embed)}
    for i, block in enumerate(params.blocks):
        prefix = f"model.layers.{i}"
        weights |= {
            f"{prefix}.input_layernorm.weight": host(block.attn_norm),
            f"{prefix}.self_attn.q_proj.weight": torch_linear(block.attn.w_q, M),  # [H*D, M]
            f"{prefix}.self_attn.k_proj.weight": torch_linear(block.attn.w_k, M),  # [K*D, M]
            f"{prefix}.self_attn.v_proj.weight": torch_linear(block.attn.w_v, M),  # [K*D, M]
            f"{prefix}.self_attn.o_proj.weight": torch_linear(block.attn.w_o, H * D),  # [M, H*D]
            f"{prefix}.post_attention_layernorm.weight": host(block.mlp_norm),
            f"{prefix}.mlp.gate_proj.weight": torch_linear(block.w_gate, M),  # [F, M]
            f"{prefix}.mlp.up_proj.weight": torch_linear(block.w_up, M),  # [F, M]
            f"{prefix}.mlp.down_proj.weight": torch_linear(block.w_down, block.w_down.shape[0]),  # [M, F]
        }
    weights["model.norm.weight"] = host(params.final_norm)
    weights["lm_head.weight"] = torch_linear(params.lm_head, M)  # [V, M]
    return weights


def write_hf(out_dir: Path, params: GrugParams, cfg: GrugConfig, *, force: bool = False) -> Path:
    """Write `config.json` and `model.safetensors` into `out_dir`, all or nothing: into a temporary
    folder beside it, renamed into place. A non-empty `out_dir` is refused unless `force`."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file, not a folder; pass another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir} is not empty; pass another --out, or --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        # safetensors' loader in transformers refuses a file whose metadata names no framework.
        save_file(hf_weights(params, cfg), staging / WEIGHTS_FILE, metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(json.dumps(hf_config(cfg), indent=2) + "\n", encoding="utf-8")
        for path in (staging / WEIGHTS_FILE, staging / CONFIG_FILE):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    except OSError as error:
        raise ExportError(
            f"cannot write {out_dir} ({error.strerror}); free disk space or pass another --out"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def model_config(identity: dict, directory: Path) -> GrugConfig:
    """The GrugConfig a checkpoint folder's run trained: identity["config"]["model"]."""
    fields = (identity.get("config") or {}).get("model")
    if not isinstance(fields, dict):
        raise ExportError(
            f"{directory}'s identity.json names no model config (config.model); export a folder a "
            "run's --checkpoint-dir wrote"
        )
    known = {f.name for f in dataclasses.fields(GrugConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ExportError(
            f"{directory}'s model config has fields grug_core's GrugConfig lacks ({', '.join(unknown)}), so "
            "LlamaForCausalLM would not compute it; export from the core's model"
        )
    try:
        return GrugConfig(**fields)
    except (TypeError, ValueError) as error:
        raise ExportError(f"{directory}'s model config is invalid ({error}); export another folder") from None


def export_checkpoint(
    checkpoint_dir: Path, out_dir: Path, step: int | None = None, force: bool = False
) -> dict:
    """Restore the parameters alone of `step` (None: the latest) and write them as an HF folder."""
    import jax

    from grug_core.checkpoint import read_checkpoints, read_identity, restore_checkpoint
    from grug_core.model import init_parameters

    identity = read_identity(checkpoint_dir)
    cfg = model_config(identity, checkpoint_dir)
    if Path(out_dir).is_dir() and any(Path(out_dir).iterdir()) and not force:  # before the restore
        raise ExportError(
            f"{Path(out_dir).absolute()} is not empty; pass another --out, or --force to replace it"
        )
    manager = read_checkpoints(checkpoint_dir)
    try:
        like = {"params": jax.eval_shape(init_parameters, cfg, jax.random.key(0))}
        state, meta = restore_checkpoint(manager, step, like)
    finally:
        manager.close()
    written = write_hf(out_dir, state["params"], cfg, force=force)
    return {
        "out": str(written),
        "checkpoint": str(Path(checkpoint_dir).absolute()),
        "step": meta.get("step", step),
        "experiment": identity.get("experiment"),
        "bytes": (written / WEIGHTS_FILE).stat().st_size,
        "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state["params"]))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a checkpoint's parameters as a Hugging Face Llama folder."
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run's --checkpoint-dir")
    parser.add_argument("--step", type=int, help="the checkpoint's step (default: the latest)")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for model.safetensors and config.json"
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args(argv)
    from grug_core.checkpoint import CheckpointError

    try:
        summary = export_checkpoint(args.checkpoint, args.out, args.step, args.force)
    except (CheckpointError, ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))  # one JSON line: grugctl export reads it
    return 0


if __name__ == "__main__":
    sys.exit(main())
