"""weightpress.quantize: byte-identical to coremltools' compute_qparams_by_dtype."""

import numpy as np
import pytest

from coreml_oracle import constexpr_value
import weightpress as wp
from weightpress import quantize


def ct_qparams(w, dtype, mode, block_sizes):
    from coremltools.converters.mil.mil import types
    from coremltools.optimize._utils import compute_qparams_by_dtype

    with np.errstate(all="ignore"):
        return compute_qparams_by_dtype(w, types.string_to_builtin(dtype), mode.upper(), list(block_sizes))


def assert_identical(r, ref):
    q, s, z = ref
    assert r.data.dtype == q.dtype and r.data.shape == q.shape and np.array_equal(r.data, q)
    assert r.scale.dtype == s.dtype and r.scale.shape == s.shape and r.scale.tobytes() == s.tobytes()
    if z is None:
        assert r.offset is None
    else:
        assert r.offset.dtype == z.dtype and r.offset.shape == z.shape and np.array_equal(r.offset, z)


@pytest.mark.parametrize("wdtype", [np.float16, np.float32])
@pytest.mark.parametrize("dtype", ["int4", "uint4", "int8", "uint8"])
@pytest.mark.parametrize("mode", ["linear_symmetric", "linear"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_block"])
def test_identical_to_coremltools(wdtype, dtype, mode, granularity):
    rng = np.random.default_rng(hash((wdtype.__name__, dtype, mode, granularity)) % 2**32)
    # the largest scale keeps every fp16 block's range below 65504 (an overflowing range is refused:
    # test_a_scale_that_overflows_is_refused_not_written)
    for scale in (1e-6, 0.02, 3.0, 900.0 if wdtype == np.float16 else 2000.0):
        w = (rng.standard_normal((24, 96)) * scale).astype(wdtype)
        w[0] = 0  # all-zero channel / blocks: 0/0
        w[1, :32] = -0.0
        w[2, 5] = w[2].max() * 7  # an outlier
        r = quantize(w, dtype, mode=mode, granularity=granularity, block_size=32)
        assert_identical(r, ct_qparams(w, dtype, mode, r.block_sizes))


@pytest.mark.parametrize("dtype", ["int4", "uint8"])
def test_conv_and_tuple_blocks_and_other_axes(dtype):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((8, 16, 3, 3)) * 0.1).astype(np.float16)
    for kwargs, expected in [
        (dict(granularity="per_block", block_size=8), [1, 8, 0, 0]),
        (dict(granularity="per_block", block_size=(2, 4, 0, 3)), [2, 4, 0, 3]),
        (dict(granularity="per_block", block_size=4, channel_axis=1, input_axis=0), [4, 1, 0, 0]),
        (dict(granularity="per_channel", channel_axis=1), [0, 1, 0, 0]),
    ]:
        r = quantize(w, dtype, mode="linear", **kwargs)
        assert list(r.block_sizes) == expected
        assert_identical(r, ct_qparams(w, dtype, "linear", expected))


@pytest.mark.parametrize("wdtype", [np.float16, np.float32])
@pytest.mark.parametrize("dtype,mode", [("int4", "linear_symmetric"), ("uint4", "linear"), ("int8", "linear")])
def test_every_kernel_path_identical_and_packed_as_core_ml_stores_it(wdtype, dtype, mode):
    # The kernel takes one of three paths by block layout: short contiguous blocks (batched
    # parameters), long contiguous blocks (cut into pieces of 16,384 values, extrema merged),
    # blocks that are not contiguous (conv_transpose's output axis 1); 4-bit data is packed
    # as it is produced, in chunks that must meet on byte boundaries (odd block lengths).
    rng = np.random.default_rng(7)
    cases = [
        ((40, 20000), dict(granularity="per_channel")),                        # long rows
        ((6, 7001), dict(granularity="per_tensor")),                           # one long odd block
        ((3, 40001), dict(granularity="per_channel")),                         # long odd rows
        ((24, 96), dict(granularity="per_block", block_size=32)),              # short blocks
        ((9, 35), dict(granularity="per_block", block_size=5)),                # short odd blocks
        ((17, 3), dict(granularity="per_channel")),                            # odd rows of 3
        ((16, 12, 3, 3), dict(granularity="per_block", block_size=4, channel_axis=1, input_axis=0)),  # strided
    ]
    for shape, kwargs in cases:
        w = (rng.standard_normal(shape) * 0.05).astype(wdtype)
        w.reshape(-1)[:3] = [1e-7, -3e-8, 0.0]  # subnormal halves in the first block
        r = quantize(w, dtype, mode=mode, **kwargs)
        assert_identical(r, ct_qparams(w, dtype, mode, r.block_sizes))
        assert np.array_equal(r.packed_data, wp.pack_bits(r.data.astype(np.int8 if r.signed else np.uint8),
                                                           r.nbits)), (shape, kwargs)


def test_fp16_edge_cases_underflow_and_overflow():
    w = np.zeros((3, 16), np.float16)
    w[1] = 1e-6  # the scale underflows to 0 in fp16: w / 0 = inf, clipped
    w[2, 0] = -3e-8  # subnormal minimum
    for dtype in ("int8", "uint8", "int4", "uint4"):
        for mode in ("linear_symmetric", "linear"):
            r = quantize(w, dtype, mode=mode)
            assert_identical(r, ct_qparams(w, dtype, mode, r.block_sizes))
    # rows whose hi - lo overflows fp16: coremltools writes an inf scale (NaN after
    # decompression); weightpress refuses them (test_a_scale_that_overflows_is_refused_not_written)
    for row in (np.linspace(-40000, 40000, 16), np.full(16, 65504.0), np.tile([-65504.0, 0.0], 8)):
        w = row.astype(np.float16)[None]
        for mode in ("linear_symmetric", "linear"):
            r = max(abs(float(w.min())), float(w.max()))
            lo, hi = (-r, r) if mode == "linear_symmetric" else (min(0.0, float(w.min())), max(0.0, float(w.max())))
            if np.isinf(np.float16(hi) - np.float16(lo)):
                with pytest.raises(wp.NotApplicableError, match="not finite"):
                    quantize(w, "int8", mode=mode)
            else:
                q = quantize(w, "int8", mode=mode)
                assert_identical(q, ct_qparams(w, "int8", mode, q.block_sizes))


def test_real_minilm_weights(minilm_weights):
    names = [n for n, v in minilm_weights.items() if "encoder.layer.0" in n and v.ndim == 2]
    assert names
    for i, name in enumerate(names):
        for wdtype in (np.float16, np.float32):
            w = minilm_weights[name].astype(wdtype)
            dtype, mode, gran = [("int4", "linear_symmetric", "per_block"), ("uint8", "linear", "per_channel"),
                                 ("int8", "linear", "per_block"), ("uint4", "linear_symmetric", "per_tensor")][i % 4]
            r = quantize(w, dtype, mode=mode, granularity=gran, block_size=32)
            assert_identical(r, ct_qparams(w, dtype, mode, r.block_sizes))


def test_decompress_matches_coremltools_ops(ct):
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(2)
    w = (rng.standard_normal((16, 64)) * 0.05).astype(np.float16)
    for dtype, mode, gran in [("int4", "linear_symmetric", "per_block"), ("uint4", "linear", "per_block"),
                              ("int8", "linear", "per_channel"), ("uint8", "linear_symmetric", "per_tensor")]:
        r = quantize(w, dtype, mode=mode, granularity=gran, block_size=16)
        data_type = types.nptype_from_builtin(types.string_to_builtin(dtype))
        value = constexpr_value(ct.target.iOS18, lambda mb: mb.constexpr_blockwise_shift_scale(
            data=r.data.astype(data_type), scale=r.scale,
            offset=None if r.offset is None else r.offset.astype(data_type)))
        assert value.tobytes() == r.decompress().tobytes()
        assert r.decompress().dtype == np.float16


def test_ios16_form(ct):
    w = (np.random.default_rng(3).standard_normal((16, 40)) * 0.05).astype(np.float16)
    for dtype, mode, gran in [("int8", "linear_symmetric", "per_channel"), ("uint8", "linear", "per_tensor")]:
        r = quantize(w, dtype, mode=mode, granularity=gran)
        p = r.ios16
        value = constexpr_value(ct.target.iOS16, lambda mb: mb.constexpr_affine_dequantize(
            quantized_data=p.quantized_data, zero_point=p.zero_point, scale=p.scale, axis=p.axis))
        assert value.tobytes() == r.decompress().tobytes()
    with pytest.raises(ValueError, match="8-bit data only"):
        quantize(w, "int4").ios16
    with pytest.raises(ValueError, match="needs iOS18"):
        quantize(w, "int8", granularity="per_block", block_size=8).ios16


def test_int4_packing_matches_coremltools():
    from coremltools.optimize._utils import pack_elements_into_bits

    w = (np.random.default_rng(4).standard_normal((8, 33)) * 0.05).astype(np.float16)
    r = quantize(w, "int4", granularity="per_tensor")
    assert r.packed_data.tobytes() == pack_elements_into_bits(r.data, 4).tobytes()


def test_thread_count_independence_and_torch():
    torch = pytest.importorskip("torch")
    w = (np.random.default_rng(5).standard_normal((256, 512)) * 0.05).astype(np.float16)
    a = quantize(w, "int4", granularity="per_block", block_size=32, num_threads=1)
    b = quantize(torch.from_numpy(w), "int4", granularity="per_block", block_size=32, num_threads=2)
    assert np.array_equal(a.data, b.data) and a.scale.tobytes() == b.scale.tobytes()


@pytest.mark.parametrize(
    "kwargs,weight,error,match",
    [
        (dict(dtype="int3"), None, ValueError, "dtype must be one of"),
        (dict(mode="affine"), None, ValueError, "mode must be one of"),
        (dict(granularity="per_group"), None, ValueError, "granularity must be one of"),
        (dict(granularity="per_block", block_size=48), None, ValueError, "block size 48 does not divide axis 1 of size 64"),
        (dict(granularity="per_block", block_size=(1, 2, 3)), None, ValueError, "one entry per axis"),
        (dict(granularity="per_block", block_size=0), None, ValueError, "block_size must be an int >= 1"),
        (dict(), np.full((4, 64), np.inf, np.float16), ValueError, "contains inf"),
        (dict(), np.full((4, 64), np.nan, np.float32), ValueError, "contains nan"),
        (dict(), np.ones((4, 64), np.int8), TypeError, "dtype must be float16 or float32, got int8"),
        (dict(granularity="per_block"), np.ones(64, np.float16), ValueError, "rank >= 2"),
    ],
)
def test_bad_input(kwargs, weight, error, match):
    w = np.ones((4, 64), np.float16) if weight is None else weight
    with pytest.raises(error, match=match) as info:
        quantize(w, **kwargs)
    assert str(info.value).startswith("quantize:")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_single_nonfinite_value_in_a_later_block_is_refused(dtype, bad):
    w = np.ones((64, 64), dtype)
    w[40, 17] = bad
    with pytest.raises(ValueError, match=r"quantize: weight contains .* at flat index 2577"):
        quantize(w, "int8", granularity="per_block", block_size=16)


def test_a_scale_that_overflows_is_refused_not_written(ct, tmp_path):
    """An fp16 weight holding -65504 and 65504: linear_symmetric int4's scale (max - min) / 14
    overflows to inf in fp16 (in coremltools too), and the weight would decompress to NaN.
    The array API refuses it naming the block, the model level skips it with a warning, and
    the coremltools hooks skip it too."""
    import logging

    from coreml_oracle import linear_model
    from weightpress.config import QuantizeConfig
    from weightpress.job import compress_model

    w = (np.random.default_rng(0).standard_normal((64, 256)) * 0.05).astype(np.float16)
    w[3, 5], w[3, 6] = 65504, -65504
    with pytest.raises(wp.NotApplicableError, match="scale of 1 block.*not finite.*would decompress to NaN"):
        quantize(w, "int4", mode="linear", granularity="per_block", block_size=32)
    assert np.isfinite(quantize(w[4:], "int4", granularity="per_block", block_size=32).scale).all()
    src = str(tmp_path / "big.mlpackage")
    linear_model(w, ct.target.iOS18).save(src)
    with pytest.raises(wp.ConfigError, match="no compressible weights"):  # the only weight is skipped
        compress_model(src, str(tmp_path / "o.mlpackage"), QuantizeConfig(dtype="int4", mode="linear",
                                                                           granularity="per_block"))
    import coremltools.optimize.coreml as cto
    import weightpress.coreml as wpc

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    ct_log = logging.getLogger("coremltools")
    level = ct_log.level
    ct_log.setLevel(logging.WARNING)
    ct_log.addHandler(handler)
    try:
        with wpc.enabled():
            out = cto.linear_quantize_weights(ct.models.MLModel(src, skip_model_load=True), cto.OptimizationConfig(
                global_config=cto.OpLinearQuantizerConfig(dtype="int4", mode="linear", granularity="per_block")))
    finally:
        ct_log.removeHandler(handler)
        ct_log.setLevel(level)
    assert not any(op.type.startswith("constexpr_") for op in out.get_spec().mlProgram.functions["main"]
                   .block_specializations["CoreML8"].operations)
    assert any("not finite" in r.getMessage() for r in records)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_sse_from_the_kernel_equals_the_decompressed_error(dtype):
    """QuantizeResult.sse (computed from the stored parts in C++, packed or not) equals the SSE
    of decompress() against the weight, for every dtype, mode and block layout."""
    from weightpress import _core
    from weightpress._arrays import sum_squared_error

    rng = np.random.default_rng(4)
    for shape, grans in [((64, 96), ("per_tensor", "per_channel", 32)), ((8, 16, 3, 3), ("per_channel", 8)),
                         ((33, 64), ("per_tensor", 16))]:
        w = (rng.standard_normal(shape) * rng.uniform(0.01, 3)).astype(dtype)
        for d in ("int8", "uint8", "int4", "uint4"):
            for mode in ("linear_symmetric", "linear"):
                for g in grans:
                    kw = {"granularity": g} if isinstance(g, str) else {"granularity": "per_block", "block_size": g}
                    r = quantize(w, d, mode=mode, **kw)
                    assert r.sse == pytest.approx(sum_squared_error(r.decompress(), w), rel=1e-9), (shape, d, mode, g)
    r = quantize((rng.standard_normal((256, 512)) * 0.1).astype(dtype), "int4", granularity="per_block",
                 block_size=32)
    bits = (lambda a: a.view(np.uint16)) if dtype == np.float16 else (lambda a: a)
    args = (bits(r._reference), [1, 32], 4, True, r.packed_data, True, bits(r.scale), None)
    assert _core.quantize_sse(*args, threads=1) == _core.quantize_sse(*args, threads=2)
