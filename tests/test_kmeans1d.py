"""The exact 1-D k-means solvers (cpp/src/kmeans1d.cpp, kmeans1d_windows.cpp).

The windowed DP (a Lagrangian certificate of where boundaries can be, then the full DP on
the survivors) must give exactly what the full DP gives: the same partition and
bit-identical centroids, on every kind of data, including massive ties. Both must be
optimal against an independent textbook DP and brute force.
"""

import numpy as np
import pytest

from reference import kmeans1d_bruteforce, kmeans1d_dp_ref, partition_cost
from weightpress import _core


def fp16_histogram(values):
    """Sorted distinct fp16 values (as float64) and their counts."""
    v, c = np.unique(np.asarray(values, dtype=np.float16).astype(np.float64), return_counts=True)
    return v, c.astype(np.float64)


def solve(x, w, k, method):
    starts, centroids, info = _core.kmeans1d_solve(np.asarray(x, np.float64), np.asarray(w, np.float64), k, method)
    return starts, centroids, info


def assert_same(x, w, k):
    """windowed == full, bit for bit; returns the windowed stats."""
    s_full, c_full, _ = solve(x, w, k, "full")
    s_win, c_win, info = solve(x, w, k, "windowed")
    assert np.array_equal(s_full, s_win), (k, info)
    assert c_full.tobytes() == c_win.tobytes(), (k, info)
    return info


def gaussian_outliers(rng, n, scale=0.02):
    v = rng.standard_normal(n) * scale
    idx = rng.integers(0, n, size=max(1, n // 1000))
    v[idx] *= 8
    return v


DATA = {
    "gaussian+outliers": lambda rng, n: gaussian_outliers(rng, n),
    "uniform": lambda rng, n: rng.uniform(-1, 1, n),
    "student-t": lambda rng, n: rng.standard_t(2.5, n) * 0.01,
    "bimodal": lambda rng, n: np.concatenate([rng.normal(-0.05, 0.01, n // 2), rng.normal(0.04, 0.02, n - n // 2)]),
    "laplace": lambda rng, n: rng.laplace(0, 0.03, n),
}


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("elements,k", [(4096, 4), (4096, 8), (4096, 16), (65536, 16), (16384, 64), (65536, 256),
                                        (2048, 3), (1500, 32)])
def test_windowed_equals_full_fp16_histograms(kind, elements, k):
    rng = np.random.default_rng(abs(hash((kind, elements, k))) % 2**32)
    x, w = fp16_histogram(DATA[kind](rng, elements))
    if len(x) < k:
        pytest.skip("fewer distinct values than clusters")
    info = assert_same(x, w, k)
    if len(x) >= 8 * k:  # the windowed solver must really run here, not fall back
        assert info["windowed"], info


@pytest.mark.parametrize("seed", range(12))
def test_windowed_equals_full_importance_weights(seed):
    # sensitivity-weighted k-means: arbitrary positive weights on float32-distinct values
    rng = np.random.default_rng(seed)
    x = np.unique(rng.standard_normal(3000).astype(np.float32).astype(np.float64))
    w = rng.uniform(1e-3, 5.0, x.size) ** 2
    for k in (5, 16, 40):
        info = assert_same(x, w, k)
        assert info["windowed"], info


def test_windowed_survivors_are_few():
    # the certificate leaves about one position per boundary on real-looking data
    rng = np.random.default_rng(7)
    x, w = fp16_histogram(gaussian_outliers(rng, 65536))
    _, _, info = solve(x, w, 16, "auto")
    assert info["windowed"] and info["survivors"] <= 4 * 16, info
    _, _, info = solve(x, w, 256, "auto")
    assert info["windowed"] and info["survivors"] <= 8 * 256, info


@pytest.mark.parametrize("n,k", [(40, 3), (64, 4), (120, 5), (200, 8), (300, 16)])
@pytest.mark.parametrize("seed", range(3))
def test_optimal_against_textbook_dp(n, k, seed):
    rng = np.random.default_rng(seed * 1000 + n)
    x = np.unique(np.round(rng.standard_normal(n) * 0.1, 4))
    w = rng.integers(1, 20, x.size).astype(np.float64)
    for method in ("full", "windowed"):
        starts, _, _ = solve(x, w, k, method)
        assert partition_cost(x, w, starts[:-1]) == pytest.approx(kmeans1d_dp_ref(x, w, k), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("n,k", [(10, 3), (12, 4), (11, 5), (9, 3)])
def test_optimal_against_brute_force(n, k):
    rng = np.random.default_rng(n * 10 + k)
    x = np.sort(rng.choice(np.arange(-50, 50), n, replace=False)).astype(np.float64) / 7
    w = rng.integers(1, 9, n).astype(np.float64)
    for method in ("full", "windowed"):
        starts, _, _ = solve(x, w, k, method)
        assert partition_cost(x, w, starts[:-1]) == pytest.approx(kmeans1d_bruteforce(x, w, k), rel=1e-12)


# ---------------------------------------------------------------- massive ties


@pytest.mark.parametrize("n,k", [(64, 3), (100, 7), (256, 16), (1000, 16), (4096, 64), (5000, 7)])
def test_equally_spaced_equal_weights(n, k):
    # every shift of a boundary by one point changes the cost by tiny, exactly structured amounts
    x = np.arange(n, dtype=np.float64)
    w = np.ones(n)
    assert_same(x, w, k)
    starts, _, _ = solve(x, w, k, "auto")
    if n <= 256:
        assert partition_cost(x, w, starts[:-1]) == pytest.approx(kmeans1d_dp_ref(x, w, k), rel=1e-12)


@pytest.mark.parametrize("k", [3, 4, 8, 16])
def test_symmetric_histogram(k):
    half = np.sort(np.random.default_rng(k).uniform(0.01, 1, 300))
    x = np.concatenate([-half[::-1], half])
    counts = np.random.default_rng(k + 1).integers(1, 50, 300).astype(np.float64)
    w = np.concatenate([counts[::-1], counts])
    assert_same(x, w, k)


def test_subnormal_fp16_values():
    bits = np.arange(1, 1024, dtype=np.uint16)  # every positive fp16 subnormal
    x = np.concatenate([-bits[::-1].view(np.float16), [0], bits.view(np.float16)]).astype(np.float64)
    w = np.random.default_rng(3).integers(1, 100, x.size).astype(np.float64)
    for k in (4, 16, 64):
        assert_same(x, w, k)


def test_two_value_scales():
    # a dense core and a few far values: the curve is irregular, the chord search must cope
    rng = np.random.default_rng(11)
    core = rng.normal(0, 1e-3, 5000)
    far = np.array([-50.0, -10.0, 3.0, 40.0, 41.0])
    x, w = fp16_histogram(np.concatenate([core, far]))
    for k in (3, 5, 8, 16):
        assert_same(x, w, k)


def test_fallback_on_small_problems_is_reported():
    x = np.arange(20, dtype=np.float64)
    _, _, info = solve(x, np.ones(20), 4, "auto")
    assert not info["windowed"] and info["fallback"]
