"""The weightpress command line.

    weightpress demo       the main job: MiniLM as a Core ML model, compressed by weightpress and
                           by coremltools side by side, checked end to end
    weightpress compress   compress an .mlpackage (palettize / quantize / prune, joint chains)
"""

from __future__ import annotations

import argparse
import sys

from .commands.errors import UsageError
from .errors import WeightpressError


def build_parser() -> argparse.ArgumentParser:
    from .commands import compress, demo

    parser = argparse.ArgumentParser(prog="weightpress", description="Fast, exact weight compression for Core ML")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="MiniLM compressed by weightpress and coremltools side by side")
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)
    p = sub.add_parser("compress", help="compress the weights of an .mlpackage")
    compress.add_arguments(p)
    p.set_defaults(func=compress.run)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, WeightpressError) as exc:
        print(f"weightpress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weightpress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
