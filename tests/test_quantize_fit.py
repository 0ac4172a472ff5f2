"""quantize(fit="best"): the scale (and zero point) of least squared error, checked against
brute force: over real scales by enumerating every level assignment, and over every positive
fp16 scale (and every 4-bit zero point) in the decoder's own arithmetic."""

import itertools
import zlib

import numpy as np
import pytest

from coreml_oracle import constexpr_value
import weightpress as wp
from weightpress import _core, quantize

FULL = {"int4": (-8, 7), "uint4": (0, 15), "int8": (-128, 127), "uint8": (0, 255)}
# every positive finite fp16 value, as float32
FP16_SCALES = np.arange(1, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)


def real_optimum(v, lo, hi):
    """min over s > 0 of sum (v - s*clip(round(v/s), lo, hi))^2, by brute force: for a fixed
    level vector q the best s is (v.q)/(q.q), leaving |v|^2 - (v.q)^2/(q.q)."""
    best = float(v @ v)
    for q in itertools.product(range(lo, hi + 1), repeat=len(v)):
        q = np.array(q, dtype=np.float64)
        a, b = float(v @ q), float(q @ q)
        if b > 0 and a > 0:
            best = min(best, float(v @ v) - a * a / b)
    return best


def fp16_brute_force(w, levels):
    """The least error over every positive fp16 scale with every value at its best level,
    decoded as Core ML does in fp16 (one rounding of the exact product)."""
    total = np.zeros(FP16_SCALES.size)
    with np.errstate(over="ignore", invalid="ignore"):
        for x in w.astype(np.float64):
            best = np.full(FP16_SCALES.size, np.inf)
            for q in levels:
                d = x - (FP16_SCALES * np.float32(q)).astype(np.float16).astype(np.float64)
                best = np.minimum(best, np.where(np.isfinite(d), d * d, np.inf))
            total += best
    return total.min()


@pytest.mark.parametrize("lo, hi", [(-8, 7), (-7, 8), (0, 15), (-15, 0), (-3, 2), (-1, 1), (0, 3)])
def test_real_sweep_equals_brute_force(lo, hi):
    rng = np.random.default_rng((lo + 200) * 31 + hi)
    for trial in range(40):
        n = int(rng.integers(1, 4 if hi - lo > 7 else 5))
        v = rng.standard_normal(n) * rng.choice([1.0, 1e-3, 100.0])
        if trial % 4 == 0:
            v = np.round(v)  # ties: values on the breakpoints
        if trial % 7 == 0:
            v[:] = v[0]  # duplicates
        found = _core.best_real_scales(v, lo, hi, 8)
        mine = found[0][1] if found else float(v @ v)
        assert mine == pytest.approx(real_optimum(v, lo, hi), rel=1e-9, abs=1e-12 * float(v @ v) + 1e-300)


def test_real_sweep_minima_are_sorted_and_consistent():
    v = np.random.default_rng(1).standard_normal(64)
    found = _core.best_real_scales(v, -8, 7, 8)
    errors = [e for _, e in found]
    assert errors == sorted(errors) and len(found) > 1
    for s, e in found:  # each reported error is the error at that scale
        q = np.clip(np.rint(v / s), -8, 7)
        assert float(((v - s * q) ** 2).sum()) == pytest.approx(e, rel=1e-9)


@pytest.mark.parametrize("dtype, mode", [("int4", "linear_symmetric"), ("uint4", "linear_symmetric"),
                                         ("uint4", "linear"), ("int4", "linear")])
def test_fp16_equals_brute_force_over_every_fp16_scale(dtype, mode):
    rng = np.random.default_rng(len(dtype) * 7 + len(mode))
    lo, hi = FULL[dtype]
    if mode == "linear_symmetric":
        zero_points = [0] if dtype == "int4" else [7]  # coremltools' midpoint for unsigned
    else:
        zero_points = range(lo, hi + 1)
    cases = 10 if mode == "linear_symmetric" else 3
    for trial in range(cases):
        n = int(rng.integers(2, 7))
        w = (rng.standard_normal(n) * rng.choice([1.0, 1e-2, 30.0])).astype(np.float16)
        if trial % 3 == 0:
            w = np.abs(w)  # one-sided: affine zero points matter
        r = quantize(w.reshape(1, n), dtype, mode=mode, granularity="per_tensor", fit="best")
        brute = min(fp16_brute_force(w, [q - z for q in range(lo, hi + 1)]) for z in zero_points)
        assert r.sse == brute, (w, r.scale, r.offset)


@pytest.mark.parametrize("wdtype", [np.float16, np.float32])
@pytest.mark.parametrize("dtype", ["int4", "uint4", "int8", "uint8"])
@pytest.mark.parametrize("mode", ["linear_symmetric", "linear"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_block"])
def test_never_worse_than_coremltools_and_decoded_by_coremltools(wdtype, dtype, mode, granularity, ct):
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(zlib.crc32(f"{wdtype.__name__}{dtype}{mode}{granularity}".encode()))
    w = (rng.standard_normal((8, 64)) * 0.05).astype(wdtype)
    w[0] = 0  # all-zero blocks
    w[1, :32] = w[1, 0]  # a constant block
    w[2, 5] = 1.5  # an outlier
    w[3, :16] = np.float16(6e-8) if wdtype == np.float16 else 1e-40  # subnormals
    w[4] = np.abs(w[4])  # one-sided
    base = quantize(w, dtype, mode=mode, granularity=granularity, block_size=16)
    best = quantize(w, dtype, mode=mode, granularity=granularity, block_size=16, fit="best")
    assert best.sse <= base.sse
    assert best.scale.dtype == base.scale.dtype and best.scale.shape == base.scale.shape
    assert (best.offset is None) == (base.offset is None)
    # the parts mean what Core ML makes of them: coremltools' own decompression agrees
    data_type = types.nptype_from_builtin(types.string_to_builtin(dtype))
    value = constexpr_value(ct.target.iOS18, lambda mb: mb.constexpr_blockwise_shift_scale(
        data=best.data.astype(data_type), scale=best.scale,
        offset=None if best.offset is None else best.offset.astype(data_type)))
    assert value.tobytes() == best.decompress().tobytes()
    assert float(((best.decompress().astype(np.float64) - w.astype(np.float64)) ** 2).sum()) == pytest.approx(best.sse, rel=1e-12)


def test_fp32_reaches_the_real_optimum():
    rng = np.random.default_rng(5)
    for n in (3, 16, 32, 200):
        for _ in range(10):
            w = (rng.standard_normal(n) * 0.05).astype(np.float32)
            w[rng.integers(0, n)] *= rng.choice([1.0, 8.0])
            r = quantize(w.reshape(1, n), "int4", granularity="per_tensor", fit="best")
            optimum = _core.best_real_scales(w.astype(np.float64), -8, 7, 1)[0][1]
            # fp32 decoding errs by about 2^-24 relative: the optimum to that precision
            assert optimum * (1 - 1e-5) <= r.sse <= optimum * (1 + 1e-5) + 1e-30


def test_full_range_and_gain_on_gaussian_blocks():
    w = (np.random.default_rng(6).standard_normal((64, 256)) * 0.02).astype(np.float16)
    base = quantize(w, "int4", granularity="per_block", block_size=32)
    best = quantize(w, "int4", granularity="per_block", block_size=32, fit="best")
    assert best.data.min() == -8  # coremltools' symmetric int4 stops at -7
    assert 10 * np.log10(base.sse / best.sse) > 0.8  # measured 1.1 dB


def test_thread_count_does_not_change_the_result():
    w = (np.random.default_rng(7).standard_normal((48, 96)) * 0.1).astype(np.float16)
    for mode in ("linear_symmetric", "linear"):
        one = quantize(w, "uint4", mode=mode, granularity="per_block", block_size=32, fit="best", num_threads=1)
        two = quantize(w, "uint4", mode=mode, granularity="per_block", block_size=32, fit="best", num_threads=2)
        assert one.packed_data.tobytes() == two.packed_data.tobytes()
        assert one.scale.tobytes() == two.scale.tobytes() and one.offset.tobytes() == two.offset.tobytes()


def test_conv_weight_and_long_rows():
    rng = np.random.default_rng(8)
    conv = (rng.standard_normal((8, 16, 3, 3)) * 0.1).astype(np.float16)
    base = quantize(conv, "int8", granularity="per_channel")
    best = quantize(conv, "int8", granularity="per_channel", fit="best")
    assert best.sse <= base.sse and best.block_sizes == base.block_sizes
    rows = (rng.standard_normal((4, 4096)) * 0.02).astype(np.float16)
    assert quantize(rows, "int4", granularity="per_channel", fit="best").sse < \
        quantize(rows, "int4", granularity="per_channel").sse


def test_bad_input(monkeypatch):
    w = np.ones((4, 32), np.float16)
    with pytest.raises(ValueError, match="fit must be one of coremltools, best, got 'exact'"):
        quantize(w, "int4", fit="exact")
    bad = w.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantize(bad, "int4", fit="best")
    # a Metal device (none here): the best fit is refused before anything runs on it
    import importlib

    module = importlib.import_module("weightpress.quantize")
    monkeypatch.setattr(module, "backend_device", lambda backend, op: object())
    with pytest.raises(ValueError, match="quantize: fit='best' runs on the CPU backend only"):
        quantize(w, "int4", fit="best", backend="metal")


# ---------------------------------------------------------------- the CLI, configs and the planner


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "weightpress.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def linear_package(tmp_path_factory, ct):
    from coreml_oracle import linear_model

    w = (np.random.default_rng(9).standard_normal((64, 256)) * 0.02).astype(np.float16)
    path = str(tmp_path_factory.mktemp("fit") / "linear.mlpackage")
    linear_model(w, ct.target.iOS18).save(path)
    return path, w


def test_compress_with_best_fit_writes_what_quantize_computes(ct, linear_package, tmp_path):
    import json

    from coreml_oracle import decompressed_weights

    src, w = linear_package
    for fit in ("coremltools", "best"):
        out, report = tmp_path / f"{fit}.mlpackage", tmp_path / f"{fit}.json"
        r = _cli("compress", src, "-o", out, "--quantize", "int4", "--quantize-granularity", "per_block",
                 "--quantize-fit", fit, "--weight-threshold", 0, "--report-json", report, "--verify")
        assert r.returncode == 0, r.stderr
        dense = decompressed_weights(ct.models.MLModel(str(out), skip_model_load=True))["lin"]
        expected = quantize(w, "int4", granularity="per_block", block_size=32, fit=fit)
        assert dense.tobytes() == expected.decompress().tobytes()  # Core ML's reading of what was written
        sse = json.loads(report.read_text())["layers"][0]["sse"]
        assert sse == pytest.approx(expected.sse, rel=1e-9)
    assert json.loads((tmp_path / "best.json").read_text())["layers"][0]["sse"] < \
        json.loads((tmp_path / "coremltools.json").read_text())["layers"][0]["sse"]


def test_best_fit_outside_the_streaming_engine_is_one_clear_error(linear_package, tmp_path):
    src, _ = linear_package
    for extra in (["--in-memory"], ["--prune", "0.5"]):
        out = tmp_path / "o.mlpackage"
        r = _cli("compress", src, "-o", out, "--quantize", "int8", "--quantize-fit", "best", *extra)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("compressing ")]
        assert len(lines) == 1 and "fit 'best' runs on the streaming engine only" in lines[0], r.stderr
        assert not out.exists()


def test_config_round_trips_and_refuses_coremltools():
    from weightpress.config import MethodConfig, QuantizeConfig
    from weightpress.errors import ConfigError

    c = QuantizeConfig(dtype="int4", granularity="per_block", fit="best")
    assert MethodConfig.from_dict({"config_type": "OpLinearQuantizerConfig",
                                   "global_config": {"dtype": "int4", "granularity": "per_block",
                                                     "fit": "best"}}).global_config == c
    with pytest.raises(ConfigError, match="fit 'best' has no coremltools counterpart"):
        c.to_coremltools()
    with pytest.raises(ConfigError, match="fit must be one of coremltools, best"):
        QuantizeConfig(fit="exact")
    plain = QuantizeConfig(dtype="int4").to_coremltools()  # the default still converts
    assert not hasattr(plain, "fit")


def test_planner_option_language_and_labels():
    from weightpress.errors import ConfigError
    from weightpress.plan.options import Option, parse_options

    options = parse_options("quantize:int4/32,int4/32@best,int8@best")
    labels = sorted(o.label for o in options)
    assert labels == ["quantize:int4/b32", "quantize:int4/b32@best", "quantize:int8@best"]
    for o in options:
        assert Option.from_label(o.label) == o
        assert o.op_config().fit == o.fit
    with pytest.raises(ConfigError, match="unknown quantize fit 'exact'"):
        parse_options("quantize:int4/32@exact")


def test_plan_offers_the_best_fit(linear_package, tmp_path):
    import json

    src, _ = linear_package
    recipe = tmp_path / "recipe.json"
    r = _cli("plan", src, "--options", "quantize:int4/32,int4/32@best;keep", "--target-bpw", 4.6, "--weight-threshold", 0,
             "-o", recipe)
    assert r.returncode == 0, r.stderr
    data = json.loads(recipe.read_text())
    assert list(data["weights"].values())[0]["option"] == "quantize:int4/b32@best"  # same bytes, less error
    out = tmp_path / "planned.mlpackage"
    r = _cli("compress", src, "-o", out, "--recipe", recipe)
    assert r.returncode == 0, r.stderr
