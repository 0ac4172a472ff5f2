"""Joint compression: the chains coremltools 9.0 builds with joint_compression=True (iOS18+).

Each chain starts from a result of palettize / quantize / prune and applies the next
method to it, with coremltools' semantics (reference: coremltools-formats.md 3.4):

    prune -> palettize       PruneResult.palettize      constexpr_lut_to_sparse -> sparse_to_dense
    prune -> quantize        PruneResult.quantize       constexpr_sparse_blockwise_shift_scale -> ...
    palettize -> quantize    PalettizeResult.quantize_lut   the LUT quantized per tensor
    quantize -> palettize    QuantizeResult.palettize   the integer data palettized, LUT in its dtype
    quantize -> prune        QuantizeResult.prune       pruned on the dequantized values
    palettize -> prune       PalettizeResult.prune      pruned on the depalettized values
    prune -> palettize -> quantize  SparsePalettizeResult.quantize_lut

What coremltools 9.0 crashes on raises NotImplementedError naming the chain: vector
palettization (cluster_dim > 1) together with pruning in either order, per-channel-scale
palettization together with pruning in either order, and palettizing 4-bit quantized data
(Core ML has no 4-bit LUT dtype).

Every result has decompress(): the dense tensor coremltools' ops compute from its parts.
"""

from __future__ import annotations

from functools import cached_property
from typing import Optional

import numpy as np

from ._arrays import sum_squared_error
from .packing import pack_bits


def unsupported(chain: str, reason: str) -> NotImplementedError:
    return NotImplementedError(f"{chain}: {reason} (coremltools 9.0 fails on this chain too)")


def _check_lut_quant_options(granularity, op):
    if granularity != "per_tensor":
        raise ValueError(f"{op}: a quantized LUT takes per_tensor quantization only (one scale shared by all "
                         f"groups' LUTs, as coremltools requires), got granularity {granularity!r}")


def quantize_lut(lut: np.ndarray, dtype: str, mode: str, num_threads=None):
    """The per-tensor quantization of a LUT that coremltools' palettize -> quantize chain emits."""
    from .quantize import quantize

    return quantize(lut, dtype, mode=mode, granularity="per_tensor", num_threads=num_threads)


class QuantizedLutResult:
    """palettize -> quantize: the palettization with its LUT stored as integers.

    lut_quant  QuantizeResult of the LUT ([..., 2**nbits, cluster_dim]): data (int8/uint8
               values), scale and offset shaped (1,) * lut rank
    palettized the PalettizeResult whose LUT was quantized (indices, per-channel scale)
    On iOS18 coremltools emits shift_scale(lut data) -> lut_to_dense; on iOS26
    lut_to_dense(integer LUT) -> shift_scale. Both compute decompress().

    What coremltools 9.0 does at model level, for planning: it quantizes only LUTs of at
    least 10 entries (smaller consts stay inline), and with a per-channel scale it quantizes
    the LUT on iOS26 only (on iOS18 the LUT stays in float, silently).
    """

    def __init__(self, palettized, lut_quant):
        self.palettized = palettized
        self.lut_quant = lut_quant
        self.shape = palettized.shape
        self.dtype = palettized.dtype

    @property
    def indices(self) -> np.ndarray:
        return self.palettized.indices

    @cached_property
    def dequantized_lut(self) -> np.ndarray:
        return self.lut_quant.decompress()

    def decompress(self) -> np.ndarray:
        return self.palettized.decompress_with_lut(self.dequantized_lut)

    @cached_property
    def sse(self) -> float:
        return sum_squared_error(self.decompress(), self.palettized._weight)

    @property
    def nbytes(self) -> int:
        p = self.palettized
        lut_entries = p._emitted_lut_size()
        size = p.packed_indices.nbytes + lut_entries * self.lut_quant.nbits // 8 + self.lut_quant.scale.nbytes
        if p.per_channel_scale is not None:
            size += p.per_channel_scale.nbytes
        return size

    def prune(self, **options):
        raise unsupported("palettize -> quantize -> prune", "pruning a palettization whose LUT is quantized")

    def __repr__(self) -> str:
        return f"QuantizedLutResult({self.palettized!r}, lut dtype={self.lut_quant.dtype!r})"


class SparsePalettizeResult:
    """prune -> palettize or palettize -> prune: constexpr_lut_to_sparse parts.

    indices_mask          bool, the weight's shape (True = stored)
    indices_nonzero_data  uint8 LUT indices of the stored elements, C order (uint{nbits} in Core ML)
    lut                   the palettization's LUT (iOS18 layout), or lut_quant when quantized
    """

    def __init__(self, *, weight, mask, palettized, lut_quant=None, chain):
        self.shape = weight.shape
        self.dtype = weight.dtype
        self.indices_mask = mask
        self.palettized = palettized
        self.lut_quant = lut_quant
        self.chain = chain
        self._weight = weight

    @property
    def nbits(self) -> int:
        return self.palettized.nbits

    @property
    def lut(self) -> np.ndarray:
        return self.palettized.lut

    @cached_property
    def indices_nonzero_data(self) -> np.ndarray:
        return self.palettized.indices[self.indices_mask]

    @cached_property
    def packed_mask(self) -> np.ndarray:
        return np.packbits(self.indices_mask.reshape(-1), bitorder="little")

    def quantize_lut(self, dtype: str = "int8", *, mode: str = "linear_symmetric", granularity: str = "per_tensor",
                     num_threads=None) -> "SparsePalettizeResult":
        """chain -> quantize: the LUT of constexpr_lut_to_sparse stored as integers."""
        _check_lut_quant_options(granularity, f"{self.chain} -> quantize")
        if self.lut_quant is not None:
            raise ValueError(f"{self.chain} -> quantize: the LUT is already quantized")
        return SparsePalettizeResult(weight=self._weight, mask=self.indices_mask, palettized=self.palettized,
                                     lut_quant=quantize_lut(self.lut, dtype, mode, num_threads),
                                     chain=f"{self.chain} -> quantize")

    def decompress(self) -> np.ndarray:
        lut = self.lut_quant.decompress() if self.lut_quant is not None else None
        dense = self.palettized.decompress_with_lut(lut) if lut is not None else self.palettized.decompress()
        return np.where(self.indices_mask, dense, np.zeros((), dense.dtype))

    @cached_property
    def sse(self) -> float:
        return sum_squared_error(self.decompress(), self._weight)

    @property
    def nbytes(self) -> int:
        indices = (self.indices_nonzero_data.size * self.nbits + 7) // 8
        lut = self.lut.size * (self.lut_quant.nbits // 8 if self.lut_quant is not None else self.dtype.itemsize)
        return self.packed_mask.nbytes + indices + lut

    def __repr__(self) -> str:
        return f"SparsePalettizeResult({self.chain}, shape={self.shape}, nbits={self.nbits})"


class SparseQuantizeResult:
    """prune -> quantize or quantize -> prune: constexpr_sparse_blockwise_shift_scale parts.

    data_mask     bool, the weight's shape (True = stored)
    nonzero_data  the quantized integers of the stored elements, C order
    scale/offset  the quantization's (scale per block of the dense tensor)
    """

    def __init__(self, *, weight, mask, quantized, chain):
        self.shape = weight.shape
        self.dtype = weight.dtype
        self.data_mask = mask
        self.quantized = quantized
        self.chain = chain
        self._weight = weight

    @property
    def scale(self) -> np.ndarray:
        return self.quantized.scale

    @property
    def offset(self) -> Optional[np.ndarray]:
        return self.quantized.offset

    @cached_property
    def nonzero_data(self) -> np.ndarray:
        return self.quantized.data[self.data_mask]

    @cached_property
    def packed_mask(self) -> np.ndarray:
        return np.packbits(self.data_mask.reshape(-1), bitorder="little")

    @cached_property
    def packed_nonzero_data(self) -> np.ndarray:
        return pack_bits(self.nonzero_data, self.quantized.nbits)

    def decompress(self) -> np.ndarray:
        dense = self.quantized.decompress()
        return np.where(self.data_mask, dense, np.zeros((), dense.dtype))

    @cached_property
    def sse(self) -> float:
        return sum_squared_error(self.decompress(), self._weight)

    @property
    def nbytes(self) -> int:
        q = self.quantized
        size = self.packed_mask.nbytes + self.packed_nonzero_data.nbytes + q.scale.nbytes
        return size + (q.offset.nbytes * q.nbits // 8 if q.offset is not None else 0)

    def __repr__(self) -> str:
        return f"SparseQuantizeResult({self.chain}, shape={self.shape}, dtype={self.quantized.dtype!r})"


class PalettizedQuantizeResult:
    """quantize -> palettize: the integer data palettized, the LUT in the data's dtype.

    quantized   the QuantizeResult (scale, offset); its integer data is what was clustered
    palettized  the PalettizeResult of those integers (indices; its LUT holds float centroids)
    lut         the LUT as Core ML stores it: the centroids cast to the data's dtype, by
                truncation toward zero as coremltools does (astype), or rounded to nearest
                with round_lut=True
    On iOS18 coremltools emits shift_scale(LUT repeated per scale block) -> lut_to_dense, on
    iOS26 lut_to_dense -> shift_scale. Both compute decompress().
    """

    def __init__(self, *, weight, quantized, palettized, lut):
        self.shape = weight.shape
        self.dtype = weight.dtype
        self.quantized = quantized
        self.palettized = palettized
        self.lut = lut
        self._weight = weight

    @property
    def indices(self) -> np.ndarray:
        return self.palettized.indices

    @property
    def scale(self) -> np.ndarray:
        return self.quantized.scale

    @property
    def offset(self) -> Optional[np.ndarray]:
        return self.quantized.offset

    @cached_property
    def palettized_data(self) -> np.ndarray:
        """The integer tensor lut_to_dense produces (the quantized data after palettization)."""
        return self.palettized.decompress_with_lut(self.lut)

    def decompress(self) -> np.ndarray:
        return self.quantized.with_data(self.palettized_data).decompress()

    @cached_property
    def sse(self) -> float:
        return sum_squared_error(self.decompress(), self._weight)

    @property
    def nbytes(self) -> int:
        q = self.quantized
        size = self.palettized.packed_indices.nbytes + self.lut.nbytes + q.scale.nbytes
        return size + (q.offset.nbytes if q.offset is not None else 0)

    def prune(self, **options):
        raise unsupported("quantize -> palettize -> prune", "pruning a palettized quantization")

    def __repr__(self) -> str:
        return f"PalettizedQuantizeResult(shape={self.shape}, lut={self.lut.shape} {self.lut.dtype})"


# ---------------------------------------------------------------- chain steps


def _prune_values(values, options, chain):
    from .prune import prune

    if not options:
        raise ValueError(f"{chain}: give the pruning options (threshold, target_sparsity or n_m_ratio)")
    return prune(values, **options)


def prune_then_palettize(pruned, nbits, *, surviving_only=False, **options):
    from .palettize import palettize

    chain = "prune -> palettize"
    if options.get("cluster_dim", 1) > 1:
        raise unsupported(chain, "vector palettization (cluster_dim > 1) of a pruned weight")
    if options.get("enable_per_channel_scale", False):
        raise unsupported(chain, "per-channel-scale palettization of a pruned weight")
    if surviving_only:
        if options.get("mode", "kmeans") != "kmeans":
            raise ValueError(f"{chain}: surviving_only applies to mode 'kmeans', got {options.get('mode')!r}")
        if options.get("sample_weight") is not None:
            raise ValueError(f"{chain}: surviving_only sets the sample weights itself; "
                             "multiply your importance by the mask instead")
        # The pruned zeros are never looked up (lut_to_sparse stores indices only at mask
        # positions), so clustering gives them no weight: same DP, zero importance.
        options = dict(options, sample_weight=pruned.mask.astype(np.float64))
    dense = pruned.decompress()  # coremltools clusters the densified weight, zeros included
    palettized = palettize(dense, nbits, **options)
    return SparsePalettizeResult(weight=pruned._weight, mask=pruned.mask, palettized=palettized, chain=chain)


def prune_then_quantize(pruned, dtype, **options):
    from .quantize import quantize

    quantized = quantize(pruned.decompress(), dtype, **options)  # qparams from the dense tensor
    quantized._weight = pruned._weight
    return SparseQuantizeResult(weight=pruned._weight, mask=pruned.mask, quantized=quantized,
                                chain="prune -> quantize")


def palettize_then_quantize_lut(palettized, dtype, mode, granularity, num_threads):
    _check_lut_quant_options(granularity, "palettize -> quantize")
    return QuantizedLutResult(palettized, quantize_lut(palettized.lut, dtype, mode, num_threads))


def palettize_then_prune(palettized, options):
    chain = "palettize -> prune"
    if palettized.cluster_dim > 1:
        raise unsupported(chain, "pruning a vector palettization (cluster_dim > 1)")
    if palettized.per_channel_scale is not None:
        raise unsupported(chain, "pruning a per-channel-scale palettization")
    pruned = _prune_values(palettized.decompress(), options, chain)
    return SparsePalettizeResult(weight=palettized._weight, mask=pruned.mask, palettized=palettized, chain=chain)


def quantize_then_palettize(quantized, nbits, *, round_lut=False, **options):
    from .palettize import palettize

    chain = "quantize -> palettize"
    if quantized.nbits != 8:
        raise unsupported(chain, f"palettizing {quantized.dtype} data: Core ML LUTs hold 8-bit integers only")
    if options.get("enable_per_channel_scale", False):
        raise unsupported(chain, "a per-channel scale over integer data")
    if options.get("sample_weight") is not None:
        raise ValueError(f"{chain}: sample_weight is not supported")
    # coremltools clusters the integers (as int32); float32 holds them exactly.
    palettized = palettize(quantized.data.astype(np.float32), nbits, **options)
    info = np.iinfo(quantized.data.dtype)
    centroids = palettized.lut
    if round_lut:
        lut = np.clip(np.rint(centroids), info.min, info.max).astype(quantized.data.dtype)
    else:
        lut = centroids.astype(quantized.data.dtype)  # coremltools: astype, truncating toward zero
    return PalettizedQuantizeResult(weight=quantized._weight, quantized=quantized, palettized=palettized, lut=lut)


def quantize_then_prune(quantized, options):
    chain = "quantize -> prune"
    pruned = _prune_values(quantized.decompress(), options, chain)  # magnitudes of the dequantized values
    return SparseQuantizeResult(weight=quantized._weight, mask=pruned.mask, quantized=quantized, chain=chain)
