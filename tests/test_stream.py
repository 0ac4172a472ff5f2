"""Streaming compression of .mlpackage files (python/weightpress/mlpackage/stream.py, through
the job entry weightpress.job.compress_model with engine="streaming").

The streamed output must be what the in-memory path (coremltools' machinery with weightpress
kernels, itself equal to coremltools on its deterministic paths) writes: the same program op
for op and the same weights after coremltools' decompress_weights, while holding one weight
in memory at a time and never importing coremltools or torch.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import weightpress.coreml as wpc
from coreml_oracle import decompressed_weights, linear_model, mixed_model, multifunction_package, program_signature
from weightpress.config import MagnitudePruneConfig, PalettizeConfig, QuantizeConfig
from weightpress.errors import ConfigError, MemoryBudgetError, PackageError, WeightFileError
from weightpress.job import compress_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stream(src, out, config, **options):
    return compress_model(str(src), str(out), config, engine="streaming", **options)


def child_env():
    """Environment for a child Python that imports the same weightpress as this process (the
    installed package in CI, the source tree with an in-place build in development)."""
    import weightpress

    here = os.path.dirname(os.path.dirname(os.path.abspath(weightpress.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([here] + sys.path))


@pytest.fixture(scope="module")
def cto(ct):
    import coremltools.optimize.coreml as cto

    return cto


@pytest.fixture(scope="module")
def sources(ct, tmp_path_factory):
    base = tmp_path_factory.mktemp("stream-src")
    out = {}
    for target in ("iOS16", "iOS18", "iOS26"):
        path = str(base / f"mixed-{target}.mlpackage")
        model = mixed_model(getattr(ct.target, target))
        model.author = "weightpress"
        model.short_description = "mixed consumers"
        model.user_defined_metadata["k"] = "v"
        model.save(path)
        out[target] = path
    return out


def assert_same_as_in_memory(ct, src, out, method, config):
    expected = getattr(wpc, method)(ct.models.MLModel(src, skip_model_load=True), config)
    got = ct.models.MLModel(str(out), skip_model_load=True)
    assert program_signature(got) == program_signature(expected)
    assert got.get_spec().specificationVersion == expected.get_spec().specificationVersion
    assert got.get_spec().description == expected.get_spec().description
    a, b = decompressed_weights(expected), decompressed_weights(got)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key].view(np.uint16), b[key].view(np.uint16), err_msg=key)


CASES = [
    ("iOS18", "palettize_weights", dict(nbits=4, granularity="per_grouped_channel", group_size=16)),
    ("iOS18", "palettize_weights", dict(nbits=3)),
    ("iOS18", "palettize_weights", dict(nbits=4, enable_per_channel_scale=True)),
    ("iOS26", "palettize_weights", dict(nbits=4, enable_per_channel_scale=True)),
    ("iOS18", "palettize_weights", dict(nbits=2, cluster_dim=2, granularity="per_grouped_channel", group_size=16)),
    ("iOS18", "palettize_weights", dict(mode="uniform", nbits=6)),
    ("iOS16", "palettize_weights", dict(nbits=4)),
    ("iOS18", "linear_quantize_weights", dict(dtype="int4", granularity="per_block", block_size=16)),
    ("iOS18", "linear_quantize_weights", dict(dtype="uint8", mode="linear")),
    ("iOS26", "linear_quantize_weights", dict(dtype="uint4", mode="linear", granularity="per_tensor")),
    ("iOS16", "linear_quantize_weights", dict(dtype="int8")),
    ("iOS16", "linear_quantize_weights", dict(dtype="uint8", mode="linear", granularity="per_tensor")),
    ("iOS18", "prune_weights", dict(target_sparsity=0.5)),
    ("iOS18", "prune_weights", dict(n_m_ratio=(2, 4))),
    ("iOS18", "prune_weights", dict(target_sparsity=0.4, block_size=2)),
    ("iOS16", "prune_weights", dict(threshold=0.05)),
]


def _op_config(cto, method, options):
    if method == "palettize_weights":
        return cto.OpPalettizerConfig(**options)
    if method == "linear_quantize_weights":
        return cto.OpLinearQuantizerConfig(**options)
    return (cto.OpThresholdPrunerConfig if "threshold" in options else cto.OpMagnitudePrunerConfig)(**options)


@pytest.mark.parametrize("target,method,options", CASES,
                         ids=[f"{t}-{m.split('_')[0]}-{'-'.join(map(str, o.values()))}" for t, m, o in CASES])
def test_streamed_equals_in_memory(ct, cto, sources, tmp_path, target, method, options):
    config = cto.OptimizationConfig(global_config=_op_config(cto, method, options))
    out = tmp_path / "out.mlpackage"
    result = stream(sources[target], str(out), config, report=True)
    assert result.compressed and len(result.rows) == len(result.compressed)
    assert_same_as_in_memory(ct, sources[target], out, method, config)


def test_op_type_and_name_configs(ct, cto, sources, tmp_path):
    config = cto.OptimizationConfig(
        global_config=cto.OpPalettizerConfig(nbits=4, weight_threshold=4096),
        op_type_configs={"conv": cto.OpPalettizerConfig(nbits=2, granularity="per_grouped_channel", group_size=8),
                         "matmul": None},
        op_name_configs={"matmul_x": cto.OpPalettizerConfig(mode="uniform", nbits=3, weight_threshold=1000)})
    out = tmp_path / "out.mlpackage"
    stream(sources["iOS18"], str(out), config)
    assert_same_as_in_memory(ct, sources["iOS18"], out, "palettize_weights", config)


def test_minilm_streamed_equals_in_memory(ct, cto, minilm_package, tmp_path):
    """On a converted transformer, coremltools' in-memory round trip also re-runs its whole
    pass pipeline, which rewrites some unrelated integer ops (gather index casts) a second
    time. The streaming path leaves everything but the compressed consts exactly as
    converted; the compressed ops and the weights Core ML reconstructs are the same."""
    for cfg in (cto.OpPalettizerConfig(nbits=4, granularity="per_grouped_channel", group_size=16),
                cto.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=32)):
        config = cto.OptimizationConfig(global_config=cfg)
        out = tmp_path / f"{type(cfg).__name__}.mlpackage"
        result = stream(minilm_package, str(out), config)
        assert len(result.compressed) >= 36
        method = "palettize_weights" if "Palett" in type(cfg).__name__ else "linear_quantize_weights"
        assert_same_compression_as_in_memory(ct, minilm_package, out, method, config, result)


def assert_same_compression_as_in_memory(ct, src, out, method, config, result):
    """The compressed ops equal the in-memory path's, every other op is the source's own
    (consumers renamed to the compressed ops), and the weights Core ML reconstructs are equal."""
    original = program_signature(ct.models.MLModel(src, skip_model_load=True))
    expected = getattr(wpc, method)(ct.models.MLModel(src, skip_model_load=True), config)
    got = ct.models.MLModel(str(out), skip_model_load=True)

    def constexprs(model):
        return [s for s in program_signature(model) if s[0].startswith("constexpr_")]

    assert constexprs(got) == constexprs(expected) and len(constexprs(got)) >= len(result.compressed)
    suffixes = {c + sfx: c for c in result.compressed for sfx in ("_palettized", "_quantized", "_sparsified")}

    def unrenamed(sig):  # consumers refer to C_palettized where the original had C
        op_type, outputs, inputs, attrs = sig
        inputs = tuple((k, tuple(suffixes.get(v, v) if isinstance(v, str) else v for v in vs)) for k, vs in inputs)
        return op_type, outputs, inputs, attrs

    rest = [unrenamed(s) for s in program_signature(got) if not s[0].startswith("constexpr_")]
    kept = [s for s in original if not (s[0] == "const" and s[1][0][0] in result.compressed)]
    assert rest == kept
    a, b = decompressed_weights(expected), decompressed_weights(got)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key].view(np.uint16), b[key].view(np.uint16), err_msg=key)


def test_ios15_is_raised_and_target_raises(ct, cto, tmp_path):
    w = (np.random.default_rng(3).standard_normal((64, 256)) * 0.05).astype(np.float16)
    src = str(tmp_path / "ios15.mlpackage")
    linear_model(w, ct.target.iOS15).save(src)
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(dtype="int8"))
    out = tmp_path / "o.mlpackage"
    result = stream(src, str(out), config)
    # coremltools' round trip at iOS16 also reorders and re-casts unrelated ops; the
    # streamed program keeps them as they were
    assert_same_compression_as_in_memory(ct, src, out, "linear_quantize_weights", config, result)
    assert ct.models.MLModel(str(out), skip_model_load=True).get_spec().specificationVersion == 7
    raised = tmp_path / "raised.mlpackage"
    stream(src, str(raised), QuantizeConfig(dtype="int4", granularity="per_block"),
                       target="iOS18")
    got = ct.models.MLModel(str(raised), skip_model_load=True)
    assert got.get_spec().specificationVersion == 9
    dense = decompressed_weights(got)["lin"]
    assert np.abs(dense.astype(np.float64) - w).max() < 0.02


def test_package_items_pass_through(sources, tmp_path):
    src = tmp_path / "src.mlpackage"
    shutil.copytree(sources["iOS18"], src)
    extra = src / "Data" / "com.example" / "notes.txt"
    extra.parent.mkdir(parents=True)
    extra.write_text("keep me")
    out = tmp_path / "out.mlpackage"
    stream(str(src), str(out), PalettizeConfig(nbits=2))
    assert (out / "Data" / "com.example" / "notes.txt").read_text() == "keep me"
    assert (out / "Manifest.json").read_text() == (src / "Manifest.json").read_text()


def test_never_imports_coremltools_or_torch(sources, tmp_path):
    code = (
        "import sys\n"
        "from weightpress.job import compress_model\n"
        "from weightpress.config import PalettizeConfig\n"
        f"compress_model({sources['iOS18']!r}, {str(tmp_path / 'o.mlpackage')!r}, PalettizeConfig(nbits=4))\n"
        "assert 'coremltools' not in sys.modules and 'torch' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('torch', 'coremltools'))][:5]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=child_env())
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- validation


def _copy(src, tmp_path):
    dst = tmp_path / "src.mlpackage"
    shutil.copytree(src, dst)
    return dst, dst / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated"),
    ("sentinel", "bad sentinel"),
    ("dtype", "unknown data type"),
    ("version", "unsupported blob storage version"),
])
def test_corrupt_weight_file_is_refused_without_output(sources, tmp_path, damage, message):
    src, weights = _copy(sources["iOS18"], tmp_path)
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 1000]
    elif damage == "sentinel":
        data[64:68] = b"\xff\xff\xff\xff"
    elif damage == "dtype":
        data[68:72] = (99).to_bytes(4, "little")
    else:
        data[4:8] = (3).to_bytes(4, "little")
    weights.write_bytes(bytes(data))
    out = tmp_path / "out.mlpackage"
    with pytest.raises((PackageError, WeightFileError), match=message):
        stream(str(src), str(out), PalettizeConfig(nbits=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mlpackage"]


def test_spec_pointing_outside_the_weight_file(sources, tmp_path):
    from weightpress.mlpackage.package import open_package
    from weightpress.mlpackage.proto import modules

    src, weights = _copy(sources["iOS18"], tmp_path)
    Model_pb2, _ = modules()
    package = open_package(str(src))
    spec = Model_pb2.Model()
    spec.ParseFromString(open(package.spec_path, "rb").read())
    fn = spec.mlProgram.functions["main"]
    for op in fn.block_specializations[fn.opset].operations:
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue":
            op.attributes["val"].blobFileValue.offset = os.path.getsize(weights) + 64 * 10
            break
    open(package.spec_path, "wb").write(spec.SerializeToString())
    with pytest.raises(PackageError, match="beyond the end of the file"):
        stream(str(src), str(tmp_path / "out.mlpackage"), PalettizeConfig(nbits=4))
    assert not (tmp_path / "out.mlpackage").exists()


def test_unsupported_spec_version_and_not_a_program(sources, tmp_path):
    from weightpress.mlpackage.package import open_package
    from weightpress.mlpackage.proto import modules

    src, _ = _copy(sources["iOS18"], tmp_path)
    Model_pb2, _ = modules()
    package = open_package(str(src))
    spec = Model_pb2.Model()
    spec.ParseFromString(open(package.spec_path, "rb").read())
    spec.specificationVersion = 99
    open(package.spec_path, "wb").write(spec.SerializeToString())
    with pytest.raises(PackageError, match="unsupported specification version 99"):
        stream(str(src), str(tmp_path / "out.mlpackage"), PalettizeConfig(nbits=4))
    open(package.spec_path, "wb").write(b"\x08\x07garbage\xff\xff")
    with pytest.raises(PackageError, match="cannot parse the model spec"):
        stream(str(src), str(tmp_path / "out.mlpackage"), PalettizeConfig(nbits=4))


def test_joint_is_not_streamed(ct, sources, tmp_path):
    steps = [MagnitudePruneConfig(target_sparsity=0.5), PalettizeConfig(nbits=4)]
    with pytest.raises(ConfigError, match="streaming engine does not support joint compression"):
        stream(sources["iOS18"], str(tmp_path / "o.mlpackage"), steps)


# ---------------------------------------------------------------- multifunction packages


@pytest.fixture(scope="module")
def multifunction(ct, tmp_path_factory):
    """A package built by save_multifunction: functions a and b from the same model (they share
    every weight blob), c from another model (it shares only the bias)."""
    path, sources = multifunction_package(ct, tmp_path_factory.mktemp("multi"), [("a", 0), ("b", 0), ("c", 1)])
    return dict(path=path, one=sources[0], two=sources[1])


def _decoded(path):
    """{function: {const name: dense weight}} decoded from a written package (verify.decode)."""
    from weightpress.mlpackage.package import load_spec, open_package
    from weightpress.mlpackage.verify import decode
    from weightpress.mlpackage.weight_file import WeightFileReader

    package = open_package(path)
    spec = load_spec(package)
    out = {}
    with WeightFileReader(package.weight_file) as reader:
        for name, fn in spec.mlProgram.functions.items():
            ops = list(fn.block_specializations[fn.opset].operations)
            by_output = {op.outputs[0].name: op for op in ops}
            weights = {}
            for op in ops:
                if not op.type.startswith("constexpr_"):
                    continue
                consumers = [o for o in ops for a in o.inputs.values() for b in a.arguments
                             if b.WhichOneof("binding") == "name" and b.name == op.outputs[0].name]
                if consumers and all(c.type.startswith("constexpr_") for c in consumers):
                    continue  # an intermediate op (a per-channel-scale LUT)
                chain, todo = [op], [op]
                while todo:
                    for a in todo.pop().inputs.values():
                        for b in a.arguments:
                            if b.WhichOneof("binding") == "name" and b.name in by_output:
                                chain.insert(0, by_output[b.name])
                                todo.append(by_output[b.name])
                const = op.outputs[0].name.rsplit("_", 1)[0]
                weights[const] = decode(chain, reader)
            out[name] = weights
    return out


@pytest.mark.parametrize("config", [PalettizeConfig(nbits=4, granularity="per_grouped_channel", group_size=16),
                                    QuantizeConfig(dtype="int4", granularity="per_block", block_size=16),
                                    MagnitudePruneConfig(target_sparsity=0.5)])
def test_multifunction_compresses_shared_weights_once(ct, multifunction, tmp_path, config):
    out = tmp_path / "multi.mlpackage"
    result = stream(multifunction["path"], out, config, verify=True)
    for function in ("a", "b", "c"):  # every function loads
        ct.models.MLModel(str(out), function_name=function, skip_model_load=True)
    alone = {}
    for key in ("one", "two"):
        single = tmp_path / f"{key}.mlpackage"
        stream(multifunction[key], single, config)
        alone[key] = (_decoded(str(single))["main"], os.path.getsize(single / "Data/com.apple.CoreML/weights/weight.bin"))
    got = _decoded(str(out))
    for function, key in (("a", "one"), ("b", "one"), ("c", "two")):
        assert got[function].keys() == alone[key][0].keys()
        for const, dense in alone[key][0].items():
            assert got[function][const].tobytes() == dense.tobytes(), (function, const)
    size = os.path.getsize(out / "Data/com.apple.CoreML/weights/weight.bin")
    # a and b share everything: the output holds one copy, plus c's own weights
    assert size <= alone["one"][1] + alone["two"][1]
    assert len(result.compressed) == 3 * len(alone["one"][0])


def test_multifunction_conflicting_configs_name_the_const(multifunction, tmp_path):
    from weightpress.config import MethodConfig

    config = MethodConfig(PalettizeConfig(nbits=4), op_name_configs={"b::linear": PalettizeConfig(nbits=2)})
    with pytest.raises(ConfigError, match="const linear_weight_0 of function b shares its weights with const "
                                          "linear_weight_0 of function a"):
        stream(multifunction["path"], tmp_path / "o.mlpackage", config)
    assert list(tmp_path.iterdir()) == []
    per_function = MethodConfig(PalettizeConfig(nbits=4), op_name_configs={"c::linear": PalettizeConfig(nbits=2)})
    stream(multifunction["path"], tmp_path / "o.mlpackage", per_function)  # c's weights are its own: fine
    assert _decoded(str(tmp_path / "o.mlpackage"))["c"]["linear_weight_0"].size


def test_multifunction_needs_the_streaming_engine(multifunction, tmp_path):
    with pytest.raises(ConfigError, match="streaming engine only"):
        compress_model(multifunction["path"], str(tmp_path / "o.mlpackage"),
                       [MagnitudePruneConfig(target_sparsity=0.5), PalettizeConfig(nbits=4)])


def test_nan_refused_by_name_and_inf_skipped_for_quantization(ct, tmp_path):
    w = (np.random.default_rng(4).standard_normal((64, 256)) * 0.05).astype(np.float16)
    w[2, 3] = np.inf
    src = str(tmp_path / "inf.mlpackage")
    linear_model(w, ct.target.iOS18).save(src)
    with pytest.raises(ValueError, match=r"const 'lin_weight_0' contains inf at flat index 515"):
        stream(src, str(tmp_path / "o.mlpackage"), PalettizeConfig(nbits=4))
    with pytest.raises(ConfigError, match="no compressible weights"):  # coremltools skips Inf for quantization
        stream(src, str(tmp_path / "o.mlpackage"), QuantizeConfig(dtype="int8"))
    w[2, 3] = np.nan
    linear_model(w, ct.target.iOS18).save(src)
    for config in (QuantizeConfig(), MagnitudePruneConfig(target_sparsity=0.5)):
        with pytest.raises(ValueError, match=r"const 'lin_weight_0' contains nan at flat index 515"):
            stream(src, str(tmp_path / "o.mlpackage"), config)
    assert not (tmp_path / "o.mlpackage").exists()


def test_weight_over_budget_is_named(sources, tmp_path):
    with pytest.raises(MemoryBudgetError, match=r"const linear_weight_0 \[128, 256\] needs about"):
        stream(sources["iOS18"], str(tmp_path / "o.mlpackage"), PalettizeConfig(nbits=4),
                           max_memory=200_000)
    assert not (tmp_path / "o.mlpackage").exists()


# ---------------------------------------------------------------- bounded memory


def _peak_rss_mib(code, env):
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024


def test_one_gigabyte_model_in_a_256_mib_budget(tmp_path):
    """About 1.1 GB of fp16 weights in a UNet-like layer mix, compressed with a 256 MiB
    budget: the compressing process's peak RSS (measured by the parent) stays under the
    budget plus the baseline of a process that only imports the streaming module."""
    from synthetic_models import big_model

    src = str(tmp_path / "big.mlpackage")
    params = big_model(src, 1 << 30)
    assert 2 * params > 1_000_000_000
    env = child_env()
    baseline = _peak_rss_mib("import weightpress.job, weightpress.mlpackage.stream, weightpress.mlpackage.proto as p; "
                             "p.modules()", env)
    out = str(tmp_path / "out.mlpackage")
    peak = _peak_rss_mib(
        "from weightpress.job import compress_model\n"
        "from weightpress.config import PalettizeConfig\n"
        f"r = compress_model({src!r}, {out!r}, PalettizeConfig(nbits=4), engine='streaming', max_memory=256 << 20)\n"
        "assert len(r.compressed) > 300\n", env)
    assert peak < baseline + 256, (peak, baseline)
    assert os.path.getsize(os.path.join(out, "Data", "com.apple.CoreML", "weights", "weight.bin")) < 0.3 * 2 * params


@pytest.mark.parametrize("target,method,options", CASES,
                         ids=[f"{t}-{m.split('_')[0]}-{'-'.join(map(str, o.values()))}" for t, m, o in CASES])
def test_verify_decodes_every_written_form(cto, sources, tmp_path, target, method, options):
    """--verify decodes each op form weightpress writes (iOS16 attributes, iOS18 inputs,
    per-channel scale in both orders, vectors, sub-byte data, masks) from the staged files."""
    config = cto.OptimizationConfig(global_config=_op_config(cto, method, options))
    result = stream(sources[target], tmp_path / "out.mlpackage", config, verify=True)
    assert result.compressed


def test_verify_catches_a_writer_that_lies(sources, tmp_path, monkeypatch):
    from weightpress.mlpackage import emit
    from weightpress.mlpackage.verify import VerifyError

    original = emit.Emitter.quantize

    def wrong(self, name, dtype, shape, r):  # write data that is off by one level
        r.data = (r.data.astype(np.int16) + 1).clip(-127, 127).astype(r.data.dtype)
        return original(self, name, dtype, shape, r)

    monkeypatch.setattr(emit.Emitter, "quantize", wrong)
    out = tmp_path / "out.mlpackage"
    with pytest.raises(VerifyError, match="does not decode to what was computed"):
        stream(sources["iOS18"], out, QuantizeConfig(dtype="int8"), verify=True)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_synthetic_linear_package_is_a_program_coremltools_reads(ct, tmp_path):
    # the writer behind the larger-than-memory benchmark (benchmarks/bench_stream.py --model flux)
    import synthetic_models

    src = tmp_path / "linear.mlpackage"
    layers = [(n, (a // 64, b // 64)) for n, (a, b) in synthetic_models.flux_layers()[:12]]
    params = synthetic_models.write_linear_package(str(src), layers)
    assert params == sum(a * b for _, (a, b) in layers)
    weights = decompressed_weights(ct.models.MLModel(str(src), skip_model_load=True))
    assert sorted(weights) == sorted(f"{n}_out.weight" for n, _ in layers)  # every layer reaches the output
    out = tmp_path / "out.mlpackage"
    stream(src, out, QuantizeConfig(dtype="int8", weight_threshold=0))
    got = decompressed_weights(ct.models.MLModel(str(out), skip_model_load=True))
    import weightpress as wp

    for name, w in weights.items():
        np.testing.assert_array_equal(got[name], wp.quantize(w, "int8").decompress())
