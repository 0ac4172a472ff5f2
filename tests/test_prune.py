"""weightpress.prune against coremltools' prune_weights.compress_by_* (the oracle)."""

import numpy as np
import pytest

from coreml_oracle import constexpr_value
from reference import block_magnitude_ref
from weightpress import prune
from weightpress.prune import _block_magnitude


def P():
    from coremltools.optimize.coreml._quantization_passes import prune_weights

    return prune_weights


def assert_same(ours, ref):
    assert ref is not None
    assert ours.packed_mask.tobytes() == ref.mask.tobytes()
    assert ours.nonzero_data.dtype == ref.nonzero_data.dtype
    assert ours.nonzero_data.tobytes() == ref.nonzero_data.tobytes()
    assert tuple(ours.shape) == tuple(ref.shape)


def weights(seed, shape, dtype, ties=False):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * 0.05
    if ties:
        w = np.round(w * 40) / 40  # many equal magnitudes, exact ties at the threshold
    w = w.astype(dtype)
    w.reshape(-1)[:: 7] = 0  # zeros that exist before pruning are masked too
    return w


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("shape", [(1, 7), (16, 33), (64, 128), (8, 6, 3, 3)])
@pytest.mark.parametrize("threshold", [1e-12, 0.01, 0.0500001, 0.05])
def test_threshold_identical(dtype, shape, threshold):
    w = weights(1, shape, dtype, ties=True)
    ref = P().compress_by_threshold(w, threshold, 0.0)
    assert_same(prune(w, threshold=threshold, minimum_sparsity_percentile=0.0), ref)


def test_threshold_minimum_sparsity_rule():
    w = weights(2, (16, 16), np.float16)
    assert P().compress_by_threshold(w, 1e-3, 0.9) is None
    with pytest.warns(UserWarning, match="below minimum_sparsity_percentile"):
        r = prune(w, threshold=1e-3, minimum_sparsity_percentile=0.9)
    assert not r.meets_minimum_sparsity


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_magnitude_identical(dtype, sparsity, ties):
    for shape in [(64, 96), (17, 31), (8, 16, 3, 3)]:
        w = weights(3, shape, dtype, ties)
        assert_same(prune(w, target_sparsity=sparsity), P().compress_by_magnitude(w, sparsity))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("block_size,dim", [(2, 0), (4, 0), (4, 1), (3, 1), (5, 0)])
def test_block_sparsity_identical(dtype, block_size, dim):
    for shape in [(32, 20), (18, 12, 3, 3)]:
        w = weights(4, shape, dtype)
        assert_same(prune(w, target_sparsity=0.5, block_size=block_size, dim=dim),
                    P().compress_by_magnitude(w, 0.5, block_size, dim))


def _forced_elements(w, n, m, dim):
    """Elements whose group of m has distinct n-th and (n+1)-th smallest magnitudes (padding
    included): there coremltools' argsort has no choice, so the masks must agree."""
    rank = w.ndim
    perm = list(range(2, rank)) + [0, 1]
    if dim == 0:
        perm[-2], perm[-1] = 1, 0
    moved = np.abs(np.transpose(w, perm)).astype(np.float64)
    x = moved.reshape(-1, moved.shape[-1])
    channel = x.shape[1]
    pad = (-channel) % m
    s = np.sort(np.pad(x, ((0, 0), (0, pad))).reshape(-1, m), axis=1)
    forced = (s[:, n - 1] < s[:, n]) if 0 < n < m else np.ones(len(s), bool)
    forced = np.repeat(forced, m).reshape(x.shape[0], -1)[:, :channel].reshape(moved.shape)
    return np.transpose(forced, [perm.index(i) for i in range(rank)])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (3, 4), (4, 8), (1, 3)])
@pytest.mark.parametrize("dim", [0, 1])
def test_nm_identical_where_order_is_forced(dtype, n, m, dim):
    for shape in [(16, 32), (12, 20, 3, 3), (10, 14), (40, 36)]:
        if m > shape[dim] / 2:
            continue  # coremltools skips these; covered by test_bad_input
        w = (np.random.default_rng(n * m + dim).standard_normal(shape) * 0.05).astype(dtype)
        ours = prune(w, n_m_ratio=(n, m), dim=dim)
        ref = P().compress_by_nm_sparsity(w, (n, m), dim)
        ref_mask = np.unpackbits(ref.mask, count=w.size, bitorder="little").astype(bool).reshape(w.shape)
        forced = _forced_elements(w, n, m, dim)
        assert forced.mean() > 0.5
        assert np.array_equal(ours.mask[forced], ref_mask[forced])
        if forced.all():
            assert_same(ours, ref)
        # the same number of pruned elements per group either way
        assert ours.mask.sum() == ref_mask.sum()


def _nm_reference(w, n, m, dim):
    """Every group's n smallest magnitudes by a stable sort (padding past the channel's end
    counts as zeros after the real values): weightpress's documented tie order."""
    outer = 1 if dim == 0 else w.shape[0]
    x = np.abs(w.astype(np.float64)).reshape(outer, w.shape[dim], -1)
    channel = x.shape[1]
    pruned = np.zeros(x.shape, bool)
    for start in range(0, channel, m):
        group = np.zeros((outer, m, x.shape[2]))
        real = min(m, channel - start)
        group[:, :real] = x[:, start:start + real]
        order = np.argsort(group, axis=1, kind="stable")[:, :n]
        chosen = np.zeros(group.shape, bool)
        np.put_along_axis(chosen, order, True, axis=1)
        pruned[:, start:start + real] = chosen[:, :real]
    return ~pruned.reshape(w.shape) & (w != 0)  # zeros are never stored


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("n,m,dim,shape", [(2, 4, 1, (8, 602)),      # 151 groups: lanes cross tiles, padded tail
                                           (2, 4, 0, (48, 130)),     # inner 130: two lane tiles
                                           (3, 8, 1, (6, 40, 3, 3)),
                                           (7, 20, 1, (5, 50)),      # m > 16: the selection path
                                           (5, 18, 0, (40, 7, 2))])
def test_nm_every_path_matches_a_stable_sort(dtype, n, m, dim, shape):
    rng = np.random.default_rng(m * 7 + dim)
    w = (rng.integers(-6, 7, size=shape) * 0.25).astype(dtype)  # many equal magnitudes: ties decide
    assert np.array_equal(prune(w, n_m_ratio=(n, m), dim=dim).mask, _nm_reference(w, n, m, dim))


def test_nm_ties_prune_lower_index_first():
    w = np.array([[3, 3, 0.5, 0.5, 1, 2, 2, 1]], np.float32).repeat(2, axis=0).reshape(2, 8)
    r = prune(w, n_m_ratio=(2, 4))
    assert r.mask[0].tolist() == [True, True, False, False, False, True, True, False]
    r = prune(np.array([[3, 3, 3, 3] * 2] * 2, np.float16), n_m_ratio=(2, 4))
    assert r.mask[0].tolist() == [False, False, True, True] * 2


def test_real_minilm_weights(minilm_weights):
    w = minilm_weights["encoder.layer.0.attention.self.query.weight"].astype(np.float16)
    assert_same(prune(w, target_sparsity=0.5), P().compress_by_magnitude(w, 0.5))
    assert_same(prune(w, threshold=0.02, minimum_sparsity_percentile=0), P().compress_by_threshold(w, 0.02, 0))
    assert_same(prune(w, target_sparsity=0.3, block_size=4), P().compress_by_magnitude(w, 0.3, 4, 0))


def test_forms_and_decompress_through_coremltools_ops(ct):
    from coremltools.converters.mil.mil import types

    w = weights(5, (16, 40), np.float16)
    r = prune(w, target_sparsity=0.6)
    dense = r.decompress()
    assert np.array_equal(dense, np.where(r.mask, w, 0).astype(np.float16))
    assert r.ios16.mask.tobytes() == np.packbits(r.mask.reshape(-1), bitorder="little").tobytes()
    value = constexpr_value(ct.target.iOS18, lambda mb: mb.constexpr_sparse_to_dense(
        nonzero_data=r.nonzero_data, mask=r.ios18_mask.astype(types.np_uint1_dtype)))
    assert value.tobytes() == dense.tobytes()


def test_thread_count_independence():
    w = weights(6, (512, 700), np.float16)
    a, b = prune(w, target_sparsity=0.5, num_threads=1), prune(w, target_sparsity=0.5, num_threads=2)
    assert a.packed_mask.tobytes() == b.packed_mask.tobytes() and np.array_equal(a.nonzero_data, b.nonzero_data)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(), "exactly one of"),
        (dict(threshold=0.1, target_sparsity=0.5), "exactly one of"),
        (dict(target_sparsity=1.5), r"target_sparsity must be in \[0, 1\], got 1.5"),
        (dict(target_sparsity=-0.1), r"target_sparsity must be in \[0, 1\]"),
        (dict(threshold=-1.0), "threshold must be a number >= 0"),
        (dict(n_m_ratio=(5, 4)), r"0 <= n <= m"),
        (dict(n_m_ratio=(2, 64)), "m = 64 is more than half"),
        (dict(n_m_ratio=(2, 4), dim=2), "dim must be 0 or 1"),
        (dict(target_sparsity=0.5, block_size=32), "block_size 32 is more than half"),
        (dict(n_m_ratio=(2, 4), block_size=2), "cannot be combined"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        prune(np.ones((16, 64), np.float16), **kwargs)
    assert str(info.value).startswith("prune:")


def test_nan_refused():
    w = np.ones((4, 4), np.float32)
    w[1, 1] = np.nan
    with pytest.raises(ValueError, match="prune: weight contains nan"):
        prune(w, target_sparsity=0.5)


def test_percentile_by_selection_equals_numpy():
    from weightpress.prune import _percentile

    rng = np.random.default_rng(0)
    for t in range(400):
        n = int(rng.integers(1, 3000))
        dtype = (np.float16, np.float32)[t % 2]
        m = np.abs(rng.standard_normal(n) * rng.choice([1e-5, 0.01, 1, 100])).astype(dtype)
        if t % 5 == 0:
            m = (np.round(m * 8) / 8).astype(dtype)  # repeated values
        q = float(rng.choice([0.1, 0.5, 0.75, 0.9, 1 / 3, rng.uniform(0, 1)])) * 100
        ours, ref = np.asarray(_percentile(m, q, 1, m)), np.asarray(np.percentile(m, q))
        assert ours.dtype == ref.dtype and ours.tobytes() == ref.tobytes(), (n, q)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("shape,block_size,dim", [((32, 20), 4, 0), ((33, 7), 5, 0), ((9, 30, 3), 4, 1),
                                                  ((6, 10, 3, 3), 3, 1), ((64, 8), 2, 0)])
@pytest.mark.parametrize("scale", [30.0, 0.003])  # fp16 sums that round / overflow; squares that are subnormal
def test_block_magnitude_equals_numpy_reference(dtype, shape, block_size, dim, scale):
    w = (np.random.default_rng(7).standard_normal(shape) * scale).astype(dtype)
    ours = _block_magnitude(w, block_size, dim, 2)
    with np.errstate(over="ignore"):
        ref = block_magnitude_ref(w, block_size, dim)
    assert ours.dtype == ref.dtype and ours.tobytes() == np.ascontiguousarray(ref).tobytes()


def test_ios16_op_from_parts(ct):
    w = weights(8, (12, 20), np.float16)
    r = prune(w, n_m_ratio=(2, 4))
    p = r.ios16
    value = constexpr_value(ct.target.iOS16, lambda mb: mb.constexpr_sparse_to_dense(
        nonzero_data=p.nonzero_data, mask=p.mask, shape=p.shape))
    assert value.tobytes() == r.decompress().tobytes()
    assert r.sparsity == pytest.approx(1 - r.nonzero_data.size / w.size)
