"""weightpress.palettize against coremltools 9.0 (the format oracle) and brute force."""

import numpy as np
import pytest

import weightpress as wp
from coreml_oracle import constexpr_value
from reference import kmeans1d_bruteforce, labels_objective, lut_to_dense_ref

SIZES = [1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 65, 127, 129]


def ct_palettizer():
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    return palettize_weights


def ct_compress(weight, mode, nbits, axis=0, group_size=0, cluster_dim=1, lut_function=None):
    return ct_palettizer().grouped_channelwise_compress(
        weight, mode.upper(), nbits, axis, group_size, lut_function, cluster_dim
    )


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def fp16_weights(rng, shape, scale=0.05, quantum=None):
    w = rng.standard_normal(shape) * scale
    if quantum:
        w = np.round(w / quantum) * quantum
    return w.astype(np.float16)


# ---------------------------------------------------------------- exact path: identical to coremltools


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_per_tensor_fp16_identical_to_coremltools(nbits):
    rng = np.random.default_rng(nbits)
    w = fp16_weights(rng, (96, 130))  # 12,480 elements >= 10,000: coremltools runs kmeans1d
    ours = wp.palettize(w, nbits)
    ref = ct_compress(w, "kmeans", nbits)
    assert same_bits(ours.lut, ref.lut)
    assert np.array_equal(ours.indices, ref.indices.astype(np.uint8))
    assert ours.lut.shape == (1, 1, 1 << nbits, 1)
    assert np.array_equal(np.sort(ours.lut.reshape(-1)[: ours.num_clusters[0]]), ours.lut.reshape(-1)[: ours.num_clusters[0]])


@pytest.mark.parametrize(
    "shape,axis,group_size",
    [((64, 640), 0, 16), ((48, 1000), 0, 12), ((1280, 40), 1, 8), ((32, 80, 3, 3), 0, 16), ((32, 32, 5, 5), 1, 16)],
)
def test_grouped_fp16_identical_to_coremltools(shape, axis, group_size):
    rng = np.random.default_rng(sum(shape))
    w = fp16_weights(rng, shape, quantum=1e-3)  # few distinct values: many exact ties in counts
    ours = wp.palettize(w, 4, granularity="per_grouped_channel", group_size=group_size, channel_axis=axis)
    ref = ct_compress(w, "kmeans", 4, axis, group_size)
    assert ours.lut.shape == ref.lut.shape
    assert same_bits(ours.lut, ref.lut)
    assert np.array_equal(ours.indices, ref.indices.astype(np.uint8))


def test_real_minilm_weights_identical_to_coremltools(minilm_weights):
    names = [n for n, v in minilm_weights.items() if "encoder.layer" in n and v.ndim == 2][:8:2]
    assert len(names) == 4
    for i, name in enumerate(names):
        w = minilm_weights[name].astype(np.float16)
        nbits = (2, 4, 6, 8)[i % 4]
        ours = wp.palettize(w, nbits)
        ref = ct_compress(w, "kmeans", nbits)
        assert same_bits(ours.lut, ref.lut), name
        assert np.array_equal(ours.indices, ref.indices.astype(np.uint8)), name
        # groups of 32 channels x >= 384 inputs >= 12,288 elements: coremltools' exact path too
        grouped = wp.palettize(w, 4, granularity="per_grouped_channel", group_size=32)
        ref = ct_compress(w, "kmeans", 4, 0, 32)
        assert same_bits(grouped.lut, ref.lut), name
        assert np.array_equal(grouped.indices, ref.indices.astype(np.uint8)), name


def test_fewer_distinct_values_than_clusters_matches_coremltools():
    w = np.repeat(np.array([-0.5, 0.25, 0.75], dtype=np.float16), 4000).reshape(100, 120)
    ours = wp.palettize(w, 4)
    ref = ct_compress(w, "kmeans", 4)
    assert same_bits(ours.lut, ref.lut)
    assert np.array_equal(ours.indices, ref.indices.astype(np.uint8))
    assert ours.num_clusters[0] == 3
    assert np.all(ours.lut.reshape(-1)[3:] == 0)
    assert ours.sse == 0.0


# ---------------------------------------------------------------- elsewhere: never worse than coremltools


def _partition_objective(weight, indices):
    return labels_objective(weight.astype(np.float64), np.ones(weight.size), indices)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_objective_never_worse_than_coremltools(dtype):
    """Small groups and fp32 go to sklearn in coremltools; the exact DP is never worse there,
    and after the LUT cast to the weight dtype the SSE differs only by the cast term."""
    rng = np.random.default_rng(7)
    better = total = 0
    gains = []
    for trial in range(12):
        shape = (int(rng.choice([8, 16, 32])), int(rng.choice([17, 40, 64])))
        w = (rng.standard_normal(shape) * rng.uniform(0.01, 1)).astype(dtype)
        nbits = int(rng.choice([2, 3, 4]))
        ours = wp.palettize(w, nbits, granularity="per_grouped_channel", group_size=shape[0] // 2)
        ref = ct_compress(w, "kmeans", nbits, 0, shape[0] // 2)
        for g in range(2):
            rows = slice(g * shape[0] // 2, (g + 1) * shape[0] // 2)
            mine = _partition_objective(w[rows], ours.indices[rows])
            theirs = _partition_objective(w[rows], ref.indices[rows])
            assert mine <= theirs * (1 + 1e-12) + 1e-30
            total += 1
            if mine < theirs * (1 - 1e-9):
                better += 1
                gains.append(theirs / max(mine, 1e-300))
        # SSE after the cast: bounded by our float64 objective plus our own cast term
        ref_sse = float(((ct_palettizer().decompress(ref).astype(np.float64) - w.astype(np.float64)) ** 2).sum())
        ref_objective = _partition_objective(w, ref.indices)
        centroids = ours._lut_groups[:, :, 0].astype(np.float64)
        exact = np.stack([np.array([w.reshape(2, -1)[g][ours._index_groups[g] == c].astype(np.float64).mean()
                                    if (ours._index_groups[g] == c).any() else 0.0
                                    for c in range(1 << nbits)]) for g in range(2)])
        counts = np.stack([np.bincount(ours._index_groups[g], minlength=1 << nbits) for g in range(2)])
        cast_term = float((counts * (exact - centroids) ** 2).sum())
        assert ours.sse <= ref_objective + cast_term + 1e-9 * ref_sse
        assert abs(ref_sse - ref_objective) >= 0  # (their own cast term is part of ref_sse)
    assert total == 24
    print(f"\n{dtype.__name__}: weightpress strictly better in {better}/{total} groups; "
          f"median objective ratio coremltools/ours {np.median(gains) if gains else 1:.4f}")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_bruteforce_optimal_small(n, k):
    rng = np.random.default_rng(100 * n + k)
    values = np.unique(rng.standard_normal(n).astype(np.float32))
    counts = rng.integers(1, 5, size=len(values))
    w = np.repeat(values, counts)
    rng.shuffle(w)
    nbits = {1: 1, 2: 1, 3: 2, 4: 2}[k]
    curve = wp.sse_curve(w, nbits)
    for clusters in range(1, (1 << nbits) + 1):
        best = kmeans1d_bruteforce(values.astype(np.float64), counts.astype(np.float64), clusters)
        assert curve[clusters - 1] == pytest.approx(best, rel=1e-9, abs=1e-12)
    r = wp.palettize(w, nbits)
    assert r.objective == pytest.approx(kmeans1d_bruteforce(values.astype(np.float64), counts.astype(np.float64),
                                                            1 << nbits), rel=1e-9, abs=1e-12)


def test_bruteforce_weighted_optimal():
    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(2, 10))
        w = rng.standard_normal(n).astype(np.float32)
        imp = rng.uniform(0, 3, size=n)
        imp[rng.integers(0, n)] = 0.0  # a value with no importance
        r = wp.palettize(w.reshape(1, -1), 2, sample_weight=imp.reshape(1, -1))
        values, inverse = np.unique(w, return_inverse=True)
        agg = np.bincount(inverse, weights=imp)
        keep = agg > 0
        best = kmeans1d_bruteforce(values[keep].astype(np.float64), agg[keep], 4)
        assert r.objective == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_sample_weight_changes_clustering_toward_important_values():
    rng = np.random.default_rng(5)
    w = fp16_weights(rng, (64, 256))
    imp = np.ones(w.shape)
    imp[w > 0.1] = 1000.0
    plain = wp.palettize(w, 2)
    weighted = wp.palettize(w, 2, sample_weight=imp)
    err = lambda r: float((imp * (r.decompress().astype(np.float64) - w) ** 2).sum())
    assert err(weighted) < err(plain)
    # integer importance equals repeating elements
    ones = wp.palettize(w, 3, sample_weight=np.ones(w.shape))
    assert same_bits(ones.lut, wp.palettize(w, 3).lut)


# ---------------------------------------------------------------- the other modes: byte-identical


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_uniform_identical_to_coremltools(dtype, nbits):
    rng = np.random.default_rng(nbits)
    w = (rng.standard_normal((32, 33)) * 0.1).astype(dtype)
    w[8:16] = 0.5  # a constant group: max == min
    ours = wp.palettize(w, nbits, mode="uniform", granularity="per_grouped_channel", group_size=8)
    ref = ct_compress(w, "uniform", nbits, 0, 8)
    assert same_bits(ours.lut, ref.lut)
    assert np.array_equal(ours.indices, ref.indices.astype(np.uint8))
    assert same_bits(ours.decompress(), ct_palettizer().decompress(ref))


@pytest.mark.parametrize("cluster_dim", [1, 2])
def test_unique_identical_to_coremltools(cluster_dim):
    rng = np.random.default_rng(cluster_dim)
    w = (rng.integers(-6, 6, size=(32, 17)) / 8).astype(np.float16)
    ours = wp.palettize(w, mode="unique", granularity="per_grouped_channel", group_size=16, cluster_dim=cluster_dim)
    ref = ct_compress(w, "unique", None, 0, 16, cluster_dim)
    assert ours.nbits == int(np.log2(ref.lut.shape[-2]))
    assert same_bits(ours.lut, ref.lut)
    assert np.array_equal(ours.indices, ref.indices.astype(np.uint8))
    assert same_bits(ours.decompress(), w)


def test_custom_lut_function_identical_to_coremltools():
    def lut_function(group):
        lut = np.linspace(-1, 1, 8).astype(group.dtype)
        idx = np.abs(group.reshape(-1, 1).astype(np.float32) - lut).argmin(axis=1).astype(np.uint8)
        return lut, idx

    w = np.random.default_rng(0).uniform(-1, 1, (16, 24)).astype(np.float16)
    ours = wp.palettize(w, mode="custom", lut_function=lut_function, granularity="per_grouped_channel", group_size=4)
    ref = ct_compress(w, "custom", None, 0, 4, lut_function=lut_function)
    assert ours.nbits == 3
    assert same_bits(ours.lut, ref.lut)
    assert np.array_equal(ours.indices, ref.indices.astype(np.uint8))


# ---------------------------------------------------------------- per-channel scale


def test_per_channel_scale_matches_coremltools_flow():
    rng = np.random.default_rng(11)
    w = fp16_weights(rng, (64, 200))
    w[:, 3] = 0  # an all-zero input position gets scale 1
    with pytest.warns(UserWarning, match="repeated per input position"):
        ours = wp.palettize(w, 4, enable_per_channel_scale=True)
    # coremltools: s = max|W| over the output axis, W /= s in fp16, then palettize
    s = np.max(np.abs(w), axis=0, keepdims=True)
    s[s == 0] = 1
    ref = ct_compress(w / s, "kmeans", 4)
    assert same_bits(ours.per_channel_scale, s)
    assert same_bits(ours.lut, ref.lut)
    assert np.array_equal(ours.indices, ref.indices.astype(np.uint8))
    emitted = ours.ios18("iOS18")
    assert emitted.scale_first and emitted.lut.shape == (1, 200, 16, 1) and emitted.scale.shape == (1, 200, 1, 1)
    assert ours.ios18("iOS26").lut.shape == (1, 1, 16, 1)
    expected = (ct_palettizer().decompress(ref) * s).astype(np.float16)
    assert same_bits(ours.decompress(), expected)


def test_per_channel_scale_no_warning_when_lut_is_small():
    import warnings

    w = fp16_weights(np.random.default_rng(1), (256, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wp.palettize(w, 2, enable_per_channel_scale=True)


# ---------------------------------------------------------------- coremltools ops decompress our parts


def test_ios18_op_from_parts_decompresses_like_ours(ct):
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(2)
    w = fp16_weights(rng, (32, 48, 3))
    for nbits, gran in [(3, "per_grouped_channel"), (4, "per_tensor"), (6, "per_grouped_channel")]:
        r = wp.palettize(w, nbits, granularity=gran, group_size=8)
        idx_dtype = types.nptype_from_builtin(types.string_to_builtin(f"uint{nbits}"))
        value = constexpr_value(ct.target.iOS18,
                                lambda mb: mb.constexpr_lut_to_dense(indices=r.indices.astype(idx_dtype), lut=r.lut))
        assert same_bits(value, r.decompress())


def test_ios16_op_from_parts_decompresses_like_ours(ct):
    w = fp16_weights(np.random.default_rng(4), (40, 50))
    for nbits in (1, 2, 4, 6, 8):
        r = wp.palettize(w, nbits)
        parts = r.ios16
        assert parts.indices.dtype == np.uint8 and parts.shape.dtype == np.uint32
        value = constexpr_value(ct.target.iOS16, lambda mb: mb.constexpr_lut_to_dense(
            lut=parts.lut, indices=parts.indices, shape=parts.shape))
        assert same_bits(value, r.decompress())


def test_ios16_refuses_what_it_cannot_express():
    w = fp16_weights(np.random.default_rng(4), (16, 40))
    with pytest.raises(ValueError, match="iOS16 supports nbits"):
        wp.palettize(w, 3).ios16
    with pytest.raises(ValueError, match="one LUT per tensor"):
        wp.palettize(w, 4, granularity="per_grouped_channel", group_size=8).ios16


# ---------------------------------------------------------------- sse_curve


def test_sse_curve_matches_palettize_objectives():
    rng = np.random.default_rng(9)
    w = fp16_weights(rng, (32, 90))
    curve = wp.sse_curve(w, 4, granularity="per_grouped_channel", group_size=8)
    assert curve.shape == (16,)
    assert np.all(np.diff(curve) <= 1e-12 * curve[0])
    for nbits in (1, 2, 3, 4):
        r = wp.palettize(w, nbits, granularity="per_grouped_channel", group_size=8)
        assert curve[(1 << nbits) - 1] == pytest.approx(r.objective, rel=1e-12)
    per_group = wp.sse_curve(w, 4, granularity="per_grouped_channel", group_size=8, per_group=True)
    assert per_group.shape == (4, 16)
    assert np.allclose(per_group.sum(axis=0), curve, rtol=1e-12)


# ---------------------------------------------------------------- decompress / result object


def test_decompress_reproduces_the_clustering():
    rng = np.random.default_rng(12)
    w = fp16_weights(rng, (24, 10, 3))
    r = wp.palettize(w, 3, granularity="per_grouped_channel", group_size=5, channel_axis=1)
    assert r.lut.shape == (1, 2, 1, 8, 1)
    assert r.indices.shape == w.shape and r.indices.dtype == np.uint8
    dense = r.decompress()
    assert dense.dtype == np.float16 and dense.shape == w.shape
    # every element decodes to the LUT entry of its group at its index
    for g in range(2):
        sl = (slice(None), slice(g * 5, (g + 1) * 5))
        assert np.array_equal(dense[sl], r.lut[0, g, 0, :, 0][r.indices[sl]])
    assert r.sse == pytest.approx(float(((dense.astype(np.float64) - w) ** 2).sum()), rel=1e-9)
    assert r.nbytes == (w.size * 3 + 7) // 8 + 2 * 8 * 2


def test_torch_tensors_via_dlpack():
    torch = pytest.importorskip("torch")
    w = fp16_weights(np.random.default_rng(1), (64, 200))
    t = torch.from_numpy(w)
    r_t, r_n = wp.palettize(t, 4), wp.palettize(w, 4)
    assert same_bits(r_t.lut, r_n.lut) and np.array_equal(r_t.indices, r_n.indices)
    # non-contiguous and bfloat16 tensors are accepted (bfloat16 is widened to float32 exactly)
    assert wp.palettize(t.T, 2).shape == (200, 64)
    rb = wp.palettize(t.to(torch.bfloat16), 2)
    assert rb.dtype == np.float32


@pytest.mark.parametrize("size", SIZES)
def test_sizes_straddling_widths(size):
    rng = np.random.default_rng(size)
    w = rng.standard_normal((size, 3)).astype(np.float32)
    r = wp.palettize(w, 2)
    assert r.indices.shape == w.shape
    assert r.num_clusters[0] == min(4, len(np.unique(w)))
    assert np.array_equal(lut_to_dense_ref(r._lut_groups[:, :, 0], r._index_groups).reshape(w.shape), r.decompress())


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,weight,error,match",
    [
        (dict(nbits=5), None, ValueError, "nbits must be one of 1, 2, 3, 4, 6, 8, got 5"),
        (dict(), None, ValueError, "nbits is required"),
        (dict(nbits=4, mode="unique"), None, ValueError, "nbits is inferred"),
        (dict(nbits=4, mode="fancy"), None, ValueError, "mode must be one of"),
        (dict(nbits=4, granularity="per_block"), None, ValueError, "granularity must be one of"),
        (dict(nbits=4, granularity="per_grouped_channel", group_size=5), None, ValueError, "group_size 5 does not divide"),
        (dict(nbits=4, cluster_dim=3), None, ValueError, "cluster_dim 3 does not divide"),
        (dict(nbits=4, channel_axis=2), None, ValueError, "channel_axis 2 is out of range"),
        (dict(nbits=4, sample_weight=np.ones((3, 3))), None, ValueError, "sample_weight shape"),
        (dict(nbits=4, sample_weight=-np.ones((16, 8))), None, ValueError, "sample_weight must be >= 0"),
        (dict(nbits=4, mode="uniform", cluster_dim=2), None, ValueError, "does not support cluster_dim"),
        (dict(nbits=4, num_threads=0), None, ValueError, "num_threads"),
        (dict(nbits=4), np.full((16, 8), np.nan, np.float16), ValueError, "contains nan"),
        (dict(nbits=4), np.full((16, 8), np.inf, np.float32), ValueError, "contains inf"),
        (dict(nbits=4), np.zeros((0, 8), np.float16), ValueError, "empty"),
        (dict(nbits=4), np.float16(1.0), TypeError, "expected a numpy array"),
        (dict(nbits=4, granularity="per_grouped_channel"), np.ones(64, np.float16), ValueError, "rank >= 2"),
        (dict(nbits=4), np.ones((16, 8), np.int32), TypeError, "dtype must be float16 or float32, got int32"),
        (dict(nbits=4), np.array([["a"]]), TypeError, "dtype must be float16 or float32"),
        (dict(nbits=4), [[1.0, 2.0]], TypeError, "expected a numpy array"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, weight, error, match):
    if weight is None:
        weight = np.ones((16, 8), np.float16)
    with pytest.raises(error, match=match) as info:
        wp.palettize(weight, **kwargs)
    assert str(info.value).startswith("palettize:")


def test_nan_in_a_later_group_is_found():
    w = np.ones((64, 64), np.float16)
    w[63, 63] = np.nan
    with pytest.raises(ValueError, match="flat index 4095"):
        wp.palettize(w, 2, granularity="per_grouped_channel", group_size=16)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_single_nonfinite_value_is_refused_with_its_index(dtype, bad):
    w = np.ones((64, 64), dtype)
    w[40, 17] = bad
    for kwargs in (dict(), dict(granularity="per_grouped_channel", group_size=16)):
        with pytest.raises(ValueError, match=r"palettize: weight contains .* at flat index 2577"):
            wp.palettize(w, 2, **kwargs)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_sse_curve_refuses_a_nonfinite_value_with_its_index(dtype, bad):
    # found by the kernel while collecting values (small and large groups, every width path)
    for shape in ((64, 64), (4, 8192)):
        w = np.ones(shape, dtype)
        w.reshape(-1)[2577] = bad
        for kwargs in (dict(), dict(granularity="per_grouped_channel", group_size=2), dict(nbits=[2, 3])):
            with pytest.raises(ValueError, match=r"sse_curve: weight contains .* at flat index 2577"):
                wp.sse_curve(w, 3, **kwargs)


def test_sse_curve_bad_input():
    w = np.ones((16, 8), np.float16)
    with pytest.raises(ValueError, match="sse_curve: max_nbits must be in 1..8, got 9"):
        wp.sse_curve(w, 9)
    with pytest.raises(ValueError, match="sse_curve: granularity must be one of"):
        wp.sse_curve(w, 2, granularity="per_block")
    with pytest.raises(ValueError, match="sse_curve: group_size 3 does not divide the 16 channels"):
        wp.sse_curve(w, 2, granularity="per_grouped_channel", group_size=3)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_sse_curve_at_chosen_widths_equals_the_full_curve(dtype):
    """sse_curve(nbits=[...]) (a penalty search per width, no full DP) gives the optimal
    objective of those widths: the full DP's, to rounding; also for small groups (exact
    solve fallback), groups with fewer distinct values than clusters, and sample weights."""
    rng = np.random.default_rng(11)
    cases = [
        ((rng.standard_normal((64, 2048)) * 0.05).astype(dtype), {}),  # grouped: windowed path
        ((rng.standard_normal((32, 24)) * 3).astype(dtype), {}),  # small groups: exact fallback
        (rng.choice(np.array([-1, 0, 0.5, 2], dtype=dtype), size=(32, 512)), {}),  # 4 distinct values
        ((rng.standard_normal((32, 1024)) * 0.05).astype(dtype),
         {"sample_weight": rng.uniform(0.1, 2, (32, 1024))}),
    ]
    for w, extra in cases:
        for gran in ("per_tensor", "per_grouped_channel"):
            full = wp.sse_curve(w, 6, granularity=gran, group_size=16, per_group=True, **extra)
            some = wp.sse_curve(w, 6, granularity=gran, group_size=16, per_group=True, nbits=[2, 3, 4, 6], **extra)
            np.testing.assert_allclose(some, full[:, [3, 7, 15, 63]], rtol=1e-9, atol=1e-12 * full[:, :1].max())
            one = wp.sse_curve(w, 6, granularity=gran, group_size=16, per_group=True, nbits=[4], num_threads=1, **extra)
            np.testing.assert_array_equal(one[:, 0], some[:, 2])  # independent of threads and of the other widths
    with pytest.raises(ValueError, match="nbits"):
        wp.sse_curve(cases[0][0], 4, nbits=[6])
    with pytest.raises(ValueError, match="nbits"):
        wp.sse_curve(cases[0][0], 4, nbits=[])
