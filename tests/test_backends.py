"""weightpress.backends(): what is available and why not; backend= on the APIs and the CLI."""

import subprocess
import sys

import numpy as np
import pytest

import weightpress as wp
from weightpress.backends import resolve_backend


def test_backends_report_cpu_and_why_not_metal():
    info = wp.backends()
    assert info["cpu"]["available"] and info["cpu"]["default"]
    metal = info["metal"]
    assert metal["verified_on_hardware"] is False and metal["default"] is False
    if sys.platform != "darwin":
        assert not metal["available"] and "Apple" in metal["reason"]


def test_auto_means_cpu_until_verified():
    assert resolve_backend("auto") == "cpu"
    assert resolve_backend("cpu") == "cpu"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda")


@pytest.mark.skipif(sys.platform == "darwin", reason="Metal may be available on macOS")
def test_metal_requested_where_unavailable_is_a_clear_error():
    w = np.ones((8, 32), np.float16)
    for call in (lambda: wp.quantize(w, "int8", backend="metal"), lambda: wp.palettize(w, 2, backend="metal"),
                 lambda: wp.prune(w, target_sparsity=0.5, backend="metal")):
        with pytest.raises(ValueError, match="Metal backend is not available: built without Metal"):
            call()
    r = subprocess.run([sys.executable, "-m", "weightpress.cli", "compress", "x.mlpackage", "-o", "y.mlpackage",
                        "--palettize", "4", "--backend", "metal"], capture_output=True, text=True)
    assert r.returncode == 2 and "Metal backend is not available" in r.stderr


def test_cpu_backend_is_the_default_result():
    w = (np.random.default_rng(0).standard_normal((16, 64)) * 0.1).astype(np.float16)
    a = wp.quantize(w, "int4", granularity="per_block", block_size=16)
    b = wp.quantize(w, "int4", granularity="per_block", block_size=16, backend="cpu")
    np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.skipif(__import__("os").environ.get("WEIGHTPRESS_TEST_BACKEND") != "metal",
                    reason="runs on a Mac with WEIGHTPRESS_TEST_BACKEND=metal (see metal/README.md)")
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("qdtype,mode,granularity", [("int4", "linear_symmetric", "per_block"),
                                                     ("uint8", "linear", "per_channel"),
                                                     ("int8", "linear_symmetric", "per_tensor")])
def test_metal_quantize_matches_cpu_on_hardware(dtype, qdtype, mode, granularity):
    w = (np.random.default_rng(1).standard_normal((128, 96, 3, 3)) * 0.05).astype(dtype)
    cpu = wp.quantize(w, qdtype, mode=mode, granularity=granularity, block_size=32, backend="cpu")
    gpu = wp.quantize(w, qdtype, mode=mode, granularity=granularity, block_size=32, backend="metal")
    np.testing.assert_array_equal(cpu.data, gpu.data)
    np.testing.assert_array_equal(cpu.scale.view(np.uint8), gpu.scale.view(np.uint8))
    if cpu.offset is not None:
        np.testing.assert_array_equal(cpu.offset, gpu.offset)


# ---------------------------------------------------------------- the Metal call sites, on Linux


class CpuStandIn:
    """The MetalDevice contract (weightpress.backends) computed on the CPU, counting calls: it
    drives the array API's Metal call sites (histograms, encode, pack, sparsify, quantize) on
    Linux. What only a Mac can check is the device code itself (metal/README.md)."""

    def __init__(self):
        self.calls = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def histogram_f16(self, bits):
        self._count("histogram_f16")
        return np.bincount(bits.reshape(-1), minlength=65536).astype(np.uint32)

    def encode_pack(self, bits, codes, nbits):
        self._count("encode_pack")
        return wp.pack_bits(codes[bits.reshape(-1)], nbits, backend="cpu")

    def pack_bits(self, values, nbits):
        self._count("pack_bits")
        return wp.pack_bits(values, nbits, backend="cpu")

    def sparsify(self, values, cut):
        self._count("sparsify")
        v = values.view(np.float16) if values.dtype == np.uint16 else values
        keep = (np.abs(v.astype(np.float32)) > np.float32(cut)) & (v != 0)
        return np.packbits(keep, bitorder="little"), values[keep]

    def quantize(self, values, rows, cols, block_rows, block_cols, nbits, signed, symmetric):
        self._count("quantize")
        from weightpress import _core

        data, scale, zp = _core.quantize_blockwise(values, [block_rows, block_cols], nbits, signed, symmetric, 1)
        if zp is None:
            zp = np.zeros(scale.size, np.uint8)
        return data.reshape(-1).view(np.uint8), scale.reshape(-1), zp.reshape(-1).view(np.uint8)


@pytest.fixture
def standin(monkeypatch):
    b = sys.modules["weightpress.backends"]  # (the package attribute is the backends() function)
    dev = CpuStandIn()
    monkeypatch.setattr(b, "resolve_backend", lambda backend="auto", op="weightpress": "cpu" if backend == "cpu" else "metal")
    monkeypatch.setattr(b, "METAL", dev)
    return dev


@pytest.mark.parametrize("granularity,group_size", [("per_tensor", 0), ("per_grouped_channel", 8)])
@pytest.mark.parametrize("nbits", [2, 4, 6])
def test_metal_palettize_call_site_equals_cpu(standin, granularity, group_size, nbits):
    w = (np.random.default_rng(nbits).standard_normal((32, 96)) * 0.05).astype(np.float16)
    cpu = wp.palettize(w, nbits, granularity=granularity, group_size=group_size, backend="cpu")
    gpu = wp.palettize(w, nbits, granularity=granularity, group_size=group_size, backend="metal")
    assert standin.calls["histogram_f16"] == standin.calls["encode_pack"] == (32 // (group_size or 32))
    assert gpu.lut.tobytes() == cpu.lut.tobytes() and np.array_equal(gpu.indices, cpu.indices)
    assert gpu.objective == cpu.objective and gpu.sse == cpu.sse


def test_metal_palettize_nan_is_named(standin):
    w = np.ones((8, 16), np.float16)
    w[3, 4] = np.nan
    with pytest.raises(wp.NonFiniteWeightError, match="flat index 52"):
        wp.palettize(w, 2, backend="metal")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("kwargs", [dict(target_sparsity=0.5), dict(threshold=0.03, minimum_sparsity_percentile=0.0)])
def test_metal_prune_call_site_equals_cpu(standin, dtype, kwargs):
    w = (np.random.default_rng(3).standard_normal((64, 40)) * 0.05).astype(dtype)
    w[::5] = 0
    cpu, gpu = wp.prune(w, backend="cpu", **kwargs), wp.prune(w, backend="metal", **kwargs)
    assert standin.calls["sparsify"] == 1
    assert gpu.packed_mask.tobytes() == cpu.packed_mask.tobytes()
    assert gpu.nonzero_data.tobytes() == cpu.nonzero_data.tobytes()


def test_metal_quantize_and_pack_call_sites_equal_cpu(standin):
    w = (np.random.default_rng(4).standard_normal((16, 64)) * 0.05).astype(np.float16)
    cpu = wp.quantize(w, "uint4", mode="linear", granularity="per_block", block_size=16, backend="cpu")
    gpu = wp.quantize(w, "uint4", mode="linear", granularity="per_block", block_size=16, backend="metal")
    assert standin.calls["quantize"] == 1
    assert np.array_equal(cpu.data, gpu.data) and cpu.scale.tobytes() == gpu.scale.tobytes()
    assert np.array_equal(cpu.offset, gpu.offset)
    v = np.random.default_rng(5).integers(0, 8, 1001).astype(np.uint8)
    assert wp.pack_bits(v, 3, backend="metal").tobytes() == wp.pack_bits(v, 3, backend="cpu").tobytes()
    assert standin.calls["pack_bits"] == 1


def test_metal_paths_not_wired_say_so(standin):
    w = (np.random.default_rng(6).standard_normal((16, 64)) * 0.05).astype(np.float16)
    with pytest.raises(NotImplementedError, match="Metal backend runs scalar k-means"):
        wp.palettize(w, 2, cluster_dim=2, backend="metal")
    with pytest.raises(NotImplementedError, match="block and n:m"):
        wp.prune(w, n_m_ratio=(2, 4), backend="metal")


@pytest.mark.skipif(__import__("os").environ.get("WEIGHTPRESS_TEST_BACKEND") != "metal",
                    reason="runs on a Mac with WEIGHTPRESS_TEST_BACKEND=metal (see metal/README.md)")
def test_metal_palettize_prune_pack_match_cpu_on_hardware():
    w = (np.random.default_rng(2).standard_normal((64, 300)) * 0.05).astype(np.float16)
    for kw in (dict(), dict(granularity="per_grouped_channel", group_size=16)):
        cpu, gpu = wp.palettize(w, 4, backend="cpu", **kw), wp.palettize(w, 4, backend="metal", **kw)
        assert gpu.lut.tobytes() == cpu.lut.tobytes() and np.array_equal(gpu.indices, cpu.indices)
    for dtype in (np.float16, np.float32):
        x = w.astype(dtype)
        cpu, gpu = wp.prune(x, target_sparsity=0.6, backend="cpu"), wp.prune(x, target_sparsity=0.6, backend="metal")
        assert gpu.packed_mask.tobytes() == cpu.packed_mask.tobytes()
        assert gpu.nonzero_data.tobytes() == cpu.nonzero_data.tobytes()
    v = np.random.default_rng(3).integers(0, 64, 4097).astype(np.uint8)
    assert wp.pack_bits(v, 6, backend="metal").tobytes() == wp.pack_bits(v, 6, backend="cpu").tobytes()
