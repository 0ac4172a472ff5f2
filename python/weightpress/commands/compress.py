"""weightpress compress IN.mlpackage|IN.aimodel -o OUT --palettize 4 [--quantize int8] ...

Parses the command line into a Config (options.py), runs weightpress.job.compress_model and
prints the summary. Methods run in command-line order; more than one is joint compression
(iOS18+).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..backends import resolve_backend
from ..errors import WeightpressError
from .errors import UsageError
from .options import add_method_arguments, config_from_args, parse_size

TARGET_CHOICES = ("iOS16", "iOS17", "iOS18", "iOS26")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="the .mlpackage or .aimodel to compress (never modified)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the .mlpackage (or .aimodel) to write")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    add_method_arguments(p, recipe=True)
    p.add_argument("--target", choices=TARGET_CHOICES, default=None,
                   help="deployment target of the output (default: the model's own; iOS15 models become iOS16)")
    p.add_argument("--report", action="store_true", help="print per-layer SSE and PSNR")
    p.add_argument("--report-json", metavar="FILE", help="write the per-layer report as JSON")
    p.add_argument("--max-memory", type=parse_size, default=None, metavar="SIZE",
                   help="memory budget for the streaming path, e.g. 512M or 4G (default: half the RAM)")
    p.add_argument("--in-memory", action="store_true",
                   help="run coremltools' own machinery on the whole model instead of streaming")
    p.add_argument("--verify", action="store_true",
                   help="read the written package back before publishing it: every compressed weight must "
                        "decode to what was computed")
    p.add_argument("--calibrate", metavar="MODULE:FUNCTION", default=None,
                   help="the source torch model and sample inputs (FUNCTION() returns them; 'minilm' for the "
                        "embedded MiniLM): k-means palettization weighs each weight by its input channel's "
                        "E[x^2] on them, and error feedback chooses the LUT indices / quantized integers of "
                        "Linear and Conv weights from X^T X of their inputs (docs/calibration.md)")
    p.add_argument("--no-error-feedback", dest="error_feedback", action="store_false",
                   help="with --calibrate: activation-weighted k-means only (no X^T X, one forward pass)")
    p.add_argument("--damping", default="auto", metavar="auto|D",
                   help="with --calibrate: error feedback's damping, relative to the mean diagonal of X^T X; "
                        "'auto' (default) cross-validates it per layer on the calibration inputs, a number "
                        "skips that (one feedback pass per layer)")


def check_backend(name: str) -> None:
    """The command line runs on the CPU until the Metal backend is verified on a Mac; "auto"
    is always accepted (it picks the CPU there)."""
    try:
        backend = resolve_backend(name, "--backend")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if backend == "metal" and name == "metal":
        raise UsageError("--backend metal: the command line runs on the CPU until the Metal backend has been "
                         "verified on a Mac (metal/README.md)")


def run(args) -> int:
    from ..job import compress_model

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    check_backend(args.backend)
    if not args.error_feedback and args.calibrate is None:
        raise UsageError("--no-error-feedback needs --calibrate")
    if args.damping != "auto" and args.calibrate is None:
        raise UsageError("--damping needs --calibrate")
    config = config_from_args(args)
    engine = "in-memory" if args.in_memory else "auto"
    print(f"compressing {args.input}: {config.describe()}", file=sys.stderr, flush=True)
    try:
        result = compress_model(args.input, args.output, config, target=args.target, engine=engine,
                                max_memory=args.max_memory, num_threads=args.threads, overwrite=args.force,
                                report=bool(args.report or args.report_json), progress=sys.stderr.isatty(),
                                verify=args.verify, notes=sys.stderr, calibration=args.calibrate,
                                error_feedback=args.error_feedback, damping=args.damping)
    except WeightpressError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {args.output} ({result.engine}, target {result.target})")
    print(f"size:  {result.size_in / 1e6:.2f} MB -> {result.size_out / 1e6:.2f} MB "
          f"({result.size_in / max(result.size_out, 1):.2f}x smaller)")
    print(f"time:  {result.seconds:.1f} s")
    if args.verify:
        print(f"verified: {len(result.compressed) if result.engine == 'streaming' else 'all'} compressed weights "
              "read back before publishing")
    if result.skipped:
        print(f"skipped {len(result.skipped)} weights coremltools would skip (see the warnings)")
    if result.rows is not None and args.report:
        print_report(result.rows)
    if result.rows is not None and args.report_json:
        with open(args.report_json, "w") as f:
            json.dump({"input": args.input, "output": args.output, "size_in": result.size_in,
                       "size_out": result.size_out, "seconds": result.seconds, "engine": result.engine,
                       "layers": result.rows}, f, indent=2)
    return 0


def print_report(rows) -> None:
    width = max([len(r["weight"]) for r in rows] + [6])
    print(f"{'weight':<{width}}  {'shape':<20} {'SSE':>12} {'PSNR dB':>9}")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['weight']:<{width}}  {shape:<20} {r['sse']:>12.6g} {r['psnr_db']:>9.2f}")
    total = sum(r["sse"] for r in rows)
    print(f"{len(rows)} weights compressed, total SSE {total:.6g}")
