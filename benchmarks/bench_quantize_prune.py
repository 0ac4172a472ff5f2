"""Quantization and pruning speed and memory: weightpress vs coremltools 9.0, same arrays.

Each (tool, config) runs in its own subprocess so that its peak RSS is its own; a plain
memory copy of the same tensors is the bandwidth floor.

    python benchmarks/bench_quantize_prune.py [--tensors 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_palettize import machine, make_weights  # noqa: E402

CONFIGS = ["int4 per_block 32", "int8 per_channel", "magnitude 50%", "block sparsity 4 50%", "2:4"]


def run_weightpress(config, weights):
    import weightpress as wp

    for w in weights:
        if config == "int4 per_block 32":
            wp.quantize(w, "int4", granularity="per_block", block_size=32)
        elif config == "int8 per_channel":
            wp.quantize(w, "int8", granularity="per_channel")
        elif config == "magnitude 50%":
            wp.prune(w, target_sparsity=0.5)
        elif config == "block sparsity 4 50%":
            wp.prune(w, target_sparsity=0.5, block_size=4)
        else:
            wp.prune(w, n_m_ratio=(2, 4))


def run_coremltools(config, weights):
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    from coremltools.converters.mil.mil import types
    from coremltools.optimize._utils import compute_qparams_by_dtype
    from coremltools.optimize.coreml._quantization_passes import prune_weights as P

    for w in weights:
        if config == "int4 per_block 32":
            compute_qparams_by_dtype(w, types.int4, "LINEAR_SYMMETRIC", [1, 32])
        elif config == "int8 per_channel":
            compute_qparams_by_dtype(w, types.int8, "LINEAR_SYMMETRIC", [1, 0])
        elif config == "magnitude 50%":
            P.compress_by_magnitude(w, 0.5)
        elif config == "block sparsity 4 50%":
            P.compress_by_magnitude(w, 0.5, 4, 0)
        else:
            P.compress_by_nm_sparsity(w, (2, 4), 1)


def child(tool, config, tensors):
    weights = make_weights(tensors, "float16")
    t0 = time.perf_counter()
    if tool == "weightpress":
        run_weightpress(config, weights)
    elif tool == "coremltools":
        run_coremltools(config, weights)
    else:
        for w in weights:
            w.copy()
    elapsed = time.perf_counter() - t0
    print(json.dumps(dict(time=elapsed, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


def run(tool, config, tensors):
    out = subprocess.run([sys.executable, __file__, "--child", tool, config, str(tensors)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--tensors", type=int, default=4)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"data: {args.tensors} x 4096x4096 float16 weights per config\n")
    floor = min(run("memcpy", "copy", args.tensors)["time"] for _ in range(3))
    print(f"memory copy of the same data: {floor * 1000:.1f} ms\n")
    print("| config | coremltools s | weightpress s | speed-up | weightpress / memcpy | peak RSS MB coremltools | "
          "peak RSS MB weightpress |")
    print("|---|---|---|---|---|---|---|")
    for config in CONFIGS:
        ct = run("coremltools", config, args.tensors)
        ours = min((run("weightpress", config, args.tensors) for _ in range(2)), key=lambda r: r["time"])
        print(f"| {config} | {ct['time']:.2f} | {ours['time']:.3f} | {ct['time'] / ours['time']:.1f}x "
              f"| {ours['time'] / floor:.0f}x | {ct['peak_mb']:.0f} | {ours['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
