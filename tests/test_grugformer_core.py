"""grug_core.attention: masks, rotary embeddings, and reference vs blockwise attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grug_core.attention import (
    AttentionMask,
    apply_rotary,
    attention,
    blockwise_attention,
    materialize,
    reference_attention,
    visible_blocks,
)

SEGMENTS = np.array([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]], np.int32)


def qkv(b=2, s=16, h=4, kh=2, d=8, t=None, dtype=jnp.float32, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    t = s if t is None else t
    return (
        jax.random.normal(kq, (b, s, h, d), dtype),
        jax.random.normal(kk, (b, t, kh, d), dtype),
        jax.random.normal(kv, (b, t, kh, d), dtype),
    )


def packed_segments(b=2, s=16):
    # Row 0: three documents of uneven lengths; row 1: a single document.
    row0 = [0] * 5 + [1] * 7 + [2] * (s - 12)
    return jnp.array([row0] + [[0] * s] * (b - 1), jnp.int32)


def same_segment(seg):
    return seg[:, :, None] == seg[:, None, :]


# ---------------------------------------------------------------- masks


def test_causal_mask_is_lower_triangle():
    expected = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(materialize(AttentionMask(is_causal=True), 4, 4), expected)


def test_full_mask_allows_everything():
    np.testing.assert_array_equal(materialize(AttentionMask(), 3, 3), np.ones((3, 3), bool))


def test_sliding_window_keeps_last_w_tokens_including_self():
    expected = np.array(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 0, 1, 1],
        ],
        bool,
    )
    for is_causal in (False, True):  # a window is causal by definition
        mask = AttentionMask(is_causal=is_causal, sliding_window=2)
        np.testing.assert_array_equal(materialize(mask, 5, 5), expected)
    np.testing.assert_array_equal(materialize(AttentionMask(sliding_window=1), 3, 3), np.eye(3, dtype=bool))


def test_segments_without_causal_is_block_diagonal():
    mask = AttentionMask(segment_ids=jnp.asarray(SEGMENTS))
    row0 = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        bool,
    )
    got = np.asarray(materialize(mask, 6, 6))
    assert got.shape == (2, 6, 6)
    np.testing.assert_array_equal(got[0], row0)
    np.testing.assert_array_equal(got[1], np.ones((6, 6), bool))


def test_causal_with_segments():
    got = np.asarray(materialize(AttentionMask(is_causal=True, segment_ids=jnp.asarray(SEGMENTS)), 6, 6))
    row0 = np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(got[0], row0)
    np.testing.assert_array_equal(got[1], np.tril(np.ones((6, 6), bool)))


def test_causal_window_with_segments():
    mask = AttentionMask(is_causal=True, segment_ids=jnp.asarray(SEGMENTS), sliding_window=2)
    got = np.asarray(materialize(mask, 6, 6))
    row0 = np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(got[0], row0)
    band = np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 1, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(got[1], band)


def test_negative_segment_ids_are_padding():
    mask = AttentionMask(segment_ids=jnp.array([[0, 0, -1, -1]], jnp.int32))
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(materialize(mask, 4, 4)[0], expected)


def test_queries_are_the_last_keys_when_k_is_longer():
    expected = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(materialize(AttentionMask(is_causal=True), 2, 4), expected)
    windowed = np.array([[0, 1, 1, 0], [0, 0, 1, 1]], bool)
    np.testing.assert_array_equal(materialize(AttentionMask(sliding_window=2), 2, 4), windowed)


def test_mask_is_a_pytree_with_static_flags():
    mask = AttentionMask(is_causal=True, segment_ids=jnp.asarray(SEGMENTS), sliding_window=3)
    leaves, treedef = jax.tree_util.tree_flatten(mask)
    assert len(leaves) == 1
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert (rebuilt.is_causal, rebuilt.sliding_window) == (True, 3)
    assert len(jax.tree_util.tree_leaves(AttentionMask(is_causal=True))) == 0
    jitted = jax.jit(materialize, static_argnums=(1, 2))
    np.testing.assert_array_equal(jitted(mask, 6, 6), materialize(mask, 6, 6))
    np.testing.assert_array_equal(mask.materialize(6, 6), materialize(mask, 6, 6))


def test_bad_window_and_segment_shape_fail_loudly():
    with pytest.raises(ValueError, match="sliding_window"):
        AttentionMask(sliding_window=0)
    with pytest.raises(ValueError, match="segment_ids"):
        materialize(AttentionMask(segment_ids=jnp.zeros((2, 5), jnp.int32)), 6, 6)


# ---------------------------------------------------------------- attention


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("implementation", ["reference", "blockwise"])
def test_attention_keeps_shape_and_dtype_and_jits(dtype, implementation):
    q, k, v = qkv(dtype=dtype)
    mask = AttentionMask(is_causal=True)
    fn = jax.jit(
        lambda q, k, v, mask: blockwise_attention(q, k, v, mask, block_q=8, block_k=8)
        if implementation == "blockwise"
        else attention(q, k, v, mask, implementation=implementation)
    )
    out = fn(q, k, v, mask)
    assert out.shape == q.shape and out.dtype == dtype
    assert np.isfinite(np.asarray(out, np.float32)).all()


def test_default_implementation_matches_reference():
    q, k, v = qkv(s=8)
    mask = AttentionMask(is_causal=True)
    out = jax.jit(attention)(q, k, v, mask)
    np.testing.assert_allclose(out, reference_attention(q, k, v, mask), atol=1e-6)


MASKS = {
    "full": lambda: AttentionMask(),
    "causal": lambda: AttentionMask(is_causal=True),
    "window": lambda: AttentionMask(is_causal=True, sliding_window=5),
    "segments": lambda: AttentionMask(segment_ids=packed_segments()),
    "causal_segments": lambda: AttentionMask(is_causal=True, segment_ids=packed_segments()),
    "all": lambda: AttentionMask(is_causal=True, segment_ids=packed_segments(), sliding_window=3),
}


@pytest.mark.parametrize("name", sorted(MASKS))
@pytest.mark.parametrize("blocks", [(4, 4), (4, 8), (8, 2), (16, 16)])
def test_blockwise_matches_reference_with_gradients(name, blocks):
    q, k, v = qkv(kh=2)  # H=4, K=2: GQA
    mask = MASKS[name]()
    block_q, block_k = blocks

    def loss(fn, q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out * jnp.cos(out))  # a nonlinear loss so the cotangent differs per element

    ref = lambda q, k, v: reference_attention(q, k, v, mask)
    blk = lambda q, k, v: blockwise_attention(q, k, v, mask, block_q=block_q, block_k=block_k)
    np.testing.assert_allclose(jax.jit(blk)(q, k, v), ref(q, k, v), atol=1e-5)
    grads_ref = jax.grad(lambda *a: loss(ref, *a), argnums=(0, 1, 2))(q, k, v)
    grads_blk = jax.jit(jax.grad(lambda *a: loss(blk, *a), argnums=(0, 1, 2)))(q, k, v)
    for g_ref, g_blk in zip(grads_ref, grads_blk, strict=False):
        np.testing.assert_allclose(g_blk, g_ref, atol=1e-5)


def test_blockwise_handles_keys_longer_than_queries():
    q, k, v = qkv(s=8, t=16)
    mask = AttentionMask(is_causal=True, segment_ids=packed_segments(s=16), sliding_window=6)
    out = blockwise_attention(q, k, v, mask, block_q=4, block_k=4)
    np.testing.assert_allclose(out, reference_attention(q, k, v, mask), atol=1e-5)


@pytest.mark.parametrize("kh", [1, 2, 4])
def test_gqa_equals_mha_with_repeated_kv(kh):
    q, k, v = qkv(h=4, kh=kh)
    mask = AttentionMask(is_causal=True)
    k_rep, v_rep = jnp.repeat(k, 4 // kh, axis=2), jnp.repeat(v, 4 // kh, axis=2)
    mha = reference_attention(q, k_rep, v_rep, mask)
    np.testing.assert_allclose(reference_attention(q, k, v, mask), mha, atol=1e-6)
    np.testing.assert_allclose(blockwise_attention(q, k, v, mask, block_q=4, block_k=4), mha, atol=1e-5)


@pytest.mark.parametrize("kh", [4, 2])
def test_matches_jax_dot_product_attention(kh):
    q, k, v = qkv(h=4, kh=kh)
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    mask = AttentionMask(is_causal=True)
    np.testing.assert_allclose(reference_attention(q, k, v, mask), expected, atol=1e-5)
    np.testing.assert_allclose(blockwise_attention(q, k, v, mask, block_q=4, block_k=8), expected, atol=1e-5)


@pytest.mark.parametrize("implementation", ["reference", "blockwise"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_fully_masked_rows_are_zero_without_nan(implementation, is_causal):
    q, k, v = qkv(s=8)
    # Row 0 ends in padding; row 1 is all padding.
    seg = jnp.array([[0, 0, 0, 1, 1, -1, -1, -1], [-1] * 8], jnp.int32)
    mask = AttentionMask(is_causal=is_causal, segment_ids=seg)
    fn = lambda q, k, v: attention(q, k, v, mask, implementation=implementation)
    if implementation == "blockwise":
        fn = lambda q, k, v: blockwise_attention(q, k, v, mask, block_q=4, block_k=4)
    out = np.asarray(fn(q, k, v))
    assert np.all(out[0, 5:] == 0.0) and np.all(out[1] == 0.0)
    assert np.isfinite(out).all() and np.abs(out[0, :5]).sum() > 0
    grads = jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=(0, 1, 2))(q, k, v)
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()
    dq, dk, dv = (np.asarray(g) for g in grads)
    assert np.all(dq[0, 5:] == 0.0) and np.all(dq[1] == 0.0)
    assert np.all(dk[0, 5:] == 0.0) and np.all(dv[1] == 0.0)


def test_bad_shapes_fail_loudly_with_shapes_named():
    q, k, v = qkv(h=4, kh=3)
    with pytest.raises(ValueError, match=r"\(2, 16, 3, 8\)"):
        attention(q, k, v, AttentionMask(is_causal=True))
    q, k, v = qkv()
    with pytest.raises(ValueError, match="head dim"):
        attention(q, k[..., :4], v[..., :4], AttentionMask(is_causal=True))
    with pytest.raises(ValueError, match="equal shape"):
        attention(q, k, v[:, :8], AttentionMask(is_causal=True))
    with pytest.raises(ValueError, match="block_q"):
        blockwise_attention(q, k, v, AttentionMask(is_causal=True), block_q=5, block_k=4)
    with pytest.raises(ValueError, match="implementation"):
        attention(q, k, v, AttentionMask(), implementation="flash")


# ---------------------------------------------------------------- block skipping


def test_causal_blockwise_visits_only_the_lower_triangle():
    pairs = visible_blocks(AttentionMask(is_causal=True), 16, 16, 4, 4)
    assert pairs == [(i, j) for i in range(4) for j in range(i + 1)]
    # The scan inside blockwise_attention runs exactly one step per visible pair: 10 of 16 blocks.
    q, k, v = qkv(s=16)
    jaxpr = jax.make_jaxpr(lambda q, k, v: blockwise_attention(q, k, v, AttentionMask(is_causal=True), block_q=4, block_k=4))
    scans = [e for e in jaxpr(q, k, v).jaxpr.eqns if e.primitive.name == "scan"]
    assert [e.params["length"] for e in scans] == [10]


def test_window_blockwise_visits_only_the_band():
    # Window 4 with blocks of 4: each query block needs its own key block and the one before it.
    pairs = visible_blocks(AttentionMask(sliding_window=4), 32, 32, 4, 4)
    assert pairs == [(0, 0)] + [(i, j) for i in range(1, 8) for j in (i - 1, i)]
    # Segments are runtime data and never remove a block; a full mask visits everything.
    assert len(visible_blocks(AttentionMask(segment_ids=packed_segments()), 16, 16, 4, 4)) == 16


def test_visible_blocks_cover_every_allowed_pair():
    for mask in (AttentionMask(is_causal=True), AttentionMask(sliding_window=3), AttentionMask(sliding_window=9)):
        for s, t, bq, bk in ((16, 16, 4, 4), (8, 16, 2, 4), (16, 16, 8, 2)):
            allowed = np.asarray(materialize(mask, s, t))
            needed = {(i // bq, j // bk) for i, j in zip(*np.nonzero(allowed), strict=False)}
            assert set(visible_blocks(mask, s, t, bq, bk)) == needed


# ---------------------------------------------------------------- rotary


def test_rotary_keeps_dtype_norm_and_jits():
    x = jax.random.normal(jax.random.key(0), (2, 8, 3, 16))
    pos = jnp.arange(8, dtype=jnp.int32)
    out = jax.jit(apply_rotary, static_argnums=2)(x, pos, 10000.0)
    assert out.shape == x.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    assert apply_rotary(x.astype(jnp.bfloat16), pos, 10000.0).dtype == jnp.bfloat16
    batched = apply_rotary(x, jnp.broadcast_to(pos, (2, 8)), 10000.0)
    np.testing.assert_allclose(batched, out, atol=1e-6)


def test_rotary_uses_rotate_half_layout():
    # Frequency 0 (theta**0 = 1) pairs dim 0 with dim D/2, as in Hugging Face Llama.
    x = jnp.zeros((1, 1, 1, 4)).at[..., 0].set(1.0)
    out = apply_rotary(x, jnp.array([1], jnp.int32), 10000.0)[0, 0, 0]
    np.testing.assert_allclose(out, [np.cos(1.0), 0.0, np.sin(1.0), 0.0], atol=1e-6)


def test_rotary_dot_product_depends_only_on_relative_position():
    kq, kk = jax.random.split(jax.random.key(3))
    q = jax.random.normal(kq, (1, 1, 1, 16))
    k = jax.random.normal(kk, (1, 1, 1, 16))

    def score(i, j):
        rq = apply_rotary(q, jnp.array([i], jnp.int32), 10000.0)
        rk = apply_rotary(k, jnp.array([j], jnp.int32), 10000.0)
        return float(jnp.sum(rq * rk))

    for shift in (1, 7, 40):
        assert score(5, 2) == pytest.approx(score(5 + shift, 2 + shift), abs=1e-4)
        assert score(3, 9) == pytest.approx(score(3 + shift, 9 + shift), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
