"""Large synthetic ML programs for memory tests, built without holding their weights.

Each weight is a broadcast view of one random row (distinct per layer, so coremltools'
const deduplication keeps them apart): the builder holds a few KB per layer, and
coremltools serialises one weight at a time.
"""

import numpy as np


def unet_like_blocks(total_bytes, width=640):
    """Layer shapes of a UNet-like mix (3x3 convs, attention projections, GEGLU feed-forward)
    repeated until about `total_bytes` of fp16 weights."""
    block = [("conv", (width, width, 3, 3)), ("conv", (width, width, 3, 3)),
             ("linear", (width, width)), ("linear", (width, width)), ("linear", (width, width)),
             ("linear", (width, width)), ("linear", (8 * width, width)), ("linear", (width, 4 * width))]
    per_block = sum(2 * int(np.prod(s)) for _, s in block)
    blocks = max(1, int(round(total_bytes / per_block)))
    return [layer for _ in range(blocks) for layer in block]


def big_model(path, total_bytes, target=None, seed=0):
    """Saves an fp16 ML program with about `total_bytes` of weights at `path`."""
    import coremltools as ct
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    target = target or ct.target.iOS18
    rng = np.random.default_rng(seed)
    layers = unet_like_blocks(total_bytes)
    width = layers[0][1][1]

    def weight(shape):
        row = (rng.standard_normal((1,) + shape[1:]) * 0.05).astype(np.float16)
        return np.broadcast_to(row, shape)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, width, 4, 4), dtype=types.fp16)], opset_version=target)
    def prog(x):
        y = x
        for i, (kind, shape) in enumerate(layers):
            if kind == "conv":
                y = mb.conv(x=y, weight=weight(shape), pad_type="same", name=f"conv_{i}")
                continue
            flat = mb.reshape(x=y, shape=[1, width * 16], name=f"flat_{i}")
            pooled = mb.slice_by_size(x=flat, begin=[0, 0], size=[1, shape[1]], name=f"take_{i}")
            z = mb.linear(x=pooled, weight=weight(shape), name=f"linear_{i}")
            z = mb.slice_by_size(x=z, begin=[0, 0], size=[1, width], name=f"cut_{i}")
            y = mb.add(x=y, y=mb.reshape(x=z, shape=[1, width, 1, 1], name=f"back_{i}"), name=f"res_{i}")
        return y

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       compute_precision=ct.precision.FLOAT16)
    model.save(path)
    return sum(int(np.prod(s)) for _, s in layers)


def flux_layers():
    """(name, (out, in)) of every Linear weight of a Flux.1-class diffusion transformer (19
    double-stream and 38 single-stream blocks, hidden size 3072, MLP ratio 4): about 11.9B
    parameters, 23.8 GB in fp16."""
    h, mlp = 3072, 4 * 3072
    layers = [("img_in", (h, 64)), ("txt_in", (h, 4096))]
    for embedder, width in (("time_in", 256), ("vector_in", 768), ("guidance_in", 256)):
        layers += [(f"{embedder}_in", (h, width)), (f"{embedder}_out", (h, h))]
    for b in range(19):
        for stream in ("img", "txt"):
            p = f"double_{b}_{stream}"
            layers += [(f"{p}_mod", (6 * h, h)), (f"{p}_qkv", (3 * h, h)), (f"{p}_proj", (h, h)),
                       (f"{p}_mlp_up", (mlp, h)), (f"{p}_mlp_down", (h, mlp))]
    for b in range(38):
        p = f"single_{b}"
        layers += [(f"{p}_mod", (3 * h, h)), (f"{p}_linear1", (3 * h + mlp, h)), (f"{p}_linear2", (h, h + mlp))]
    layers += [("final_mod", (2 * h, h)), ("final_linear", (64, h))]
    return layers


def write_linear_package(path, layers, seed=0, scale=0.02, progress=None):
    """An iOS18 fp16 ML program of `layers` ((name, (out, in)) Linear weights) written
    directly -- the spec as protobuf, the weights streamed into weight.bin one at a time --
    so that a package larger than memory can be made (coremltools holds a program's weights
    in memory while saving it). Every linear reads a slice of the one input and every output
    is summed into the model's one output. Weights are normal values (a 64M-value pool, shifted and scaled per
    layer). Returns the number of parameters."""
    import json
    import os
    import shutil
    import uuid

    from weightpress.mlpackage import values as V
    from weightpress.mlpackage.proto import modules
    from weightpress.mlpackage.weight_file import WeightFileWriter

    Model_pb2, MIL = modules()
    shutil.rmtree(path, ignore_errors=True)
    data = os.path.join(path, "Data", "com.apple.CoreML")
    os.makedirs(os.path.join(data, "weights"))
    widest = max(shape[1] for _, shape in layers)

    model = Model_pb2.Model()
    model.specificationVersion = 9  # iOS18
    for feature, width in ((model.description.input.add(), widest), (model.description.output.add(), 1)):
        feature.name = "x" if feature is model.description.input[0] else "y"
        array = feature.type.multiArrayType
        array.shape.extend([1, width])
        array.dataType = Model_pb2.ArrayFeatureType.FLOAT16
    program = model.mlProgram
    program.version = 1
    function = program.functions["main"]
    function.opset = "CoreML8"
    x = function.inputs.add()
    x.name = "x"
    V.set_tensor_type(x.type, V.FLOAT16, (1, widest))
    block = function.block_specializations["CoreML8"]

    def op(kind, name, shape, dtype=V.FLOAT16):
        o = block.operations.add()
        o.type = kind
        out = o.outputs.add()
        out.name = name
        V.set_tensor_type(out.type, dtype, shape)
        o.attributes["name"].CopyFrom(V.string_value(MIL, name))
        return o

    def ints_const(name, values):
        o = op("const", name, (len(values),), V.INT32)
        val = o.attributes["val"]
        V.set_tensor_type(val.type, V.INT32, (len(values),))
        val.immediateValue.tensor.ints.values.extend(values)

    def bind(o, key, name):
        o.inputs[key].arguments.add().name = name

    for width in sorted({shape[1] for _, shape in layers}):
        ints_const(f"x_{width}_begin", [0, 0])
        ints_const(f"x_{width}_size", [1, width])
        s = op("slice_by_size", f"x_{width}", (1, width))
        bind(s, "x", "x")
        bind(s, "begin", f"x_{width}_begin")
        bind(s, "size", f"x_{width}_size")

    ints_const("sum_axes", [-1])
    keep = op("const", "sum_keep", (), V.BOOL)
    V.set_tensor_type(keep.attributes["val"].type, V.BOOL, ())
    keep.attributes["val"].immediateValue.tensor.bools.values.append(True)

    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(64 << 20) * scale).astype(np.float16)
    total = 0
    with WeightFileWriter(os.path.join(data, "weights", "weight.bin")) as writer:
        for i, (name, (rows, cols)) in enumerate(layers):
            n = rows * cols
            start = int(rng.integers(0, pool.size))
            values = np.resize(np.roll(pool, -start), n) if n > pool.size - start else pool[start:start + n]
            values = (values * np.float16(1 + 0.25 * rng.standard_normal())).astype(np.float16)
            const = op("const", f"{name}_weight", (rows, cols))
            val = const.attributes["val"]
            V.set_tensor_type(val.type, V.FLOAT16, (rows, cols))
            val.blobFileValue.fileName = "@model_path/weights/weight.bin"
            val.blobFileValue.offset = writer.write("float16", values, n)
            linear = op("linear", f"{name}_out", (1, rows))
            bind(linear, "x", f"x_{cols}")
            bind(linear, "weight", f"{name}_weight")
            # every layer feeds the output (a dead one would be dropped by coremltools' passes)
            reduce = op("reduce_sum", f"{name}_sum", (1, 1))
            bind(reduce, "x", f"{name}_out")
            bind(reduce, "axes", "sum_axes")
            bind(reduce, "keep_dims", "sum_keep")
            if i:
                acc = op("add", f"acc_{i}", (1, 1))
                bind(acc, "x", f"acc_{i - 1}" if i > 1 else f"{layers[0][0]}_sum")
                bind(acc, "y", f"{name}_sum")
            total += n
            if progress:
                progress(i + 1, len(layers), total)
    y = op("identity", "y", (1, 1))
    bind(y, "x", f"acc_{len(layers) - 1}" if len(layers) > 1 else f"{layers[0][0]}_sum")
    block.outputs.append("y")
    with open(os.path.join(data, "model.mlmodel"), "wb") as f:
        f.write(model.SerializeToString())
    ids = [str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i)) for i in (1, 2)]
    manifest = {"fileFormatVersion": "1.0.0", "rootModelIdentifier": ids[1], "itemInfoEntries": {
        ids[0]: {"author": "com.apple.CoreML", "description": "CoreML Model Weights", "name": "weights",
                 "path": "com.apple.CoreML/weights"},
        ids[1]: {"author": "com.apple.CoreML", "description": "CoreML Model Specification", "name": "model.mlmodel",
                 "path": "com.apple.CoreML/model.mlmodel"}}}
    with open(os.path.join(path, "Manifest.json"), "w") as f:
        json.dump(manifest, f, indent=4)
    return total
