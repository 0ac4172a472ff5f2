"""Error feedback (GPTQ-style rounding to fixed LUTs or scales): the C++ kernel against a
numpy transcription of the same algorithm, and its effect on a layer's output."""

import numpy as np
import pytest

import weightpress as wp
from weightpress import _core


def layer(rng, rows=48, cols=64, n=512, dtype=np.float16):
    """A weight and calibration inputs with skewed, correlated channels."""
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(dtype)
    mix = rng.standard_normal((cols, cols)) * 0.3 + np.eye(cols)
    x = rng.standard_normal((n, cols)) @ mix * np.where(np.arange(cols) < 8, 6.0, 0.5)
    return w, x


def reference_factor(h, damping):
    h = h.copy()
    diag = np.diag(h).copy()
    diag[diag == 0] = 1
    np.fill_diagonal(h, diag + damping * diag.mean())
    return np.linalg.cholesky(np.linalg.inv(h)).T  # upper, H^-1 = U^T U


def reference_feedback(w, u, nearest):
    """GPTQ, row-vectorised, the same operations in the same order as the kernel."""
    w = w.astype(np.float64).copy()
    rows, cols = w.shape
    codes = np.zeros((rows, cols), np.int64)
    for i in range(cols):
        v, codes[:, i] = nearest(i, w[:, i])
        e = (w[:, i] - v) / u[i, i]
        w[:, i + 1:] -= e[:, None] * u[i, i + 1:][None, :]
    return codes


def test_inverse_hessian_factor_matches_numpy():
    rng = np.random.default_rng(0)
    _, x = layer(rng)
    h = x.T @ x
    u = _core.inverse_hessian_factor(h, 0.01)
    ref = reference_factor(h, 0.01)
    assert np.allclose(np.tril(u, -1), 0)
    np.testing.assert_allclose(u, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    assert _core.inverse_hessian_factor(np.zeros((3, 3)) - np.eye(3), 0.0) is None  # not positive definite
    for threads in (2, 3, 7):  # the columns of U are solved independently: the same bits
        assert np.array_equal(_core.inverse_hessian_factor(h, 0.01, threads), u)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_grouped_channel"])
def test_lut_feedback_equals_the_reference_and_beats_plain_rounding(dtype, granularity):
    rng = np.random.default_rng(1)
    w, x = layer(rng, dtype=dtype)
    h = x.T @ x
    r = wp.palettize(w, 3, granularity=granularity, group_size=16)
    fed = r.error_feedback(h, damping=0.01)
    assert np.array_equal(fed.lut, r.lut)  # the format's numbers stay; only indices change

    lut = r.lut.reshape(-1, 8).astype(np.float64)  # [groups, entries]
    row_lut = np.arange(w.shape[0]) // (w.shape[0] // lut.shape[0])

    def nearest(i, col):
        order = np.argsort(lut, axis=1, kind="stable")
        sorted_lut = np.take_along_axis(lut, order, axis=1)[row_lut]
        k = np.abs(col[:, None] - sorted_lut).argmin(1)
        return sorted_lut[np.arange(len(col)), k], order[row_lut, k]

    codes = reference_feedback(w, reference_factor(h, 0.01), nearest)
    assert np.array_equal(fed.indices.astype(np.int64), codes)
    # the layer's output errs less than with every weight at its nearest entry
    out = x @ w.astype(np.float64).T
    plain = np.sum((out - x @ r.decompress().astype(np.float64).T) ** 2)
    fed_err = np.sum((out - x @ fed.decompress().astype(np.float64).T) ** 2)
    assert fed_err < 0.7 * plain, (fed_err, plain)


@pytest.mark.parametrize("dtype, mode, granularity", [
    ("int4", "linear_symmetric", "per_block"), ("uint4", "linear", "per_block"),
    ("int8", "linear_symmetric", "per_channel"), ("uint8", "linear", "per_tensor")])
def test_quantize_feedback_equals_the_reference_and_beats_plain_rounding(dtype, mode, granularity):
    rng = np.random.default_rng(2)
    w, x = layer(rng)
    h = x.T @ x
    r = wp.quantize(w, dtype, mode=mode, granularity=granularity, block_size=16, fit="best")
    fed = r.error_feedback(h)
    assert fed.scale.tobytes() == r.scale.tobytes()
    assert (fed.offset is None) == (r.offset is None) and (r.offset is None or np.array_equal(fed.offset, r.offset))
    signed = dtype.startswith("int")
    nbits = int(dtype[-1])
    qmin, qmax = (-(1 << (nbits - 1)), (1 << (nbits - 1)) - 1) if signed else (0, (1 << nbits) - 1)
    grid = r.scale.shape
    scales = np.repeat(np.repeat(r.scale.astype(np.float32), w.shape[0] // grid[0], 0), w.shape[1] // grid[1], 1)
    zps = np.zeros(w.shape, np.int64) if r.offset is None else \
        np.repeat(np.repeat(r.offset.astype(np.int64), w.shape[0] // grid[0], 0), w.shape[1] // grid[1], 1)
    levels = np.arange(qmin, qmax + 1)

    def nearest(i, col):
        s, z = scales[:, i], zps[:, i]
        values = (s[:, None] * (levels[None, :] - z[:, None]).astype(np.float32)).astype(np.float16).astype(np.float64)
        k = np.abs(col[:, None] - values).argmin(1)
        return values[np.arange(len(col)), k], levels[k]

    codes = reference_feedback(w, reference_factor(h, 0.01), nearest)
    assert np.array_equal(fed.data.astype(np.int64), codes)
    out = x @ w.astype(np.float64).T
    plain = np.sum((out - x @ r.decompress().astype(np.float64).T) ** 2)
    fed_err = np.sum((out - x @ fed.decompress().astype(np.float64).T) ** 2)
    assert fed_err < 0.8 * plain, (fed_err, plain)


def test_threads_do_not_change_the_codes():
    rng = np.random.default_rng(3)
    w, x = layer(rng, rows=64)
    h = x.T @ x
    r = wp.quantize(w, "int4", granularity="per_block", block_size=16)
    one, two = r.error_feedback(h, num_threads=1), r.error_feedback(h, num_threads=2)
    assert np.array_equal(one.data, two.data)


def test_bad_input():
    rng = np.random.default_rng(4)
    w, x = layer(rng)
    h = x.T @ x
    r = wp.palettize(w, 4)
    with pytest.raises(ValueError, match="the Hessian must be 64x64"):
        r.error_feedback(h[:10, :10])
    bad = h.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        r.error_feedback(bad)
    with pytest.raises(ValueError, match="damping must be"):
        r.error_feedback(h, damping=-1)
    with pytest.raises(ValueError, match="not positive definite"):
        r.error_feedback(-np.eye(64), damping=0.0)
    with pytest.raises(ValueError, match="output channels on axis 0"):
        wp.quantize(w.reshape(-1), "int8").error_feedback(h)


def test_a_conv_weight_is_fed_back_as_its_unfolded_matrix():
    """A conv weight (out, in, kh, kw) against the X^T X of unfolded inputs: exactly the 2-D
    weight (out, in*kh*kw), blocks of input channels spanning their kernel positions."""
    rng = np.random.default_rng(5)
    w, x = layer(rng)
    h = x.T @ x
    conv = w.reshape(48, 16, 2, 2)
    for flat, shaped in [
        (wp.palettize(w, 3, granularity="per_grouped_channel", group_size=16),
         wp.palettize(conv, 3, granularity="per_grouped_channel", group_size=16)),
        (wp.quantize(w, "int4", granularity="per_block", block_size=16),
         wp.quantize(conv, "int4", granularity="per_block", block_size=4)),
        (wp.quantize(w, "uint8"), wp.quantize(conv, "uint8")),
    ]:
        assert np.array_equal(flat.decompress(), shaped.decompress().reshape(48, 64))  # the same format's numbers
        a, b = flat.error_feedback(h, damping=0.1), shaped.error_feedback(h, damping=0.1)
        assert b.shape == conv.shape
        assert np.array_equal(a.decompress(), b.decompress().reshape(48, 64))


def test_choose_damping_scores_held_out_folds():
    """Each candidate's score is the error of feedback fitted on the other folds, measured on
    each fold in turn; the least wins. (Whether that beats a fixed damping on new data is the
    benchmark's question: benchmarks/bench_calibrate.py on MiniLM.)"""
    from weightpress.calibrate import DAMPING_CANDIDATES, choose_damping

    rng = np.random.default_rng(5)
    w, _ = layer(rng, rows=32, cols=64)
    folds = [x.T @ x for x in (layer(rng, cols=64, n=40)[1] for _ in range(3))]
    r = wp.quantize(w, "int4", granularity="per_block", block_size=16, fit="best")
    damping, scores = choose_damping(r, folds, stop_early=False)
    assert set(scores) == set(DAMPING_CANDIDATES) and scores[damping] == min(scores.values())
    # the default search walks down from the largest and stops at the first rise: the same
    # scores for what it tried, and here (one minimum) the same choice
    early, tried = choose_damping(r, folds)
    assert early == damping and all(tried[d] == scores[d] for d in tried)
    descending = sorted(DAMPING_CANDIDATES, reverse=True)
    assert list(tried) == descending[:len(tried)] and len(tried) < len(descending)
    total = sum(folds)
    for d in (0.01, 1.0):
        expected = 0.0
        for h in folds:
            dw = w.astype(np.float64) - r.error_feedback(total - h, damping=d).decompress().astype(np.float64)
            expected += float(np.sum((dw @ h) * dw))
        assert scores[d] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="at least two folds"):
        choose_damping(r, folds[:1])
