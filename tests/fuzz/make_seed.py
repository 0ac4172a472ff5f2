"""Builds the fuzz seed package (tests/fuzz/seed.mlpackage) and the seed corpus
(tests/fuzz/corpus/<target>/). Checked in; rerun only to change the seeds:

    python tests/fuzz/make_seed.py [--corpus-only]   (--corpus-only: keep the package)

The seed is deliberately tiny (a few KB of weights): libFuzzer mutates whole inputs, and a
small valid package gives it every structure (several consts, consumers of each axis rule,
an fp32 and an fp16 weight) at a size it can mutate thousands of times a second.
"""

import json
import os
import shutil
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import targets  # noqa: E402

YAML_SEEDS = {
    "palettize.yaml": """config_type: OpPalettizerConfig
global_config:
  nbits: 4
  granularity: per_grouped_channel
  group_size: 16
op_type_configs:
  conv:
    nbits: 2
op_name_configs:
  linear_0: null
""",
    "quantize.yaml": """config_type: OpLinearQuantizerConfig
global_config:
  mode: linear_symmetric
  dtype: int4
  granularity: per_block
  block_size: 32
  weight_threshold: 64
""",
    "prune.yaml": """config_type: OpMagnitudePrunerConfig
global_config:
  target_sparsity: 0.5
op_type_configs:
  linear:
    n_m_ratio: [2, 4]
""",
}


def build_seed_package(path):
    import coremltools as ct
    from coremltools.converters.mil.mil import Builder as mb

    rng = np.random.default_rng(0)

    def w(*shape, dtype=np.float16):
        return (rng.standard_normal(shape) * 0.1).astype(dtype)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 6, 6))], opset_version=ct.target.iOS18)
    def prog(x):
        y = mb.conv(x=x, weight=w(16, 4, 3, 3), pad_type="same", name="conv")      # [1, 16, 6, 6]
        y = mb.reshape(x=y, shape=[1, 16, 36], name="flat")
        y = mb.linear(x=y, weight=w(32, 36), name="linear")                      # [1, 16, 32]
        y = mb.matmul(x=y, y=w(32, 48), name="matmul_y")                         # [1, 16, 48]
        return y

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                       compute_precision=ct.precision.FLOAT16)
    shutil.rmtree(path, ignore_errors=True)
    model.save(path)


def read(relative):
    with open(os.path.join(targets.SEED_PACKAGE, relative), "rb") as f:
        return f.read()


def _spec_with(edit):
    from weightpress.mlpackage.proto import modules

    Model_pb2, _ = modules()
    model = Model_pb2.Model()
    model.ParseFromString(read(targets.SPEC))
    main = model.mlProgram.functions["main"]
    ops = {op.outputs[0].name: op for op in main.block_specializations[main.opset].operations}
    edit(model, main, ops)
    return model.SerializeToString()


def _inline_odd_bytes(model, main, ops):
    val = ops["conv_weight_0"].attributes["val"]
    val.ClearField("blobFileValue")
    val.immediateValue.tensor.bytes.values = b"\x00\x01\x02"


def _no_bools(model, main, ops):
    del ops["matmul_y_transpose_y_0"].attributes["val"].immediateValue.tensor.bools.values[:]


def _huge_dims(model, main, ops):
    ops["linear_weight_0"].attributes["val"].type.tensorType.dimensions[0].constant.size = 1 << 41


def _weights_with(at_blob, field_offset, fmt, value):
    data = bytearray(read(targets.WEIGHTS))
    struct.pack_into(fmt, data, 64 * (1 + at_blob) + field_offset, value)  # the first blob's metadata
    return bytes(data)


def _recipe_regressions():
    """Recipes that once ended in a TypeError or OverflowError: top-level fields of the wrong
    JSON type (found by hand after the recipe target's first byte-level runs, which rarely
    turn an object into a number; the JSON mutator now does) and an infinite dimension."""
    seed = json.loads(recipe_seed())
    out = {}
    for name, key, value in (("target-not-object", "target", 5), ("predicted-list", "predicted", [1, 2]),
                             ("model-list", "model", [1]), ("sensitivity-object", "sensitivity", {"a": 1})):
        bad = json.loads(json.dumps(seed))
        bad[key] = value
        out[name] = json.dumps(bad).encode()
    # found by the recipe target's JSON mutator: a dimension of 11e+308 (infinity)
    out["shape-infinity"] = (b'{"format": "weightpress-recipe", "version": 1, "weights": {"linear_weight_0": '
                             b'{"option": "palettize:4/g16", "shape": [32,11e+308]}}}')
    return out


def regressions():
    """Inputs that once ended in something other than a WeightpressError (found by the fuzzer
    or by reading the readers), and hostile shapes the issue names. tests/test_fuzz.py
    checks each is refused with a WeightpressError; run.py adds them to the seeds."""
    manifest = json.loads(read(targets.MANIFEST))
    root = manifest["rootModelIdentifier"]
    no_path = json.loads(json.dumps(manifest))
    del no_path["itemInfoEntries"][root]["path"]
    escape = json.loads(json.dumps(manifest))
    escape["itemInfoEntries"][root]["path"] = "../../Manifest.json"
    return {
        "manifest": {"root-without-path": json.dumps(no_path).encode(),
                     "path-outside-data": json.dumps(escape).encode(),
                     "not-an-object": b"[1, 2]"},
        "yaml": {"not-utf8": b"config_type: OpLinearQuantizerConfig\nglobal_config:\n  granularity:\xff per_block\n",
                 "unhashable-config-type": b"config_type: {a: 1}\n",
                 "non-string-op-name": b"config_type: OpPalettizerConfig\nop_name_configs:\n  1: {nbits: 4}\n"},
        "spec": {"const-without-output": _spec_with(lambda m, f, ops: ops["conv_weight_0"].ClearField("outputs")),
                 "inline-odd-bytes": _spec_with(_inline_odd_bytes),
                 "transpose-without-bools": _spec_with(_no_bools),
                 "no-block-for-opset": _spec_with(lambda m, f, ops: setattr(f, "opset", "CoreML5")),
                 "dims-2^41": _spec_with(_huge_dims)},
        "recipe": _recipe_regressions(),
        "weights": {"blob-size-2^60": _weights_with(0, 8, "<Q", 1 << 60),
                    "blob-offset-2^63": _weights_with(0, 16, "<Q", 1 << 63),
                    "count-2^32-1": _header_count((1 << 32) - 1)},
    }


def _header_count(count):
    data = bytearray(read(targets.WEIGHTS))
    struct.pack_into("<I", data, 0, count)
    return bytes(data)


def recipe_seed() -> bytes:
    """A recipe weightpress plan writes for the seed package (every option kind)."""
    from weightpress.plan import plan

    result = plan(targets.SEED_PACKAGE, target_bpw=6, weight_threshold=0,
                  options="palettize:2,4;granularity:per_tensor,per_grouped_channel:16;quantize:int8,int4/32;keep")
    data = result.recipe.to_dict()
    data["model"]["path"] = "seed.mlpackage"
    return json.dumps(data, indent=1).encode()


def write_corpus():
    corpus = os.path.join(HERE, "corpus")
    shutil.rmtree(corpus, ignore_errors=True)
    manifest, spec, weights = read(targets.MANIFEST), read(targets.SPEC), read(targets.WEIGHTS)
    seeds = {
        "manifest": {"seed": manifest, "empty-object": b"{}", "not-json": b"\x00{"},
        "weights": {"seed": weights, "header-only": weights[:64]},
        "spec": {"seed": spec},
        "yaml": {name: text.encode() for name, text in YAML_SEEDS.items()},
        "recipe": {"seed.json": recipe_seed()},
        "package": {"seed": targets.join_package(manifest, spec, weights),
                    "seed-odd": targets.join_package(manifest, spec, weights) + b"\x00"},
    }
    for target, files in seeds.items():
        os.makedirs(os.path.join(corpus, target))
        for name, data in files.items():
            with open(os.path.join(corpus, target, name), "wb") as f:
                f.write(data)
    found = os.path.join(HERE, "regressions")
    shutil.rmtree(found, ignore_errors=True)
    for target, files in regressions().items():
        os.makedirs(os.path.join(found, target))
        for name, data in files.items():
            with open(os.path.join(found, target, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    if "--corpus-only" not in sys.argv:
        build_seed_package(targets.SEED_PACKAGE)
    write_corpus()
    for root, _, files in os.walk(HERE):
        for name in files:
            p = os.path.join(root, name)
            print(os.path.relpath(p, HERE), os.path.getsize(p))
