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
