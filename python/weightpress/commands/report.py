"""Per-layer error of a compressed model: every compressed const against the original."""

from __future__ import annotations

import math

import numpy as np

# what coremltools names the op that replaces a compressed const (decompress_weights keeps it)
COMPRESSED_SUFFIXES = ("_palettized", "_quantized", "_sparsified", "_palettized_pcs")


def _consts_by_consumer(prog):
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


def _program(mlmodel, spec_version):
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = mlmodel.get_spec()
    return load(model_spec=spec, specification_version=max(spec.specificationVersion, spec_version),
                file_weights_dir=mlmodel.weights_dir)


def layer_report(original, compressed, spec_version):
    """One row per compressed weight: name, shape, the op that now produces it, SSE, PSNR (dB,
    peak = max |w|)."""
    import coremltools.optimize.coreml as cto

    before = _consts_by_consumer(_program(original, spec_version))
    after = _consts_by_consumer(_program(cto.decompress_weights(compressed), spec_version))
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
        mse = sse / value.size
        peak = float(np.abs(value).max())
        psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse) if peak > 0 else -math.inf
        rows.append({"weight": name, "compressed_as": new_name, "shape": list(value.shape), "sse": sse,
                     "psnr_db": psnr, "consumer": list(key)})
    return rows


def print_report(rows):
    width = max([len(r["weight"]) for r in rows] + [6])
    print(f"{'weight':<{width}}  {'shape':<20} {'SSE':>12} {'PSNR dB':>9}")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['weight']:<{width}}  {shape:<20} {r['sse']:>12.6g} {r['psnr_db']:>9.2f}")
    total = sum(r["sse"] for r in rows)
    print(f"{len(rows)} weights compressed, total SSE {total:.6g}")
