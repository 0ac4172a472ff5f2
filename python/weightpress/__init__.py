"""weightpress: fast, exact weight compression for Core ML.

Array APIs (numpy arrays or torch tensors in, Core ML layouts out):
    palettize(weight, nbits, ...)   k-means / uniform / unique / custom palettization
    sse_curve(weight, max_nbits)    optimal k-means SSE for every cluster count
    quantize(weight, dtype, ...)    blockwise linear quantization (int4/uint4/int8/uint8)
    prune(weight, ...)              threshold / magnitude / block / n:m pruning
    pack_bits / unpack_bits         Core ML's LSB-first sub-byte packing
"""

from .packing import pack_bits, unpack_bits
from .palettize import Ios16Lut, Ios18Lut, PalettizeResult, palettize, sse_curve
from .prune import Ios16Sparse, PruneResult, prune
from .quantize import Ios16Quant, QuantizeResult, quantize

__version__ = "0.1.0"

__all__ = [
    "Ios16Lut",
    "Ios18Lut",
    "Ios16Quant",
    "Ios16Sparse",
    "PalettizeResult",
    "PruneResult",
    "QuantizeResult",
    "pack_bits",
    "palettize",
    "prune",
    "quantize",
    "sse_curve",
    "unpack_bits",
]
