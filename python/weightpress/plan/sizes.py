"""Exact bytes of every option: what compress would add to weight.bin and to the program.

A stored value goes to weight.bin or inline by coremltools' rule (values.goes_to_weight_file:
10 elements or more of a blob-able type); a blob costs its 64-byte metadata plus its data
padded to the next 64-byte boundary (docs/formats.md, "weight.bin"), an inline value its
bytes. The parts are those the streaming engine emits for the iOS18 forms (emit.py):
    palettize  indices (uint{n}, one per element), LUT (groups x 2^n entries, the weight's dtype)
    quantize   data (int{n}, one per element), scale (one per block), offset unless signed symmetric
    keep       the weight itself
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mlpackage import values as V
from ..mlpackage.weight_file import ALIGNMENT, METADATA_SIZE
from .options import Option

SPEC_IOS18 = 9


@dataclass(frozen=True)
class Footprint:
    blob_bytes: int  # added to weight.bin, metadata and alignment included
    inline_bytes: int  # stored in the program

    @property
    def total(self) -> int:
        return self.blob_bytes + self.inline_bytes


def _value(code: int, count: int, spec_version: int) -> Footprint:
    bits = V.TYPES[code][1]
    nbytes = (count * bits + 7) // 8
    if V.goes_to_weight_file(code, count, spec_version):
        padded = (nbytes + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
        return Footprint(METADATA_SIZE + padded, 0)
    return Footprint(0, nbytes)


def _sum(parts) -> Footprint:
    return Footprint(sum(p.blob_bytes for p in parts), sum(p.inline_bytes for p in parts))


def footprint(option: Option, shape, dtype_code: int, sizes, spec_version: int = SPEC_IOS18) -> Footprint:
    """The bytes of `option` for a weight of `shape` and dtype; `sizes` are the per-axis block
    sizes compress infers for it (0 = the whole axis), as select.block_sizes gives them."""
    count = int(np.prod(shape)) if len(shape) else 1
    if option.method == "keep":
        return _value(dtype_code, count, spec_version)
    blocks = [n // (b or n) for n, b in zip(shape, sizes)] if sizes is not None else [1] * len(shape)
    groups = int(np.prod(blocks)) if blocks else 1
    if option.method == "palettize":
        indices = _value(V.CODES[f"uint{option.nbits}"], count, spec_version)
        lut = _value(dtype_code, groups * (1 << option.nbits), spec_version)
        return _sum([indices, lut])
    code = V.CODES[option.dtype]
    parts = [_value(code, count, spec_version), _value(dtype_code, groups, spec_version)]
    if option.dtype.startswith("u"):  # unsigned (symmetric or not) stores a zero point
        parts.append(_value(code, groups, spec_version))
    return _sum(parts)
