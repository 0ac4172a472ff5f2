"""weightpress info / weightpress.package_info (python/weightpress/mlpackage/info.py): what a
package holds, checked against coremltools' own get_weights_metadata and against the configs
the packages were compressed with."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from coreml_oracle import mixed_model, multifunction_package
from weightpress.config import Config, MagnitudePruneConfig, PalettizeConfig, QuantizeConfig
from weightpress.job import compress_model
from weightpress.mlpackage.info import package_info

FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz")


def child_env():
    import weightpress

    here = os.path.dirname(os.path.dirname(os.path.abspath(weightpress.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([here] + sys.path))


@pytest.fixture(scope="module")
def dense(ct, tmp_path_factory):
    base = tmp_path_factory.mktemp("info")
    out = {}
    for target, dtype in (("iOS16", np.float16), ("iOS18", np.float16), ("iOS18", np.float32)):
        path = str(base / f"mixed-{target}-{np.dtype(dtype).name}.mlpackage")
        model = mixed_model(getattr(ct.target, target), dtype=dtype)
        model.save(path)
        out[(target, np.dtype(dtype).name)] = path
    return out


@pytest.mark.parametrize("threshold", [0, 2048])
@pytest.mark.parametrize("which", [("iOS16", "float16"), ("iOS18", "float16"), ("iOS18", "float32")])
def test_dense_weights_agree_with_get_weights_metadata(ct, dense, which, threshold):
    import coremltools.optimize.coreml as cto

    path = dense[which]
    ours = {w.name: w for w in package_info(path, weight_threshold=threshold, stats=True).weights}
    theirs = cto.get_weights_metadata(ct.models.MLModel(path, skip_model_load=True), weight_threshold=threshold)
    floats = {k: v for k, v in theirs.items() if v.val.dtype.kind == "f"}  # ours: weights, not shapes/axes
    assert set(ours) == set(floats)
    for name, meta in floats.items():
        w = ours[name]
        assert w.shape == meta.val.shape and w.dtype == meta.val.dtype.name
        assert w.method is None and w.stored_bytes == meta.val.nbytes
        assert w.sparsity == pytest.approx(meta.sparsity) and w.unique_values == meta.unique_values
        assert sorted((c[0], c[1]) for c in w.consumers) == sorted((c.op_type, c.name) for c in meta.child_ops)


COMPRESSED = [
    ("iOS18", PalettizeConfig(nbits=4, granularity="per_grouped_channel", group_size=16),
     dict(method="palettize", nbits=4, granularity="per_grouped_channel", group_size=16)),
    ("iOS18", PalettizeConfig(nbits=3), dict(method="palettize", nbits=3, granularity="per_tensor")),
    ("iOS16", PalettizeConfig(nbits=2), dict(method="palettize", nbits=2, granularity="per_tensor")),
    ("iOS18", PalettizeConfig(nbits=4, enable_per_channel_scale=True),
     dict(method="palettize", nbits=4, per_channel_scale=True)),
    ("iOS26", PalettizeConfig(nbits=4, enable_per_channel_scale=True),
     dict(method="palettize", nbits=4, per_channel_scale=True)),
    ("iOS18", PalettizeConfig(nbits=2, cluster_dim=2, granularity="per_grouped_channel", group_size=16),
     dict(method="palettize", nbits=2, cluster_dim=2)),
    ("iOS18", QuantizeConfig(dtype="int4", granularity="per_block", block_size=16),
     dict(method="quantize", nbits=4, granularity="per_block", group_size=16, offset=False)),
    ("iOS18", QuantizeConfig(dtype="uint8", mode="linear"),
     dict(method="quantize", nbits=8, granularity="per_channel", offset=True)),
    ("iOS16", QuantizeConfig(dtype="int8"), dict(method="quantize", nbits=8, granularity="per_channel")),
    ("iOS18", MagnitudePruneConfig(target_sparsity=0.75), dict(method="prune")),
    ("iOS16", MagnitudePruneConfig(target_sparsity=0.5), dict(method="prune")),
    ("iOS18", Config.of(MagnitudePruneConfig(target_sparsity=0.5), PalettizeConfig(nbits=4)),
     dict(method="prune+palettize", nbits=4)),
    ("iOS18", Config.of(MagnitudePruneConfig(target_sparsity=0.5), QuantizeConfig(dtype="int8")),
     dict(method="prune+quantize", nbits=8)),
]


@pytest.mark.parametrize("target,config,expected", COMPRESSED, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(COMPRESSED)])
def test_compressed_weights_report_how_they_were_compressed(ct, dense, tmp_path, target, config, expected):
    import coremltools.optimize.coreml as cto

    src = dense[("iOS18" if target == "iOS26" else target, "float16")]
    out = str(tmp_path / "out.mlpackage")
    compress_model(src, out, config, target=target)
    info = package_info(out)
    before = {w.name: w for w in package_info(src).weights}
    compressed = [w for w in info.weights if w.method]
    assert compressed, "the config compresses the mixed model's large weights"
    for w in compressed:
        for key, value in expected.items():
            assert getattr(w, key) == value, (w.name, key, getattr(w, key), w.describe())
        assert w.name in before and w.shape == before[w.name].shape and w.dtype == before[w.name].dtype
        assert sorted(w.consumers) == sorted(before[w.name].consumers)
        if "prune" in w.method:
            assert w.sparsity >= 0.5 - 1e-9
        assert 0 < w.stored_bytes < w.dense_bytes
    assert {w.name for w in info.weights} == set(before)  # nothing lost, nothing invented
    # every byte of weight.bin belongs to a listed weight (plus 64-byte headers and alignment)
    stored = sum(w.stored_bytes for w in info.weights)
    blobs = sum(1 for w in info.weights for p in w.parts) + sum(1 for w in info.weights if not w.method)
    assert stored <= info.weight_file_bytes <= stored + 128 * (blobs + 1) + sum(
        4 * p.bytes for w in info.weights for p in w.parts if p.bytes < 64)
    # what coremltools lists (its constexpr parameters by op name) are parts of ours
    parts = {(p.op, p.key): p for w in info.weights for p in w.parts}
    theirs = cto.get_weights_metadata(ct.models.MLModel(out, skip_model_load=True), weight_threshold=0)
    for name, meta in theirs.items():
        child = meta.child_ops[0]
        if child.op_type.startswith("constexpr_"):
            key = next(k for k, v in child.params_name_mapping.items() if v == name)
            assert (child.name, key) in parts, (name, child.name, key)
            part = parts[(child.name, key)]
            assert part.shape == meta.val.shape or int(np.prod(part.shape)) == meta.val.size, (name, part)


def test_multifunction_packages_list_each_function(ct, tmp_path):
    path, sources = multifunction_package(ct, tmp_path, [("a", 0), ("b", 1)])
    info = package_info(path)
    assert info.functions == ["a", "b"]
    single = package_info(sources[0]).weights
    for function in ("a", "b"):
        mine = [w for w in info.weights if w.function == function]
        assert [(w.name, w.shape) for w in mine] == [(w.name, w.shape) for w in single]


def test_cli_table_json_and_errors(dense, tmp_path):
    path = dense[("iOS18", "float16")]
    run = lambda *a: subprocess.run([sys.executable, "-m", "weightpress", "info", *a], capture_output=True,  # noqa: E731
                                    text=True, env=child_env(), timeout=120)
    table = run(path)
    assert table.returncode == 0
    info = package_info(path)
    for w in info.weights:
        assert w.name in table.stdout
    assert f"{len(info.weights)} weights (0 compressed)" in table.stdout
    as_json = json.loads(run(path, "--json", "--weight-threshold", "2048").stdout)
    assert [w["name"] for w in as_json["weights"]] == [w.name for w in info.weights if w.elements >= 2048]
    assert as_json["target"] == "iOS18" and as_json["functions"] == ["main"]
    # damaged input: one line, exit 2, as compress
    broken = tmp_path / "broken.mlpackage"
    import shutil

    shutil.copytree(os.path.join(FUZZ, "seed.mlpackage"), broken)
    with open(os.path.join(FUZZ, "regressions", "spec", "const-without-output"), "rb") as f:
        spec = f.read()
    with open(broken / "Data" / "com.apple.CoreML" / "model.mlmodel", "wb") as f:
        f.write(spec)
    bad = run(str(broken))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    missing = run(str(tmp_path / "nothing.mlpackage"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_info_does_not_import_coremltools(dense):
    code = ("import sys, weightpress; weightpress.package_info(sys.argv[1], stats=True); "
            "assert 'coremltools' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, dense[("iOS18", "float16")]], check=True, env=child_env(),
                   timeout=120)
