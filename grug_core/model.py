# Axes: B batch, S sequence, M model (hidden) dim, H query heads, K kv heads, D head dim,
# F mlp (intermediate) dim, V vocab, L layers.
"""The grugformer: a Llama-family decoder written as plain top-level functions.

No biases, untied token embedding and LM head, RMSNorm with a learned scale, rotate-half RoPE,
SwiGLU MLP and grouped-query attention. Each parameter maps one to one onto a Hugging Face
`LlamaForCausalLM` weight (torch stores Linear weights as [out, in], so projections transpose):

    token_embed [V, M]                    = model.embed_tokens.weight
    blocks[i].attn_norm [M]               = model.layers.i.input_layernorm.weight
    blocks[i].attn.w_q [M, H, D]          = model.layers.i.self_attn.q_proj.weight.T.reshape(M, H, D)
    blocks[i].attn.w_k [M, K, D]          = model.layers.i.self_attn.k_proj.weight.T.reshape(M, K, D)
    blocks[i].attn.w_v [M, K, D]          = model.layers.i.self_attn.v_proj.weight.T.reshape(M, K, D)
    blocks[i].attn.w_o [H, D, M]          = model.layers.i.self_attn.o_proj.weight.T.reshape(H, D, M)
    blocks[i].mlp_norm [M]                = model.layers.i.post_attention_layernorm.weight
    blocks[i].w_gate [M, F]               = model.layers.i.mlp.gate_proj.weight.T
    blocks[i].w_up [M, F]                 = model.layers.i.mlp.up_proj.weight.T
    blocks[i].w_down [F, M]               = model.layers.i.mlp.down_proj.weight.T
    final_norm [M]                        = model.norm.weight
    lm_head [M, V]                        = lm_head.weight.T

with `rope_theta`, `rms_norm_eps`, `num_key_value_heads` and `head_dim` carried over from GrugConfig.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from grug_core.attention import AttentionMask, apply_rotary, attention
from grug_core.sharding import constrain_activations

COMPUTE_DTYPES = ("float32", "bfloat16")


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class GrugConfig:
    vocab_size: int = 256
    hidden_dim: int = 256
    intermediate_dim: int = 768
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int = 64
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # "bfloat16" runs the matmuls in bf16; parameters, optimizer state, the residual stream, norm
    # statistics, the softmax and the loss stay fp32 either way.
    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype={self.compute_dtype!r} is not supported; "
                f"use one of {', '.join(COMPUTE_DTYPES)}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionParams:
    w_q: jax.Array  # [M, H, D]
    w_k: jax.Array  # [M, K, D]
    w_v: jax.Array  # [M, K, D]
    w_o: jax.Array  # [H, D, M]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BlockParams:
    attn_norm: jax.Array  # [M]
    attn: AttentionParams
    mlp_norm: jax.Array  # [M]
    w_gate: jax.Array  # [M, F]
    w_up: jax.Array  # [M, F]
    w_down: jax.Array  # [F, M]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GrugParams:
    token_embed: jax.Array  # [V, M]
    blocks: tuple[BlockParams, ...]
    final_norm: jax.Array  # [M]
    lm_head: jax.Array  # [M, V]


def init_parameters(cfg: GrugConfig, key: jax.Array) -> GrugParams:
    """Normal(0, init_std) matrices, with output projections scaled down by depth (GPT-2) so the
    residual stream's variance does not grow with the number of layers."""
    M, H, K, D, F, V = (
        cfg.hidden_dim,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.intermediate_dim,
        cfg.vocab_size,
    )
    std, out_std = cfg.init_std, cfg.init_std / (2 * cfg.num_layers) ** 0.5
    keys = iter(jax.random.split(key, 2 + 7 * cfg.num_layers))

    def normal(shape, scale):
        return scale * jax.random.normal(next(keys), shape, jnp.float32)

    blocks = tuple(
        BlockParams(
            attn_norm=jnp.ones((M,), jnp.float32),
            attn=AttentionParams(
                w_q=normal((M, H, D), std),
                w_k=normal((M, K, D), std),
                w_v=normal((M, K, D), std),
                w_o=normal((H, D, M), out_std),
            ),
            mlp_norm=jnp.ones((M,), jnp.float32),
            w_gate=normal((M, F), std),
            w_up=normal((M, F), std),
            w_down=normal((F, M), out_std),
        )
        for _ in range(cfg.num_layers)
    )
    return GrugParams(
        token_embed=normal((V, M), std),
        blocks=blocks,
        final_norm=jnp.ones((M,), jnp.float32),
        lm_head=normal((M, V), std),
    )


def parameter_specs(cfg: GrugConfig) -> GrugParams:
    """Where each parameter lives: matrices are FSDP-sharded over "data" on their model dim and
    tensor-parallel over "model" on heads / F / V, so the model axis must divide kv heads, F and V."""
    block_spec = BlockParams(
        attn_norm=P(),
        attn=AttentionParams(
            w_q=P("data", "model", None),
            w_k=P("data", "model", None),
            w_v=P("data", "model", None),
            w_o=P("model", None, "data"),
        ),
        mlp_norm=P(),
        w_gate=P("data", "model"),
        w_up=P("data", "model"),
        w_down=P("model", "data"),
    )
    return GrugParams(
        token_embed=P(None, "data"),
        blocks=(block_spec,) * cfg.num_layers,
        final_norm=P(),
        lm_head=P("data", "model"),
    )


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    # The mean of squares is taken in fp32: in bf16 it underflows for small activations.
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * weight).astype(x.dtype)


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [N, I] @ w [I, O] -> fp32 [N, O]: the operands in x's dtype (w is cast on use), the sum in fp32.

    XLA:CPU runs a bf16 dot on the CPU's bf16 units (AMX, AVX512-BF16) only when it sums into fp32:
    asked for a bf16 result it converts both operands to fp32 first, and bf16 gained nothing. Returning
    the fp32 sum also lets the caller round once, after its elementwise work (or never, for the residual
    stream). The gradient is written out so that d_w reaches the fp32 parameter without a bf16 rounding
    and d_x takes the fast layout (bench/train_step.py: bf16 steps went from 0.95-1.1x to 1.4-1.6x fp32's).
    """
    if x.ndim != 2 or w.ndim != 2:
        raise ValueError(f"matmul takes x [N, I] and w [I, O]; got {x.shape} and {w.shape} (flatten first).")
    return jnp.dot(x, w.astype(x.dtype), preferred_element_type=jnp.float32)


def _matmul_fwd(x, w):
    return matmul(x, w), (x, w)


def _matmul_bwd(residuals, g):
    x, w = residuals
    # Both gradient dots take operands in x's dtype and sum in fp32, like the forward one; d_w stays fp32
    # for the fp32 parameter. d_x contracts g's last dim with w's, the layout XLA:CPU's fast dot takes.
    g, w_c = g.astype(x.dtype), w.astype(x.dtype)
    d_x = jax.lax.dot_general(g, w_c, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    d_w = jnp.dot(x.T, g, preferred_element_type=jnp.float32)
    return d_x.astype(x.dtype), d_w.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def mlp(params: BlockParams, x: jax.Array) -> jax.Array:
    """x [B, S, M] in the compute dtype -> fp32 [B, S, M], the residual branch."""
    # Dots on [B*S, M] rather than [B, S, M]: XLA:CPU runs this MLP's forward and backward ~1.5x faster
    # (bench/train_step.py), and the reshape is free on every backend.
    tokens = x.reshape(-1, x.shape[-1])
    # The gate works on the fp32 sums and rounds once, to the compute dtype of the down projection.
    hidden = (jax.nn.silu(matmul(tokens, params.w_gate)) * matmul(tokens, params.w_up)).astype(x.dtype)
    return matmul(hidden, params.w_down).reshape(x.shape)


def block(
    params: BlockParams, x: jax.Array, cfg: GrugConfig, mask: AttentionMask, positions: jax.Array
) -> jax.Array:
    B, S, M = x.shape
    H, K, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    # Matmul operands are in compute_dtype and their sums fp32; the residual stream x stays fp32, so each
    # branch is added in fp32 (autocast's rule).
    attn, dtype = params.attn, cfg.compute_dtype
    h = rms_norm(x, params.attn_norm, cfg.norm_eps).astype(dtype).reshape(B * S, M)  # see mlp
    # matmul returns fp32 sums: rotary works in fp32 anyway, so q and k are rounded once, after it.
    q = apply_rotary(matmul(h, attn.w_q.reshape(M, H * D)).reshape(B, S, H, D), positions, cfg.rope_theta)
    k = apply_rotary(matmul(h, attn.w_k.reshape(M, K * D)).reshape(B, S, K, D), positions, cfg.rope_theta)
    v = matmul(h, attn.w_v.reshape(M, K * D)).reshape(B, S, K, D)
    attended = attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), mask).reshape(B * S, H * D)
    x = x + matmul(attended, attn.w_o.reshape(H * D, M)).reshape(B, S, M)
    x = constrain_activations(x)
    x = x + mlp(params, rms_norm(x, params.mlp_norm, cfg.norm_eps).astype(cfg.compute_dtype))
    return constrain_activations(x)


def forward(
    params: GrugParams, tokens: jax.Array, cfg: GrugConfig, mask: AttentionMask | None = None
) -> jax.Array:
    """tokens [B, S] int -> final hidden states [B, S, M] in compute_dtype (normed, before the LM head)."""
    seq_len = tokens.shape[1]
    if seq_len > cfg.max_seq_len:
        raise ValueError(f"sequence length {seq_len} exceeds max_seq_len={cfg.max_seq_len}")
    mask = AttentionMask(is_causal=True) if mask is None else mask
    positions = jnp.arange(seq_len, dtype=jnp.int32)
    x = constrain_activations(params.token_embed[tokens])
    for block_params in params.blocks:
        x = block(block_params, x, cfg, mask, positions)
    return rms_norm(x, params.final_norm, cfg.norm_eps).astype(cfg.compute_dtype)


def logits(
    params: GrugParams, tokens: jax.Array, cfg: GrugConfig, mask: AttentionMask | None = None
) -> jax.Array:
    """[B, S, V] logits; for inference and tests. Training uses loss.next_token_loss, which never
    materialises them."""
    hidden = forward(params, tokens, cfg, mask)
    lm_head = params.lm_head.astype(hidden.dtype)
    return jnp.einsum("bsm,mv->bsv", hidden, lm_head, preferred_element_type=jnp.float32)
