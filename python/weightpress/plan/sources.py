"""The weights a plan covers: the consts compress would consider in a package (read one at
a time, the axes inferred as compress infers them), or named arrays."""

from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..mlpackage import values as V
from .analysis import WeightSource


@contextlib.contextmanager
def package_sources(path: str, weight_threshold: int):
    """(sources, fixed, shapes): the weights of the package compress would consider (float,
    rank >= 2, more than weight_threshold elements, feeding compute ops), the weight.bin
    bytes of everything else, and name -> (shape, dtype) of the sources. In a multifunction
    package a const is named "function::const"; a blob two functions share is one source."""
    from ..mlpackage.package import function_order, read_package
    from ..mlpackage.select import Graph, all_ops, io_axes
    from ..mlpackage.weight_file import HEADER_SIZE, WeightFileReader
    from .sizes import footprint
    from .options import Option

    package, spec = read_package(path)
    reader = WeightFileReader(package.weight_file) if package.weight_file else None
    try:
        functions = function_order(spec)
        by_blob: Dict[int, WeightSource] = {}
        aliases: Dict[str, List[str]] = {}
        shapes: Dict[str, Tuple[Tuple[int, ...], str]] = {}
        for fname in functions:
            function = spec.mlProgram.functions[fname]
            block = function.block_specializations[function.opset]
            graph = Graph(block)
            for op in all_ops(block):
                if op.type != "const":
                    continue
                val = op.attributes["val"]
                code, shape = V.tensor_type_of(val)
                name = op.outputs[0].name
                consumers = graph.consumers.get(name, [])
                if code not in (V.FLOAT16, V.FLOAT32) or len(shape) < 2 or not consumers \
                        or any(c.op.type.startswith("constexpr_") for c in consumers):
                    continue
                if int(np.prod(shape)) <= weight_threshold or val.WhichOneof("value") != "blobFileValue":
                    continue
                qualified = f"{fname}::{name}" if len(functions) > 1 else name
                shapes[qualified] = (tuple(shape), V.TYPES[code][0])
                offset = val.blobFileValue.offset
                if offset in by_blob:
                    aliases[by_blob[offset].name].append(qualified)
                    continue
                in_axis, out_axis = io_axes(name, len(shape), graph)
                by_blob[offset] = WeightSource(qualified, tuple(shape), code, _reader_of(reader, val), in_axis,
                                               out_axis)
                aliases[qualified] = [qualified]
        planned = sum(footprint(Option("keep"), s.shape, s.dtype_code, None).blob_bytes for s in by_blob.values())
        fixed = (reader.size if reader is not None else HEADER_SIZE) - planned
        yield list(by_blob.values()), aliases, fixed, shapes
    finally:
        if reader is not None:
            reader.close()


def _reader_of(reader, val):
    def read():
        blob = reader.blob(val.blobFileValue.offset)
        reader.populate(blob)
        return V.read_value(val, reader).data

    return read


def array_sources(arrays: Dict[str, object], weight_threshold: int) -> List[WeightSource]:
    """Named arrays (numpy or torch) as weights: output channels on axis 0, inputs on axis 1."""
    from .._arrays import as_weight

    out = []
    for name, value in arrays.items():
        w = as_weight(value, "plan", min_rank=1)
        if w.ndim < 2 or w.size <= weight_threshold:
            continue
        code = V.FLOAT16 if w.dtype == np.float16 else V.FLOAT32
        out.append(WeightSource(str(name), tuple(w.shape), code, (lambda w=w: w), 1, 0))
    return out


def package_consts(path: str, weight_threshold: int = 0) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """name -> (shape, dtype) of the consts a recipe may name (compress's candidates)."""
    with package_sources(path, weight_threshold) as (_, _, _, shapes):
        return shapes


def threshold_note(weight_threshold: Optional[int]) -> str:
    return "" if not weight_threshold else f"weights of {weight_threshold} elements or fewer are left alone"
