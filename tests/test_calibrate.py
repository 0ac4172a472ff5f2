"""compress --calibrate: k-means palettization weighted by each input channel's E[x^2] on the
source torch model's sample inputs (weightpress.calibrate), end to end through the CLI."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import weightpress as wp
from weightpress import calibrate

MODEL_SOURCE = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        """Two linear layers and a weight used through matmul (no Linear module)."""

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.first = torch.nn.Linear(64, 96, bias=False)
            self.second = torch.nn.Linear(96, 48, bias=False)
            self.loose = torch.nn.Parameter(torch.randn(48, 40, generator=g) * 0.1)
            with torch.no_grad():
                self.first.weight.copy_(torch.randn(96, 64, generator=g) * 0.1)
                self.second.weight.copy_(torch.randn(48, 96, generator=g) * 0.1)

        def forward(self, x):
            return torch.relu(self.second(torch.relu(self.first(x)))) @ self.loose

    # input channels of very different size: activation weighting has something to find
    GAIN = torch.cat([torch.full((8,), 10.0), torch.full((56,), 0.1)])


    def inputs(seed, n=256):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 64, generator=g) * GAIN


    def calibration():
        return Net().eval(), inputs(1)


    def held_out():
        return inputs(2)


    def failing():
        raise RuntimeError("no data today")


    def not_a_pair():
        return 42


    def wrong_shape():
        return Net().eval(), torch.zeros(4, 10)


    def with_nan():
        x = inputs(1)
        x[3, 5] = float("nan")
        return Net().eval(), x
''')


@pytest.fixture(scope="module")
def calib(tmp_path_factory, ct):
    import importlib
    import torch

    base = tmp_path_factory.mktemp("calib")
    (base / "calib_model.py").write_text(MODEL_SOURCE)
    sys.path.insert(0, str(base))
    try:
        module = importlib.import_module("calib_model")
    finally:
        sys.path.remove(str(base))
    model = module.Net().eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, module.inputs(0, 4))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(4, 64))], convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS18, compute_precision=ct.precision.FLOAT16)
    path = str(base / "net.mlpackage")
    mlmodel.save(path)
    return base, path, module


def _cli(base, *args):
    import os

    env = dict(os.environ, PYTHONPATH=str(base) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "weightpress.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def _dense(ct, path):
    from coreml_oracle import decompressed_weights

    return decompressed_weights(ct.models.MLModel(str(path), skip_model_load=True))


def _output_error(module, dense):
    """Mean squared error of the torch model's output on held-out inputs, with the weights
    Core ML decompresses swapped in."""
    import torch

    model = module.Net().eval()
    x = module.held_out()
    with torch.no_grad():
        reference = model(x)
        model.first.weight.copy_(torch.from_numpy(dense["first"].astype(np.float32)))
        model.second.weight.copy_(torch.from_numpy(dense["second"].astype(np.float32)))
        return float(((model(x) - reference) ** 2).mean())


def _by_layer(dense):
    out = {}
    for key, value in dense.items():
        if value.shape == (96, 64):
            out["first"] = value
        elif value.shape == (48, 96):
            out["second"] = value
    return out


def test_calibrated_luts_are_activation_weighted_kmeans_and_beat_data_free(ct, calib, tmp_path):
    base, src, module = calib
    plain, weighted = tmp_path / "plain.mlpackage", tmp_path / "weighted.mlpackage"
    common = ["--palettize", 2, "--granularity", "per_grouped_channel", "--group-size", 16, "--weight-threshold", 0]
    r = _cli(base, "compress", src, "-o", plain, *common)
    assert r.returncode == 0, r.stderr
    r = _cli(base, "compress", src, "-o", weighted, *common, "--calibrate", "calib_model:calibration", "--verify")
    assert r.returncode == 0, r.stderr
    # the matmul weight (converted as a transposed const) has no Linear module: named, data-free
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: calibration:")]
    assert len(notes) == 1 and "transpose_0" in notes[0], r.stderr
    assert "first" not in notes[0] and "second" not in notes[0], r.stderr

    model, x = module.calibration()
    moments = {"first": (x.double() ** 2).mean(0).numpy()}
    import torch

    with torch.no_grad():
        hidden = torch.relu(model.first(x)).double()
    moments["second"] = (hidden ** 2).mean(0).numpy()
    got = _by_layer(_dense(ct, weighted))
    for name in ("first", "second"):
        w = getattr(model, name).weight.detach().numpy().astype(np.float16)
        expected = wp.palettize(w, 2, granularity="per_grouped_channel", group_size=16,
                                sample_weight=calibrate.column_weights(moments[name], w.shape, 1))
        np.testing.assert_array_equal(got[name].view(np.uint16), expected.decompress().view(np.uint16))
    data_free = _output_error(module, _by_layer(_dense(ct, plain)))
    calibrated = _output_error(module, got)
    assert calibrated < 0.9 * data_free, (calibrated, data_free)  # measured 0.80


def test_python_api_takes_the_pair(ct, calib, tmp_path):
    _, src, module = calib
    out = tmp_path / "api.mlpackage"
    result = wp.compress_model(src, str(out), wp.PalettizeConfig(nbits=4, weight_threshold=0),
                               calibration=module.calibration())
    assert any("calibration:" in n and "transpose_0" in n for n in result.notes)
    assert out.exists()


@pytest.mark.parametrize("spec, extra, message", [
    ("calib_model:failing", [], "calibrate: calib_model:failing() failed: RuntimeError: no data today"),
    ("calib_model:not_a_pair", [], "must return (model, sample inputs), got int"),
    ("calib_model:wrong_shape", [], "calibrate: running the model on its sample inputs failed"),
    ("calib_model:with_nan", [], "NaN or Inf activations"),
    ("calib_model:missing", [], "calib_model"),
    ("calib_model:calibration", ["--in-memory"], "calibrate: runs on the streaming engine only"),
    ("calib_model:calibration", ["--prune", "0.5"], "calibrate: runs on the streaming engine only"),
])
def test_bad_calibration_is_one_line_and_nothing_written(calib, tmp_path, spec, extra, message):
    base, src, _ = calib
    out = tmp_path / "o.mlpackage"
    r = _cli(base, "compress", src, "-o", out, "--palettize", 4, *extra, "--calibrate", spec)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("compressing ")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_calibration_needs_kmeans_palettization(calib, tmp_path):
    base, src, _ = calib
    r = _cli(base, "compress", src, "-o", tmp_path / "o.mlpackage", "--quantize", "int8", "--calibrate",
             "calib_model:calibration")
    assert r.returncode == 2 and "calibrate: applies to k-means palettization" in r.stderr


def test_column_weights():
    m = np.array([4.0, 0.0, 1.0])
    w = calibrate.column_weights(m, (2, 3), 1)
    assert w.shape == (2, 3) and w[1, 0] == 4.0 and w[0, 2] == 1.0
    assert w[0, 1] == pytest.approx(1e-6 * m.mean())  # an unexcited channel keeps a floor
    with pytest.raises(calibrate.CalibrationError, match="does not take 3 input channels"):
        calibrate.column_weights(m, (3, 4), 1)
