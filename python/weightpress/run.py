"""weightpress run: somebody else's Python script or module, unchanged, with weightpress's
kernels inside coremltools -- in its own process and in every process it spawns or forks.

    weightpress run [--] python SCRIPT.py ARGS...
    weightpress run [--] SCRIPT.py ARGS...            (this interpreter)
    weightpress run -m MODULE ARGS...                 e.g. -m python_coreml_stable_diffusion.torch2coreml
    python -m weightpress.run ...                     (the same)

The command runs as a child process whose PYTHONPATH starts with weightpress/_run_site:
its sitecustomize enables the hooks (weightpress.coreml) the moment a process imports
coremltools, so forked children inherit them and spawned ones (multiprocessing, optimize.
torch's k-means workers) enable them themselves. stdin, stdout and stderr are the script's;
SIGTERM and SIGHUP are passed on (Ctrl-C reaches it from the terminal directly); the exit
code is the script's (128 + N when a signal N ended it). One line on stderr at the end says
how much went through weightpress.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

USAGE = ("usage: weightpress run [--] [python] SCRIPT.py [ARGS...]\n"
         "       weightpress run -m MODULE [ARGS...]")


class RunUsageError(ValueError):
    pass


def command_for(argv):
    """The child's command line from weightpress run's arguments."""
    args = list(argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise RunUsageError(USAGE)
    if args[0] == "-m":
        if len(args) < 2:
            raise RunUsageError("weightpress run -m: give the module to run")
        return [sys.executable, "-m", *args[1:]]
    first = os.path.basename(args[0])
    if first.startswith("python"):  # an interpreter: as given
        return args
    if args[0].endswith(".py") or os.path.isfile(args[0]):
        return [sys.executable, *args]
    raise RunUsageError(f"weightpress run: {args[0]!r} is not a Python script or interpreter\n{USAGE}")


def child_environment(stats_dir):
    import weightpress

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(weightpress.__file__)))
    site = os.path.join(os.path.dirname(os.path.abspath(weightpress.__file__)), "_run_site")
    path = [site, package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), WEIGHTPRESS_RUN="1", WEIGHTPRESS_RUN_STATS=stats_dir)


def summary(stats_dir) -> str:
    weights = kmeans = processes = 0
    seconds = 0.0
    for name in os.listdir(stats_dir):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(stats_dir, name)) as f:
                s = json.load(f)
        except (OSError, ValueError):
            continue
        processes += 1
        weights += s["weights"]
        kmeans += s["kmeans"]
        seconds += s["seconds"]
    if not processes:
        return "weightpress run: nothing went through weightpress (the script compressed no weights with coremltools)"
    parts = [f"{weights} weight{'s' * (weights != 1)}"] if weights else []
    if kmeans:
        parts.append(f"{kmeans} k-means problem{'s' * (kmeans != 1)}")
    return (f"weightpress run: {' and '.join(parts)} through weightpress in {processes} "
            f"process{'es' * (processes != 1)}, {seconds:.2f} s in its kernels")


def run(argv) -> int:
    command = command_for(argv)
    stats_dir = tempfile.mkdtemp(prefix="weightpress-run-")
    forwarded = {}
    try:
        try:
            proc = subprocess.Popen(command, env=child_environment(stats_dir))
        except OSError as exc:
            raise RunUsageError(f"weightpress run: cannot start {command[0]}: {exc.strerror}") from None

        def forward(signum, frame):
            proc.send_signal(signum)

        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                forwarded[name] = signal.signal(getattr(signal, name), forward)
        forwarded["SIGINT"] = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends it to the child
        code = proc.wait()
        print(summary(stats_dir), file=sys.stderr, flush=True)
        return code if code >= 0 else 128 - code
    finally:
        for name, handler in forwarded.items():
            signal.signal(getattr(signal, name), handler)
        shutil.rmtree(stats_dir, ignore_errors=True)


def main(argv=None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except RunUsageError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
