"""weightpress info PACKAGE [--json] [--stats]: what a package holds, weight by weight
(weightpress.mlpackage.info), as a table or as JSON for tools."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", metavar="PACKAGE", help="an .mlpackage (read only)")
    p.add_argument("--json", action="store_true", help="print everything as JSON instead of a table")
    p.add_argument("--stats", action="store_true",
                   help="read every dense weight for its sparsity (|x| <= 1e-12) and number of unique values")
    p.add_argument("--weight-threshold", type=int, default=0, metavar="N",
                   help="list only weights with at least N elements (as coremltools' get_weights_metadata; its default "
                        "is 2048)")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return ""


def run(args) -> int:
    from ..mlpackage.info import package_info

    info = package_info(args.package, weight_threshold=args.weight_threshold, stats=args.stats)
    if args.json:
        json.dump(info.to_dict(), sys.stdout, indent=1)
        print()
        return 0
    multifunction = len(info.functions) > 1
    print(f"{info.path}: {info.target} (specification {info.spec_version}), functions: {', '.join(info.functions)}")
    header = (["function"] if multifunction else []) + ["weight", "consumer", "shape", "dtype", "stored as",
                                                        "bytes", "bits/weight"]
    if args.stats:
        header += ["zeros", "unique"]
    rows = []
    for w in info.weights:
        kinds = sorted({c[0] for c in w.consumers})
        row = ([w.function] if multifunction else []) + [
            w.name, ",".join(kinds), "x".join(map(str, w.shape)) or "scalar", w.dtype, w.describe(),
            _size(w.stored_bytes), f"{w.bits_per_weight:.2f}"]
        if args.stats:
            row += ["" if w.sparsity is None else f"{100 * w.sparsity:.1f}%",
                    "" if w.unique_values is None else str(w.unique_values)]
        rows.append(row)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)] if rows else [len(h) for h in header]
    for row in [header] + rows:
        print("  ".join(str(x).ljust(n) for x, n in zip(row, widths)).rstrip())
    t = info.totals()
    print(f"{t['weights']} weights ({t['compressed']} compressed), {t['elements']:,} parameters: "
          f"{_size(t['dense_bytes'])} dense, {_size(t['stored_bytes'])} stored, "
          f"{t['bits_per_weight']:.2f} bits per weight; weight.bin {_size(t['weight_file_bytes'])}")
    return 0
