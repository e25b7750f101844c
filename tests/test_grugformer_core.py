"""grug_core.attention: masks, rotary embeddings, and reference vs blockwise attention."""

import functools

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


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    # These tests run tiny shapes, so XLA's optimisation passes cost far more than they save; restored
    # afterwards so other test modules in the same session compile as usual.
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


SEGMENTS = np.array([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]], np.int32)


def normal(shape, dtype=jnp.float32, seed=0):
    # numpy, not jax.random: compiling threefry for every new shape costs seconds on a small CPU.
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32), dtype)


def qkv(b=2, s=16, h=4, kh=2, d=8, t=None, dtype=jnp.float32, seed=0):
    t = s if t is None else t
    return (
        normal((b, s, h, d), dtype, seed),
        normal((b, t, kh, d), dtype, seed + 1),
        normal((b, t, kh, d), dtype, seed + 2),
    )


def packed_segments(b=2, s=16):
    # Row 0: three documents of uneven lengths; row 1: one document then 3 padding tokens (queries that
    # see no key, so every segment case also checks the all-masked rows in forward and gradients).
    row0 = [0] * 5 + [1] * 7 + [2] * (s - 12)
    return jnp.array([row0] + [[0] * (s - 3) + [-1] * 3] * (b - 1), jnp.int32)


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


@functools.partial(jax.jit, static_argnames=("block_q", "block_k"))
def both_paths(q, k, v, mask, *, block_q, block_k):
    """(output, (dq, dk, dv)) of the reference and the blockwise path, compiled together because XLA
    compile time, not compute, dominates these tiny tests."""

    def with_grads(fn):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(jnp.cos(out))  # a nonlinear cotangent so every element's gradient differs

    ref = with_grads(lambda q, k, v: reference_attention(q, k, v, mask))
    blk = with_grads(lambda q, k, v: blockwise_attention(q, k, v, mask, block_q=block_q, block_k=block_k))
    return ref, blk


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("implementation", ["reference", "blockwise"])
def test_attention_keeps_shape_and_dtype_and_jits(dtype, implementation):
    q, k, v = qkv(dtype=dtype)
    mask = AttentionMask(is_causal=True)
    fn = jax.jit(
        lambda q, k, v, mask: (
            blockwise_attention(q, k, v, mask, block_q=8, block_k=8)
            if implementation == "blockwise"
            else attention(q, k, v, mask, implementation=implementation)
        )
    )
    out = fn(q, k, v, mask)
    assert out.shape == q.shape and out.dtype == dtype
    assert np.isfinite(np.asarray(out, np.float32)).all()


def test_default_implementation_matches_reference():
    q, k, v = qkv(s=8)
    mask = AttentionMask(is_causal=True)
    both = jax.jit(lambda q, k, v: (attention(q, k, v, mask), reference_attention(q, k, v, mask)))
    out, ref = both(q, k, v)
    np.testing.assert_allclose(out, ref, atol=1e-6)


CASES = {
    "full": (lambda: AttentionMask(), (16, 16)),
    "causal": (lambda: AttentionMask(is_causal=True), (4, 4)),
    "window": (lambda: AttentionMask(is_causal=True, sliding_window=5), (4, 8)),
    "segments": (lambda: AttentionMask(segment_ids=packed_segments()), (8, 2)),
    "causal_segments": (lambda: AttentionMask(is_causal=True, segment_ids=packed_segments()), (8, 4)),
    "all": (lambda: AttentionMask(is_causal=True, segment_ids=packed_segments(), sliding_window=3), (2, 4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_blockwise_matches_reference_with_gradients(name):
    make_mask, (block_q, block_k) = CASES[name]
    q, k, v = qkv(kh=2)  # H=4, K=2: GQA
    (ref, ref_grads), (blk, blk_grads) = both_paths(q, k, v, make_mask(), block_q=block_q, block_k=block_k)
    np.testing.assert_allclose(blk, ref, atol=1e-5)
    for g_blk, g_ref in zip(blk_grads, ref_grads, strict=True):
        np.testing.assert_allclose(g_blk, g_ref, atol=1e-5)


@pytest.mark.parametrize("blocks", [(2, 2), (4, 16), (16, 4)])
def test_blockwise_matches_reference_for_block_sizes(blocks):
    q, k, v = qkv()
    mask = AttentionMask(is_causal=True, segment_ids=packed_segments(), sliding_window=6)
    fn = jax.jit(
        lambda q, k, v: (
            blockwise_attention(q, k, v, mask, block_q=blocks[0], block_k=blocks[1]),
            reference_attention(q, k, v, mask),
        )
    )
    blk, ref = fn(q, k, v)
    np.testing.assert_allclose(blk, ref, atol=1e-5)


def test_blockwise_handles_keys_longer_than_queries():
    q, k, v = qkv(s=8, t=16)
    mask = AttentionMask(is_causal=True, segment_ids=packed_segments(s=16), sliding_window=6)
    fn = jax.jit(
        lambda q, k, v: (
            blockwise_attention(q, k, v, mask, block_q=4, block_k=4),
            reference_attention(q, k, v, mask),
        )
    )
    blk, ref = fn(q, k, v)
    np.testing.assert_allclose(blk, ref, atol=1e-5)


@pytest.mark.parametrize("kh", [1, 2])
def test_gqa_equals_mha_with_repeated_kv(kh):
    q, k, v = qkv(h=4, kh=kh)
    mask = AttentionMask(is_causal=True)

    @jax.jit
    def all_three(q, k, v):
        mha = reference_attention(q, jnp.repeat(k, 4 // kh, axis=2), jnp.repeat(v, 4 // kh, axis=2), mask)
        blk = blockwise_attention(q, k, v, mask, block_q=4, block_k=4)
        return reference_attention(q, k, v, mask), blk, mha

    ref, blk, mha = all_three(q, k, v)
    np.testing.assert_allclose(ref, mha, atol=1e-6)
    np.testing.assert_allclose(blk, mha, atol=1e-5)


@pytest.mark.parametrize("kh", [4, 2])
def test_matches_jax_dot_product_attention(kh):
    q, k, v = qkv(h=4, kh=kh)
    mask = AttentionMask(is_causal=True)

    @jax.jit
    def all_three(q, k, v):
        blk = blockwise_attention(q, k, v, mask, block_q=4, block_k=8)
        return jax.nn.dot_product_attention(q, k, v, is_causal=True), reference_attention(q, k, v, mask), blk

    expected, ref, blk = all_three(q, k, v)
    np.testing.assert_allclose(ref, expected, atol=1e-5)
    np.testing.assert_allclose(blk, expected, atol=1e-5)


def test_fully_masked_rows_are_zero_without_nan():
    q, k, v = qkv(s=8)
    # Row 0 ends in padding; row 1 is all padding, so those queries see no key at all. Causal masks
    # with padding are covered by the segment cases of test_blockwise_matches_reference_with_gradients.
    seg = jnp.array([[0, 0, 0, 1, 1, -1, -1, -1], [-1] * 8], jnp.int32)
    mask = AttentionMask(segment_ids=seg)
    for out, (dq, dk, dv) in both_paths(q, k, v, mask, block_q=4, block_k=4):
        out, dq, dk, dv = (np.asarray(x) for x in (out, dq, dk, dv))
        for x in (out, dq, dk, dv):
            assert np.isfinite(x).all()
        assert np.all(out[0, 5:] == 0.0) and np.all(out[1] == 0.0) and np.abs(out[0, :5]).sum() > 0
        assert np.all(dq[0, 5:] == 0.0) and np.all(dq[1] == 0.0)
        assert np.all(dk[0, 5:] == 0.0) and np.all(dk[1] == 0.0) and np.all(dv[1] == 0.0)


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
    jaxpr = jax.make_jaxpr(
        lambda q, k, v: blockwise_attention(q, k, v, AttentionMask(is_causal=True), block_q=4, block_k=4)
    )
    scans = [e for e in jaxpr(q, k, v).jaxpr.eqns if e.primitive.name == "scan"]
    assert [e.params["length"] for e in scans] == [10]


def test_window_blockwise_visits_only_the_band():
    # Window 4 with blocks of 4: each query block needs its own key block and the one before it.
    pairs = visible_blocks(AttentionMask(sliding_window=4), 32, 32, 4, 4)
    assert pairs == [(0, 0)] + [(i, j) for i in range(1, 8) for j in (i - 1, i)]
    # Segments are runtime data and never remove a block; a full mask visits everything.
    assert len(visible_blocks(AttentionMask(segment_ids=packed_segments()), 16, 16, 4, 4)) == 16


def test_visible_blocks_cover_every_allowed_pair():
    for window in (None, 1, 3, 9):
        mask = AttentionMask(is_causal=True, sliding_window=window)
        for s, t, bq, bk in ((16, 16, 4, 4), (8, 16, 2, 4), (16, 16, 8, 2)):
            # Brute force over (query, key) positions; queries are the last s of the t keys.
            needed = {
                (i // bq, j // bk)
                for i in range(s)
                for j in range(t)
                if 0 <= (t - s + i) - j < (window or t + 1)
            }
            assert set(visible_blocks(mask, s, t, bq, bk)) == needed


# ---------------------------------------------------------------- rotary


def test_rotary_keeps_dtype_norm_and_jits():
    x = normal((2, 8, 3, 16))
    pos = jnp.arange(8, dtype=jnp.int32)

    @jax.jit
    def variants(x, pos):
        rotate = lambda x, pos: apply_rotary(x, pos, 10000.0)
        return rotate(x, pos), rotate(x.astype(jnp.bfloat16), pos), rotate(x, jnp.broadcast_to(pos, (2, 8)))

    out, out_bf16, batched = variants(x, pos)
    assert out.shape == x.shape and out.dtype == jnp.float32 and out_bf16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(batched, out, atol=1e-6)


def test_rotary_uses_rotate_half_layout():
    # Frequency 0 (theta**0 = 1) pairs dim 0 with dim D/2, as in Hugging Face Llama.
    x = np.zeros((1, 1, 1, 4), np.float32)
    x[..., 0] = 1.0
    out = jax.jit(apply_rotary, static_argnums=2)(x, np.array([1], np.int32), 10000.0)[0, 0, 0]
    np.testing.assert_allclose(out, [np.cos(1.0), 0.0, np.sin(1.0), 0.0], atol=1e-6)


def test_rotary_dot_product_depends_only_on_relative_position():
    q, k = normal((1, 1, 1, 16), seed=3), normal((1, 1, 1, 16), seed=4)

    @jax.jit
    def rotated_dot(i, j):
        return jnp.sum(apply_rotary(q, i[None], 10000.0) * apply_rotary(k, j[None], 10000.0))

    score = lambda i, j: float(rotated_dot(np.int32(i), np.int32(j)))

    for shift in (1, 7, 40):
        assert score(5, 2) == pytest.approx(score(5 + shift, 2 + shift), abs=1e-4)
        assert score(3, 9) == pytest.approx(score(3 + shift, 9 + shift), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
