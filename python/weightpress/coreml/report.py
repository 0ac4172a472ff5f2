"""Per-layer error of a model compressed in memory: every compressed const against the
original, read through coremltools (its programs, its decompress_weights)."""

from __future__ import annotations

import numpy as np

from ..metrics import psnr

# what coremltools names the op that replaces a compressed const (decompress_weights keeps it)
COMPRESSED_SUFFIXES = ("_palettized", "_quantized", "_sparsified", "_palettized_pcs")


def consts_by_consumer(prog):
    """{(consumer op name, input name): (const name, value)} for every const input of rank >= 1."""
    out = {}
    for function in prog.functions.values():
        for op in function.operations:
            for key, var in op.inputs.items():
                if isinstance(var, (list, tuple)):
                    continue
                producer = var.op
                if producer is not None and producer.op_type == "const" and var.val is not None and var.rank >= 1:
                    out[(op.name, key)] = (producer.name, np.asarray(var.val))
    return out


def load_program(mlmodel, spec_version):
    """The pyMIL program of an MLModel, loaded at (at least) spec_version."""
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = mlmodel.get_spec()
    return load(model_spec=spec, specification_version=max(spec.specificationVersion, spec_version),
                file_weights_dir=mlmodel.weights_dir)


def layer_report(original, compressed, spec_version):
    """One row per compressed weight: name, shape, the op that now produces it, SSE, PSNR (dB,
    peak = max |w|), and the consumer (op name, input)."""
    import coremltools.optimize.coreml as cto

    before = consts_by_consumer(load_program(original, spec_version))
    after = consts_by_consumer(load_program(cto.decompress_weights(compressed), spec_version))
    rows, seen = [], set()
    for key, (name, value) in before.items():
        if key not in after or name in seen:
            continue
        new_name, dense = after[key]
        if new_name == name or value.dtype.kind != "f" or not new_name.endswith(COMPRESSED_SUFFIXES):
            continue  # not compressed (small consts may be renamed by coremltools' passes)
        seen.add(name)
        diff = dense.astype(np.float64) - value.astype(np.float64)
        sse = float(np.dot(diff.reshape(-1), diff.reshape(-1)))
        rows.append({"weight": name, "compressed_as": new_name, "shape": list(value.shape), "sse": sse,
                     "psnr_db": psnr(sse / value.size, float(np.abs(value).max())), "consumer": list(key)})
    return rows
