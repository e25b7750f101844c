"""grug_core's attention kernels beyond the reference: the banded dense path (CPU's default), the
cuDNN call (checked through the same jax.nn call on XLA) and splash attention (Pallas' interpreter), the
choice among them per platform, and model.matmul's hand-written gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grug_core.attention import (
    AttentionMask,
    accelerator,
    attention,
    attention_kernel,
    cudnn_attention,
    dense_attention,
    reference_attention,
    splash_attention,
)
from grug_core.model import matmul


def normal(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32), dtype)


def qkv(b=2, s=32, t=None, h=4, kh=2, d=8):
    t = s if t is None else t
    return normal((b, s, h, d), 0), normal((b, t, kh, d), 1), normal((b, t, kh, d), 2)


def segments(b, t, padding):
    """Three documents in every row; the last `padding` positions of row 1 are padding (id -1), whose
    queries see no key at all, so the outputs and gradients there must be exact zeros."""
    row = np.repeat([0, 1, 2], [t // 3, t // 3, t - 2 * (t // 3)]).astype(np.int32)
    ids = np.stack([row] * b)
    ids[1, t - padding :] = -1
    return jnp.asarray(ids)


def output_and_grads(fn, q, k, v):
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(jnp.cos(out))  # a nonlinear cotangent, so every element's gradient differs


def assert_same(got, want, atol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), atol=atol, rtol=0)


MASKS = {
    "full": lambda t: AttentionMask(),
    "causal": lambda t: AttentionMask(is_causal=True),
    "window": lambda t: AttentionMask(sliding_window=5),
    "causal_segments_padding": lambda t: AttentionMask(is_causal=True, segment_ids=segments(2, t, 4)),
    "window_segments": lambda t: AttentionMask(sliding_window=7, segment_ids=segments(2, t, 0)),
    "full_segments_padding": lambda t: AttentionMask(segment_ids=segments(2, t, 4)),
}


@pytest.mark.parametrize("name", list(MASKS))
@pytest.mark.parametrize("s, t, block_q", [(32, 32, 8), (32, 32, 32), (16, 48, 8), (24, 24, 16)])
def test_dense_attention_matches_the_reference_with_gradients(name, s, t, block_q):
    """(24, 24, 16): the length is not a multiple of the block, so it falls back to whole rows; (16, 48):
    the queries are the last 16 of 48 keys, so each query block reaches a longer prefix."""
    q, k, v = qkv(s=s, t=t)
    mask = MASKS[name](t)
    both = jax.jit(
        lambda q, k, v: (
            output_and_grads(lambda *a: dense_attention(*a, mask, block_q=block_q), q, k, v),
            output_and_grads(lambda *a: reference_attention(*a, mask), q, k, v),
        )
    )
    dense, reference = both(q, k, v)
    assert_same(dense, reference, atol=2e-5)
    if mask.segment_ids is not None and int((mask.segment_ids < 0).sum()):
        out, (d_q, _, _) = dense
        assert not np.asarray(out[1, s - 4 :]).any() and not np.asarray(d_q[1, s - 4 :]).any()


def test_dense_attention_stores_no_probabilities_for_the_backward_pass():
    """The hand-written gradient keeps q, k, v, the output and the logsumexp, not [B,K,G,S,T] of
    probabilities: at 512 keys the saved residuals are a fraction of what autodiff keeps."""
    q, k, v = qkv(b=1, s=512, h=4, kh=2, d=16)
    mask = AttentionMask()  # no band, so both paths see the whole [S, T] square

    def saved_bytes(fn):
        _, residuals = jax.linearize(lambda q: fn(q, k, v, mask), q)
        leaves = [leaf for leaf in jax.tree.leaves(residuals) if hasattr(leaf, "size")]
        return sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)

    assert saved_bytes(dense_attention) * 4 < saved_bytes(reference_attention)


@pytest.mark.parametrize(
    "mask", [AttentionMask(), AttentionMask(is_causal=True), AttentionMask(sliding_window=9)], ids=str
)
def test_the_cudnn_call_means_the_same_mask(mask):
    """cuDNN itself needs an NVIDIA GPU; the same jax.nn.dot_product_attention call on XLA checks what
    grug passes it: the causal flag, the window as (W - 1, 0) and grouped kv heads."""
    q, k, v = qkv(s=32)
    both = jax.jit(
        lambda q, k, v: (
            output_and_grads(lambda *a: cudnn_attention(*a, mask, implementation="xla"), q, k, v),
            output_and_grads(lambda *a: reference_attention(*a, mask), q, k, v),
        )
    )
    got, want = both(q, k, v)
    assert_same(got, want, atol=2e-5)


@pytest.mark.parametrize(
    "name, s, t",
    [
        ("causal", 128, 128),
        ("window", 128, 128),
        ("causal_segments_padding", 128, 128),
        ("causal", 128, 256),
        ("window", 128, 256),
    ],
)
def test_splash_attention_matches_the_reference_in_pallas_interpreter(name, s, t):
    """The splash kernel grug builds (mask, offset for queries that are the last S of T keys, segment ids,
    padding zeroed) runs here through Pallas' interpreter, forward and backward."""
    q, k, v = qkv(b=2, s=s, t=t, h=2, kh=1, d=16)
    mask = MASKS[name](t)
    splash = output_and_grads(lambda *a: splash_attention(*a, mask, interpret=True), q, k, v)
    reference = output_and_grads(lambda *a: reference_attention(*a, mask), q, k, v)
    assert_same(splash, reference, atol=5e-5)
    if name.endswith("padding"):
        out, (d_q, _, _) = splash
        assert not np.asarray(out[1, s - 4 :]).any() and not np.asarray(d_q[1, s - 4 :]).any()


def test_the_kernel_is_chosen_by_platform_dtype_and_mask():
    causal, bf16, f32 = AttentionMask(is_causal=True), jnp.bfloat16, jnp.float32
    packed = AttentionMask(is_causal=True, segment_ids=jnp.zeros((1, 256), jnp.int32))
    assert attention_kernel(causal, 256, 256, 64, bf16, "cuda") == "cudnn"
    assert attention_kernel(causal, 256, 256, 64, bf16, "gpu") == "dense"  # ROCm, or NVIDIA before sm80
    assert attention_kernel(causal, 256, 256, 64, f32, "cuda") == "dense"  # cuDNN's kernel is fp16/bf16 only
    assert attention_kernel(packed, 256, 256, 64, bf16, "cuda") == "dense"  # it takes no segment ids
    assert attention_kernel(causal, 128, 256, 64, bf16, "cuda") == "dense"  # its causal mask is top-left
    assert attention_kernel(causal, 256, 256, 256, bf16, "cuda") == "dense"  # head dim over 128
    assert attention_kernel(packed, 256, 256, 64, f32, "tpu") == "splash"
    assert attention_kernel(causal, 200, 200, 64, f32, "tpu") == "dense"  # not whole 128-blocks
    assert attention_kernel(causal, 2048, 2048, 64, f32, "cpu") == "dense"
    assert attention_kernel(causal, 8192, 8192, 64, f32, "cpu") == "blockwise"
    assert accelerator() == "cpu"  # this suite runs on the CPU
    assert attention_kernel(causal, 256, 256, 64, bf16) == attention_kernel(causal, 256, 256, 64, bf16, "cpu")


def test_the_cudnn_call_refuses_what_its_kernel_cannot_mean():
    q, k, v = qkv(s=16, t=32)
    with pytest.raises(ValueError, match="cudnn_attention takes neither segment ids nor fewer queries"):
        cudnn_attention(q, k, v, AttentionMask(is_causal=True), implementation="xla")
    q, k, v = qkv(s=16)
    packed = AttentionMask(is_causal=True, segment_ids=jnp.zeros((2, 16), jnp.int32))
    with pytest.raises(ValueError, match="use implementation=None to let attention_kernel choose"):
        cudnn_attention(q, k, v, packed, implementation="xla")


def test_attention_runs_the_chosen_kernel_and_refuses_an_unknown_one():
    q, k, v = qkv(s=32)
    mask = AttentionMask(is_causal=True)
    chosen = jax.jit(lambda q, k, v: attention(q, k, v, mask))(q, k, v)
    np.testing.assert_array_equal(chosen, jax.jit(lambda q, k, v: dense_attention(q, k, v, mask))(q, k, v))
    with pytest.raises(ValueError, match="implementation='flash' is unknown; use None, 'cudnn', 'splash'"):
        attention(q, k, v, mask, implementation="flash")


def test_matmul_gradient_matches_autodiff_and_keeps_the_weight_gradient_fp32():
    x, w = normal((64, 32), 3), normal((32, 48), 4)
    cotangent = normal((64, 48), 5)
    ours = jax.vjp(matmul, x, w)[1](cotangent)
    plain = jax.vjp(lambda x, w: x @ w, x, w)[1](cotangent)
    assert_same(ours, plain, atol=1e-5)
    out, vjp = jax.vjp(matmul, x.astype(jnp.bfloat16), w)
    d_x, d_w = vjp(cotangent)
    assert out.dtype == jnp.float32 and d_x.dtype == jnp.bfloat16 and d_w.dtype == jnp.float32
    # bf16 operands (8 bits of mantissa), fp32 sums: about 0.4% relative error overall.
    assert float(jnp.linalg.norm(d_w - plain[1]) / jnp.linalg.norm(plain[1])) < 0.01
