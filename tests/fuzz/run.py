"""Coverage-guided fuzzing of weightpress's readers of untrusted bytes (atheris + libFuzzer).

    python tests/fuzz/run.py TARGET [--seconds N] [--runs N] [--corpus DIR] [--artifacts DIR]
    python tests/fuzz/run.py TARGET --reproduce FILE

TARGET is one of targets.TARGETS (or FILE.py:FUNCTION). The checked-in seeds
(tests/fuzz/corpus/TARGET) and past findings (tests/fuzz/regressions/TARGET) start the run; new interesting inputs go to a scratch corpus (removed after) unless --corpus names a
directory to grow. A finding -- an exception other than WeightpressError, a crash, an input
taking longer than --timeout seconds, memory past --rss-limit-mb -- stops the run, leaves a
reproducer in --artifacts and makes the exit code non-zero. The last line printed is a JSON
summary (target, inputs run, corpus growth, findings) that tests/test_fuzz.py and
benchmarks/fuzz_long.py read.

libFuzzer ends its process without running Python's exit handlers, so the fuzzing runs in a
child process and this driver prepares the corpus, reads libFuzzer's final stats and cleans up.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target")
    p.add_argument("--seconds", type=int, default=60, help="total fuzzing time (libFuzzer -max_total_time)")
    p.add_argument("--runs", type=int, default=-1, help="stop after this many inputs (-1: time decides)")
    p.add_argument("--timeout", type=int, default=20, help="seconds one input may take before it is a hang")
    p.add_argument("--rss-limit-mb", type=int, default=2048, help="memory above which an input is a finding")
    p.add_argument("--max-len", type=int, default=0, help="largest input libFuzzer makes (0: from the seeds)")
    p.add_argument("--corpus", help="corpus directory to grow (default: a scratch copy of the seeds)")
    p.add_argument("--artifacts", default=os.getcwd(), help="where reproducers of findings go")
    p.add_argument("--reproduce", help="run one input file through the target and exit")
    p.add_argument("--quiet", action="store_true", help="keep libFuzzer's progress lines out of the output")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def load_target(name, instrument):
    sys.path.insert(0, HERE)
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["weightpress"]):
            import weightpress.config  # noqa: F401  (instrumented before the targets import them)
            import weightpress.job  # noqa: F401
            import weightpress.mlpackage.package  # noqa: F401
            import weightpress.mlpackage.stream  # noqa: F401
            import weightpress.mlpackage.verify  # noqa: F401
    import targets

    if ":" in name:  # FILE.py:FUNCTION, an ad-hoc target (and the harness's own test)
        import importlib.util

        path, function = name.rsplit(":", 1)
        spec = importlib.util.spec_from_file_location("adhoc_target", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, function)
    if name not in targets.TARGETS:
        sys.exit(f"run.py: unknown target {name!r}; choose from {sorted(targets.TARGETS)} or FILE.py:FUNCTION")
    return targets.TARGETS[name]


def child(args, libfuzzer_args):
    import atheris

    target = load_target(args.target, instrument=True)
    import mutators

    atheris.Setup([sys.argv[0], *libfuzzer_args], target, custom_mutator=mutators.MUTATORS.get(args.target))
    atheris.Fuzz()


STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
ARTIFACT = re.compile(r"Test unit written to (\S+)")


def seed_files(target):
    """The checked-in seeds and regression inputs of a target (an ad-hoc FILE.py:FUNCTION
    target starts from nothing, or from --corpus)."""
    files = []
    for kind in ("corpus", "regressions"):
        folder = os.path.join(HERE, kind, target)
        if ":" not in target and os.path.isdir(folder):
            files += [(f"{kind}-{name}", os.path.join(folder, name)) for name in sorted(os.listdir(folder))]
    return files


def drive(args):
    label = os.path.basename(args.target).replace(":", "-")
    scratch = None if args.corpus else tempfile.mkdtemp(prefix=f"wp-fuzz-corpus-{label}-")
    corpus = args.corpus or scratch
    try:
        os.makedirs(corpus, exist_ok=True)
        for name, path in seed_files(args.target):
            shutil.copy(path, os.path.join(corpus, name))
        corpus_in = len(os.listdir(corpus))
        os.makedirs(args.artifacts, exist_ok=True)
        libfuzzer = [corpus, f"-max_total_time={args.seconds}", f"-runs={args.runs}",
                     f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}",
                     f"-artifact_prefix={os.path.join(os.path.abspath(args.artifacts), label + '-')}",
                     "-print_final_stats=1"]
        if args.max_len:
            libfuzzer.append(f"-max_len={args.max_len}")
        command = [sys.executable, os.path.abspath(__file__), args.target, "--child", "--", *libfuzzer]
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace")
        log = proc.stdout
        if not args.quiet or proc.returncode != 0:
            sys.stdout.write(log)
        stats = {k: int(v) for k, v in STAT.findall(log)}
        summary = {"target": args.target, "exit_code": proc.returncode,
                   "inputs_run": stats.get("number_of_executed_units", 0),
                   "execs_per_second": stats.get("average_exec_per_sec", 0),
                   "new_units": stats.get("new_units_added", 0),
                   "peak_rss_mb": stats.get("peak_rss_mb", 0),
                   "slowest_input_seconds": stats.get("slowest_unit_time_sec", 0),
                   "corpus_in": corpus_in, "corpus_out": len(os.listdir(corpus)),
                   "findings": ARTIFACT.findall(log)}
        print(json.dumps(summary), flush=True)
        return 0 if proc.returncode == 0 and not summary["findings"] else 1
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    libfuzzer_args = []
    if "--" in argv:
        at = argv.index("--")
        argv, libfuzzer_args = argv[:at], argv[at + 1:]
    args = parse_args(argv)
    if args.child:
        child(args, libfuzzer_args)
        return 0
    if args.reproduce:
        target = load_target(args.target, instrument=False)
        with open(args.reproduce, "rb") as f:
            target(f.read())
        print("no finding: the input ends in success or a WeightpressError")
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
