"""compress --calibrate: k-means palettization weighted by each input channel's E[x^2] on the
source torch model's sample inputs, and error feedback on X^T X of each layer's inputs
(weightpress.calibrate), end to end through the CLI."""

import json
import os
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


def _converted(ct, base, name, source, model_class, shape, precision):
    """(the imported model module, the path of its model converted to an iOS18 ML program)."""
    import importlib

    import torch

    (base / f"{name}.py").write_text(source)
    sys.path.insert(0, str(base))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(base))
    model = getattr(module, model_class)().eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, module.inputs(0, shape[0]))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape)], convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS18, compute_precision=precision)
    path = str(base / f"{name}.mlpackage")
    mlmodel.save(path)
    return module, path


@pytest.fixture(scope="module")
def calib(tmp_path_factory, ct):
    base = tmp_path_factory.mktemp("calib")
    module, path = _converted(ct, base, "calib_model", MODEL_SOURCE, "Net", (4, 64), ct.precision.FLOAT16)
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
    r = _cli(base, "compress", src, "-o", weighted, *common, "--calibrate", "calib_model:calibration", "--verify",
             "--no-error-feedback")
    assert r.returncode == 0, r.stderr
    # the matmul weight (converted as a transposed const) has no Linear module: named, data-free
    notes = [line for line in r.stderr.splitlines() if "no torch Linear/Conv module" in line]
    assert len(notes) == 1 and "transpose_0" in notes[0], r.stderr
    assert "first" not in notes[0] and "second" not in notes[0], r.stderr
    assert "X^T X" not in r.stderr  # --no-error-feedback: one forward pass, no matrices

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


def _statistics(module):
    """The calibration the CLI collects, through the library, checked against X^T X of each
    half of the inputs computed here."""
    import torch

    model, x = module.calibration()
    consts = ["first_weight_to_fp16", "second_weight_to_fp16"]
    stats = calibrate.layer_statistics(model, x, consts)
    with torch.no_grad():
        hidden = torch.relu(model.first(x))
    for const, inputs in zip(consts, (x, hidden)):
        halves = [inputs[:128].double().numpy(), inputs[128:].double().numpy()]
        for got, half in zip(stats.hessian_folds(const), halves):
            np.testing.assert_allclose(got, half.T @ half, rtol=1e-12, atol=1e-9)
    return stats


@pytest.mark.parametrize("method, compress", [
    (["--palettize", 2, "--granularity", "per_grouped_channel", "--group-size", 16],
     lambda w, m: wp.palettize(w, 2, granularity="per_grouped_channel", group_size=16,
                               sample_weight=calibrate.column_weights(m, w.shape, 1))),
    (["--quantize", "int4", "--quantize-granularity", "per_block", "--block-size", 16],
     lambda w, m: wp.quantize(w, "int4", granularity="per_block", block_size=16)),
], ids=["lut2-g16", "int4-b16"])
def test_error_feedback_from_the_cli_beats_the_same_format_without_it(ct, calib, tmp_path, method, compress):
    """Default --calibrate: every Linear weight's LUT indices / integers are error feedback's
    on X^T X per fold of the calibration inputs, at the cross-validated damping (or plain
    rounding where the held-out fold prefers it): bit for bit what the library computes;
    on held-out inputs the model's output is closer than without feedback."""
    base, src, module = calib
    plain, fed = tmp_path / "plain.mlpackage", tmp_path / "fed.mlpackage"
    common = [*method, "--weight-threshold", 0]
    # without feedback: the activation-weighted LUT; coremltools' quantization
    without_feedback = ["--calibrate", "calib_model:calibration", "--no-error-feedback"] if "--palettize" in method \
        else []
    r = _cli(base, "compress", src, "-o", plain, *common, *without_feedback)
    assert r.returncode == 0, r.stderr
    r = _cli(base, "compress", src, "-o", fed, *common, "--calibrate", "calib_model:calibration", "--verify")
    assert r.returncode == 0, r.stderr
    assert "note: calibration: X^T X of 2 layer(s) in 1 pass(es)" in r.stderr, r.stderr

    model, x = module.calibration()
    import torch

    with torch.no_grad():
        hidden = torch.relu(model.first(x)).double()
    moments = {"first": (x.double() ** 2).mean(0).numpy(), "second": (hidden ** 2).mean(0).numpy()}
    with _statistics(module) as stats:
        got = _by_layer(_dense(ct, fed))
        for name in ("first", "second"):
            w = getattr(model, name).weight.detach().numpy().astype(np.float16)
            expected, _ = calibrate.feed_back(compress(w, moments[name]), stats.hessian_folds(f"{name}_weight_to_fp16"))
            np.testing.assert_array_equal(got[name].view(np.uint16), expected.decompress().view(np.uint16))
    without = _output_error(module, _by_layer(_dense(ct, plain)))
    with_feedback = _output_error(module, got)
    assert with_feedback < 0.9 * without, (with_feedback, without)


CONV_SOURCE = textwrap.dedent('''
    import torch

    class ConvNet(torch.nn.Module):
        """3x3 convs (zero padding, then stride 2 unpadded) and a 1x1 conv."""

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.a = torch.nn.Conv2d(8, 32, 3, padding=1, bias=False)
            self.b = torch.nn.Conv2d(32, 16, 3, stride=2, bias=False)
            self.c = torch.nn.Conv2d(16, 24, 1, bias=False)
            with torch.no_grad():
                for conv in (self.a, self.b, self.c):
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)

        def forward(self, x):
            return self.c(torch.relu(self.b(torch.relu(self.a(x)))))

    GAIN = torch.cat([torch.full((2,), 8.0), torch.full((6,), 0.2)]).reshape(1, 8, 1, 1)


    def inputs(seed, n=24):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 8, 12, 12, generator=g) * GAIN


    def calibration():
        return ConvNet().eval(), inputs(1)
''')


def test_conv_layers_get_error_feedback_on_their_unfolded_inputs(ct, tmp_path):
    """A conv net through the CLI: every conv weight (4-D, inputs on axis 1) is fed back on
    X^T X of its unfolded inputs, bit for bit what the library computes from the same
    statistics, and the held-out output error drops against coremltools' quantization."""
    import torch

    module, src = _converted(ct, tmp_path, "conv_model", CONV_SOURCE, "ConvNet", (2, 8, 12, 12),
                             ct.precision.FLOAT32)
    model = module.ConvNet().eval()
    plain, fed = tmp_path / "plain.mlpackage", tmp_path / "fed.mlpackage"
    method = ["--quantize", "int4", "--quantize-granularity", "per_block", "--block-size", 4, "--weight-threshold", 0]
    r = _cli(tmp_path, "compress", src, "-o", plain, *method)
    assert r.returncode == 0, r.stderr
    r = _cli(tmp_path, "compress", src, "-o", fed, *method, "--calibrate", "conv_model:calibration", "--damping", 0.1)
    assert r.returncode == 0, r.stderr
    assert "X^T X of 3 layer(s)" in r.stderr and "3 x error feedback, damping 0.1" in r.stderr, r.stderr

    def by_layer(path):
        dense = _dense(ct, path)
        return {name: next(v for v in dense.values() if v.shape == getattr(model, name).weight.shape)
                for name in ("a", "b", "c")}

    got = by_layer(fed)
    _, x = module.calibration()
    consts = [f"{name}_weight" for name in ("a", "b", "c")]
    with calibrate.layer_statistics(model, x, consts, damping=0.1) as stats:
        assert set(stats.hessian_files) == set(consts)
        for name in ("a", "b", "c"):
            (h,) = stats.hessian_folds(f"{name}_weight")
            w = getattr(model, name).weight.detach().numpy()
            assert h.shape == (w[0].size, w[0].size)  # in * kh * kw unfolded inputs
            expected = wp.quantize(w, "int4", granularity="per_block", block_size=(1, 4, 0, 0)).error_feedback(
                h, damping=0.1)
            np.testing.assert_array_equal(got[name], expected.decompress())

    def output_error(dense):
        held_out = module.inputs(2)
        net = module.ConvNet().eval()
        with torch.no_grad():
            reference = net(held_out)
            for name, value in dense.items():
                getattr(net, name).weight.copy_(torch.from_numpy(value.astype(np.float32)))
            return float(((net(held_out) - reference) ** 2).mean())

    assert output_error(got) < 0.9 * output_error(by_layer(plain))


def test_a_given_damping_skips_cross_validation(ct, calib, tmp_path):
    """--damping 0.1: X^T X of all the calibration inputs (one fold), one feedback pass per
    layer at that damping, bit for bit what the library computes; bad values: exit 2."""
    base, src, module = calib
    out = tmp_path / "fed.mlpackage"
    r = _cli(base, "compress", src, "-o", out, "--quantize", "int4", "--quantize-granularity", "per_block",
             "--block-size", 16, "--weight-threshold", 0, "--calibrate", "calib_model:calibration", "--damping", 0.1)
    assert r.returncode == 0, r.stderr
    assert "note: calibration: 2 x error feedback, damping 0.1" in r.stderr
    model, x = module.calibration()
    consts = ["first_weight_to_fp16", "second_weight_to_fp16"]
    got = _by_layer(_dense(ct, out))
    with calibrate.layer_statistics(model, x, consts, damping=0.1) as stats:
        for name, const in zip(("first", "second"), consts):
            (h,) = stats.hessian_folds(const)  # one fold: nothing to cross-validate
            w = getattr(model, name).weight.detach().numpy().astype(np.float16)
            expected = wp.quantize(w, "int4", granularity="per_block", block_size=16).error_feedback(h, damping=0.1)
            np.testing.assert_array_equal(got[name].view(np.uint16), expected.decompress().view(np.uint16))
    for bad, message in (("-1", "damping must be 'auto' or a finite number >= 0, got '-1'"),
                         ("soft", "damping must be 'auto' or a finite number >= 0, got 'soft'")):
        r = _cli(base, "compress", src, "-o", tmp_path / "bad.mlpackage", "--palettize", 4, "--calibrate",
                 "calib_model:calibration", "--damping", bad)
        assert r.returncode == 2 and message in r.stderr, r.stderr
    r = _cli(base, "compress", src, "-o", tmp_path / "bad.mlpackage", "--palettize", 4, "--damping", 1)
    assert r.returncode == 2 and "--damping needs --calibrate" in r.stderr
    assert not (tmp_path / "bad.mlpackage").exists()


def test_a_budget_too_small_for_error_feedback_names_the_layers_and_still_compresses(calib, tmp_path):
    """--max-memory 300K: the second layer's X^T X (96 inputs) does not fit and is never
    collected; the first's (64 inputs) is, but its feedback would not fit beside the
    compression itself. Both are activation-weighted, each named; the output is written."""
    base, src, _ = calib
    out = tmp_path / "o.mlpackage"
    r = _cli(base, "compress", src, "-o", out, "--palettize", 4, "--weight-threshold", 0, "--calibrate",
             "calib_model:calibration", "--max-memory", "300K")
    assert r.returncode == 0, r.stderr
    budget = [line for line in r.stderr.splitlines() if "--max-memory" in line]
    assert len(budget) == 2, r.stderr
    assert "second_weight" in budget[0] and "X^T X of its 96 inputs needs 360 KiB" in budget[0]
    assert "first_weight" in budget[1] and "error feedback needs about" in budget[1]
    assert "note: calibration: 2 x activation-weighted" in r.stderr
    assert (out / "Manifest.json").exists()


def test_layer_statistics_within_a_budget_fall_back_by_name_and_take_several_passes():
    import torch

    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1),
                               torch.nn.Flatten(), torch.nn.Linear(144, 144), torch.nn.Linear(144, 144),
                               torch.nn.Linear(144, 10))
    x = torch.randn(6, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    consts = ["0_weight", "2_weight", "4_weight", "5_weight", "6_weight"]
    # each layer's feedback fits the budget; a pass holds at most half of it in matrices: the
    # convs with the first 144-input Linear, then one Linear per pass
    with calibrate.layer_statistics(conv, x, consts, budget=calibrate.hessian_bytes(144)) as stats:
        assert set(stats.hessian_files) == set(consts) and stats.passes == 3
        # the 3x3 conv's X^T X is over its unfolded inputs (27 columns), padding included
        cols = torch.nn.functional.unfold(x.double(), 3, padding=1).transpose(1, 2).reshape(-1, 27)
        half = cols.shape[0] // 2
        for got, part in zip(stats.hessian_folds("0_weight"), (cols[:half], cols[half:])):
            np.testing.assert_allclose(got, (part.T @ part).numpy(), rtol=1e-12)
    with calibrate.layer_statistics(conv, x, consts, budget=calibrate.hessian_bytes(27)) as stats:
        assert set(stats.hessian_files) == {"0_weight", "2_weight"}
        assert set(stats.weighted_only) == {"4_weight", "5_weight", "6_weight"}
        assert "--max-memory" in stats.weighted_only["4_weight"]
        directory = stats._directory
    assert not os.path.exists(directory)  # the matrices go with the statistics
    with calibrate.layer_statistics(conv, x[:1], consts) as stats:  # one sample: nothing to cross-validate on
        assert not stats.hessian_files and len(stats.weighted_only) == 5


def test_feed_back_keeps_plain_rounding_when_the_held_out_fold_prefers_it():
    """A fold whose inputs excite channels the other never does: error feedback fitted on one
    half cannot help the other, and plain rounding is kept."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    a = rng.standard_normal((64, 32)) * np.r_[np.ones(16), np.zeros(16)]
    b = rng.standard_normal((64, 32)) * np.r_[np.zeros(16), np.ones(16)]
    r = wp.quantize(w, "int4", granularity="per_block", block_size=8)
    fed, damping = calibrate.feed_back(r, [a.T @ a, b.T @ b])
    assert damping is None and fed is r
    mix = rng.standard_normal((32, 32)) * 0.3 + np.eye(32)  # both folds from one correlated distribution
    c, d = rng.standard_normal((256, 32)) @ mix, rng.standard_normal((256, 32)) @ mix
    fed, damping = calibrate.feed_back(r, [c.T @ c, d.T @ d])
    assert damping in calibrate.DAMPING_CANDIDATES and not np.array_equal(fed.data, r.data)


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


def test_calibration_needs_a_method_that_uses_it(calib, tmp_path):
    base, src, _ = calib
    r = _cli(base, "compress", src, "-o", tmp_path / "o.mlpackage", "--quantize", "int8", "--calibrate",
             "calib_model:calibration", "--no-error-feedback")
    assert r.returncode == 2 and "calibrate: applies to k-means palettization" in r.stderr
    assert "error feedback is off" in r.stderr
    r = _cli(base, "compress", src, "-o", tmp_path / "o.mlpackage", "--prune", "0.5", "--calibrate",
             "calib_model:calibration")
    assert r.returncode == 2 and "pruning does not use calibration data" in r.stderr
    r = _cli(base, "compress", src, "-o", tmp_path / "o.mlpackage", "--palettize", 4, "--no-error-feedback")
    assert r.returncode == 2 and "--no-error-feedback needs --calibrate" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_column_weights():
    m = np.array([4.0, 0.0, 1.0])
    w = calibrate.column_weights(m, (2, 3), 1)
    assert w.shape == (2, 3) and w[1, 0] == 4.0 and w[0, 2] == 1.0
    assert w[0, 1] == pytest.approx(1e-6 * m.mean())  # an unexcited channel keeps a floor
    with pytest.raises(calibrate.CalibrationError, match="does not take 3 input channels"):
        calibrate.column_weights(m, (3, 4), 1)
