# Axes: B batch, S query positions, T key positions (T == S except when the queries are the last S of T
# keys), H query heads, K kv heads, G = H // K query heads per kv head, D head dim.
"""Attention for the grugformer: the mask, rotary embeddings and interchangeable attention kernels.

- `reference_attention` materialises all [B, K, G, S, T] scores at once: the readable ground truth.
- `dense_attention` gives the same result with a hand-written gradient that recomputes the probabilities
  from the saved logsumexp (FlashAttention's backward on whole rows), and under a causal or window mask
  runs each block of queries against only the keys it can reach. The default below 4096 keys where no
  fused kernel applies.
- `blockwise_attention` is a flash-style online softmax in a scan over the (query block, key block)
  pairs the band can reach; its program does not grow with the length. Its gradient comes from autodiff
  through the scan, which keeps one [bq, bk] probability block per visited pair.
- `cudnn_attention` (NVIDIA GPUs) and `splash_attention` (TPUs) hand the work to the platform's fused
  kernel; `attention_kernel` picks among all of them once per shape and platform.
All agree to rounding, gradients included, and return exact zeros for a query that sees no key.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

DEFAULT_BLOCK = 512
# Banded dense attention beat the blockwise scan at every length to 2048 on XLA:CPU (1.3-1.5x, 1024 and 2048
# keys, bench/train_step.py); beyond, the scan keeps the program's size flat as the length grows.
BLOCKWISE_MIN_LEN = 4096
DENSE_BLOCK = 128  # queries per block of dense_attention under a causal / window mask
SPLASH_BLOCK = 128  # splash attention's default block: sequences must be a multiple of it
MASKED_SCORE = -1e30


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["segment_ids"], meta_fields=["is_causal", "sliding_window"]
)
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """Which keys each query may see (True = allowed).

    segment_ids [B, T] int32: a query sees only keys of its own segment (packed documents); a negative id
    marks padding, which sees nothing and is seen by nothing. sliding_window W keeps the last W tokens
    including self: query i sees key j iff i - W < j <= i, so a window is always causal. When T > S the S
    queries are the last S of the T positions and take their segment ids from segment_ids[:, T - S:].
    """

    is_causal: bool = False
    segment_ids: jax.Array | None = None
    sliding_window: int | None = None

    def __post_init__(self):
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(
                f"sliding_window={self.sliding_window} must be at least 1 (self is always kept)."
            )

    def materialize(self, q_len: int, k_len: int) -> jax.Array:
        return materialize(self, q_len, k_len)


def _allowed(mask: AttentionMask, q_pos, k_pos, q_seg, k_seg) -> jax.Array:
    """q_pos [S], k_pos [T] absolute positions; q_seg [B, S], k_seg [B, T] -> bool [S, T] or [B, S, T]."""
    offset = q_pos[:, None] - k_pos[None, :]
    ok = jnp.ones(offset.shape, bool)
    if mask.is_causal or mask.sliding_window is not None:
        ok = offset >= 0
    if mask.sliding_window is not None:
        ok = ok & (offset < mask.sliding_window)
    if mask.segment_ids is not None:
        same = (q_seg[:, :, None] == k_seg[:, None, :]) & (q_seg >= 0)[:, :, None]
        ok = ok[None] & same
    return ok


def materialize(mask: AttentionMask, q_len: int, k_len: int) -> jax.Array:
    """bool [S, T], or [B, S, T] when segment ids are set; queries are the last S of the T positions."""
    if k_len < q_len:
        raise ValueError(f"k_len={k_len} is shorter than q_len={q_len}; queries must be the last keys.")
    seg = mask.segment_ids
    if seg is not None and (seg.ndim != 2 or seg.shape[1] != k_len):
        raise ValueError(f"segment_ids has shape {seg.shape}; it must be [B, {k_len}] (one id per key).")
    q_seg = None if seg is None else seg[:, k_len - q_len :]
    return _allowed(mask, jnp.arange(k_len - q_len, k_len), jnp.arange(k_len), q_seg, seg)


def apply_rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """x [B, S, H, D], positions [S] or [B, S] -> x rotated by rotate-half RoPE (HF Llama layout)."""
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary embeddings need an even head dim, got x of shape {x.shape}.")
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    # bf16 positions * frequencies lose whole radians at long context, so the angles stay in fp32.
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [S, D/2] or [B, S, D/2]
    # Rotate-half pairs dimension i with i + D/2, so each frequency serves both halves: a 0/1 matrix widens
    # the tables to D. As a dot it also makes XLA compute cos and sin once per position; fused elementwise
    # into the rotation, XLA:CPU evaluated them once per element of x, B * H times as often (1.05-1.08x a
    # train step, bench/README.md). HIGHEST keeps the dot exact where fp32 dots may round (TPU, TF32).
    widen = jnp.tile(jnp.eye(d // 2, dtype=jnp.float32), (1, 2))  # [D/2, D]
    cos = jnp.matmul(jnp.cos(angles), widen, precision=jax.lax.Precision.HIGHEST)[..., None, :]
    sin = jnp.matmul(jnp.sin(angles), widen, precision=jax.lax.Precision.HIGHEST)[..., None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    return (x32 * cos + jnp.concatenate([-x2, x1], axis=-1) * sin).astype(x.dtype)


def _check_shapes(q, k, v, mask: AttentionMask) -> tuple[int, int, int, int, int, int]:
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise ValueError(
            f"attention needs q [B,S,H,D] and k, v [B,T,K,D] of equal shape; got q {q.shape}, "
            f"k {k.shape}, v {v.shape}."
        )
    (b, s, h, d), (kb, t, kh, kd) = q.shape, k.shape
    if b != kb or d != kd or t < s:
        raise ValueError(f"q {q.shape} and k/v {k.shape} must share batch and head dim, with T >= S.")
    if h % kh:
        raise ValueError(f"q {q.shape} has {h} heads, not a multiple of the {kh} kv heads of k/v {k.shape}.")
    seg = mask.segment_ids
    if seg is not None and seg.shape != (b, t):
        raise ValueError(f"segment_ids has shape {seg.shape}; it must be [B, T] = {(b, t)}.")
    return b, s, t, kh, h // kh, d


def _attend_block(q, k, v, allowed, m, l, o):
    """One online-softmax step. q [B,S,K,G,D], k/v [B,T,K,D], allowed [S,T] or [B,S,T]; running max m and
    sum l [B,K,G,S] and unnormalised output o [B,K,G,S,D] are fp32."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = jnp.einsum("bskgd,btkd->bkgst", q, k, preferred_element_type=jnp.float32) * scale
    s = jnp.where(allowed[:, None, None] if allowed.ndim == 3 else allowed, s, -jnp.inf)
    # Softmax is invariant to the shift, so the max needs no gradient (and max's gradient is ill-defined
    # on ties and on rows that are all -inf).
    m_new = jax.lax.stop_gradient(jnp.maximum(m, s.max(-1)))
    # A row with no visible key yet has max -inf; shifting it by 0 keeps exp(-inf - -inf) = NaN out, so
    # its p and correction are exact zeros in the forward pass and in the gradient.
    shift = jnp.where(jnp.isneginf(m_new), 0.0, m_new)
    p = jnp.exp(s - shift[..., None])
    correction = jnp.exp(m - shift)
    pv = jnp.einsum("bkgst,btkd->bkgsd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return m_new, l * correction + p.sum(-1), o * correction[..., None] + pv


def _init_stats(b, kh, g, s, d):
    m = jnp.full((b, kh, g, s), -jnp.inf, jnp.float32)
    return m, jnp.zeros((b, kh, g, s), jnp.float32), jnp.zeros((b, kh, g, s, d), jnp.float32)


def _normalize(o, l, dtype):
    """[B,K,G,S,D] fp32 -> dtype; a row that saw no key has l == 0 and o == 0 and stays 0."""
    return (o / jnp.where(l == 0.0, 1.0, l)[..., None]).astype(dtype)


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask) -> jax.Array:
    """q [B,S,H,D], k/v [B,T,K,D] -> [B,S,H,D]; materialises every score, for tests and short sequences."""
    b, s, t, kh, g, d = _check_shapes(q, k, v, mask)
    allowed = materialize(mask, s, t)
    allowed = allowed[:, None, None] if allowed.ndim == 3 else allowed  # -> broadcasts to [B,K,G,S,T]
    # Heads-major operands ([B,K,G,S,D], [B,K,T,D]) make both einsums plain batched matmuls: ~10% faster
    # forward + backward on XLA:CPU than contracting the [B,S,...] layout directly.
    q_heads = q.reshape(b, s, kh, g, d).transpose(0, 2, 3, 1, 4)
    k_heads, v_heads = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    scores = jnp.einsum("bkgsd,bktd->bkgst", q_heads, k_heads, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(d)
    # A finite fill (not -inf) keeps a row with no visible key NaN-free; multiplying by `allowed` then
    # turns its uniform softmax into exact zeros, in the output and in the gradient.
    probs = jax.nn.softmax(jnp.where(allowed, scores, MASKED_SCORE), axis=-1) * allowed
    out = jnp.einsum("bkgst,bktd->bkgsd", probs.astype(v.dtype), v_heads, preferred_element_type=jnp.float32)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, s, kh * g, d).astype(q.dtype)


def _dense_scores(q_heads, k_heads, allowed):
    """Scaled scores [B,K,G,S,T] fp32 with MASKED_SCORE where `allowed` (broadcastable to them) is False."""
    scores = jnp.einsum("bkgsd,bktd->bkgst", q_heads, k_heads, preferred_element_type=jnp.float32)
    return jnp.where(allowed, scores * (1.0 / math.sqrt(q_heads.shape[-1])), MASKED_SCORE)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _dense_heads(q_heads, k_heads, v_heads, allowed, rows_may_be_empty: bool):
    return _dense_heads_fwd(q_heads, k_heads, v_heads, allowed, rows_may_be_empty)[0]


def _dense_heads_fwd(q_heads, k_heads, v_heads, allowed, rows_may_be_empty):
    """q [B,K,G,S,D], k/v [B,K,T,D] -> out [B,K,G,S,D] fp32, saving only the inputs, out and logsumexp."""
    scores = _dense_scores(q_heads, k_heads, allowed)
    row_max = scores.max(-1, keepdims=True)
    probs = jnp.exp(scores - row_max)
    if rows_may_be_empty:  # a row with no key has a uniform softmax over the fill; zero it
        probs = probs * allowed
    total = probs.sum(-1)
    safe_total = jnp.where(total == 0.0, 1.0, total)
    probs_c = probs.astype(v_heads.dtype)
    out = jnp.einsum("bkgst,bktd->bkgsd", probs_c, v_heads, preferred_element_type=jnp.float32)
    out = out / safe_total[..., None]
    # An empty row gets logsumexp +inf, so the backward pass recomputes exact-zero probabilities for it.
    lse = jnp.where(total == 0.0, jnp.inf, row_max[..., 0] + jnp.log(safe_total))
    return out, (q_heads, k_heads, v_heads, allowed, out, lse)


def _dense_heads_bwd(rows_may_be_empty, residuals, d_out):
    """FlashAttention's backward on whole rows: recompute the probabilities from the saved logsumexp
    instead of keeping [B,K,G,S,T] of them, then one pass forms d_scores."""
    q_heads, k_heads, v_heads, allowed, out, lse = residuals
    probs = jnp.exp(_dense_scores(q_heads, k_heads, allowed) - lse[..., None])
    dtype = v_heads.dtype
    d_out_c = d_out.astype(dtype)
    d_v = jnp.einsum("bkgst,bkgsd->bktd", probs.astype(dtype), d_out_c, preferred_element_type=jnp.float32)
    d_probs = jnp.einsum("bkgsd,bktd->bkgst", d_out_c, v_heads, preferred_element_type=jnp.float32)
    row_dot = jnp.sum(d_out * out, axis=-1, keepdims=True)
    d_scores = (probs * (d_probs - row_dot) * (1.0 / math.sqrt(q_heads.shape[-1]))).astype(dtype)
    d_q = jnp.einsum("bkgst,bktd->bkgsd", d_scores, k_heads, preferred_element_type=jnp.float32)
    d_k = jnp.einsum("bkgst,bkgsd->bktd", d_scores, q_heads, preferred_element_type=jnp.float32)
    return d_q.astype(q_heads.dtype), d_k.astype(k_heads.dtype), d_v.astype(dtype), None


_dense_heads.defvjp(_dense_heads_fwd, _dense_heads_bwd)


def dense_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, block_q: int | None = None
) -> jax.Array:
    """q [B,S,H,D], k/v [B,T,K,D] -> [B,S,H,D]: reference_attention's result with a hand-written gradient
    that recomputes the probabilities (FlashAttention's backward, on whole rows) rather than storing
    them. Under a causal or windowed mask, each block of block_q queries attends only to the keys it can
    reach (the last of them its own): causal attention over n blocks with T == S does (n + 1) / 2n of
    the work, a window less. Each block saves its own key/value prefix for the backward pass, about
    (n + 1) / 2 copies of k and v in all, still far less than the probabilities autodiff would keep."""
    b, s, t, kh, g, d = _check_shapes(q, k, v, mask)
    block_q = block_q or DENSE_BLOCK
    if not (mask.is_causal or mask.sliding_window is not None) or s % block_q or s <= block_q:
        block_q = s
    # Heads-major once for the whole sequence rather than once per block (fewer transposes).
    q_heads = q.reshape(b, s, kh, g, d).transpose(0, 2, 3, 1, 4)  # [B,K,G,S,D]
    k_heads, v_heads = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B,K,T,D]
    allowed = materialize(mask, s, t)
    allowed = allowed[:, None, None] if allowed.ndim == 3 else allowed  # broadcasts to [B,K,G,S,T]
    # Only segment ids (padding) can leave a query with no key; a band always keeps the query itself.
    empty_rows = mask.segment_ids is not None
    outs = []
    for first in range(0, s, block_q):
        last_key = t - s + first + block_q  # one past the block's last query, as a key position
        first_key = 0
        if mask.sliding_window is not None and block_q < s:
            first_key = max(0, last_key - block_q - mask.sliding_window + 1)
        rows, keys = slice(first, first + block_q), slice(first_key, last_key)
        block_allowed = allowed[..., rows, keys]
        args = q_heads[:, :, :, rows], k_heads[:, :, keys], v_heads[:, :, keys], block_allowed, empty_rows
        outs.append(_dense_heads(*args))
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, s, kh * g, d).astype(q.dtype)


def visible_blocks(
    mask: AttentionMask, q_len: int, k_len: int, block_q: int, block_k: int
) -> list[tuple[int, int]]:
    """(query block, key block) pairs holding at least one allowed (i, j) under the causal / window band,
    in query-block order. Segment ids are runtime data, so they never remove a block statically."""
    causal, window = mask.is_causal or mask.sliding_window is not None, mask.sliding_window
    pairs = []
    for qb in range(q_len // block_q):
        first_q = k_len - q_len + qb * block_q
        last_q = first_q + block_q - 1
        for kb in range(k_len // block_k):
            first_k, last_k = kb * block_k, (kb + 1) * block_k - 1
            if causal and first_k > last_q:
                continue
            if window is not None and last_k <= first_q - window:
                continue
            pairs.append((qb, kb))
    return pairs


def blockwise_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: AttentionMask,
    *,
    block_q: int = DEFAULT_BLOCK,
    block_k: int = DEFAULT_BLOCK,
) -> jax.Array:
    """q [B,S,H,D], k/v [B,T,K,D] -> [B,S,H,D]; one scan step per visible (query block, key block) pair."""
    b, s, t, kh, g, d = _check_shapes(q, k, v, mask)
    if s % block_q or t % block_k:
        raise ValueError(
            f"blockwise attention needs S={s} divisible by block_q={block_q} and T={t} by block_k={block_k}; "
            "pick other block sizes or use implementation='reference'."
        )
    pairs = visible_blocks(mask, s, t, block_q, block_k)
    q_ids = np.array([qb for qb, _ in pairs], np.int32)
    k_ids = np.array([kb for _, kb in pairs], np.int32)
    starts = np.concatenate([[True], q_ids[1:] != q_ids[:-1]])
    q_blocks = q.reshape(b, s // block_q, block_q, kh, g, d).swapaxes(0, 1)  # [S/bq, B, bq, K, G, D]
    k_blocks = k.reshape(b, t // block_k, block_k, kh, d).swapaxes(0, 1)  # [T/bk, B, bk, K, D]
    v_blocks = v.reshape(b, t // block_k, block_k, kh, d).swapaxes(0, 1)
    seg = mask.segment_ids

    def step(carry, xs):
        out, *stats = carry
        qb, kb, start = xs
        stats = [
            jnp.where(start, init, x)
            for init, x in zip(_init_stats(b, kh, g, block_q, d), stats, strict=True)
        ]
        q_first, k_first = t - s + qb * block_q, kb * block_k
        q_seg = k_seg = None
        if seg is not None:
            q_seg = jax.lax.dynamic_slice_in_dim(seg, q_first, block_q, axis=1)
            k_seg = jax.lax.dynamic_slice_in_dim(seg, k_first, block_k, axis=1)
        allowed = _allowed(mask, q_first + jnp.arange(block_q), k_first + jnp.arange(block_k), q_seg, k_seg)
        # dynamic_slice / dynamic_update_slice rather than x[i] / x.at[i].set, which lower to gather /
        # scatter; the gradient compiled about 15% faster on CPU this way.
        take = lambda blocks, i: jax.lax.dynamic_index_in_dim(blocks, i, keepdims=False)
        m, l, o = _attend_block(take(q_blocks, qb), take(k_blocks, kb), take(v_blocks, kb), allowed, *stats)
        # Writing the normalised block after every step is cheaper than branching on "last key block of
        # this query block" (one [bq, D] divide against a [bq, bk, D] matmul); the last write wins.
        out = jax.lax.dynamic_update_index_in_dim(out, _normalize(o, l, q.dtype), qb, axis=0)
        return (out, m, l, o), None

    out = jnp.zeros((s // block_q, b, kh, g, block_q, d), q.dtype)
    (out, *_), _ = jax.lax.scan(step, (out, *_init_stats(b, kh, g, block_q, d)), (q_ids, k_ids, starts))
    return out.transpose(1, 0, 4, 2, 3, 5).reshape(b, s, kh * g, d)


def cudnn_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, implementation: str = "cudnn"
) -> jax.Array:
    """q [B,S,H,D], k/v [B,S,K,D] -> [B,S,H,D] through jax.nn.dot_product_attention: cuDNN's fused kernel on
    NVIDIA GPUs. Its causal mask is aligned top-left and it takes no segment ids, so attention_kernel picks
    it only for S == T without them. implementation="xla" runs the same call anywhere (tests)."""
    _check_shapes(q, k, v, mask)
    if mask.segment_ids is not None or k.shape[1] != q.shape[1]:
        raise ValueError(
            "cudnn_attention takes neither segment ids nor fewer queries than keys (its causal mask is "
            "aligned top-left); use implementation=None to let attention_kernel choose."
        )
    window = None if mask.sliding_window is None else (mask.sliding_window - 1, 0)
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        is_causal=mask.is_causal or window is not None,
        local_window_size=window,
        implementation=implementation,
    )


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, interpret: bool = False
) -> jax.Array:
    """q [B,S,H,D], k/v [B,T,K,D] -> [B,S,H,D] through Pallas splash attention (TPU), which skips the
    blocks the causal / window band masks out; interpret=True runs the same kernel anywhere (tests)."""
    _check_shapes(q, k, v, mask)
    band = dataclasses.replace(mask, segment_ids=None)
    seg = mask.segment_ids
    local = lambda q, k, v, *seg: _splash_local(q, k, v, seg[0] if seg else None, band, interpret)
    args = (q, k, v) if seg is None else (q, k, v, seg)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return local(*args)
    # XLA cannot partition a Pallas kernel: each device runs it on its own batch rows ("data") and heads
    # ("model"), as parameter_specs splits them. The model axis must divide the kv heads (it does for
    # the parameters already).
    heads = PartitionSpec("data", None, "model", None)
    specs = (heads,) * 3 + (() if seg is None else (PartitionSpec("data", None),))
    # check_vma=False: the kernel's outputs carry no note of which mesh axes they vary over.
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=heads, check_vma=False)(*args)


def _splash_local(q, k, v, seg, band: AttentionMask, interpret: bool) -> jax.Array:
    """splash_attention on one device's arrays; `band` holds the mask without its segment ids."""
    # Imported here: Pallas is heavy and only a TPU run needs it.
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    s, t, h, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    offset = t - s  # queries are the last S of the T positions
    if band.sliding_window is not None:
        shape = masks.LocalMask((s, t), window_size=(band.sliding_window - 1, 0), offset=offset)
    elif band.is_causal:
        shape = masks.CausalMask((s, t), offset=offset)
    else:
        shape = masks.FullMask((s, t))
    kernel = splash.make_splash_mha(
        masks.MultiHeadMask([shape] * h), head_shards=1, q_seq_shards=1, interpret=interpret
    )
    # Splash takes q pre-scaled and heads-major per example, and vmaps over the batch.
    q_heads = (q.astype(jnp.float32) * (1.0 / math.sqrt(d))).astype(q.dtype).transpose(0, 2, 1, 3)
    k_heads, v_heads = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    if seg is None:
        return jax.vmap(kernel)(q_heads, k_heads, v_heads).transpose(0, 2, 1, 3)
    ids = jax.vmap(splash.SegmentIds)(seg[:, offset:], seg)
    out = jax.vmap(lambda q, k, v, ids: kernel(q, k, v, segment_ids=ids))(q_heads, k_heads, v_heads, ids)
    # Padding (a negative id) shares its id with other padding, so splash lets it see padding keys; grug's
    # mask says it sees nothing, which the zeros below restore (real queries never see a padding key).
    return jnp.where((seg[:, offset:] >= 0)[:, :, None, None], out.transpose(0, 2, 1, 3), 0).astype(q.dtype)


def accelerator() -> str:
    """This process's platform as attention_kernel reads it: "cuda" for an NVIDIA GPU that runs cuDNN's
    flash kernel (compute capability 8.0 or newer), else jax's platform name ("gpu", "tpu", "cpu")."""
    device = jax.devices()[0]
    try:
        capability = float(getattr(device, "compute_capability", 0) or 0)
    except ValueError:  # ROCm names its architecture here ("gfx90a"): not a CUDA device
        capability = 0.0
    return "cuda" if device.platform == "gpu" and capability >= 8.0 else device.platform


def attention_kernel(
    mask: AttentionMask, q_len: int, k_len: int, head_dim: int, dtype, platform: str | None = None
) -> str:
    """The kernel `attention` runs by default for these shapes on `platform` ("cuda", "tpu", "cpu", ...;
    this process's accelerator() when None): cuDNN's fused kernel on NVIDIA GPUs and splash attention on
    TPUs where they take the mask and shapes; elsewhere "dense" (banded query blocks) below
    BLOCKWISE_MIN_LEN keys, "blockwise" from there. Every run record names the choice."""
    platform = platform or accelerator()
    low_precision = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if platform == "cuda" and low_precision and mask.segment_ids is None and q_len == k_len:
        if head_dim % 8 == 0 and head_dim <= 128:  # cuDNN's flash kernel's head dims
            return "cudnn"
    if platform == "tpu" and q_len % SPLASH_BLOCK == 0 and k_len % SPLASH_BLOCK == 0:
        return "splash"
    fits_blocks = q_len % DEFAULT_BLOCK == 0 and k_len % DEFAULT_BLOCK == 0
    return "blockwise" if k_len >= BLOCKWISE_MIN_LEN and fits_blocks else "dense"


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, implementation: str | None = None
) -> jax.Array:
    """q [B,S,H,D], k/v [B,T,K,D] -> [B,S,H,D] in q.dtype. implementation: None (attention_kernel's choice
    for this platform), "cudnn", "splash", "dense", "blockwise" or "reference"."""
    s, t, d = q.shape[1], k.shape[1], q.shape[3]
    implementation = implementation or attention_kernel(mask, s, t, d, q.dtype)
    if implementation == "cudnn":
        return cudnn_attention(q, k, v, mask)
    if implementation == "splash":
        return splash_attention(q, k, v, mask)
    if implementation == "dense":
        return dense_attention(q, k, v, mask)
    if implementation == "blockwise":
        return blockwise_attention(q, k, v, mask)
    if implementation == "reference":
        return reference_attention(q, k, v, mask)
    raise ValueError(
        f"implementation={implementation!r} is unknown; use None, 'cudnn', 'splash', 'dense', 'blockwise' "
        "or 'reference'."
    )
