"""Sub-byte packing: byte-identical to coremltools' pack_elements_into_bits."""

import numpy as np
import pytest

import weightpress as wp
from weightpress import _core
from reference import pack_bits_ref

SIZES = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 127, 129, 1000, 8 * 65536 + 3]


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 5, 6, 7, 8])  # one packing body per width
@pytest.mark.parametrize("size", SIZES)
def test_pack_matches_coremltools_and_reference(nbits, size):
    from coremltools.optimize._utils import pack_elements_into_bits, restore_elements_from_packed_bits

    values = np.random.default_rng(size * nbits).integers(0, 1 << nbits, size=size).astype(np.uint8)
    packed = wp.pack_bits(values, nbits)
    assert packed.dtype == np.uint8 and packed.size == (size * nbits + 7) // 8
    assert packed.tobytes() == pack_bits_ref(values, nbits).tobytes()
    if size < 100_000:  # coremltools' packer is a slow numpy loop
        assert packed.tobytes() == pack_elements_into_bits(values, nbits).tobytes()
        assert np.array_equal(restore_elements_from_packed_bits(packed, nbits, size), wp.unpack_bits(packed, size, nbits))
    assert np.array_equal(wp.unpack_bits(packed, size, nbits), values)


def test_worked_examples():
    assert wp.pack_bits(np.array([1, 2, 3]), 4).tobytes() == bytes([0x21, 0x03])
    assert wp.pack_bits(np.array([1, 2, 3, 4, 5, 6, 7, 0, 1]), 3).tobytes() == bytes([0xD1, 0x58, 0x1F, 0x01])
    assert wp.pack_bits(np.array([-1, 2, -8], dtype=np.int8), 4).tobytes() == bytes([0x2F, 0x08])
    assert wp.pack_bits(np.array([1, 0, 0, 1, 0, 0], dtype=bool), 1).tobytes() == bytes([0x09])
    assert np.array_equal(wp.unpack_bits(bytes([0x2F, 0x08]), 3, 4, signed=True), [-1, 2, -8])


def test_thread_count_does_not_change_bytes():
    values = np.random.default_rng(0).integers(0, 8, size=3 * 8 * 65536 + 5).astype(np.uint8)
    assert np.array_equal(wp.pack_bits(values, 3, num_threads=1), wp.pack_bits(values, 3, num_threads=2))


def test_bad_nbits():
    with pytest.raises(ValueError, match="pack_bits: nbits must be in 1..8, got 9"):
        wp.pack_bits(np.zeros(4, np.uint8), 9)
    with pytest.raises(TypeError, match="pack_bits: values must be integers"):
        wp.pack_bits(np.zeros(4, np.float32), 4)
    with pytest.raises(ValueError, match="too short"):
        wp.unpack_bits(np.zeros(1, np.uint8), 5, 4)


def test_half_from_double_matches_numpy():
    rng = np.random.default_rng(1)
    special = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0001,
                        2.0**-26, 6.1e-5, 6.103515625e-05, 5.960464477539063e-08, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11,
                        np.inf, -np.inf, 1e-300])
    values = np.concatenate([special, rng.standard_normal(100_000) * 10.0 ** rng.integers(-9, 5, 100_000)])
    # half-way cases between neighbouring halves, exactly representable in float64
    halves = np.arange(0, 0x7BFF, dtype=np.uint16).view(np.float16).astype(np.float64)
    values = np.concatenate([values, (halves[:-1] + halves[1:]) / 2, -(halves[:-1] + halves[1:]) / 2])
    assert np.array_equal(_core.half_from_double(values), values.astype(np.float16).view(np.uint16))


def test_one_fp16_toolkit_every_cpu_path_agrees():
    """The CPU's fp16 fast paths (the quantizer's decode table and branch-free rounding, the
    double conversions) against the shared bit-exact helpers of kernels/half_float.h that
    the Metal kernels use: every half pattern, and floats around every rounding boundary."""
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)].astype(np.float32)
    bits = finite.view(np.uint32)
    # each half, the floats just around it and the midpoints to its neighbours (ties)
    near = np.concatenate([finite, (bits + 1).view(np.float32), (bits - 1).view(np.float32)])
    ordered = np.sort(finite.astype(np.float64))
    mids = ((ordered[1:] + ordered[:-1]) / 2).astype(np.float32)
    extremes = np.array([65504, 65519.99, 65520, 65536, 1e30, -1e30, np.inf, -np.inf, np.nan, 2.0 ** -25,
                         2.0 ** -24 * 1.5, -(2.0 ** -26), 0.0, -0.0], np.float32)
    rng = np.random.default_rng(0)
    random = np.concatenate([rng.standard_normal(200000), rng.standard_normal(50000) * 1e4,
                             rng.standard_normal(50000) * 1e-6]).astype(np.float32)
    samples = np.concatenate([near, mids, np.nextafter(mids, np.float32(np.inf)), extremes, random])
    assert _core.check_fp16_paths(samples) == 0
