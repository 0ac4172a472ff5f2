"""The fuzz harness (tests/fuzz) in the suite: a bounded coverage-guided run per reader of
untrusted bytes, replays of every past finding, and the harness's own ability to report one.

A longer run is benchmarks/fuzz_long.py. Each target here gets FUZZ_SECONDS (about a minute
for all six); the inputs and their outcomes are libFuzzer's, so the assertions are on the
contract: no finding, inputs actually run, coverage actually guiding (new inputs kept).
"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
sys.path.insert(0, FUZZ)

import targets  # noqa: E402

from weightpress.errors import WeightpressError  # noqa: E402

FUZZ_SECONDS = int(os.environ.get("WP_FUZZ_SECONDS", "10"))


def child_env():
    import weightpress

    here = os.path.dirname(os.path.dirname(os.path.abspath(weightpress.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([here] + sys.path))


def run_fuzzer(target, tmp_path, *extra):
    proc = subprocess.run([sys.executable, os.path.join(FUZZ, "run.py"), target, "--quiet",
                           "--artifacts", str(tmp_path), *extra],
                          capture_output=True, text=True, env=child_env(), timeout=600)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return proc, summary


def files(kind):
    root = os.path.join(FUZZ, kind)
    return [(t, n) for t in sorted(os.listdir(root)) for n in sorted(os.listdir(os.path.join(root, t)))]


def read(kind, target, name):
    with open(os.path.join(FUZZ, kind, target, name), "rb") as f:
        return f.read()


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_fuzzing_finds_nothing(target, tmp_path):
    proc, summary = run_fuzzer(target, tmp_path, "--seconds", str(FUZZ_SECONDS))
    assert summary["exit_code"] == 0 and summary["findings"] == [], proc.stdout[-4000:]
    assert os.listdir(tmp_path) == []  # no reproducer written
    assert summary["inputs_run"] >= 20 * FUZZ_SECONDS, summary
    assert summary["new_units"] > 0, summary  # the instrumentation guides the search


VALID_SEEDS = [(t, n) for t, n in files("corpus") if n.startswith("seed") or n.endswith(".yaml")]


@pytest.mark.parametrize("target,name", VALID_SEEDS)
def test_valid_seeds_are_accepted(target, name):
    # the search starts from inputs that get through every check (so mutations reach deep)
    targets.TARGETS[target](read("corpus", target, name), strict=True)


@pytest.mark.parametrize("target,name", files("regressions"))
def test_past_findings_are_refused_with_one_error(target, name):
    with pytest.raises(WeightpressError):
        targets.TARGETS[target](read("regressions", target, name), strict=True)
    targets.TARGETS[target](read("regressions", target, name))  # and leave nothing behind


def test_hostile_package_through_the_cli_is_one_line_and_exit_2(tmp_path):
    package = tmp_path / "in.mlpackage"
    import shutil

    shutil.copytree(targets.SEED_PACKAGE, package)
    with open(package / targets.SPEC, "wb") as f:
        f.write(read("regressions", "spec", "const-without-output"))
    before = sorted(os.listdir(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "weightpress", "compress", str(package), "-o",
                           str(tmp_path / "out.mlpackage"), "--palettize", "2"],
                          capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "an op whose outputs are not named" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_the_harness_reports_a_finding(tmp_path):
    # a reader with a bug two bytes deep: libFuzzer must find it, write a reproducer and fail
    buggy = tmp_path / "buggy.py"
    buggy.write_text("def target(data, strict=False):\n"
                     "    if data[:2] == b'WP':\n"
                     "        raise KeyError('not a WeightpressError')\n")
    artifacts = tmp_path / "artifacts"
    proc, summary = run_fuzzer(f"{buggy}:target", artifacts, "--seconds", "60")
    assert proc.returncode == 1 and summary["exit_code"] != 0, proc.stdout[-2000:]
    assert len(summary["findings"]) == 1 and os.path.exists(summary["findings"][0])
    with open(summary["findings"][0], "rb") as f:
        assert f.read()[:2] == b"WP"
