"""Every copy of the multiversioned loops (x86-64-v4, x86-64-v3, the baseline; multiversion.h)
gives the same bytes: the same work runs in child processes with WEIGHTPRESS_ISA capping the
level, and every output's digest must match the native run's. Covers each multiversioned
function: packing and unpacking (every width), quantization (per-tensor, per-channel, short
and long blocks; fp16 and fp32: quantize_run, extrema_of, short_blocks), pruning (magnitude
and threshold masks, block norms, n:m ranks on fp16 and fp32 bits) and the full k-means DP's
candidate costs."""

import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import hashlib, json, sys
import numpy as np
import weightpress as wp
from weightpress import _core

rng = np.random.default_rng(2026)
out = {"isa": _core.isa()}

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
json.dump(out, sys.stdout)
"""


def _run(isa):
    env = dict(os.environ)
    env.pop("WEIGHTPRESS_ISA", None)
    if isa:
        env["WEIGHTPRESS_ISA"] = isa
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_every_instruction_set_level_gives_the_same_bytes():
    native = _run(None)
    levels = {"x86-64-v4": 4, "x86-64-v3": 3, "baseline": 0}
    native_level = levels[native["isa"]]
    tried = 0
    for cap in ("x86-64-v3", "baseline"):
        if levels[cap] >= native_level:
            continue  # the CPU runs this level natively: nothing lower to compare
        capped = _run(cap)
        assert capped["isa"] == cap  # the cap took effect: a different copy ran
        mismatched = sorted(k for k in native if k != "isa" and native[k] != capped[k])
        assert not mismatched, f"{cap} differs from {native['isa']}: {mismatched}"
        tried += 1
    if native_level == 0:
        pytest.skip("one build only on this platform (no multiversioned copies to compare)")
    assert tried >= 1


def test_the_cap_never_raises_the_level():
    native = _run(None)
    assert _run("x86-64-v4")["isa"] == native["isa"]
    assert _run("baseline")["isa"] == "baseline"
