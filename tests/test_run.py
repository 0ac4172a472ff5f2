"""weightpress run (python/weightpress/run.py): other people's scripts, unchanged, with
weightpress's kernels inside coremltools in every process they start."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from coreml_oracle import decompressed_weights, program_signature


def child_env():
    import weightpress

    here = os.path.dirname(os.path.dirname(os.path.abspath(weightpress.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([here] + sys.path))


CONVERT_AND_COMPRESS = textwrap.dedent('''
    """A user's script: a small torch model converted to Core ML, palettized and quantized with
    coremltools' own API. It knows nothing about weightpress."""
    import sys

    import coremltools as ct
    import coremltools.optimize.coreml as cto
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 96)).eval()
    traced = torch.jit.trace(model, torch.randn(1, 256))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(shape=(1, 256))], convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS18, compute_precision=ct.precision.FLOAT16)
    # per-tensor 4-bit on fp16 weights of >= 10,000 values (both are): coremltools' exact kmeans1d path
    palettized = cto.palettize_weights(mlmodel, cto.OptimizationConfig(
        global_config=cto.OpPalettizerConfig(nbits=4, weight_threshold=1000)))
    quantized = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(dtype="int8", weight_threshold=1000)))
    palettized.save(sys.argv[1] + "/palettized.mlpackage")
    quantized.save(sys.argv[1] + "/quantized.mlpackage")
    print("saved", sys.argv[1])
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
''')

TORCH_PALETTIZER = textwrap.dedent('''
    """optimize.torch's post-training palettizer with spawned k-means workers."""
    import sys

    import torch
    from coremltools.optimize.torch.palettization import PostTrainingPalettizer, PostTrainingPalettizerConfig

    if __name__ == "__main__":
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 32))
        config = PostTrainingPalettizerConfig.from_dict({"global_config": {"n_bits": 4, "granularity": "per_tensor"}})
        palettized = PostTrainingPalettizer(model, config).compress(num_kmeans_workers=2)
        torch.save({k: v for k, v in palettized.state_dict().items()}, sys.argv[1])
        if len(sys.argv) > 2:  # (the test's probe: how many k-means ran in this process itself)
            from weightpress.coreml._hooks import STATS
            print("k-means in the script's own process:", STATS.kmeans)
''')


def _run(args, tmp_path, via="weightpress"):
    command = {"weightpress": [sys.executable, "-m", "weightpress", "run"],
               "module": [sys.executable, "-m", "weightpress.run"], "plain": []}[via]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, env=child_env(),
                          cwd=tmp_path, timeout=600)


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("scripts") / "convert.py"
    path.write_text(CONVERT_AND_COMPRESS)
    return path


def test_script_unchanged_same_outputs_and_kernels_used(ct, script, tmp_path):
    plain, routed = tmp_path / "plain", tmp_path / "routed"
    plain.mkdir()
    routed.mkdir()
    a = _run([sys.executable, script, plain], tmp_path, via="plain")
    assert a.returncode == 0, a.stderr[-2000:]
    b = _run(["--", "python", script, routed], tmp_path)
    assert b.returncode == 0, b.stderr[-2000:]
    assert b.stdout == f"saved {routed}\n"  # the script's own output, untouched
    last = b.stderr.strip().splitlines()[-1]
    assert last.startswith("weightpress run: 4 weights through weightpress in 1 process"), last
    for name in ("palettized", "quantized"):
        theirs = ct.models.MLModel(str(plain / f"{name}.mlpackage"), skip_model_load=True)
        ours = ct.models.MLModel(str(routed / f"{name}.mlpackage"), skip_model_load=True)
        assert program_signature(ours) == program_signature(theirs)
        x, y = decompressed_weights(theirs), decompressed_weights(ours)
        assert x.keys() == y.keys() and x
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name} {key}")


def test_exit_code_and_module_form(script, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = _run([script, out, "3"], tmp_path, via="module")  # python -m weightpress.run SCRIPT.py
    assert r.returncode == 3
    assert "weightpress run: 4 weights" in r.stderr
    (tmp_path / "hello.py").write_text("import sys; print('hello', sys.argv[1:])\n")
    r = _run(["-m", "hello", "x", "-y"], tmp_path)  # -m MODULE, its own options passed through
    assert r.returncode == 0 and r.stdout == "hello ['x', '-y']\n"
    assert "nothing went through weightpress" in r.stderr


def test_spawned_workers_of_optimize_torch_run_the_kernels(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "palettize.py").write_text(TORCH_PALETTIZER)
    a = _run([sys.executable, "palettize.py", tmp_path / "plain.pt"], tmp_path, via="plain")
    assert a.returncode == 0, a.stderr[-2000:]
    b = _run(["palettize.py", tmp_path / "routed.pt", "probe"], tmp_path)
    assert b.returncode == 0, b.stderr[-2000:]
    last = b.stderr.strip().splitlines()[-1]
    # two k-means problems (one per layer), solved in the spawned workers, none in the script
    assert last.startswith("weightpress run: 2 k-means problems through weightpress"), last
    assert "k-means in the script's own process: 0" in b.stdout
    plain, routed = torch.load(tmp_path / "plain.pt"), torch.load(tmp_path / "routed.pt")
    assert plain.keys() == routed.keys()
    for key in plain:
        assert torch.equal(plain[key], routed[key]), key


def test_sigterm_reaches_the_script_and_its_code_comes_back(tmp_path):
    (tmp_path / "wait.py").write_text(textwrap.dedent('''
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(42))
        print("ready", flush=True)
        time.sleep(60)
    '''))
    proc = subprocess.Popen([sys.executable, "-m", "weightpress", "run", "wait.py"], cwd=tmp_path, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 42


@pytest.mark.parametrize("args,message", [([], "usage: weightpress run"), (["-m"], "give the module to run"),
                                          (["not-a-script"], "is not a Python script or interpreter")])
def test_usage_errors(tmp_path, args, message):
    r = _run(args, tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
