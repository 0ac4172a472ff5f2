"""Joint compression (python/weightpress/results.py): every chain coremltools 9.0 supports.

Each result is checked twice: its parts, built into coremltools' own constexpr ops and
decompressed by coremltools, give exactly decompress(); and where coremltools is
deterministic, the dense weight coremltools' own joint compression of the same model
reconstructs equals ours byte for byte.
"""

import re

import numpy as np
import pytest

import weightpress as wp
from coreml_oracle import constexpr_chain_value, decompressed_weights, linear_model

RNG = np.random.default_rng(7)
# 64 x 256 fp16 = 16384 elements: coremltools clusters it with its exact kmeans1d path
W = (RNG.standard_normal((64, 256)) * 0.05).astype(np.float16)


def typed(values, name):
    from coremltools.converters.mil.mil import types

    return np.asarray(values).astype(types.nptype_from_builtin(types.string_to_builtin(name)))


def shift_scale(mb, q, data=None):
    data = q.data if data is None else data
    return mb.constexpr_blockwise_shift_scale(data=typed(data, q.dtype), scale=q.scale,
                                              offset=None if q.offset is None else typed(q.offset, q.dtype))


def sparse_palettize_ops(r):
    def build(mb):
        lut = r.lut if r.lut_quant is None else shift_scale(mb, r.lut_quant)
        mask, nonzero = mb.constexpr_lut_to_sparse(
            indices_mask=typed(r.indices_mask, "uint1"),
            indices_nonzero_data=typed(r.indices_nonzero_data, f"uint{r.nbits}"), lut=lut)
        return mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=mask)
    return build


def sparse_quantize_ops(r):
    def build(mb):
        q = r.quantized
        mask, nonzero = mb.constexpr_sparse_blockwise_shift_scale(
            data_mask=typed(r.data_mask, "uint1"), nonzero_data=typed(r.nonzero_data, q.dtype), scale=q.scale,
            offset=None if q.offset is None else typed(q.offset, q.dtype))
        return mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=mask)
    return build


def quantized_lut_ops(r, target):
    def build(mb):
        p = r.palettized
        indices = typed(p.indices, f"uint{p.nbits}")
        if target == "iOS26" and r.lut_quant.nbits == 8:  # integer LUT lookup, then dequantize
            dense = mb.constexpr_lut_to_dense(indices=indices, lut=typed(r.lut_quant.data, r.lut_quant.dtype))
            scale = r.lut_quant.scale.reshape(r.lut_quant.scale.shape[2:])
            offset = None if r.lut_quant.offset is None else typed(r.lut_quant.offset.reshape(scale.shape),
                                                                  r.lut_quant.dtype)
            out = mb.constexpr_blockwise_shift_scale(data=dense, scale=scale, offset=offset)
        else:
            out = mb.constexpr_lut_to_dense(indices=indices, lut=shift_scale(mb, r.lut_quant))
        if p.per_channel_scale is not None:
            out = mb.constexpr_blockwise_shift_scale(data=out, scale=p.per_channel_scale)
        return out
    return build


def palettized_quantize_ops(r):
    def build(mb):
        q, p = r.quantized, r.palettized
        dense = mb.constexpr_lut_to_dense(indices=typed(p.indices, f"uint{p.nbits}"), lut=r.lut)
        return mb.constexpr_blockwise_shift_scale(data=dense, scale=q.scale,
                                                  offset=None if q.offset is None else typed(q.offset, q.dtype))
    return build


def assert_ops_decompress(ct, build, result, target="iOS18"):
    value = constexpr_chain_value(getattr(ct.target, target), result.shape, result.dtype, build)
    ours = result.decompress()
    assert value.dtype == ours.dtype
    np.testing.assert_array_equal(value.view(np.uint16), ours.view(np.uint16))


# ---------------------------------------------------------------- parts through coremltools' ops


@pytest.mark.parametrize("surviving_only", [False, True])
@pytest.mark.parametrize("nbits", [2, 4])
def test_prune_palettize_parts_round_trip(ct, nbits, surviving_only):
    r = wp.prune(W, target_sparsity=0.6).palettize(nbits, surviving_only=surviving_only)
    assert r.indices_mask.sum() == r.indices_nonzero_data.size
    assert_ops_decompress(ct, sparse_palettize_ops(r), r)
    q = r.quantize_lut("int8")
    assert_ops_decompress(ct, sparse_palettize_ops(q), q)


@pytest.mark.parametrize("dtype,granularity", [("int8", "per_channel"), ("uint4", "per_block"), ("int4", "per_tensor")])
def test_prune_quantize_parts_round_trip(ct, dtype, granularity):
    r = wp.prune(W, n_m_ratio=(2, 4)).quantize(dtype, granularity=granularity, block_size=32)
    assert_ops_decompress(ct, sparse_quantize_ops(r), r)
    r = wp.quantize(W, dtype, mode="linear", granularity=granularity, block_size=32).prune(target_sparsity=0.3)
    assert_ops_decompress(ct, sparse_quantize_ops(r), r)


@pytest.mark.parametrize("target", ["iOS18", "iOS26"])
@pytest.mark.parametrize("dtype,mode", [("int8", "linear_symmetric"), ("uint8", "linear"), ("int4", "linear"),
                                        ("uint4", "linear_symmetric")])
def test_quantized_lut_parts_round_trip(ct, target, dtype, mode):
    p = wp.palettize(W, 4, granularity="per_grouped_channel", group_size=16)
    r = p.quantize_lut(dtype, mode=mode)
    assert r.lut_quant.scale.shape == (1, 1, 1, 1)
    assert_ops_decompress(ct, quantized_lut_ops(r, target), r, target)


def test_quantized_lut_with_per_channel_scale(ct):
    r = wp.palettize(W, 3, enable_per_channel_scale=True).quantize_lut("int8")
    assert_ops_decompress(ct, quantized_lut_ops(r, "iOS26"), r, "iOS26")


@pytest.mark.parametrize("round_lut", [False, True])
def test_quantize_palettize_parts_round_trip(ct, round_lut):
    r = wp.quantize(W, "int8").palettize(2, round_lut=round_lut, granularity="per_grouped_channel", group_size=8)
    assert r.lut.dtype == np.int8 and r.lut.shape == (8, 1, 4, 1)
    assert_ops_decompress(ct, palettized_quantize_ops(r), r, "iOS26")


def test_palettize_prune_parts_round_trip(ct):
    r = wp.palettize(W, 4, granularity="per_grouped_channel", group_size=16).prune(threshold=0.03)
    assert_ops_decompress(ct, sparse_palettize_ops(r), r)
    q = r.quantize_lut("uint8", mode="linear")
    assert_ops_decompress(ct, sparse_palettize_ops(q), q)


# ---------------------------------------------------------------- against coremltools' own chains


def _configs(cto):
    th = dict(weight_threshold=10)
    return {
        "prune": lambda **k: (cto.prune_weights, cto.OpMagnitudePrunerConfig(**th, **k)),
        "palettize": lambda **k: (cto.palettize_weights, cto.OpPalettizerConfig(**th, **k)),
        "quantize": lambda **k: (cto.linear_quantize_weights, cto.OpLinearQuantizerConfig(**th, **k)),
    }


CHAINS = {
    "prune->palettize": ([("prune", dict(target_sparsity=0.5)), ("palettize", dict(nbits=4))],
                         lambda: wp.prune(W, target_sparsity=0.5).palettize(4)),
    "prune(2:4)->palettize": ([("prune", dict(n_m_ratio=(2, 4))), ("palettize", dict(nbits=3))],
                              lambda: wp.prune(W, n_m_ratio=(2, 4)).palettize(3)),
    "prune->quantize": ([("prune", dict(target_sparsity=0.5)), ("quantize", dict(dtype="int4", granularity="per_block",
                                                                                  block_size=32))],
                        lambda: wp.prune(W, target_sparsity=0.5).quantize("int4", granularity="per_block",
                                                                          block_size=32)),
    "palettize->quantize": ([("palettize", dict(nbits=4)), ("quantize", dict(dtype="int8", granularity="per_tensor"))],
                            lambda: wp.palettize(W, 4).quantize_lut("int8")),
    # (a LUT of fewer than 10 entries is never quantized by coremltools: too small for weight.bin)
    "palettize->quantize(uint4)": ([("palettize", dict(nbits=4)),
                                    ("quantize", dict(dtype="uint4", mode="linear", granularity="per_tensor"))],
                                   lambda: wp.palettize(W, 4).quantize_lut("uint4", mode="linear")),
    "palettize(pcs)->quantize": ([("palettize", dict(nbits=4, enable_per_channel_scale=True)),
                                  ("quantize", dict(dtype="int8", granularity="per_tensor"))],
                                 lambda: wp.palettize(W, 4, enable_per_channel_scale=True).quantize_lut("int8")),
    "quantize->prune": ([("quantize", dict(dtype="int8")), ("prune", dict(target_sparsity=0.5))],
                        lambda: wp.quantize(W, "int8").prune(target_sparsity=0.5)),
    "palettize->prune": ([("palettize", dict(nbits=4)), ("prune", dict(target_sparsity=0.5))],
                         lambda: wp.palettize(W, 4).prune(target_sparsity=0.5)),
    "prune->palettize->quantize": ([("prune", dict(target_sparsity=0.5)), ("palettize", dict(nbits=4)),
                                    ("quantize", dict(dtype="int8", granularity="per_tensor"))],
                                   lambda: wp.prune(W, target_sparsity=0.5).palettize(4).quantize_lut("int8")),
    "palettize->prune->quantize": ([("palettize", dict(nbits=4)), ("prune", dict(target_sparsity=0.5)),
                                    ("quantize", dict(dtype="int8", granularity="per_tensor"))],
                                   lambda: wp.palettize(W, 4).prune(target_sparsity=0.5).quantize_lut("int8")),
}


def coremltools_chain(ct, steps, target):
    import coremltools.optimize.coreml as cto

    configs = _configs(cto)
    model = linear_model(W, target)
    for i, (kind, options) in enumerate(steps):
        fn, op_config = configs[kind](**options)
        model = fn(model, cto.OptimizationConfig(global_config=op_config), joint_compression=i > 0)
    return decompressed_weights(model)["lin"]


@pytest.mark.parametrize("target", ["iOS18", "iOS26"])
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_chain_matches_coremltools(ct, chain, target):
    steps, ours = CHAINS[chain]
    if chain == "palettize->quantize(uint4)" and target == "iOS26":
        # coremltools 9.0's canonicalize_quantized_lut_pattern moves the 4-bit LUT into
        # lut_to_dense, which takes 8-bit LUTs only: it raises. Our parts stay valid (the
        # iOS18 order, tested above).
        with pytest.raises(ValueError, match="lut_to_dense"):
            coremltools_chain(ct, steps, ct.target.iOS26)
        return
    theirs = coremltools_chain(ct, steps, getattr(ct.target, target))
    mine = ours().decompress()
    if chain == "palettize(pcs)->quantize" and target == "iOS18":
        # coremltools 9.0 on iOS18 leaves a per-channel-scale LUT unquantized (its const feeds
        # the scale op, not lut_to_dense): the chain silently stops after palettize.
        mine = ours().palettized.decompress()
    assert theirs.dtype == mine.dtype == np.float16
    np.testing.assert_array_equal(theirs.view(np.uint16), mine.view(np.uint16))


@pytest.mark.parametrize("nbits", [2, 4])
def test_quantize_palettize_objective_not_worse(ct, nbits):
    """coremltools clusters the integers with sklearn (not reproducible); our clustering is
    exact, so the integer-level error is never higher, and rounding the LUT helps further."""
    theirs = coremltools_chain(ct, [("quantize", dict(dtype="int8")), ("palettize", dict(nbits=nbits))],
                               ct.target.iOS18)
    q = wp.quantize(W, "int8")
    truncated = q.palettize(nbits)
    rounded = q.palettize(nbits, round_lut=True)

    def sse(dense):
        return wp._arrays.sum_squared_error(dense, W)

    # exact clustering of the integers, then the integer LUT: rounding each centroid to the
    # nearest integer minimises the integer-level error (truncation, coremltools' cast, cannot do better)
    ints = q.data.astype(np.float64)
    assert truncated.palettized.objective <= ((truncated.palettized.decompress() - ints) ** 2).sum() + 1e-6
    int_sse = [float(((r.palettized_data.astype(np.float64) - ints) ** 2).sum()) for r in (rounded, truncated)]
    assert int_sse[0] <= int_sse[1]
    assert sse(rounded.decompress()) <= sse(theirs)


# ---------------------------------------------------------------- surviving-values clustering


def test_surviving_only_lowers_error_on_real_weights(minilm_weights):
    w = minilm_weights["encoder.layer.0.intermediate.dense.weight"].astype(np.float16)
    pruned = wp.prune(w, target_sparsity=0.5)
    dense_kmeans = pruned.palettize(4)
    surviving = pruned.palettize(4, surviving_only=True)
    kept = pruned.mask

    def kept_sse(r):
        d = r.decompress().astype(np.float64) - w.astype(np.float64)
        return float((d[kept] ** 2).sum())

    # pruned positions are zero either way; the kept values get all 16 centroids
    np.testing.assert_array_equal(surviving.decompress()[~kept], 0)
    assert kept_sse(surviving) < 0.95 * kept_sse(dense_kmeans)
    assert surviving.sse < dense_kmeans.sse


# ---------------------------------------------------------------- what coremltools cannot do


@pytest.mark.parametrize("make,chain", [
    (lambda: wp.prune(W, target_sparsity=0.5).palettize(4, cluster_dim=2), "prune -> palettize"),
    (lambda: wp.prune(W, target_sparsity=0.5).palettize(4, enable_per_channel_scale=True), "prune -> palettize"),
    (lambda: wp.palettize(W, 4, cluster_dim=2).prune(target_sparsity=0.5), "palettize -> prune"),
    (lambda: wp.palettize(W, 4, enable_per_channel_scale=True).prune(target_sparsity=0.5), "palettize -> prune"),
    (lambda: wp.quantize(W, "int4").palettize(2), "quantize -> palettize"),
    (lambda: wp.quantize(W, "int8").palettize(2, enable_per_channel_scale=True), "quantize -> palettize"),
    (lambda: wp.quantize(W, "int8").palettize(2).prune(target_sparsity=0.5), "quantize -> palettize -> prune"),
    (lambda: wp.palettize(W, 2).quantize_lut("int8").prune(target_sparsity=0.5), "palettize -> quantize -> prune"),
])
def test_unsupported_chains_name_themselves(make, chain):
    with pytest.raises(NotImplementedError, match=re.escape(chain) + ":"):
        make()


def test_chain_option_errors():
    with pytest.raises(ValueError, match="per_tensor"):
        wp.palettize(W, 4).quantize_lut("int8", granularity="per_channel")
    with pytest.raises(ValueError, match="surviving_only applies to mode 'kmeans'"):
        wp.prune(W, target_sparsity=0.5).palettize(4, mode="uniform", surviving_only=True)
    with pytest.raises(ValueError, match="give the pruning options"):
        wp.palettize(W, 4).prune()
    with pytest.raises(ValueError, match="already quantized"):
        wp.prune(W, target_sparsity=0.5).palettize(4).quantize_lut("int8").quantize_lut("int8")
    with pytest.raises(ValueError, match="prune: target_sparsity"):
        wp.quantize(W, "int8").prune(target_sparsity=1.5)


# ---------------------------------------------------------------- sizes


def packed(count, bits):
    return (count * bits + 7) // 8


def test_nbytes_counts_every_stored_part():
    """nbytes is the sum of what the ops store, each part packed to whole bytes: counted here
    from the arrays the ops take, independently of stored_parts()."""
    r = wp.palettize(W, 4, granularity="per_grouped_channel", group_size=16)
    assert r.nbytes == packed(r.indices.size, 4) + r.lut.size * 2
    pcs = wp.palettize(W, 4, enable_per_channel_scale=True)  # iOS18 repeats the LUT per input position
    assert pcs.nbytes == packed(W.size, 4) + pcs.ios18("iOS18").lut.size * 2 + pcs.per_channel_scale.size * 2
    assert pcs.nbytes_for("iOS26") == packed(W.size, 4) + pcs.lut.size * 2 + pcs.per_channel_scale.size * 2
    q = wp.quantize(W, "uint4", mode="linear", granularity="per_block", block_size=32)
    assert q.nbytes == packed(W.size, 4) + q.scale.size * 2 + packed(q.offset.size, 4)
    p = wp.prune(W, target_sparsity=0.5)
    assert p.nbytes == packed(W.size, 1) + p.nonzero_data.size * 2
    ql = wp.palettize(W, 4).quantize_lut("uint8", mode="linear")  # the LUT's scale and offset count too
    assert ql.nbytes == packed(W.size, 4) + 16 + ql.lut_quant.scale.size * 2 + ql.lut_quant.offset.size
    sp = wp.prune(W, target_sparsity=0.5).palettize(4).quantize_lut("int8")
    assert sp.nbytes == (packed(W.size, 1) + packed(sp.indices_nonzero_data.size, 4) + 16
                         + sp.lut_quant.scale.size * 2)
    sq = wp.prune(W, target_sparsity=0.5).quantize("int4", granularity="per_block", block_size=32)
    assert sq.nbytes == packed(W.size, 1) + packed(sq.nonzero_data.size, 4) + sq.scale.size * 2
    pq = wp.quantize(W, "int8", granularity="per_block", block_size=64).palettize(2)
    # iOS18: the 4-entry integer LUT is repeated per scale block, as coremltools writes it
    blocks = pq.scale.size
    assert pq.nbytes == packed(W.size, 2) + blocks * 4 + blocks * 2
    assert pq.nbytes_for("iOS26") == packed(W.size, 2) + 4 + blocks * 2
