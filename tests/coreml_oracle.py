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
    """{consumer op name: the dense weight Core ML reconstructs} via coremltools'
    decompress_weights, read back from the program."""
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.frontend.milproto.load import load

    dense = cto.decompress_weights(mlmodel)
    spec = dense.get_spec()
    prog = load(model_spec=spec, specification_version=spec.specificationVersion,
                file_weights_dir=dense.weights_dir)
    out = {}
    for op in prog.functions["main"].operations:
        if op.op_type in consumer_types:
            var = op.weight if op.op_type != "matmul" else op.y
            out[op.name] = np.asarray(var.val)
    return out
