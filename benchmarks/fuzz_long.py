"""A longer fuzzing run than the suite's (tests/test_fuzz.py): every target for --minutes
each, reported as a table (inputs run, speed, corpus growth, findings).

    python benchmarks/fuzz_long.py [--minutes 10] [--targets spec,package] [--keep-corpus DIR]

Findings leave reproducers in --artifacts (default ./fuzz-artifacts); replay one with
`python tests/fuzz/run.py TARGET --reproduce FILE`, then add it to tests/fuzz/regressions.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "tests", "fuzz", "run.py")
sys.path.insert(0, os.path.join(ROOT, "tests", "fuzz"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_palettize import machine  # noqa: E402


def main():
    import targets

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--targets", default=",".join(sorted(targets.TARGETS)))
    p.add_argument("--artifacts", default="fuzz-artifacts")
    p.add_argument("--keep-corpus", help="grow corpora in DIR/TARGET instead of scratch directories")
    args = p.parse_args()

    rows = []
    for target in args.targets.split(","):
        command = [sys.executable, RUN, target, "--quiet", "--seconds", str(int(args.minutes * 60)),
                   "--artifacts", args.artifacts]
        if args.keep_corpus:
            command += ["--corpus", os.path.join(args.keep_corpus, target)]
        proc = subprocess.run(command, capture_output=True, text=True)
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(summary)
        print(f"{target}: {summary}", file=sys.stderr, flush=True)

    print(f"machine: {machine()}; {args.minutes:g} min per target, one process each")
    print()
    print("| target | inputs run | inputs/s | corpus (seeds -> kept) | peak RSS MB | slowest input s | exit | findings |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        findings = ", ".join(os.path.basename(f) for f in r["findings"]) or "none"
        print(f"| {r['target']} | {r['inputs_run']} | {r['execs_per_second']} | {r['corpus_in']} -> "
              f"{r['corpus_out']} | {r['peak_rss_mb']} | {r['slowest_input_seconds']} | {r['exit_code']} | {findings} |")
    return 1 if any(r["findings"] or r["exit_code"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
