"""Vector palettization (cluster_dim > 1): deterministic k-means++ + Lloyd."""

import numpy as np
import pytest

import weightpress as wp
from weightpress import _core


def points_of(w, c):
    """coremltools' point order for a per-tensor vector LUT on axis 0."""
    return np.ascontiguousarray(w.reshape(w.shape[0] // c, c, -1).transpose(0, 2, 1)).reshape(-1, c)


def test_labels_are_nearest_and_centroids_are_means():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 500, 3))
    wts = rng.uniform(0.5, 2, size=(2, 500))
    c, labels, obj, used = _core.vector_kmeans(x, 8, wts)
    assert used.tolist() == [8, 8]
    for g in range(2):
        d = ((x[g][:, None, :] - c[g][None]) ** 2).sum(-1)
        assert np.array_equal(labels[g], d.argmin(axis=1))
        assert obj[g] == pytest.approx(float((wts[g] * d.min(axis=1)).sum()), rel=1e-12)
        for j in range(8):
            sel = labels[g] == j
            if sel.any():  # Lloyd stopped by tolerance: centroid is close to the weighted mean
                mean = (wts[g][sel, None] * x[g][sel]).sum(0) / wts[g][sel].sum()
                assert np.allclose(c[g][j], mean, atol=0.05)


def test_fewer_distinct_vectors_than_clusters():
    x = np.array([[[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [5.0, 6.0]] * 10])
    c, labels, obj, used = _core.vector_kmeans(x, 16)
    assert used[0] == 3 and obj[0] == 0.0
    assert np.all(c[0, 3:] == 0)
    assert np.array_equal(c[0, labels[0]], x[0])


def test_deterministic_and_thread_independent():
    x = np.random.default_rng(1).standard_normal((5, 400, 4))
    runs = [_core.vector_kmeans(x, 16, threads=t) for t in (1, 2, 3, 1)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert np.array_equal(a, b)


def test_bad_input():
    with pytest.raises(ValueError, match="k must be in"):
        _core.vector_kmeans(np.zeros((1, 4, 2)), 300)
    with pytest.raises(ValueError, match="NaN or Inf"):
        _core.vector_kmeans(np.full((1, 4, 2), np.nan), 2)


@pytest.mark.parametrize("cluster_dim,nbits", [(2, 4), (4, 2), (4, 4), (8, 3)])
def test_vector_palettize_layout_matches_coremltools_and_sse_not_worse_on_average(cluster_dim, nbits):
    from coremltools.optimize.coreml._quantization_passes import palettize_weights as P

    ratios = []
    for seed in range(3):
        w = (np.random.default_rng(seed).standard_normal((64, 96)) * 0.05).astype(np.float16)
        ours = wp.palettize(w, nbits, cluster_dim=cluster_dim)
        ref = P.grouped_channelwise_compress(w, "KMEANS", nbits, 0, 0, None, cluster_dim)
        assert ours.lut.shape == ref.lut.shape and ours.lut.dtype == ref.lut.dtype
        assert ours.indices.shape == ref.indices.shape and ours.vector_axis == ref.vector_axis == 0
        # coremltools' own decoder applied to our parts gives our decompress()
        from coremltools.optimize._utils import lut_to_dense

        assert np.array_equal(lut_to_dense(ours.indices, ours.lut, 0), ours.decompress())
        ref_sse = float(((P.decompress(ref).astype(np.float64) - w) ** 2).sum())
        ratios.append(ours.sse / ref_sse)
    assert np.mean(ratios) <= 1.0 + 1e-9, ratios


def test_vector_palettize_grouped_on_axis_1_and_sample_weight():
    from coremltools.optimize._utils import lut_to_dense

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((16, 32, 3)) * 0.1).astype(np.float32)
    r = wp.palettize(w, 2, granularity="per_grouped_channel", group_size=8, channel_axis=1, cluster_dim=2)
    assert r.lut.shape == (1, 4, 1, 4, 2) and r.indices.shape == (16, 16, 3)
    assert np.array_equal(lut_to_dense(r.indices, r.lut, 1), r.decompress())
    imp = np.ones(w.shape)
    imp[:, :, 0] = 100.0
    weighted = wp.palettize(w, 2, cluster_dim=2, sample_weight=imp)
    plain = wp.palettize(w, 2, cluster_dim=2)
    err = lambda res: float((imp * (res.decompress().astype(np.float64) - w) ** 2).sum())
    assert err(weighted) < err(plain)
