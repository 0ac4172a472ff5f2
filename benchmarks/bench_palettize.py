"""Palettization speed, quality and memory: weightpress vs coremltools 9.0, same arrays, same run.

Each (tool, config) runs in its own subprocess so that its peak RSS is its own. coremltools
runs palettize_weights.grouped_channelwise_compress (what its graph pass calls per weight)
with num_kmeans_workers 1 and 2; the ratio uses the faster of the two.

    python benchmarks/bench_palettize.py                 # the README table (tens of minutes)
    python benchmarks/bench_palettize.py --tensors 1     # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

CONFIGS = {
    "4-bit per_tensor": dict(nbits=4, granularity="per_tensor", group_size=0, dtype="float16"),
    "4-bit grouped g16": dict(nbits=4, granularity="per_grouped_channel", group_size=16, dtype="float16"),
    "8-bit grouped g16": dict(nbits=8, granularity="per_grouped_channel", group_size=16, dtype="float16"),
    "4-bit per_tensor fp32": dict(nbits=4, granularity="per_tensor", group_size=0, dtype="float32"),
}


def make_weights(count: int, dtype: str, shape=(4096, 4096)):
    """Deterministic weight-like tensors: Gaussian with a few heavy-tailed outliers."""
    rng = np.random.default_rng(1234)
    out = []
    for _ in range(count):
        w = rng.standard_normal(shape, dtype=np.float32) * 0.02
        outliers = rng.integers(0, w.size, size=w.size // 1000)
        w.reshape(-1)[outliers] *= 8
        out.append(w.astype(dtype))
    return out


def sse(dense, weight) -> float:
    d = dense.astype(np.float64) - weight.astype(np.float64)
    return float(np.dot(d.reshape(-1), d.reshape(-1)))


def child(tool: str, config: str, tensors: int, workers: int) -> None:
    cfg = CONFIGS[config]
    weights = make_weights(tensors, cfg["dtype"])
    total_sse = 0.0
    if tool == "weightpress":
        import weightpress as wp

        t0 = time.perf_counter()
        results = [wp.palettize(w, cfg["nbits"], granularity=cfg["granularity"], group_size=cfg["group_size"])
                   for w in weights]
        elapsed = time.perf_counter() - t0
        total_sse = sum(sse(r.decompress(), w) for r, w in zip(results, weights))
    else:
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        from coremltools.optimize.coreml._quantization_passes import palettize_weights as P

        t0 = time.perf_counter()
        results = [P.grouped_channelwise_compress(w, "KMEANS", cfg["nbits"], 0, cfg["group_size"], None, 1, workers)
                   for w in weights]
        elapsed = time.perf_counter() - t0
        total_sse = sum(sse(P.decompress(r), w) for r, w in zip(results, weights))
        if P._compress_pool is not None:
            P._compress_pool.terminate()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(dict(time=elapsed, sse=total_sse, peak_mb=peak_kb / 1024, pool_peak_mb=children_kb / 1024)))


def run(tool, config, tensors, workers=1):
    cmd = [sys.executable, __file__, "--child", tool, config, str(tensors), str(workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--tensors", type=int, default=4)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--ct-workers", default="1,2")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"data: {args.tensors} x 4096x4096 weights per config\n")
    print("| config | coremltools s (workers) | weightpress s | speed-up | SSE coremltools/weightpress "
          "| peak RSS MB coremltools (+pool) | peak RSS MB weightpress |")
    print("|---|---|---|---|---|---|---|")
    for config in args.configs:
        ct_runs = {w: run("coremltools", config, args.tensors, w) for w in map(int, args.ct_workers.split(","))}
        best_workers, ct = min(ct_runs.items(), key=lambda kv: kv[1]["time"])
        ours = run("weightpress", config, args.tensors)
        ct_times = ", ".join(f"{r['time']:.2f} ({w})" for w, r in ct_runs.items())
        print(f"| {config} | {ct_times} | {ours['time']:.3f} | {ct['time'] / ours['time']:.1f}x "
              f"| {ct['sse'] / ours['sse']:.4f} | {ct['peak_mb']:.0f} (+{ct['pool_peak_mb']:.0f}) "
              f"| {ours['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
