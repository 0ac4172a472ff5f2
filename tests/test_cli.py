"""`weightpress demo`: the main job, end to end on the real MiniLM checkpoint."""

import os
import re
import subprocess
import sys

import pytest


def run_cli(*args, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "weightpress.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


def test_demo_default_palettization(workdir):
    out = run_cli("demo", "--workdir", workdir)
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


def test_demo_other_methods_reuse_the_conversion(workdir):
    out = run_cli("demo", "--workdir", workdir, "--quantize", "int8")
    assert out.returncode == 0, out.stderr
    assert "(cached)" in out.stdout
    cos = [float(v) for v in re.findall(r"^  ([0-9.]+)  ", out.stdout, re.M)]
    assert min(cos) > 0.99  # int8 per-channel barely moves the embeddings


def test_demo_rejects_bad_options():
    out = run_cli("demo", "--palettize", "5")
    assert out.returncode == 2 and "nbits" in out.stderr and "Traceback" not in out.stderr
