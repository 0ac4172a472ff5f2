"""weightpress plan IN.mlpackage --target-bpw 4.5 -o recipe.json

Measures every weight's options, solves for the least total error within the budget, prints
the per-weight table and the trade-off curve, and writes the recipe `compress --recipe`
applies (weightpress.plan). Also converts ml-stable-diffusion mixed-bit recipes
(--from-mbp) and exports coremltools YAML (--export-yaml).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError
from .errors import UsageError
from .options import parse_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="the .mlpackage to plan for (read only)")
    p.add_argument("-o", "--output", metavar="RECIPE", help="where to write the recipe (JSON)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-bpw", type=float, metavar="BITS",
                        help="bits per planned weight, everything stored counted (indices, LUTs, scales)")
    target.add_argument("--max-size", type=parse_size, metavar="SIZE", help="size of the whole weight.bin, e.g. 1.2G")
    target.add_argument("--min-psnr", type=float, metavar="DB",
                        help="the smallest recipe whose torch outputs reach this PSNR (needs --torch-model)")
    target.add_argument("--from-mbp", metavar="JSON",
                        help="convert an ml-stable-diffusion mixed-bit recipe file instead of planning")
    p.add_argument("--mbp-recipe", metavar="NAME", help="with --from-mbp: which of the file's recipes")
    p.add_argument("--options", default=None, metavar="SPEC",
                   help="candidate options, e.g. 'palettize:2,3,4,6;granularity:per_tensor,per_grouped_channel:16;"
                        "quantize:int8,int4/32;keep' (the default)")
    p.add_argument("--sensitivity", default=None, choices=("none", "relative", "activations", "calibrated"),
                   help="how weight errors add up: raw SSE, relative to each weight's energy (the default "
                        "without --torch-model), weighted by input activations, or relative with a slope per "
                        "weight and method measured by forward passes (the default with --torch-model)")
    p.add_argument("--torch-model", metavar="MODULE:FUNCTION",
                   help="the source torch model for quality checks and activation statistics: FUNCTION() returns "
                        "(model, sample inputs); 'minilm' for the embedded MiniLM")
    p.add_argument("--weight-threshold", type=int, default=2048, metavar="N",
                   help="leave weights of N elements or fewer alone (as compress)")
    p.add_argument("--export-yaml", metavar="DIR", help="also write the recipe as coremltools OptimizationConfig YAML")
    p.add_argument("--curve", action="store_true", help="print the whole trade-off curve")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of tables")


def run(args) -> int:
    if args.from_mbp:
        return _from_mbp(args)
    if args.target_bpw is None and args.max_size is None and args.min_psnr is None:
        raise UsageError("give a target: --target-bpw, --max-size or --min-psnr (or --from-mbp)")
    from ..plan import plan

    quality, column_weights = None, None
    if args.torch_model or args.min_psnr is not None or args.sensitivity in ("activations", "calibrated"):
        if not args.torch_model:
            raise UsageError("--min-psnr and --sensitivity activations/calibrated need --torch-model")
        quality, column_weights = _torch(args)
    result = plan(args.input, target_bpw=args.target_bpw, max_size=args.max_size, min_psnr=args.min_psnr,
                  quality=quality, sensitivity=args.sensitivity, options=args.options,
                  weight_threshold=args.weight_threshold, column_weights=column_weights, progress=sys.stderr.isatty())
    recipe = result.recipe
    if args.output:
        recipe.save(args.output)
    written = recipe.export_yaml(args.export_yaml) if args.export_yaml else []
    if args.json:
        json.dump({"recipe": recipe.to_dict(), "quality": result.quality,
                   "curve": [{"bits_per_weight": c.bits_per_weight, "bytes": c.bytes, "error": c.error}
                             for c in result.curve], "seconds": result.seconds}, sys.stdout, indent=1)
        print()
        return 0
    print(result.table())
    p = recipe.predicted
    print(f"{len(result.analyses)} weights, {result.elements:,} parameters: {p['bits_per_weight']:.3f} bits per "
          f"weight, {p['bytes'] / 1e6:.2f} MB planned, weight.bin about {p['weight_file_bytes'] / 1e6:.2f} MB; "
          f"predicted error {p['error']:.4g} ({recipe.sensitivity}); {result.seconds:.1f} s")
    print("choices: " + ", ".join(f"{n} x {label}" for label, n in recipe.counts().items()))
    if result.quality:
        print(f"torch check: PSNR {result.quality['psnr']:.2f} dB, cosine {result.quality['cosine']:.5f}")
    if args.curve:
        print(result.curve_table())
    if args.output:
        print(f"wrote {args.output}" + (f"; coremltools YAML: {', '.join(written)}" if written else ""),
              file=sys.stderr)
    return 0


def _torch(args):
    from ..plan.quality import factory, torch_check

    try:
        model, inputs = factory(args.torch_model)()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 (the user's factory: say what failed)
        raise UsageError(f"--torch-model {args.torch_model}: {type(exc).__name__}: {exc}") from None
    return torch_check(args.input, model, inputs, args.weight_threshold, activations=args.sensitivity == "activations")


def _from_mbp(args) -> int:
    from ..plan.recipe import from_mbp
    from ..plan.sources import package_consts

    if not args.output and not args.export_yaml:
        raise UsageError("--from-mbp: give -o RECIPE (and/or --export-yaml DIR)")
    consts = package_consts(args.input, 0)
    recipe, unmapped = from_mbp(args.from_mbp, args.mbp_recipe, consts)
    if unmapped:
        print(f"weightpress: {len(unmapped)} modules of the recipe map to no const of {args.input} and are left "
              f"alone: {', '.join(unmapped)}", file=sys.stderr)
    if args.output:
        recipe.save(args.output)
        print(f"wrote {args.output}: {len(recipe.weights)} weights "
              f"({', '.join(f'{n} x {label}' for label, n in recipe.counts().items())})", file=sys.stderr)
    if args.export_yaml:
        print("coremltools YAML: " + ", ".join(recipe.export_yaml(args.export_yaml)), file=sys.stderr)
    return 0
