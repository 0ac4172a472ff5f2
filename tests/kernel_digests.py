"""A fixed kernel workload and the SHA-256 digest of every output: what must not depend on
the instruction-set copy (tests/test_isa.py, WEIGHTPRESS_ISA), the compiler and C++ library
(.ci/clang-libcxx: GCC with libstdc++ against clang with libc++) or the platform.

    python tests/kernel_digests.py            # JSON {case: digest}, with "isa" and "platform"
    python tests/kernel_digests.py --compare A.json B.json   # exit 1 naming every difference

Covers packing and unpacking (every width), quantization (every dtype, mode and granularity,
fp16 and fp32, short and long blocks; best-error scales for every dtype and mode), pruning (magnitude, threshold, block, n:m), every
palettization mode and granularity (k-means at every width, uniform, unique, grouped,
per-channel scale, vector), the k-means DP on tie-heavy inputs (massive duplicates, groups of
one to three distinct values, k at least the number of distinct values), the windowed solver
on large inputs and the planner's sse_curve.
"""

import hashlib
import json
import os
import platform
import sys
import warnings

import numpy as np

# the digests of the GCC 12 x86-64 build (tests/test_isa.py compares every build with them)
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "kernel_digests.json")


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
        else:
            a = np.ascontiguousarray(a)
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def workload():
    import weightpress as wp
    from weightpress import _core

    warnings.simplefilter("ignore")  # coremltools' skip rules, said as warnings (prune below 50%)
    rng = np.random.default_rng(2026)
    out = {"isa": _core.isa(), "platform": f"{platform.system()} {platform.machine()}"}
    for nbits in range(1, 9):
        v = rng.integers(0, 1 << nbits, size=100_003, dtype=np.uint8)
        p = wp.pack_bits(v, nbits)
        out[f"pack{nbits}"] = digest(p, wp.unpack_bits(p, v.size, nbits))

    for dtype in (np.float16, np.float32):
        w = (rng.standard_normal((96, 512)) * 0.05).astype(dtype)
        w[3, 7] = 0.9  # an outlier
        conv = (rng.standard_normal((32, 16, 3, 3)) * 0.05).astype(dtype)
        for d in ("int4", "uint4", "int8", "uint8"):
            for mode in ("linear_symmetric", "linear"):
                for kw in ({"granularity": "per_tensor"}, {"granularity": "per_channel"},
                           {"granularity": "per_block", "block_size": 8}, {"granularity": "per_block", "block_size": 64}):
                    r = wp.quantize(w, d, mode=mode, **kw)
                    out[f"q-{dtype.__name__}-{d}-{mode}-{sorted(kw.items())}"] = digest(r.packed_data, r.scale, r.offset)
            r = wp.quantize(conv, d, granularity="per_channel")
            out[f"qconv-{dtype.__name__}-{d}"] = digest(r.packed_data, r.scale, r.offset)
        # best-error scales: every dtype and mode, short blocks and whole rows
        for d in ("int4", "uint4", "int8", "uint8"):
            for mode in ("linear_symmetric", "linear"):
                for kw in ({"granularity": "per_block", "block_size": 32}, {"granularity": "per_channel"}):
                    r = wp.quantize(w[:24], d, mode=mode, fit="best", **kw)
                    out[f"qbest-{dtype.__name__}-{d}-{mode}-{sorted(kw.items())}"] = digest(r.packed_data, r.scale,
                                                                                           r.offset)
        for name, kw in {"magnitude": dict(target_sparsity=0.5), "threshold": dict(threshold=0.03),
                         "block": dict(target_sparsity=0.5, block_size=4), "nm24": dict(n_m_ratio=(2, 4)),
                         "nm38": dict(n_m_ratio=(3, 8))}.items():
            r = wp.prune(w, **kw)
            out[f"prune-{dtype.__name__}-{name}"] = digest(r.packed_mask, r.nonzero_data)
            r = wp.prune(conv, **kw)
            out[f"pruneconv-{dtype.__name__}-{name}"] = digest(r.packed_mask, r.nonzero_data)

    x = np.sort(rng.standard_normal(3000))
    x = np.unique(x)
    wts = rng.uniform(0.5, 2.0, x.size)
    starts, centroids, _ = _core.kmeans1d_solve(x, wts, 16, method="full")
    out["kmeans-full"] = digest(starts, centroids)
    w16 = (rng.standard_normal((64, 1024)) * 0.02).astype(np.float16)
    r = wp.palettize(w16, 4, granularity="per_grouped_channel", group_size=16)
    out["palettize-g16"] = digest(r.lut, r.packed_indices)
    out["sse-curve"] = digest(wp.sse_curve(w16, 5, granularity="per_grouped_channel", group_size=16))
    palettization(wp, rng, out)
    ties(wp, _core, rng, out)
    windowed(wp, _core, rng, out)
    calibrated(wp, _core, rng, out)
    return out


def palettization(wp, rng, out):
    """Every mode and granularity, fp16 and fp32."""
    for dtype in (np.float16, np.float32):
        w = (rng.standard_normal((32, 256)) * 0.05).astype(dtype)
        w[5, 9] = -0.7
        name = dtype.__name__
        for nbits in (1, 2, 3, 4, 6, 8):
            r = wp.palettize(w, nbits)
            out[f"pal-{name}-kmeans-{nbits}"] = digest(r.lut, r.packed_indices)
        for kw in ({"granularity": "per_grouped_channel", "group_size": 1},
                   {"granularity": "per_grouped_channel", "group_size": 8, "channel_axis": 1},
                   {"mode": "uniform"}, {"mode": "uniform", "granularity": "per_grouped_channel", "group_size": 4},
                   {"enable_per_channel_scale": True}, {"cluster_dim": 2}, {"cluster_dim": 4, "channel_axis": 1}):
            r = wp.palettize(w, 3, **kw)
            out[f"pal-{name}-3-{sorted(kw.items())}"] = digest(r.lut, r.packed_indices,
                                                              getattr(r, "per_channel_scale", None))
        few = rng.choice(np.array([-0.5, 0.0, 0.25, 1.0], dtype=dtype), size=(16, 64))
        r = wp.palettize(few, mode="unique")
        out[f"pal-{name}-unique"] = digest(r.lut, r.packed_indices)
        out[f"sse-curve-{name}-tensor"] = digest(wp.sse_curve(w, 8))


def ties(wp, _core, rng, out):
    """The DP where ties decide: duplicates, tiny groups, k at least the distinct values."""
    heavy = rng.integers(0, 12, size=(64, 64)).astype(np.float16) * np.float16(0.125)
    for nbits in (2, 3, 4):
        r = wp.palettize(heavy, nbits, granularity="per_grouped_channel", group_size=4)
        out[f"ties-heavy-{nbits}"] = digest(r.lut, r.packed_indices)
    groups = np.empty((48, 32), dtype=np.float16)  # rows of 1, 2 and 3 distinct values
    for i in range(48):
        groups[i] = rng.choice(rng.standard_normal(1 + i % 3).astype(np.float16), size=32)
    r = wp.palettize(groups, 2, granularity="per_grouped_channel", group_size=1)
    out["ties-tiny-groups"] = digest(r.lut, r.packed_indices)
    symmetric = np.tile(np.array([-3, -1, 1, 3], dtype=np.float64), 50)
    x = np.unique(symmetric)
    for k in (2, 3, 4, 6):
        starts, centroids, _ = _core.kmeans1d_solve(x, np.full(x.size, 50.0), min(k, x.size), method="full")
        out[f"ties-symmetric-{k}"] = digest(starts, centroids)
    sub = (rng.integers(1, 40, size=(8, 128)) * np.float32(1e-40)).astype(np.float32)  # subnormals
    r = wp.palettize(sub, 3, granularity="per_grouped_channel", group_size=2)
    out["ties-subnormal"] = digest(r.lut, r.packed_indices)
    out["ties-sse-curve"] = digest(wp.sse_curve(heavy, 6, granularity="per_grouped_channel", group_size=4))


def windowed(wp, _core, rng, out):
    """The windowed solver and the SSE read off its penalty search (sse_curve) on inputs large
    enough for them: the code that the steering functions (steering_math.h) guide."""
    x = np.unique(rng.standard_normal(50_000))
    for k in (3, 16, 64, 256):
        starts, centroids, _ = _core.kmeans1d_solve(x, np.ones(x.size), k, method="windowed")
        out[f"windowed-{k}"] = digest(starts, centroids)
    evenly = np.arange(-5000, 5000, dtype=np.float64)  # equally spaced, equal weights: ties everywhere
    for k in (3, 4, 7, 16):
        starts, centroids, _ = _core.kmeans1d_solve(evenly, np.ones(evenly.size), k, method="windowed")
        out[f"windowed-evenly-{k}"] = digest(starts, centroids)
    w32 = rng.standard_normal((256, 1024)).astype(np.float32)
    out["sse-curve-float32-large"] = digest(wp.sse_curve(w32, 8))
    w16 = rng.standard_normal((256, 1024)).astype(np.float16)
    out["sse-curve-float16-large-g32"] = digest(wp.sse_curve(w16, 8, granularity="per_grouped_channel", group_size=32))


def calibrated(wp, _core, rng, out):
    """Calibration's kernels: k-means weighted per element, the inverse-Hessian factor and
    error feedback onto LUTs and quantization levels (fp16 and fp32, a conv weight)."""
    cols = 96
    # integer-valued inputs: X^T X is exact in float64 whatever BLAS numpy uses (OpenBLAS sums
    # in another order on aarch64), so the kernels get the same bits on every platform
    mix = 3 * np.eye(cols) + rng.integers(-1, 2, (cols, cols))
    x = rng.integers(-4, 5, (400, cols)).astype(np.float64) @ mix
    h = x.T @ x
    out["ef-factor"] = digest(_core.inverse_hessian_factor(h, 0.1))
    importance = np.broadcast_to((x ** 2).mean(0), (48, cols))
    for dtype in (np.float16, np.float32):
        name = dtype.__name__
        w = (rng.standard_normal((48, cols)) * 0.05).astype(dtype)
        weighted = wp.palettize(w, 3, granularity="per_grouped_channel", group_size=8, sample_weight=importance)
        out[f"weighted-{name}"] = digest(weighted.lut, weighted.packed_indices)
        for label, r in (("lut-g8", weighted), ("lut-tensor", wp.palettize(w, 4)),
                         ("int4-b32", wp.quantize(w, "int4", granularity="per_block", block_size=32)),
                         ("uint8-channel", wp.quantize(w, "uint8", mode="linear")),
                         ("int4-best", wp.quantize(w, "int4", granularity="per_block", block_size=16, fit="best"))):
            fed = r.error_feedback(h, damping=0.03)
            out[f"ef-{name}-{label}"] = digest(*((fed.lut, fed.packed_indices) if hasattr(fed, "lut")
                                                 else (fed.packed_data, fed.scale, fed.offset)))
        conv = w.reshape(48, 24, 2, 2)
        fed = wp.quantize(conv, "int8", granularity="per_block", block_size=8).error_feedback(h, damping=1.0)
        out[f"ef-{name}-conv"] = digest(fed.packed_data, fed.scale)


def compare(a: dict, b: dict) -> list:
    """The cases whose digests differ or that only one side has (isa and platform aside)."""
    keys = (set(a) | set(b)) - {"isa", "platform"}
    return sorted(k for k in keys if a.get(k) != b.get(k))


def main(argv):
    if argv[:1] == ["--compare"]:
        with open(argv[1]) as f:
            a = json.load(f)
        with open(argv[2]) as f:
            b = json.load(f)
        different = compare(a, b)
        for k in different:
            print(f"digest differs: {k} ({a.get('platform')} {a.get('isa')}: {a.get(k)}; "
                  f"{b.get('platform')} {b.get('isa')}: {b.get(k)})", file=sys.stderr)
        print(f"{len(set(a) - {'isa', 'platform'})} kernel digests compared: {len(different)} differ")
        return 1 if different else 0
    json.dump(workload(), sys.stdout, indent=0, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
