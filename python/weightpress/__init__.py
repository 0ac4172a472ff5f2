"""weightpress: fast, exact weight compression for Core ML.

Array APIs (numpy arrays or torch tensors in, Core ML layouts out):
    palettize(weight, nbits, ...)   k-means / uniform / unique / custom palettization
    sse_curve(weight, max_nbits)    optimal k-means SSE for every cluster count
    quantize(weight, dtype, ...)    blockwise linear quantization (int4/uint4/int8/uint8)
    prune(weight, ...)              threshold / magnitude / block / n:m pruning
    pack_bits / unpack_bits         Core ML's LSB-first sub-byte packing

Joint compression chains (iOS18+) are methods of the results, e.g.
    prune(w, target_sparsity=0.5).palettize(4)      palettize(w, 4).quantize_lut("int8")
    quantize(w, "int8").prune(n_m_ratio=(2, 4))     (see weightpress.results)

Models (.mlpackage):
    compress_model(in, out, config, ...)   a package compressed (weightpress.job; configs in
                                           weightpress.config: PalettizeConfig, QuantizeConfig, ...)
    package_info(path)                     what a package holds, weight by weight
the `weightpress` command line, and weightpress.coreml (coremltools' API on these kernels).
"""

from ._arrays import set_num_threads
from .api import palettize, prune, quantize
from .backends import backends
from .compressed import CompressedWeight, StoredPart
from .errors import (ConfigError, MemoryBudgetError, NonFiniteWeightError, NotApplicableError, PackageError,
                     WeightFileError, WeightpressError)
from .packing import pack_bits, unpack_bits
from .palettize import sse_curve
from .results import (Ios16Lut, Ios16Quant, Ios16Sparse, Ios18Lut, PalettizedQuantizeResult, PalettizeResult,
                      PruneResult, QuantizedLutResult, QuantizeResult, SparsePalettizeResult, SparseQuantizeResult)

__version__ = "0.1.0"

# The model-level names load their modules on first use: `import weightpress` stays an
# array library (no protobuf, no package code) until a package is touched.
_LAZY = {
    "compress_model": "job", "JobResult": "job",
    "Config": "config", "MethodConfig": "config", "PalettizeConfig": "config", "QuantizeConfig": "config",
    "MagnitudePruneConfig": "config", "ThresholdPruneConfig": "config",
    "package_info": "mlpackage.info", "PackageInfo": "mlpackage.info", "WeightInfo": "mlpackage.info",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weightpress' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)

__all__ = [
    *_LAZY,
    "CompressedWeight",
    "ConfigError",
    "MemoryBudgetError",
    "NonFiniteWeightError",
    "NotApplicableError",
    "PackageError",
    "StoredPart",
    "WeightFileError",
    "WeightpressError",
    "backends",
    "Ios16Lut",
    "Ios18Lut",
    "Ios16Quant",
    "Ios16Sparse",
    "PalettizeResult",
    "PalettizedQuantizeResult",
    "PruneResult",
    "QuantizeResult",
    "QuantizedLutResult",
    "SparsePalettizeResult",
    "SparseQuantizeResult",
    "pack_bits",
    "palettize",
    "prune",
    "quantize",
    "set_num_threads",
    "sse_curve",
    "unpack_bits",
]
