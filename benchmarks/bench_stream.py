"""Streaming against the disk: `weightpress compress` as a user runs it, timed against the
floor of reading the package's weight file in the same run.

    python benchmarks/bench_stream.py                       # the UNet-sized model, every cheap method
    python benchmarks/bench_stream.py --model flux           # a 24 GB Flux-class package, --max-memory 1G

Models
    unet   the ML program with the SD-1.5 UNet's weight shapes (bench_models.py builds and caches it)
    flux   11.9B parameters in Flux.1's Linear shapes (23.8 GB fp16), written straight to disk by
           tests/synthetic_models.write_linear_package (coremltools would hold it in memory);
           removed afterwards unless --keep
Read floor
    `cat weight.bin > /dev/null`: warm (best of 3) for a package that fits the page cache; for
    one that does not, one read just before each run (what the run itself faces).

Each run is the CLI in a subprocess (interpreter start-up included); peak RSS from wait4.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from bench_palettize import machine  # noqa: E402

CHEAP = {  # every method without per-group k-means
    "palettize 4-bit per-tensor": ["--palettize", "4"],
    "palettize 6-bit per-tensor": ["--palettize", "6"],
    "int4 per-block 32": ["--quantize", "int4", "--quantize-granularity", "per_block", "--block-size", "32"],
    "int8 per-channel": ["--quantize", "int8"],
    "magnitude 50%": ["--prune", "0.5"],
    "block sparsity 4 50%": ["--prune", "0.5", "--prune-block-size", "4"],
    "2:4": ["--prune-n-m", "2:4"],
}
FLUX = {
    "palettize 4-bit g16": ["--palettize", "4", "--granularity", "per_grouped_channel", "--group-size", "16"],
    "int4 per-block 32": ["--quantize", "int4", "--quantize-granularity", "per_block", "--block-size", "32"],
}


def weight_file(package):
    return os.path.join(package, "Data", "com.apple.CoreML", "weights", "weight.bin")


def read_floor(package, repeats):
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(["cat", weight_file(package)], stdout=subprocess.DEVNULL, check=True)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best


def run(package, out, args, max_memory):
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["sync"], check=False)  # the previous run's writeback does not bill this one
    command = [sys.executable, "-m", "weightpress", "compress", package, "-o", out, *args]
    if max_memory:
        command += ["--max-memory", max_memory]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), TQDM_DISABLE="1")
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err}")
    size = os.path.getsize(weight_file(out))
    shutil.rmtree(out, ignore_errors=True)
    return seconds, usage.ru_maxrss / 1024, size


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["unet", "flux"], default="unet")
    p.add_argument("--dir", default=os.environ.get("WEIGHTPRESS_BENCH_CACHE", "/tmp/weightpress-bench"))
    p.add_argument("--configs", nargs="*", help="names from the table (default: all for the model)")
    p.add_argument("--max-memory", help="--max-memory for every run (flux: 1G)")
    p.add_argument("--keep", action="store_true", help="keep the synthesized flux package")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    if args.model == "unet":
        import bench_models

        package = bench_models.ensure_model("unet", 1.0)
        configs, max_memory, warm = CHEAP, args.max_memory, True
    else:
        import synthetic_models

        package = os.path.join(args.dir, "flux.mlpackage")
        configs, max_memory, warm = FLUX, args.max_memory or "1G", False
        if not os.path.exists(os.path.join(package, "Manifest.json")):
            start = time.perf_counter()
            params = synthetic_models.write_linear_package(
                package, synthetic_models.flux_layers(),
                progress=lambda i, n, total: print(f"\rwriting layer {i}/{n} ({total / 1e9:.1f}B params)", end="",
                                                    file=sys.stderr, flush=True))
            print(f"\nwrote {params / 1e9:.2f}B parameters ({os.path.getsize(weight_file(package)) / 1e9:.1f} GB) "
                  f"in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    chosen = {k: v for k, v in configs.items() if not args.configs or k in args.configs}
    size_in = os.path.getsize(weight_file(package))
    rows = []
    try:
        floor = read_floor(package, 3) if warm else None
        for name, cli in chosen.items():
            run_floor = floor if warm else read_floor(package, 1)
            seconds, rss, size = run(package, os.path.join(args.dir, "bench-stream-out.mlpackage"), cli, max_memory)
            rows.append(dict(config=name, seconds=seconds, read_floor=run_floor, ratio=seconds / run_floor,
                             peak_rss_mb=rss, size_in_gb=size_in / 1e9, size_out_gb=size / 1e9))
            print(f"{name}: {seconds:.2f} s, {seconds / run_floor:.1f}x the read floor ({run_floor:.2f} s), "
                  f"peak RSS {rss:.0f} MB", file=sys.stderr, flush=True)
    finally:
        if args.model == "flux" and not args.keep:
            shutil.rmtree(package, ignore_errors=True)

    print(f"machine: {machine()}")
    print(f"model: {args.model}, weight.bin {size_in / 1e9:.2f} GB"
          + (f", --max-memory {max_memory}" if max_memory else "")
          + ("; read floor: warm cat, best of 3" if warm else "; read floor: one cat just before each run"))
    print()
    print("| config | weightpress s | read floor s | ratio | peak RSS MB | output GB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['seconds']:.2f} | {r['read_floor']:.2f} | {r['ratio']:.1f}x | "
              f"{r['peak_rss_mb']:.0f} | {r['size_out_gb']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
