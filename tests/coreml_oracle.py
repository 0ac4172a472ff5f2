"""coremltools as the oracle: build one constexpr op in a MIL program and let coremltools
compute its value (what Core ML decompresses)."""

import numpy as np


def constexpr_value(target, make_op):
    """make_op(mb) builds the op from our parts and returns its output var; returns the
    value coremltools' own value inference gives for it."""
    from coremltools.converters.mil.mil import Builder as mb

    captured = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=target)
    def prog(x):
        captured["value"] = make_op(mb).op.materialized_val_inference()
        return x

    return np.asarray(captured["value"])


def constexpr_chain_value(target, shape, dtype, make_ops):
    """make_ops(mb) builds a chain of constexpr ops from our parts and returns the final var;
    returns the dense value coremltools' WeightDecompressor (the decompress_weights pass)
    computes for it, which materializes chained constexpr ops."""
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.optimize.coreml._quantization_passes import WeightDecompressor

    in_type = types.fp16 if np.dtype(dtype) == np.float16 else types.fp32

    @mb.program(input_specs=[mb.TensorSpec(shape=tuple(shape), dtype=in_type)], opset_version=target)
    def prog(x):
        return mb.add(x=x, y=make_ops(mb), name="consumer")

    WeightDecompressor(op_selector=lambda op: True).apply(prog)
    consumer = next(op for op in prog.functions["main"].operations if op.name == "consumer")
    assert consumer.y.op.op_type == "const", consumer.y.op.op_type
    return np.asarray(consumer.y.val)


def linear_model(weight, target, in_features=None):
    """An ML program with one linear layer carrying `weight` (fp16 program)."""
    import coremltools as ct
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, weight.shape[1]), dtype=types.fp16)], opset_version=target)
    def prog(x):
        return mb.linear(x=x, weight=weight, name="lin")

    return ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                      compute_precision=ct.precision.FLOAT16)


def decompressed_weights(mlmodel, consumer_types=("linear", "conv", "conv_transpose", "matmul")):
    """{"<consumer op>.<input>": the dense weight Core ML reconstructs} via coremltools'
    decompress_weights, read back from the program (for the single-weight linear_model
    the key "lin" is also given)."""
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.frontend.milproto.load import load

    dense = cto.decompress_weights(mlmodel)
    spec = dense.get_spec()
    prog = load(model_spec=spec, specification_version=spec.specificationVersion,
                file_weights_dir=dense.weights_dir)
    out = {}
    for op in prog.functions["main"].operations:
        if op.op_type in consumer_types:
            for key in ("weight", "x", "y"):
                var = op.inputs.get(key)
                if var is not None and var.op is not None and var.op.op_type == "const" and var.rank >= 2:
                    out[f"{op.name}.{key}"] = np.asarray(var.val)
    if list(out) == ["lin.weight"]:
        out["lin"] = out["lin.weight"]
    return out


def mixed_model(target, seed=0, dtype=np.float16):
    """A small ML program whose consts feed every consumer kind coremltools infers axes for:
    linear, conv, conv_transpose, matmul with a const y (plain and transposed) and a const x."""
    import coremltools as ct
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(dtype)

    fp = types.fp16 if dtype == np.float16 else types.fp32

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 32, 8, 8), dtype=fp)], opset_version=target)
    def prog(x):
        y = mb.conv(x=x, weight=w(64, 32, 3, 3), pad_type="same", name="conv")
        y = mb.conv_transpose(x=y, weight=w(64, 32, 2, 2), strides=[2, 2], name="deconv")  # [1, 32, 16, 16]
        y = mb.reshape(x=y, shape=[1, 32, 256], name="flat")
        y = mb.linear(x=y, weight=w(128, 256), name="linear")                            # [1, 32, 128]
        y = mb.matmul(x=y, y=w(128, 192), name="matmul_y")                               # [1, 32, 192]
        y = mb.matmul(x=y, y=w(96, 192), transpose_y=True, name="matmul_yt")              # [1, 32, 96]
        y = mb.matmul(x=w(64, 32), y=y, name="matmul_x")                                 # [1, 64, 96]
        return y

    return ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                      compute_precision=ct.precision.FLOAT16 if dtype == np.float16 else ct.precision.FLOAT32)


def program_signature(mlmodel):
    """Every op of the main function as (type, outputs (name, dtype, shape), inputs (name ->
    argument names, or dtype/shape of immediate values)), in program order: what must be
    equal between two compressions of the same model apart from weight values."""
    spec = mlmodel.get_spec()
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    signature = []
    for op in block.operations:
        inputs = {}
        for key, arg in sorted(op.inputs.items()):
            inputs[key] = tuple(a.name if a.name else ("value", a.value.type.tensorType.dataType,
                                                       tuple(d.constant.size for d in a.value.type.tensorType.dimensions))
                                for a in arg.arguments)
        outputs = tuple((o.name, o.type.tensorType.dataType, tuple(d.constant.size for d in o.type.tensorType.dimensions))
                        for o in op.outputs)
        attrs = tuple(sorted((k, v.type.tensorType.dataType) for k, v in op.attributes.items()))
        signature.append((op.type, outputs, tuple(sorted(inputs.items())), attrs))
    return signature


def multifunction_package(ct, directory, functions):
    """A package built by coremltools' save_multifunction from mixed_model programs:
    functions = [(function name, seed)], the first the default. Each seed's model is saved once,
    so functions of one seed share its weight blobs. Returns (path, {seed: source package})."""
    import os

    from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction

    sources = {}
    desc = MultiFunctionDescriptor()
    for name, seed in functions:
        if seed not in sources:
            sources[seed] = os.path.join(str(directory), f"source-{seed}.mlpackage")
            mixed_model(ct.target.iOS18, seed=seed).save(sources[seed])
        desc.add_function(sources[seed], src_function_name="main", target_function_name=name)
    desc.default_function_name = functions[0][0]
    path = os.path.join(str(directory), "multi.mlpackage")
    save_multifunction(desc, path)
    return path, sources
