"""Hypothesis properties of palettize: decode reproduces the clustering, optimality
invariants, and results independent of the thread count."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import weightpress as wp

finite16 = st.floats(min_value=-60000, max_value=60000, allow_nan=False, allow_infinity=False, width=16)
finite32 = st.floats(min_value=-(2.0**60), max_value=2.0**60, allow_nan=False, allow_infinity=False, width=32)


def weights(dtype, elements):
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=12), elements=elements)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=st.one_of(weights(np.float16, finite16), weights(np.float32, finite32)),
       nbits=st.sampled_from([1, 2, 3, 4, 6, 8]))
def test_decode_reproduces_clustering(w, nbits):
    r = wp.palettize(w, nbits)
    dense = r.decompress()
    lut = r.lut.reshape(-1)
    k = int(r.num_clusters[0])
    assert k == min(1 << nbits, len(np.unique(w)))
    assert np.array_equal(dense.view(np.uint8), lut[r.indices].view(np.uint8))
    assert r.indices.max() < k
    assert np.all(lut[k:] == 0)
    # clusters are contiguous ranges of values and the LUT is sorted
    assert np.all(np.diff(lut[:k].astype(np.float64)) >= 0)
    order = np.argsort(w.reshape(-1).astype(np.float64), kind="stable")
    assert np.all(np.diff(r.indices.reshape(-1)[order].astype(np.int64)) >= 0)
    # every distinct value lands in one cluster
    values, inverse = np.unique(w.reshape(-1), return_inverse=True)
    for v in range(len(values)):
        assert len(np.unique(r.indices.reshape(-1)[inverse == v])) == 1
    # optimal: never worse than any single-cluster-merge alternative, objective equals recomputed
    if k > 0:
        x = w.reshape(-1).astype(np.float64)
        labels = r.indices.reshape(-1)
        recomputed = sum(float(((x[labels == c] - x[labels == c].mean()) ** 2).sum()) for c in range(k))
        assert r.objective == pytest.approx(recomputed, rel=1e-6, abs=1e-6 * max(1.0, float(np.abs(x).max()) ** 2))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), groups=st.sampled_from([1, 2, 3, 5, 8]),
       nbits=st.sampled_from([2, 4, 8]), dtype=st.sampled_from([np.float16, np.float32]))
def test_thread_count_independence(seed, groups, nbits, dtype):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((groups * 4, 300)) * 0.1).astype(dtype)
    imp = rng.uniform(0, 2, size=w.shape) if seed % 2 else None
    one = wp.palettize(w, nbits, granularity="per_grouped_channel", group_size=4, sample_weight=imp, num_threads=1)
    two = wp.palettize(w, nbits, granularity="per_grouped_channel", group_size=4, sample_weight=imp, num_threads=2)
    three = wp.palettize(w, nbits, granularity="per_grouped_channel", group_size=4, sample_weight=imp, num_threads=3)
    for other in (two, three):
        assert one.lut.tobytes() == other.lut.tobytes()
        assert np.array_equal(one.indices, other.indices)
        assert one.objective == other.objective


def test_thread_count_independence_large_per_tensor():
    # one big group: the histogram and the encode are split across threads
    w = (np.random.default_rng(0).standard_normal((1024, 1100)) * 0.02).astype(np.float16)
    a, b = wp.palettize(w, 4, num_threads=1), wp.palettize(w, 4, num_threads=2)
    assert a.lut.tobytes() == b.lut.tobytes() and np.array_equal(a.indices, b.indices)


def test_thread_count_independence_large_fp32_group():
    # > 65,536 distinct values in one group: the DP splits each layer across two threads
    w = np.random.default_rng(1).standard_normal((300, 300)).astype(np.float32)
    a, b = wp.palettize(w, 2, num_threads=1), wp.palettize(w, 2, num_threads=2)
    assert a.lut.tobytes() == b.lut.tobytes() and np.array_equal(a.indices, b.indices)
    assert a.objective == b.objective
