"""What a package holds, weight by weight: `weightpress info` and weightpress.package_info.

Read the way compress reads (the same validation, streaming, no coremltools import): every
weight a compute op consumes -- a dense const, or the chain of constexpr ops that
reconstructs a compressed one -- with its consumers, shape and dtype, how it is stored
(method, bits, granularity, group or block size, sparsity) and the bytes it takes in
weight.bin and inline. docs/formats.md describes the op forms.

A weight is listed when it has at least `weight_threshold` elements (what coremltools'
get_weights_metadata does; 0 lists every one). With stats=True dense weights are read, one
at a time, for their sparsity (|x| <= 1e-12, as coremltools counts it) and number of unique
values; a pruned weight's sparsity comes from its stored values' count without reading.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import values as V
from .package import TARGET_NAMES, function_order, read_package
from .select import Graph, all_ops, op_name
from .weight_file import WeightFileReader

# coremltools' names for the op replacing const C: C_palettized, C_quantized, C_sparsified, C_palettized_pcs
_SUFFIX = re.compile(r"_(palettized|quantized|sparsified)(_pcs)?$")


@dataclass
class Part:
    """One stored value of a compressed weight (a constexpr op's input or attribute)."""

    op: str  # the constexpr op's name
    key: str  # its input or attribute ("indices", "lut", "data", "scale", "mask", ...)
    dtype: str
    shape: Tuple[int, ...]
    bytes: int  # in weight.bin or inline
    offset: Optional[int] = None  # the weight.bin blob (ops of a chain may share one)


@dataclass
class WeightInfo:
    name: str  # the const's name (a compressed weight: the const it replaced)
    function: str
    consumers: List[Tuple[str, str, str]]  # (op type, op name, input)
    shape: Tuple[int, ...]
    dtype: str  # the weight's dtype as the program computes with it
    method: Optional[str] = None  # None: dense; else palettize / quantize / prune, joint as "prune+palettize"
    nbits: Optional[int] = None
    granularity: Optional[str] = None  # per_tensor / per_channel / per_grouped_channel / per_block
    axis: Optional[int] = None  # the grouped or blocked axis
    group_size: Optional[int] = None  # per_grouped_channel group / per_block block along `axis`
    cluster_dim: Optional[int] = None  # vector palettization
    per_channel_scale: bool = False
    offset: Optional[bool] = None  # quantization with a zero point
    sparsity: Optional[float] = None
    unique_values: Optional[int] = None
    stored_bytes: int = 0
    parts: List[Part] = field(default_factory=list)

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def dense_bytes(self) -> int:
        return self.elements * np.dtype(self.dtype).itemsize

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.stored_bytes / max(1, self.elements)

    def describe(self) -> str:
        """One line: 'palettize 4-bit per_grouped_channel 16', 'prune 50.0%', 'fp16'."""
        if self.method is None:
            text = {"float16": "fp16", "float32": "fp32"}.get(self.dtype, self.dtype)
            return text + (f", {100 * self.sparsity:.1f}% zeros" if self.sparsity else "")
        words = [self.method]
        if self.nbits is not None:
            words.append(f"{self.nbits}-bit")
        if self.granularity is not None:
            words.append(self.granularity + (f" {self.group_size}" if self.group_size else ""))
        if self.cluster_dim and self.cluster_dim > 1:
            words.append(f"vector {self.cluster_dim}")
        if self.per_channel_scale:
            words.append("+ per-channel scale")
        if self.sparsity is not None and "prune" in self.method:
            words.append(f"{100 * self.sparsity:.1f}% pruned")
        return " ".join(words)


@dataclass
class PackageInfo:
    path: str
    spec_version: int
    target: str
    functions: List[str]
    weights: List[WeightInfo]
    weight_file_bytes: int

    def totals(self) -> Dict[str, float]:
        elements = sum(w.elements for w in self.weights)
        stored = sum(w.stored_bytes for w in self.weights)
        compressed = [w for w in self.weights if w.method]
        return {"weights": len(self.weights), "compressed": len(compressed), "elements": elements,
                "dense_bytes": sum(w.dense_bytes for w in self.weights), "stored_bytes": stored,
                "bits_per_weight": 8.0 * stored / max(1, elements), "weight_file_bytes": self.weight_file_bytes}

    def to_dict(self) -> dict:
        weights = []
        for w in self.weights:
            d = asdict(w)
            d["shape"] = list(w.shape)
            d["consumers"] = [list(c) for c in w.consumers]
            d["dense_bytes"] = w.dense_bytes
            d["bits_per_weight"] = w.bits_per_weight
            d["parts"] = [dict(asdict(p), shape=list(p.shape)) for p in w.parts]
            weights.append(d)
        return {"path": self.path, "spec_version": self.spec_version, "target": self.target,
                "functions": self.functions, "weights": weights, "totals": self.totals()}


def package_info(path: str, weight_threshold: int = 0, stats: bool = False) -> PackageInfo:
    """Every weight of a .mlpackage (see the module docstring). Raises PackageError for
    anything compress would refuse to read."""
    package, spec = read_package(path)
    reader = WeightFileReader(package.weight_file) if package.weight_file else None
    try:
        weights = []
        functions = function_order(spec)
        for fname in functions:
            function = spec.mlProgram.functions[fname]
            block = function.block_specializations[function.opset]
            weights += _Survey(fname, block, reader, weight_threshold, stats).weights()
    finally:
        if reader is not None:
            reader.close()
    target = TARGET_NAMES.get(spec.specificationVersion, f"specification {spec.specificationVersion}")
    return PackageInfo(path, spec.specificationVersion, target, functions, weights,
                       reader.size if reader is not None else 0)


class _Survey:
    """The weights of one function."""

    def __init__(self, function, block, reader, threshold, stats):
        self.function, self.reader, self.threshold, self.stats = function, reader, threshold, stats
        self.ops = list(all_ops(block))
        self.graph = Graph(block)
        self.producer = {o.name: op for op in self.ops for o in op.outputs}

    def weights(self) -> List[WeightInfo]:
        found = []
        for op in self.ops:
            out = op.outputs[0].name
            compute = [c for c in self.graph.consumers.get(out, []) if not c.op.type.startswith("constexpr_")]
            if not compute:
                continue  # a parameter of a constexpr op, or unused
            consumers = [(c.op.type, op_name(c.op), c.input) for c in compute]
            if op.type == "const":
                info = self._dense(op, consumers)
            elif op.type.startswith("constexpr_"):
                info = self._compressed(op, consumers)
            else:
                continue
            if info is not None and info.elements >= self.threshold:
                found.append(info)
        return found

    # ---------------------------------------------------------------- dense consts
    def _dense(self, op, consumers) -> Optional[WeightInfo]:
        val = op.attributes["val"]
        code, shape = V.tensor_type_of(val)
        if code not in V.TYPES or V.TYPES[code][0] not in ("float16", "float32") or not shape:
            return None  # integer/bool consts (shapes, axes...) are not weights
        info = WeightInfo(name=out_name(op), function=self.function, consumers=consumers, shape=tuple(shape),
                          dtype=V.TYPES[code][0], stored_bytes=self._bytes(val))
        if self.stats and info.elements >= self.threshold:
            values = V.read_value(val, self.reader).data
            info.sparsity = float(np.mean(np.abs(values.astype(np.float32)) <= 1e-12))
            info.unique_values = int(np.unique(values).size)
            if self.reader is not None and val.WhichOneof("value") == "blobFileValue":
                self.reader.release(self.reader.blob(val.blobFileValue.offset))
        return info

    # ---------------------------------------------------------------- constexpr chains
    def _compressed(self, final, consumers) -> WeightInfo:
        chain = self._chain(final)
        code, shape = V.tensor_type_of(final.outputs[0])
        info = WeightInfo(name=_SUFFIX.sub("", _SUFFIX.sub("", final.outputs[0].name)), function=self.function,
                          consumers=consumers, shape=tuple(shape), dtype=V.TYPES[code][0])
        methods = []
        for op in chain:
            info.parts += self._parts(op)
            kind = op.type
            if kind in ("constexpr_lut_to_dense", "constexpr_lut_to_sparse"):
                methods.append("palettize")
                self._palettization(op, info)
            elif kind in ("constexpr_blockwise_shift_scale", "constexpr_sparse_blockwise_shift_scale",
                          "constexpr_affine_dequantize"):
                key = next((k for k in ("data", "nonzero_data", "quantized_data")
                            if k in op.inputs or k in op.attributes), "data")
                data = self._param(op, key)
                if data is not None and V.TYPES.get(data[0], ("float",))[0].startswith("float"):
                    info.per_channel_scale = True  # a scale on a LUT: part of palettization
                    continue
                methods.append("quantize")
                self._quantization(op, info, data)
            elif kind in ("constexpr_sparse_to_dense",):
                methods.append("prune")
                nonzero = self._param(op, "nonzero_data")
                if nonzero is not None:
                    info.sparsity = 1.0 - int(np.prod(nonzero[1])) / max(1, info.elements)
        order = ["prune", "quantize", "palettize"]
        info.method = "+".join(m for m in order if m in methods) or "+".join(sorted({op.type for op in chain}))
        blobs = {p.offset: p.bytes for p in info.parts if p.offset is not None}  # a shared blob counts once
        info.stored_bytes = sum(blobs.values()) + sum(p.bytes for p in info.parts if p.offset is None)
        return info

    def _chain(self, final) -> list:
        """The constexpr ops reconstructing `final`'s output, producers first."""
        seen, chain = set(), []

        def visit(op):
            if id(op) in seen:
                return
            seen.add(id(op))
            for arg in op.inputs.values():
                for binding in arg.arguments:
                    if binding.WhichOneof("binding") == "name":
                        producer = self.producer.get(binding.name)
                        if producer is not None and (producer.type.startswith("constexpr_") or producer.type == "const"):
                            visit(producer)
            if op.type.startswith("constexpr_"):
                chain.append(op)

        visit(final)
        return chain

    def _values(self, op):
        """(key, Value) of every stored parameter of a constexpr op: attributes (iOS16), inline
        or weight.bin inputs, and consts bound by name."""
        for key, value in op.attributes.items():
            if key != "name":
                yield key, value
        for key, arg in op.inputs.items():
            for binding in arg.arguments:
                if binding.WhichOneof("binding") == "value":
                    yield key, binding.value
                else:
                    producer = self.producer.get(binding.name)
                    if producer is not None and producer.type == "const":
                        yield key, producer.attributes["val"]

    def _param(self, op, key):
        """(dtype code, shape) of a parameter, stored or produced by another constexpr op."""
        for k, value in self._values(op):
            if k == key:
                return V.tensor_type_of(value)
        arg = op.inputs.get(key)
        if arg is not None and arg.arguments and arg.arguments[0].WhichOneof("binding") == "name":
            name = arg.arguments[0].name
            producer = self.producer.get(name)
            if producer is not None:
                return V.tensor_type_of(next(o for o in producer.outputs if o.name == name))
        return None

    def _parts(self, op) -> List[Part]:
        parts = []
        for key, value in self._values(op):
            code, shape = V.tensor_type_of(value)
            if not shape and value.WhichOneof("value") != "blobFileValue":
                continue  # scalars (axis, vector_axis)
            name = V.TYPES[code][0] if code in V.TYPES else str(code)
            offset = value.blobFileValue.offset if value.WhichOneof("value") == "blobFileValue" else None
            parts.append(Part(op=op_name(op), key=key, dtype=name, shape=tuple(shape), bytes=self._bytes(value),
                              offset=offset))
        return parts

    def _bytes(self, value) -> int:
        if value.WhichOneof("value") == "blobFileValue":
            return self.reader.blob(value.blobFileValue.offset).nbytes if self.reader is not None else 0
        tensor = value.immediateValue.tensor
        which = tensor.WhichOneof("value")
        if which == "bytes":
            return len(tensor.bytes.values)
        if which == "floats":
            return 4 * len(tensor.floats.values)
        if which == "ints":
            return 4 * len(tensor.ints.values)
        return 0

    def _palettization(self, op, info):
        indices = self._param(op, "indices" if op.type == "constexpr_lut_to_dense" else "indices_nonzero_data")
        lut = self._param(op, "lut")
        if "shape" in op.attributes:  # iOS16: one flat LUT for the whole tensor
            info.nbits = int(np.log2(max(2, int(np.prod(lut[1])))))
            info.granularity = "per_tensor"
            return
        name = V.TYPES.get(indices[0], ("",))[0] if indices else ""
        if name.startswith("uint"):
            info.nbits = int(name[4:])
        if lut is None:
            return
        # the grid of LUTs divides the indices' shape (a joint op's indices are the survivors
        # only: there, the weight's)
        lut_shape = lut[1]
        idx_shape = indices[1] if op.type == "constexpr_lut_to_dense" and indices else info.shape
        grid = lut_shape[:-2]
        info.cluster_dim = int(lut_shape[-1])
        split = [a for a, g in enumerate(grid) if g > 1]
        if not split:
            info.granularity = "per_tensor"
        else:
            info.axis = split[0]
            info.group_size = int(idx_shape[split[0]] // grid[split[0]])
            info.granularity = "per_grouped_channel"

    def _quantization(self, op, info, data):
        if data is not None:
            name = V.TYPES.get(data[0], ("",))[0]
            digits = "".join(ch for ch in name if ch.isdigit())
            info.nbits = int(digits) if digits else None
        scale = self._param(op, "scale")
        info.offset = self._param(op, "offset" if "offset" in op.inputs else "zero_point") is not None
        if op.type == "constexpr_affine_dequantize":
            info.granularity = "per_tensor" if scale is None or int(np.prod(scale[1])) <= 1 else "per_channel"
            return
        if scale is None or data is None:
            return
        scale_shape, data_shape = scale[1], data[1]
        if op.type == "constexpr_sparse_blockwise_shift_scale":  # data: the survivors; the mask has the shape
            mask = self._param(op, "data_mask")
            data_shape = mask[1] if mask is not None else info.shape
        split = [a for a, (s, d) in enumerate(zip(scale_shape, data_shape)) if s > 1]
        if not split:
            info.granularity = "per_tensor"
        elif all(scale_shape[a] == data_shape[a] for a in split) and len(split) == 1:
            info.granularity, info.axis = "per_channel", split[0]
        else:
            blocked = [a for a in split if scale_shape[a] != data_shape[a]]
            info.granularity = "per_block"
            info.axis = blocked[0]
            info.group_size = int(data_shape[blocked[0]] // scale_shape[blocked[0]])


def out_name(op) -> str:
    return op.outputs[0].name


__all__ = ["PackageInfo", "Part", "WeightInfo", "package_info"]
