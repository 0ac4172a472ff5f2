"""The command line: `weightpress demo` runs the main job on real MiniLM weights."""

import os
import re
import subprocess
import sys


def run_cli(*args, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "weightpress.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_demo_compares_with_coremltools_on_real_weights():
    out = run_cli("demo", "--layers", "1")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "MiniLM-L6" in text and "encoder.layer.0.attention.self.query.weight" in text
    speed = float(re.search(r"speed-up ([0-9.]+)x", text).group(1))
    ratio = float(re.search(r"ratio coremltools/weightpress ([0-9.]+)", text).group(1))
    assert speed > 0
    # group_size 16 x 384 inputs < 10,000 elements: coremltools' sklearn path; ours is exact
    assert ratio >= 1.0


def test_demo_rejects_bad_options():
    out = run_cli("demo", "--nbits", "5")
    assert out.returncode == 2 and "invalid choice" in out.stderr
