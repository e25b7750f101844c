# Axes: M model dim, L layers, H query heads, K kv heads, D head dim, F mlp dim, V vocab, S sequence.
"""The ladder of named model sizes, and the parameter and FLOP counts every record and MFU estimate use.

Pure Python (no JAX), so it can be read without starting a compute runtime.

Each rung is about 2-4x the training FLOPs of the one below. The rules, stated once:

- **Tokens grow with parameters**: a run trains on TOKENS_PER_PARAM (2.34) tokens per non-embedding
  parameter, so steps = 2.34 * N / (batch * seq). Far below Chinchilla's ~20: the ladder is for
  comparing ideas at equal compute, and 2.34 keeps the default rung (`s`, the model every earlier
  record used) at its 450 steps.
- **Learning rate falls with width**: peak_lr = 3e-3 * 128 / M (so `s` keeps 3e-3), the muP-style
  1/width rule for AdamW; `--sweep lr_scale=0.5,1,2` tunes a multiplier of it at every size.
- Warmup and the evaluation interval are a ninth of the steps (50 at `s`).
- 3xs and 2xs train on a 2-core CPU in under a minute, xs, s and m in minutes; the rest are defined for
  accelerators.
"""

from __future__ import annotations

from dataclasses import dataclass

TOKENS_PER_PARAM = 2.34
BASE_LR, BASE_WIDTH = 3e-3, 128
DEFAULT_SIZE = "s"


@dataclass(frozen=True)
class Rung:
    hidden_dim: int  # M
    num_layers: int  # L
    num_heads: int  # H
    num_kv_heads: int  # K
    head_dim: int  # D
    seq_len: int  # S
    batch_size: int


# F = 3M (SwiGLU's three matrices then hold ~9M^2, the usual 8/3-wide budget rounded up).
SIZES: dict[str, Rung] = {
    # Below xs: sub-minute rungs on a 2-core CPU, for a first look at a ladder (84 and 134 steps).
    "3xs": Rung(64, 3, 2, 1, 32, 128, 32),
    "2xs": Rung(80, 3, 3, 1, 32, 128, 32),
    "xs": Rung(96, 4, 3, 1, 32, 128, 32),
    "s": Rung(128, 4, 4, 2, 32, 128, 32),
    "m": Rung(160, 4, 5, 1, 32, 128, 32),
    "l": Rung(192, 5, 6, 2, 32, 128, 32),
    "xl": Rung(256, 5, 8, 2, 32, 128, 32),
    "2xl": Rung(320, 6, 10, 2, 32, 256, 32),
    "3xl": Rung(384, 8, 6, 2, 64, 256, 64),
    "4xl": Rung(512, 8, 8, 2, 64, 512, 64),
    "5xl": Rung(640, 10, 10, 2, 64, 512, 64),
    "6xl": Rung(768, 12, 12, 4, 64, 1024, 64),
    "7xl": Rung(1024, 12, 16, 4, 64, 1024, 128),
    "8xl": Rung(1280, 14, 10, 2, 128, 1024, 128),
    "9xl": Rung(1536, 18, 12, 4, 128, 1024, 256),
    "10xl": Rung(2048, 20, 16, 4, 128, 1024, 256),
}


def unknown_size(name: str) -> str:
    return f"unknown size {name!r}; use one of {', '.join(SIZES)}"


def steps_for(rung: Rung, vocab_size: int = 256) -> int:
    tokens = TOKENS_PER_PARAM * parameter_counts(rung_model(rung, vocab_size))["non_embedding"]
    return max(1, round(tokens / (rung.batch_size * rung.seq_len)))


def peak_lr_for(rung: Rung) -> float:
    return BASE_LR * BASE_WIDTH / rung.hidden_dim


def rung_model(rung: Rung, vocab_size: int = 256) -> dict:
    """The rung's model fields, by GrugConfig's names."""
    return {
        "vocab_size": vocab_size,
        "hidden_dim": rung.hidden_dim,
        "intermediate_dim": 3 * rung.hidden_dim,
        "num_layers": rung.num_layers,
        "num_heads": rung.num_heads,
        "num_kv_heads": rung.num_kv_heads,
        "head_dim": rung.head_dim,
        "max_seq_len": rung.seq_len,
    }


_DIMS = (
    "hidden_dim",
    "num_layers",
    "vocab_size",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_dim",
)


def _dims(model) -> tuple[int, ...]:
    """M, L, V, H, K, D, F of a GrugConfig or of its fields as a dict."""
    return tuple(model[n] if isinstance(model, dict) else getattr(model, n) for n in _DIMS)


def parameter_counts(model) -> dict[str, int]:
    """Total and non-embedding parameters of a GrugConfig (or its fields as a dict): the token
    embedding and the untied LM head are the embedding parameters; norms count as non-embedding."""
    m, layers, v, heads, kv, d, f = _dims(model)
    per_layer = m * d * (2 * heads + 2 * kv) + 3 * m * f + 2 * m
    non_embedding = layers * per_layer + m
    return {"total": non_embedding + 2 * v * m, "non_embedding": non_embedding}


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 x the matmul parameters (the LM head included, the embedding lookup
    not) plus causal-agnostic attention scores and values, 12 * L * H * D * S (forward and backward)."""
    m, layers, v, heads, kv, d, f = _dims(model)
    matmul_params = layers * (m * d * (2 * heads + 2 * kv) + 3 * m * f) + m * v
    return 6 * matmul_params + 12 * layers * heads * d * seq_len


def padded_vocab(vocab_size: int, multiple: int = 128) -> int:
    """The model's vocabulary for data with `vocab_size` ids: rounded up to a multiple of 128 so the
    embedding and LM head split over a model axis and keep matmul-friendly shapes (GPT-2's 50,257 ->
    50,304, as modded-nanogpt does); the extra rows are never a target. Byte data (256) is unchanged."""
    return -(-vocab_size // multiple) * multiple
