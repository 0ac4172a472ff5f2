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
