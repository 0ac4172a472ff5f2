"""The weightpress command line.

    weightpress demo       the main job: MiniLM as a Core ML model, compressed by weightpress and
                           by coremltools side by side, checked end to end
    weightpress compress   compress an .mlpackage (palettize / quantize / prune, joint chains)
    weightpress info       what an .mlpackage holds, weight by weight
    weightpress plan       the best mix of methods and bit widths for a size budget (a recipe)
    weightpress run        a Python script or module with weightpress inside coremltools, unchanged
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .commands.errors import UsageError
from .errors import WeightpressError


def build_parser() -> argparse.ArgumentParser:
    from .commands import compress, demo, info, plan

    parser = argparse.ArgumentParser(prog="weightpress", description="Fast, exact weight compression for Core ML")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = [("demo", demo, "MiniLM compressed by weightpress and coremltools side by side"),
                ("compress", compress, "compress the weights of an .mlpackage"),
                ("run", None, "run a Python script or module with weightpress's kernels inside coremltools"),
                ("plan", plan, "the best mix of methods and bit widths for a size budget (a recipe)"),
                ("info", info, "what an .mlpackage holds, weight by weight")]
    for name, module, text in commands:
        if module is None:  # run: everything after it belongs to the script (main() handles it)
            p = sub.add_parser(name, help=text, description="weightpress run [--] [python] SCRIPT.py ARGS... | "
                                                            "weightpress run -m MODULE ARGS...")
            p.add_argument("command", nargs=argparse.REMAINDER, help="the script (or -m MODULE) and its arguments")
            continue
        p = sub.add_parser(name, help=text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C (staged output removed, kernels stopped at
    their next group or layer), then exits with 128 + the signal number."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def quiet_third_party_logs() -> None:
    """weightpress's own commands print only weightpress's output. coremltools logs at
    WARNING while it imports: versions of torch and scikit-learn it has not tested, and, off
    macOS, each native proxy it cannot load (eight lines). None of it concerns a weightpress
    command, so its logger shows errors only; `weightpress run` leaves a user's script its
    usual output."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)


def main(argv=None) -> int:
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _terminate)
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID`: every thread's Python stack to stderr (a stuck run)
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # everything after `run` is the script's (argparse would read its -m, -h ...)
        from .run import main as run_main

        return run_main(argv[1:])
    quiet_third_party_logs()
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, WeightpressError) as exc:
        print(f"weightpress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weightpress: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"weightpress: stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
