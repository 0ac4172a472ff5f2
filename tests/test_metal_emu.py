"""The shipped Metal kernels, run on Linux through a C++ shim (tests/metal_emu).

metal/amalgamate.py produces the one MSL source the Metal backend embeds (here with the
kernels kept in metal/unshipped/ appended); it is compiled here as C++ against tests/metal_emu/metal_stdlib (a stand-in for Metal's) and run over
emulated grids, one std::thread per lane, at several threadgroup sizes. Results are compared
with the CPU backend: bit for bit for the histogram, encode/pack, quantization and sparse
packing; by properties for the floating-point nearest-centroid search. What only a Mac can
confirm is listed in metal/README.md.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import weightpress as wp
from weightpress import _core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "tests", "metal_emu")
LANES = (1, 32, 48, 256)
P = ctypes.POINTER


def _ptr(a, ctype):
    return a.ctypes.data_as(P(ctype)) if a is not None else None


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    sys.path.insert(0, os.path.join(ROOT, "metal"))
    try:
        import amalgamate
    finally:
        sys.path.pop(0)
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the Metal emulation harness")
    source = amalgamate.source(unshipped=True)  # the shipped text plus metal/unshipped/
    with open(os.path.join(EMU, "harness.cpp")) as f:
        harness_cpp = f.read()
    with open(os.path.join(EMU, "metal_stdlib")) as f:
        shim = f.read()
    key = hashlib.sha256((source + harness_cpp + shim).encode()).hexdigest()[:16]
    build = tmp_path_factory.getbasetemp().parent / f"wp-metal-emu-{key}"
    lib = build / "libwpmetalemu.so"
    if not lib.exists():
        build.mkdir(parents=True, exist_ok=True)
        (build / "weightpress_metal_source.inc").write_text(source)
        cmd = [compiler, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wall", "-Wno-attributes",
               "-Wno-unknown-pragmas", "-ffp-contract=off", "-fno-fast-math", f"-I{EMU}", f"-I{build}",
               os.path.join(EMU, "harness.cpp"), "-o", str(lib)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-4000:]
    dll = ctypes.CDLL(str(lib))
    u16, u32, u8, f32 = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint8, ctypes.c_float
    dll.run_histogram_f16.argtypes = [P(u16), u32, P(u32), u32]
    dll.run_encode_pack.argtypes = [P(u16), u32, P(u8), u32, P(u8), u32]
    dll.run_pack_bits.argtypes = [P(u8), u32, u32, P(u8), u32]
    dll.run_nearest_centroid.argtypes = [P(f32), u32, P(f32), u32, u32, P(u32), u32]
    dll.run_quantize_block.argtypes = [P(u16), P(f32), P(u32), u32, u32, u32, P(u8), P(u32), P(u8), u32]
    dll.run_sparse.argtypes = [P(u16), P(u32), u32, u32, P(u8), P(u16), P(u32), u32]
    dll.run_sparse.restype = u32
    return dll


def fp16(shape, seed, scale=0.05):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float16)


# ---------------------------------------------------------------- histogram


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("n", [1, 31, 33, 47, 255, 257, 3001])
def test_histogram_counts_every_bit_pattern(harness, lanes, n):
    w = fp16(n, n)
    w[: n // 3] = w[0]  # repeated values: concurrent increments of one bin
    bins = np.zeros(65536, np.uint32)
    harness.run_histogram_f16(_ptr(w.view(np.uint16), ctypes.c_uint16), n, _ptr(bins, ctypes.c_uint32), lanes)
    np.testing.assert_array_equal(bins, np.bincount(w.view(np.uint16), minlength=65536))


# ---------------------------------------------------------------- encode + pack


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("n", [1, 7, 33, 257, 1000])
def test_encode_pack_equals_cpu_palettization(harness, lanes, nbits, n):
    w = fp16(n, 10 * n + nbits)
    r = wp.palettize(w, nbits)
    codes = np.zeros(65536, np.uint8)
    codes[w.view(np.uint16)] = r.indices.reshape(-1)  # the clustering's code table
    packed = np.zeros((n * nbits + 7) // 8, np.uint8)
    harness.run_encode_pack(_ptr(w.view(np.uint16), ctypes.c_uint16), n, _ptr(codes, ctypes.c_uint8), nbits,
                            _ptr(packed, ctypes.c_uint8), lanes)
    np.testing.assert_array_equal(packed, r.packed_indices)


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_pack_bits_equals_cpu(harness, lanes, nbits):
    n = 517
    v = np.random.default_rng(nbits).integers(0, 1 << nbits, n).astype(np.uint8)
    packed = np.zeros((n * nbits + 7) // 8, np.uint8)
    harness.run_pack_bits(_ptr(v, ctypes.c_uint8), n, nbits, _ptr(packed, ctypes.c_uint8), lanes)
    np.testing.assert_array_equal(packed, wp.pack_bits(v, nbits))


# ---------------------------------------------------------------- nearest centroid


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("n,k,dim", [(1, 4, 2), (33, 16, 2), (257, 64, 4), (1000, 256, 1)])
def test_nearest_centroid_properties(harness, lanes, n, k, dim):
    rng = np.random.default_rng(n + k)
    points = rng.standard_normal((n, dim)).astype(np.float32)
    centroids = rng.standard_normal((k, dim)).astype(np.float32)
    centroids[k // 2] = centroids[0]  # a duplicate: ties go to the lower index
    labels = np.zeros(n, np.uint32)
    harness.run_nearest_centroid(_ptr(points, ctypes.c_float), n, _ptr(centroids, ctypes.c_float), k, dim,
                                 _ptr(labels, ctypes.c_uint32), lanes)
    d = ((points[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(-1)
    chosen = d[np.arange(n), labels]
    assert np.all(chosen <= d.min(axis=1) * (1 + 1e-5) + 1e-12)  # nearest within float32 rounding
    assert not np.any(labels == k // 2)  # never the later of two equal centroids
    if lanes == LANES[0]:
        test_nearest_centroid_properties.reference = labels
    again = np.zeros(n, np.uint32)
    harness.run_nearest_centroid(_ptr(points, ctypes.c_float), n, _ptr(centroids, ctypes.c_float), k, dim,
                                 _ptr(again, ctypes.c_uint32), 7)
    np.testing.assert_array_equal(again, labels)  # independent of the threadgroup size


# ---------------------------------------------------------------- blockwise quantization


QUANT_CASES = [
    ((64, 96), (1, 32), "int4", "linear_symmetric"),
    ((64, 96), (1, 32), "uint4", "linear"),
    ((33, 40), (1, 40), "int8", "linear_symmetric"),
    ((33, 40), (33, 40), "uint8", "linear_symmetric"),
    ((48, 64), (16, 8), "int8", "linear"),
    ((7, 300), (1, 300), "uint4", "linear"),
]


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("shape,block,qdtype,mode", QUANT_CASES)
def test_quantize_block_equals_cpu(harness, lanes, dtype, shape, block, qdtype, mode):
    w = fp16(shape, shape[0] * shape[1]).astype(dtype)
    w[0, : block[1]] = 0  # an all-zero run (an all-zero block where the block is one row)
    w[1, 0] = -0.0
    r = wp.quantize(w, qdtype, mode=mode, granularity="per_block", block_size=block)
    nbits, signed = {"int4": (4, 1), "uint4": (4, 0), "int8": (8, 1), "uint8": (8, 0)}[qdtype]
    blocks = (shape[0] // block[0]) * (shape[1] // block[1])
    data = np.zeros(w.size, np.uint8)
    scale = np.zeros(blocks, np.uint32)
    zp = np.zeros(blocks, np.uint8)
    dims = np.array([shape[0], shape[1], block[0], block[1]], np.uint32)
    h16 = w.view(np.uint16) if dtype == np.float16 else None
    f32 = w if dtype == np.float32 else None
    harness.run_quantize_block(_ptr(h16, ctypes.c_uint16), _ptr(f32, ctypes.c_float), _ptr(dims, ctypes.c_uint32),
                               nbits, signed, int(mode == "linear_symmetric"), _ptr(data, ctypes.c_uint8),
                               _ptr(scale, ctypes.c_uint32), _ptr(zp, ctypes.c_uint8), lanes)
    np.testing.assert_array_equal(data.view(np.int8 if signed else np.uint8).reshape(shape), r.data)
    expected_scale = r.scale.reshape(-1)
    got_scale = scale.astype(np.uint16).view(np.float16) if dtype == np.float16 else scale.view(np.float32)
    np.testing.assert_array_equal(got_scale.view(np.uint16 if dtype == np.float16 else np.uint32),
                                  expected_scale.view(np.uint16 if dtype == np.float16 else np.uint32))
    if r.offset is not None:
        np.testing.assert_array_equal(zp.view(np.int8 if signed else np.uint8), r.offset.reshape(-1))
    if nbits == 4:  # the packing kernel over the kernel's own data
        packed = np.zeros((w.size * 4 + 7) // 8, np.uint8)
        harness.run_pack_bits(_ptr(data, ctypes.c_uint8), w.size, 4, _ptr(packed, ctypes.c_uint8), lanes)
        np.testing.assert_array_equal(packed, r.packed_data)


# ---------------------------------------------------------------- sparse mask + gather


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("n", [1, 9, 31, 33, 255, 257, 2000])
def test_sparse_pack_equals_cpu_pruning(harness, lanes, dtype, n):
    w = fp16(n, n + 5).astype(dtype)
    w[::7] = 0
    if n > 3:
        w[3] = -w[2]  # a tie in magnitude
    r = wp.prune(w, threshold=float(np.abs(w[2])) if n > 3 else 0.0, minimum_sparsity_percentile=0.0)
    cut = np.float32(np.abs(w[2]) if n > 3 else 0.0)
    mask = np.zeros((n + 7) // 8, np.uint8)
    out16 = np.zeros(n, np.uint16)
    out32 = np.zeros(n, np.uint32)
    h16 = w.view(np.uint16) if dtype == np.float16 else None
    f32 = w.view(np.uint32) if dtype == np.float32 else None
    kept = harness.run_sparse(_ptr(h16, ctypes.c_uint16), _ptr(f32, ctypes.c_uint32), n, int(cut.view(np.uint32)),
                              _ptr(mask, ctypes.c_uint8), _ptr(out16, ctypes.c_uint16), _ptr(out32, ctypes.c_uint32),
                              lanes)
    np.testing.assert_array_equal(mask, r.packed_mask)
    got = out16[:kept].view(np.float16) if dtype == np.float16 else out32[:kept].view(np.float32)
    np.testing.assert_array_equal(got.view(np.uint16 if dtype == np.float16 else np.uint32),
                                  r.nonzero_data.view(np.uint16 if dtype == np.float16 else np.uint32))
