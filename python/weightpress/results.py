"""Compressed weights: what palettize, quantize and prune return, and how they compose.

    PalettizeResult   constexpr_lut_to_dense parts          (palettize)
    QuantizeResult    constexpr_blockwise_shift_scale parts (quantize)
    PruneResult       constexpr_sparse_to_dense parts       (prune)

and the chains coremltools 9.0 builds with joint_compression=True (iOS18+), as methods that
apply the next method to a result:

    prune -> palettize       PruneResult.palettize          SparsePalettizeResult
    prune -> quantize        PruneResult.quantize           SparseQuantizeResult
    palettize -> quantize    PalettizeResult.quantize_lut   QuantizedLutResult (the LUT quantized)
    quantize -> palettize    QuantizeResult.palettize       PalettizedQuantizeResult
    quantize -> prune        QuantizeResult.prune           SparseQuantizeResult
    palettize -> prune       PalettizeResult.prune          SparsePalettizeResult
    prune -> palettize -> quantize   SparsePalettizeResult.quantize_lut

What coremltools 9.0 crashes on raises NotImplementedError naming the chain: vector
palettization (cluster_dim > 1) or a per-channel scale together with pruning, in either
order; palettizing 4-bit quantized data (Core ML has no 4-bit LUT dtype); pruning a
quantized LUT or a palettized quantization.

Every result is a CompressedWeight (compressed.py): decompress() is what the ops compute
from the parts, sse is measured against the original weight, nbytes is the sum of the
stored parts. Layouts and op semantics: docs/formats.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import List, Optional

import numpy as np

from . import _core
from ._arrays import threads_arg
from .compressed import CompressedWeight, StoredPart, check_target, dtype_bits, part, repeated_shape
from .packing import pack_bits, unpack_bits
from .palettize import IOS16_NBITS, LutParts, palettize_parts
from .prune import SparseParts, prune_parts
from .quantize import DTYPES, QuantParts, quantize_parts

# ---------------------------------------------------------------- iOS16 forms


@dataclass(frozen=True)
class Ios16Lut:
    """Inputs of iOS16 constexpr_lut_to_dense: flat LUT, packed uint8 indices, uint32 shape."""

    lut: np.ndarray
    indices: np.ndarray
    shape: np.ndarray


@dataclass(frozen=True)
class Ios18Lut:
    """What coremltools emits on iOS18+.

    indices/lut/vector_axis are the constexpr_lut_to_dense inputs. With a per-channel scale,
    `scale` is the constexpr_blockwise_shift_scale scale and `scale_first` says the order:
    True (iOS18 <= target < iOS26): shift_scale(data=lut repeated to match the scale,
    scale=per_channel_scale + (1, 1)) feeds the LUT op; False (iOS26): lut_to_dense feeds
    shift_scale(scale=per_channel_scale).
    """

    indices: np.ndarray
    lut: np.ndarray
    vector_axis: Optional[int]
    scale: Optional[np.ndarray] = None
    scale_first: bool = False


@dataclass(frozen=True)
class Ios16Quant:
    """Inputs of iOS16 constexpr_affine_dequantize: rank-0/1 scale and zero point, int32 axis."""

    quantized_data: np.ndarray
    zero_point: np.ndarray
    scale: np.ndarray
    axis: int


@dataclass(frozen=True)
class Ios16Sparse:
    """Inputs of iOS16 constexpr_sparse_to_dense: packed uint8 mask, non-zero data, uint32 shape."""

    nonzero_data: np.ndarray
    mask: np.ndarray
    shape: np.ndarray


def unsupported(chain: str, reason: str) -> NotImplementedError:
    return NotImplementedError(f"{chain}: {reason} (coremltools 9.0 fails on this chain too)")


def _check_lut_quant_options(granularity, op):
    if granularity != "per_tensor":
        raise ValueError(f"{op}: a quantized LUT takes per_tensor quantization only (one scale shared by all "
                         f"groups' LUTs, as coremltools requires), got granularity {granularity!r}")


def _quantize_lut(lut: np.ndarray, dtype: str, mode: str, num_threads) -> "QuantizeResult":
    """The per-tensor quantization of a LUT that coremltools' palettize -> quantize chain emits."""
    return QuantizeResult(*quantize_parts(lut, dtype, mode=mode, granularity="per_tensor", num_threads=num_threads))


def _quant_parts_of(q: "QuantizeResult", data_count: int, data_name: str = "data") -> List[StoredPart]:
    """data (nbits each), scale (the weight dtype), offset (data's dtype) of a quantization."""
    parts = [part(data_name, data_count, q.nbits), part("scale", q.scale, dtype_bits(q.scale.dtype))]
    if q.offset is not None:
        parts.append(part("offset", q.offset, q.nbits))
    return parts


# ---------------------------------------------------------------- error feedback


def _feedback_matrix(reference: np.ndarray, op: str) -> np.ndarray:
    """The weight as error feedback sees it: (output channels, inputs), a conv weight's
    (in, kernel...) axes flattened in the order torch's unfold lays out its input columns."""
    if reference.ndim < 2:
        raise ValueError(f"{op}: error feedback takes a weight with output channels on axis 0 and inputs after, got "
                         f"shape {reference.shape}")
    return reference.reshape(reference.shape[0], -1)


def _feedback_factor(reference: np.ndarray, hessian, damping: float, op: str, num_threads=None) -> np.ndarray:
    """Checks a weight and its input Hessian; U of weightpress/error_feedback.h."""
    h = np.asarray(hessian, dtype=np.float64)
    cols = _feedback_matrix(reference, op).shape[1]
    if h.shape != (cols, cols):
        raise ValueError(f"{op}: the Hessian must be {cols}x{cols} (the weight's inputs), got {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{op}: the Hessian holds NaN or Inf")
    if not (isinstance(damping, (int, float)) and damping >= 0 and np.isfinite(damping)):
        raise ValueError(f"{op}: damping must be a finite number >= 0, got {damping!r}")
    u = _core.inverse_hessian_factor(np.ascontiguousarray(h), float(damping), threads_arg(num_threads, op))
    if u is None:
        raise ValueError(f"{op}: the Hessian is not positive definite with damping {damping}; raise the damping")
    return u


# ---------------------------------------------------------------- palettization


class PalettizeResult(CompressedWeight):
    """Compressed parts of one weight. Arrays use coremltools' iOS18 layouts:

    lut      [..., 2**nbits, cluster_dim] in the weight's dtype, rank = weight rank + 2
    indices  uint8 values < 2**nbits, the weight's shape with the channel axis divided by
             cluster_dim (Core ML stores them as uint{nbits}; see packed_indices)
    per_channel_scale  weight dtype, the weight's shape with 1 on the channel axis, or None
    """

    def __init__(self, reference: np.ndarray, parts: LutParts):
        super().__init__(reference, parts.kernel_sse)
        self.nbits = parts.nbits
        self.mode = parts.mode
        self.channel_axis = parts.channel_axis
        self.group_size = parts.group_size
        self.cluster_dim = parts.cluster_dim
        self.vector_axis = parts.channel_axis if parts.cluster_dim > 1 else None
        self.per_channel_scale = parts.per_channel_scale
        self.num_clusters = parts.num_clusters  # clusters actually used, per group
        self.objective = parts.objective  # optimal clustering objective (float64 centroids), kmeans only
        self._lut_groups = parts.lut_groups  # [G, 2**nbits, cluster_dim]
        self._index_groups = parts.index_groups  # [G, elements per group / cluster_dim]

    # ---------------------------------------------------------------- layouts
    @cached_property
    def lut(self) -> np.ndarray:
        groups = self._lut_groups.shape[0]
        shape = [1] * (len(self.shape) + 2)
        shape[0], shape[-2], shape[-1] = groups, self._lut_groups.shape[1], self.cluster_dim
        return np.ascontiguousarray(np.swapaxes(self._lut_groups.reshape(shape), 0, self.channel_axis))

    @cached_property
    def indices(self) -> np.ndarray:
        swapped = list(np.swapaxes(np.empty(self.shape, dtype=np.uint8), 0, self.channel_axis).shape)
        swapped[0] //= self.cluster_dim
        return np.ascontiguousarray(np.swapaxes(self._index_groups.reshape(swapped), 0, self.channel_axis))

    @cached_property
    def packed_indices(self) -> np.ndarray:
        """indices packed LSB-first into uint8 bytes, as Core ML stores uint{nbits} data."""
        return pack_bits(self.indices, self.nbits)

    @property
    def ios16(self) -> Ios16Lut:
        """The iOS16 constexpr_lut_to_dense form; ValueError where iOS16 cannot express it."""
        if self._lut_groups.shape[0] != 1:
            raise ValueError("palettize: the iOS16 LUT op takes one LUT per tensor; use granularity='per_tensor'")
        if self.cluster_dim != 1:
            raise ValueError("palettize: vector palettization (cluster_dim > 1) needs iOS18")
        if self.per_channel_scale is not None:
            raise ValueError("palettize: enable_per_channel_scale needs iOS18")
        if self.nbits not in IOS16_NBITS:
            raise ValueError(f"palettize: iOS16 supports nbits {IOS16_NBITS}, got {self.nbits}")
        return Ios16Lut(lut=self.lut.reshape(-1), indices=self.packed_indices,
                        shape=np.array(self.shape, dtype=np.uint32))

    def error_feedback(self, hessian, damping: float = 0.01, num_threads=None) -> "PalettizeResult":
        """The same LUTs, the indices chosen by error feedback (GPTQ-style, input column by
        input column, each rounding error pushed into the columns not yet rounded through the
        damped inverse of `hessian` = X^T X of the layer's inputs; weightpress/error_feedback.h).
        A weight with its output channels on axis 0 and its inputs after (a conv weight's
        (in, kernel...) axes taken together, as torch's unfold orders them), LUTs per tensor or
        per group of output channels (axis 0), scalar and without a per-channel scale."""
        op = "palettize"
        if self.feedback_limit:
            raise ValueError(f"{op}: {self.feedback_limit}")
        u = _feedback_factor(self._reference, hessian, damping, op, num_threads)
        matrix = _feedback_matrix(self._reference, op)
        rows = matrix.shape[0]
        groups = self._lut_groups.shape[0]
        entries = np.ascontiguousarray(self._lut_groups[:, :, 0], dtype=np.float32)
        lut_of_row = (np.arange(rows) // (rows // groups)).astype(np.int32)
        codes = _core.error_feedback(matrix.astype(np.float64), u, self._reference.dtype == np.float16,
                                     entries=entries, lut_of_row=lut_of_row, threads=threads_arg(num_threads, op))
        parts = LutParts(self.nbits, self.mode, self.channel_axis, self.group_size, 1, self._lut_groups,
                         codes.astype(np.uint8).reshape(groups, -1), None, self.num_clusters, None, None)
        return PalettizeResult(self._reference, parts)

    @property
    def feedback_limit(self) -> Optional[str]:
        """Why error_feedback does not take this palettization, or None when it does."""
        if self.cluster_dim != 1 or self.per_channel_scale is not None or self.channel_axis != 0:
            return "error feedback takes scalar LUTs over output channels (channel_axis 0) without a per-channel scale"
        return None

    def ios18(self, target: str = "iOS18") -> Ios18Lut:
        """The parts coremltools emits for `target` ("iOS18" or "iOS26")."""
        if target not in ("iOS18", "iOS26"):
            raise ValueError(f"palettize: ios18() target must be 'iOS18' or 'iOS26', got {target!r}")
        if self.per_channel_scale is None:
            return Ios18Lut(self.indices, self.lut, self.vector_axis)
        if target == "iOS26":
            return Ios18Lut(self.indices, self.lut, self.vector_axis, self.per_channel_scale, False)
        return Ios18Lut(self.indices, self.emitted_lut(), self.vector_axis,
                        self.per_channel_scale.reshape(self.per_channel_scale.shape + (1, 1)), True)

    def emitted_lut_shape(self, target: str = "iOS18") -> tuple:
        """The LUT's shape as coremltools stores it: on iOS18 with a per-channel scale repeated
        along every axis where the scale has more entries; the LUT's own shape otherwise."""
        check_target(target, "palettize")
        if self.per_channel_scale is None or target == "iOS26":
            return self.lut.shape
        return repeated_shape(self.lut.shape, self.per_channel_scale.shape)

    def emitted_lut(self) -> np.ndarray:
        """The LUT as coremltools stores it on iOS18 with a per-channel scale
        (common::canonicalize_quantized_lut_pattern)."""
        lut = self.lut
        for axis, (have, want) in enumerate(zip(lut.shape, self.emitted_lut_shape())):
            if want > have:
                lut = np.repeat(lut, want // have, axis=axis)
        return lut

    def stored_parts(self, target: str = "iOS18") -> List[StoredPart]:
        parts = [part("indices", self.indices, self.nbits),
                 part("lut", int(np.prod(self.emitted_lut_shape(target))), dtype_bits(self.dtype))]
        if self.per_channel_scale is not None:
            parts.append(part("per_channel_scale", self.per_channel_scale, dtype_bits(self.dtype)))
        return parts

    # ---------------------------------------------------------------- values
    def decompress(self) -> np.ndarray:
        """The dense weight Core ML reconstructs, in the weight's dtype."""
        return self._lookup(self._lut_groups, self.dtype)

    def decompress_with_lut(self, lut: np.ndarray) -> np.ndarray:
        """The dense tensor these indices give with another LUT of the same iOS18 layout (a
        dequantized or integer LUT from joint compression), in that LUT's dtype."""
        lut = np.asarray(lut)
        if lut.shape != self.lut.shape:
            raise ValueError(f"palettize: LUT shape {lut.shape} does not match {self.lut.shape}")
        groups = np.ascontiguousarray(np.swapaxes(lut, 0, self.channel_axis)).reshape(self._lut_groups.shape)
        return self._lookup(groups, lut.dtype)

    def _lookup(self, lut_groups: np.ndarray, dtype) -> np.ndarray:
        groups = lut_groups.shape[0]
        swapped_shape = np.swapaxes(np.empty(self.shape, dtype=np.uint8), 0, self.channel_axis).shape
        if self.cluster_dim == 1:
            dense = np.take_along_axis(lut_groups[:, :, 0], self._index_groups.astype(np.intp), axis=1)
        else:
            c = self.cluster_dim
            rest = swapped_shape[1:]
            vectors = lut_groups[np.arange(groups)[:, None], self._index_groups]  # [G, P, c]
            per_group = swapped_shape[0] // groups
            vectors = vectors.reshape((groups, per_group // c) + tuple(rest) + (c,))
            dense = np.moveaxis(vectors, -1, 2)  # [G, per_group/c, c, *rest]
        dense = np.swapaxes(dense.reshape(swapped_shape), 0, self.channel_axis)
        if self.per_channel_scale is not None:
            dense = dense * self.per_channel_scale
        return np.ascontiguousarray(dense, dtype=dtype)

    # ---------------------------------------------------------------- joint compression
    def quantize_lut(self, dtype: str = "int8", *, mode: str = "linear_symmetric", granularity: str = "per_tensor",
                     num_threads: Optional[int] = None) -> "QuantizedLutResult":
        """palettize -> quantize: the LUT stored as dtype integers with one per-tensor scale
        (coremltools' joint compression; iOS18+)."""
        _check_lut_quant_options(granularity, "palettize -> quantize")
        return QuantizedLutResult(self, _quantize_lut(self.lut, dtype, mode, num_threads))

    def prune(self, **options) -> "SparsePalettizeResult":
        """palettize -> prune: prunes the depalettized values (options of weightpress.prune),
        keeps the LUT and stores indices only where kept."""
        chain = "palettize -> prune"
        if self.cluster_dim > 1:
            raise unsupported(chain, "pruning a vector palettization (cluster_dim > 1)")
        if self.per_channel_scale is not None:
            raise unsupported(chain, "pruning a per-channel-scale palettization")
        pruned = _prune_values(self.decompress(), options, chain)
        return SparsePalettizeResult(self._reference, pruned.mask, self, chain=chain)

    def __repr__(self) -> str:
        return (f"PalettizeResult(mode={self.mode!r}, nbits={self.nbits}, shape={self.shape}, "
                f"dtype={self.dtype}, lut={self.lut.shape}, cluster_dim={self.cluster_dim})")


# ---------------------------------------------------------------- quantization


class QuantizeResult(CompressedWeight):
    """Compressed parts in constexpr_blockwise_shift_scale (iOS18) layout:

    data    int8 (int4/int8) or uint8 (uint4/uint8) values, the weight's shape
    scale   the weight's dtype, same rank, one entry per block
    offset  zero point, same shape as scale, data's dtype; None where coremltools omits it
            (signed symmetric)
    """

    def __init__(self, reference: np.ndarray, parts: QuantParts):
        super().__init__(reference)
        self.dtype = parts.dtype  # the integer dtype name ("int4" ...); the weight's is weight_dtype
        self.weight_dtype = reference.dtype
        self.nbits, self.signed = DTYPES[parts.dtype]
        self.mode = parts.mode
        self.block_sizes = tuple(parts.block_sizes)
        if parts.data is not None:
            self.data = parts.data
        if parts.packed is not None:
            self.packed_data = parts.packed
        self.scale = parts.scale
        self.offset = parts.offset

    @cached_property
    def data(self) -> np.ndarray:
        """The integer values in the weight's shape (unpacked on first use when the kernel
        produced them packed)."""
        return unpack_bits(self.packed_data, int(np.prod(self.shape)), self.nbits, signed=self.signed).reshape(self.shape)

    @cached_property
    def packed_data(self) -> np.ndarray:
        """data packed LSB-first as Core ML stores it (two's-complement nibbles for int4)."""
        return pack_bits(self.data, self.nbits)

    @property
    def ios16(self) -> Ios16Quant:
        """The iOS16 constexpr_affine_dequantize form; ValueError where iOS16 cannot express it."""
        if self.nbits != 8:
            raise ValueError(f"quantize: iOS16 supports 8-bit data only, got {self.dtype}")
        varying = [a for a, n in enumerate(self.scale.shape) if n > 1]
        if len(varying) > 1 or (varying and self.scale.shape[varying[0]] != self.shape[varying[0]]):
            raise ValueError(f"quantize: iOS16 supports per-tensor or per-channel scales only; scale shape "
                             f"{self.scale.shape} for weight {self.shape} needs iOS18")
        axis = varying[0] if varying else 0
        offset = self.offset if self.offset is not None else np.zeros_like(self.scale).astype(self.data.dtype)
        return Ios16Quant(self.data, np.squeeze(offset), np.squeeze(self.scale), axis)

    def stored_parts(self, target: str = "iOS18") -> List[StoredPart]:
        check_target(target, "quantize")
        return _quant_parts_of(self, self.data.size)

    def error_feedback(self, hessian, damping: float = 0.01, num_threads=None) -> "QuantizeResult":
        """The same scales and zero points, the integers chosen by error feedback (GPTQ-style;
        see PalettizeResult.error_feedback) over the dtype's full range. Output channels on
        axis 0, inputs after (a conv weight's kernel axes unblocked); scales per tensor, per
        output channel or per block along the input channels."""
        op = "quantize"
        if self.feedback_limit:
            raise ValueError(f"{op}: {self.feedback_limit}")
        u = _feedback_factor(self._reference, hessian, damping, op, num_threads)
        matrix = _feedback_matrix(self._reference, op)
        rows, cols = matrix.shape
        grid_rows, grid_cols = self.scale.shape[0], self.scale.shape[1]
        col_block = cols // grid_cols  # a block of input channels spans their kernel positions
        expand = rows // grid_rows  # per-tensor scales repeat down the rows
        scales = np.repeat(self.scale.reshape(grid_rows, grid_cols).astype(np.float32), expand, axis=0)
        zero_points = None
        if self.offset is not None:
            zero_points = np.repeat(self.offset.reshape(grid_rows, grid_cols).astype(np.int32), expand, axis=0)
        qmin, qmax = (-(1 << (self.nbits - 1)), (1 << (self.nbits - 1)) - 1) if self.signed else (0, (1 << self.nbits) - 1)
        codes = _core.error_feedback(matrix.astype(np.float64), u, self._reference.dtype == np.float16,
                                     scales=np.ascontiguousarray(scales), zero_points=zero_points,
                                     col_block=col_block, qmin=qmin, qmax=qmax, threads=threads_arg(num_threads, op))
        data = codes.astype(np.int8 if self.signed else np.uint8).reshape(self.shape)
        return QuantizeResult(self._reference, QuantParts(self.dtype, self.mode, self.block_sizes, data, self.scale,
                                                          self.offset))

    @property
    def feedback_limit(self) -> Optional[str]:
        """Why error_feedback does not take this quantization, or None when it does."""
        if any(m != 1 for m in self.scale.shape[2:]):
            return f"error feedback takes blocks along axes 0 and 1 only, got scales of shape {self.scale.shape}"
        return None

    @cached_property
    def sse(self) -> float:
        """As CompressedWeight.sse, computed by the kernel from the stored parts (no dense
        copy: the planner measures every quantization option of every weight this way)."""
        ref = np.ascontiguousarray(self._reference)
        blocks = [n // m for n, m in zip(self.shape, self.scale.shape)]
        packed = "packed_data" in self.__dict__ and "data" not in self.__dict__
        data = self.packed_data if packed else self.data
        bits = (lambda a: a.view(np.uint16)) if ref.dtype == np.float16 else (lambda a: a)
        return _core.quantize_sse(bits(ref), blocks, self.nbits, self.signed, data.reshape(-1).view(np.uint8), packed,
                                  bits(np.ascontiguousarray(self.scale)),
                                  None if self.offset is None else self.offset.reshape(-1).view(np.uint8))

    def decompress(self) -> np.ndarray:
        """scale * (data - offset) in the weight's dtype, as constexpr_blockwise_shift_scale."""
        data = self.data.astype(self.scale.dtype)
        scale, offset = self.scale, self.offset
        for axis, (n, m) in enumerate(zip(self.shape, self.scale.shape)):
            if n // m > 1:
                scale = np.repeat(scale, n // m, axis)
                if offset is not None:
                    offset = np.repeat(offset, n // m, axis)
        if offset is not None:
            data = data - offset
        return scale * data

    def with_data(self, data: np.ndarray) -> "QuantizeResult":
        """The same scale and offset over other integer data (joint compression)."""
        return QuantizeResult(self._reference, QuantParts(self.dtype, self.mode, self.block_sizes, data, self.scale,
                                                          self.offset))

    # ---------------------------------------------------------------- joint compression
    def palettize(self, nbits: int, *, round_lut: bool = False, **options) -> "PalettizedQuantizeResult":
        """quantize -> palettize: clusters the 8-bit integer data (options of
        weightpress.palettize); the LUT holds integers of the data's dtype, truncated toward
        zero as coremltools does or, with round_lut=True, rounded to nearest."""
        chain = "quantize -> palettize"
        if self.nbits != 8:
            raise unsupported(chain, f"palettizing {self.dtype} data: Core ML LUTs hold 8-bit integers only")
        if options.get("enable_per_channel_scale", False):
            raise unsupported(chain, "a per-channel scale over integer data")
        if options.get("sample_weight") is not None:
            raise ValueError(f"{chain}: sample_weight is not supported")
        # coremltools clusters the integers (as int32); float32 holds them exactly.
        values = self.data.astype(np.float32)
        palettized = PalettizeResult(*palettize_parts(values, nbits, **options))
        info = np.iinfo(self.data.dtype)
        centroids = palettized.lut
        if round_lut:
            lut = np.clip(np.rint(centroids), info.min, info.max).astype(self.data.dtype)
        else:
            lut = centroids.astype(self.data.dtype)  # coremltools: astype, truncating toward zero
        return PalettizedQuantizeResult(self._reference, self, palettized, lut)

    def prune(self, **options) -> "SparseQuantizeResult":
        """quantize -> prune: prunes the dequantized values (options of weightpress.prune),
        keeps scale and offset and stores the integers only where kept."""
        pruned = _prune_values(self.decompress(), options, "quantize -> prune")
        return SparseQuantizeResult(self._reference, pruned.mask, self, chain="quantize -> prune")

    def __repr__(self) -> str:
        return (f"QuantizeResult(dtype={self.dtype!r}, mode={self.mode!r}, shape={self.shape}, "
                f"block_sizes={self.block_sizes}, scale={self.scale.shape})")


# ---------------------------------------------------------------- pruning


class PruneResult(CompressedWeight):
    """mask: bool, the weight's shape (True = stored); nonzero_data: the stored values in C
    order, the weight's dtype; packed_mask: the mask as LSB-first bytes (numpy packbits little)."""

    def __init__(self, reference: np.ndarray, parts: SparseParts):
        super().__init__(reference)
        self.packed_mask = parts.packed_mask
        self.nonzero_data = parts.nonzero_data
        self.meets_minimum_sparsity = parts.meets_minimum_sparsity

    @cached_property
    def mask(self) -> np.ndarray:
        bits = np.unpackbits(self.packed_mask, count=int(np.prod(self.shape)), bitorder="little")
        return bits.astype(bool).reshape(self.shape)

    @property
    def sparsity(self) -> float:
        """Fraction of elements not stored (pruned or already zero)."""
        return 1.0 - self.nonzero_data.size / float(np.prod(self.shape))

    @property
    def ios16(self) -> Ios16Sparse:
        return Ios16Sparse(self.nonzero_data, self.packed_mask, np.array(self.shape, dtype=np.uint32))

    @property
    def ios18_mask(self) -> np.ndarray:
        """The iOS18 uint1 mask as 0/1 uint8 values in the weight's shape."""
        return self.mask.astype(np.uint8)

    def stored_parts(self, target: str = "iOS18") -> List[StoredPart]:
        check_target(target, "prune")
        return [part("mask", int(np.prod(self.shape)), 1),
                part("nonzero_data", self.nonzero_data, dtype_bits(self.dtype))]

    def decompress(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=self.dtype)
        dense[self.mask] = self.nonzero_data
        return dense

    # ---------------------------------------------------------------- joint compression
    def palettize(self, nbits: Optional[int] = None, *, surviving_only: bool = False,
                  **options) -> "SparsePalettizeResult":
        """prune -> palettize: palettizes the pruned weight (options of weightpress.palettize)
        and stores LUT indices only where kept (constexpr_lut_to_sparse).

        As in coremltools, k-means clusters the dense pruned weight, zeros included, so one
        centroid is usually spent on zero although pruned positions never read the LUT.
        surviving_only=True clusters only the kept values (exact k-means with zero weight on
        pruned positions): lower error for the same bits.
        """
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
            options = dict(options, sample_weight=self.mask.astype(np.float64))
        dense = self.decompress()  # coremltools clusters the densified weight, zeros included
        palettized = PalettizeResult(*palettize_parts(dense, nbits, **options))
        return SparsePalettizeResult(self._reference, self.mask, palettized, chain=chain)

    def quantize(self, dtype: str = "int8", **options) -> "SparseQuantizeResult":
        """prune -> quantize: quantizes the pruned weight (options of weightpress.quantize;
        scales from the dense tensor, zeros included, as coremltools) and stores integers only
        where kept (constexpr_sparse_blockwise_shift_scale)."""
        dense, parts = quantize_parts(self.decompress(), dtype, **options)  # qparams from the dense tensor
        quantized = QuantizeResult(self._reference, parts)
        return SparseQuantizeResult(self._reference, self.mask, quantized, chain="prune -> quantize")

    def __repr__(self) -> str:
        return f"PruneResult(shape={self.shape}, dtype={self.dtype}, sparsity={self.sparsity:.4f})"


def _prune_values(values: np.ndarray, options: dict, chain: str) -> PruneResult:
    if not options:
        raise ValueError(f"{chain}: give the pruning options (threshold, target_sparsity or n_m_ratio)")
    return PruneResult(*prune_parts(values, **options))


# ---------------------------------------------------------------- joint results


class _QuantizedParams:
    """scale and offset of a joint result that keeps a QuantizeResult as `quantized`."""

    quantized: QuantizeResult

    @property
    def scale(self) -> np.ndarray:
        return self.quantized.scale

    @property
    def offset(self) -> Optional[np.ndarray]:
        return self.quantized.offset


class QuantizedLutResult(CompressedWeight):
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

    def __init__(self, palettized: PalettizeResult, lut_quant: QuantizeResult):
        super().__init__(palettized._reference)
        self.palettized = palettized
        self.lut_quant = lut_quant

    @property
    def indices(self) -> np.ndarray:
        return self.palettized.indices

    @cached_property
    def dequantized_lut(self) -> np.ndarray:
        return self.lut_quant.decompress()

    def decompress(self) -> np.ndarray:
        return self.palettized.decompress_with_lut(self.dequantized_lut)

    def stored_parts(self, target: str = "iOS18") -> List[StoredPart]:
        check_target(target, "palettize -> quantize")
        p = self.palettized
        parts = [part("indices", p.indices, p.nbits)] + _quant_parts_of(self.lut_quant, self.lut_quant.data.size,
                                                                        "lut")
        if p.per_channel_scale is not None:
            parts.append(part("per_channel_scale", p.per_channel_scale, dtype_bits(self.dtype)))
        return parts

    def prune(self, **options):
        raise unsupported("palettize -> quantize -> prune", "pruning a palettization whose LUT is quantized")

    def __repr__(self) -> str:
        return f"QuantizedLutResult({self.palettized!r}, lut dtype={self.lut_quant.dtype!r})"


class SparsePalettizeResult(CompressedWeight):
    """prune -> palettize or palettize -> prune: constexpr_lut_to_sparse parts.

    indices_mask          bool, the weight's shape (True = stored)
    indices_nonzero_data  uint8 LUT indices of the stored elements, C order (uint{nbits} in Core ML)
    lut                   the palettization's LUT (iOS18 layout), or lut_quant when quantized
    """

    def __init__(self, reference: np.ndarray, mask: np.ndarray, palettized: PalettizeResult,
                 lut_quant: Optional[QuantizeResult] = None, *, chain: str):
        super().__init__(reference)
        self.indices_mask = mask
        self.palettized = palettized
        self.lut_quant = lut_quant
        self.chain = chain

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
        return SparsePalettizeResult(self._reference, self.indices_mask, self.palettized,
                                     _quantize_lut(self.lut, dtype, mode, num_threads),
                                     chain=f"{self.chain} -> quantize")

    def decompress(self) -> np.ndarray:
        lut = self.lut_quant.decompress() if self.lut_quant is not None else None
        dense = self.palettized.decompress_with_lut(lut) if lut is not None else self.palettized.decompress()
        return np.where(self.indices_mask, dense, np.zeros((), dense.dtype))

    def stored_parts(self, target: str = "iOS18") -> List[StoredPart]:
        check_target(target, self.chain)
        parts = [part("mask", self.indices_mask, 1), part("indices", self.indices_nonzero_data, self.nbits)]
        if self.lut_quant is None:
            parts.append(part("lut", self.lut, dtype_bits(self.dtype)))
        else:
            parts += _quant_parts_of(self.lut_quant, self.lut_quant.data.size, "lut")
        return parts

    def __repr__(self) -> str:
        return f"SparsePalettizeResult({self.chain}, shape={self.shape}, nbits={self.nbits})"


class SparseQuantizeResult(_QuantizedParams, CompressedWeight):
    """prune -> quantize or quantize -> prune: constexpr_sparse_blockwise_shift_scale parts.

    data_mask     bool, the weight's shape (True = stored)
    nonzero_data  the quantized integers of the stored elements, C order
    scale/offset  the quantization's (scale per block of the dense tensor)
    """

    def __init__(self, reference: np.ndarray, mask: np.ndarray, quantized: QuantizeResult, *, chain: str):
        super().__init__(reference)
        self.data_mask = mask
        self.quantized = quantized
        self.chain = chain

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

    def stored_parts(self, target: str = "iOS18") -> List[StoredPart]:
        check_target(target, self.chain)
        return [part("mask", self.data_mask, 1)] + _quant_parts_of(self.quantized, self.nonzero_data.size,
                                                                  "nonzero_data")

    def __repr__(self) -> str:
        return f"SparseQuantizeResult({self.chain}, shape={self.shape}, dtype={self.quantized.dtype!r})"


class PalettizedQuantizeResult(_QuantizedParams, CompressedWeight):
    """quantize -> palettize: the integer data palettized, the LUT in the data's dtype.

    quantized   the QuantizeResult (scale, offset); its integer data is what was clustered
    palettized  the PalettizeResult of those integers (indices; its LUT holds float centroids)
    lut         the LUT as Core ML stores it: the centroids cast to the data's dtype, by
                truncation toward zero as coremltools does (astype), or rounded to nearest
                with round_lut=True
    On iOS18 coremltools emits shift_scale(LUT repeated per scale block) -> lut_to_dense, on
    iOS26 lut_to_dense -> shift_scale. Both compute decompress().
    """

    def __init__(self, reference: np.ndarray, quantized: QuantizeResult, palettized: PalettizeResult,
                 lut: np.ndarray):
        super().__init__(reference)
        self.quantized = quantized
        self.palettized = palettized
        self.lut = lut

    @property
    def indices(self) -> np.ndarray:
        return self.palettized.indices

    @cached_property
    def palettized_data(self) -> np.ndarray:
        """The integer tensor lut_to_dense produces (the quantized data after palettization)."""
        return self.palettized.decompress_with_lut(self.lut)

    def decompress(self) -> np.ndarray:
        return self.quantized.with_data(self.palettized_data).decompress()

    def stored_parts(self, target: str = "iOS18") -> List[StoredPart]:
        check_target(target, "quantize -> palettize")
        lut_shape = self.lut.shape if target == "iOS26" else repeated_shape(self.lut.shape, self.scale.shape)
        q = self.quantized
        parts = [part("indices", self.palettized.indices, self.palettized.nbits),
                 part("lut", int(np.prod(lut_shape)), dtype_bits(self.lut.dtype)),
                 part("scale", q.scale, dtype_bits(q.scale.dtype))]
        if q.offset is not None:
            parts.append(part("offset", q.offset, dtype_bits(q.offset.dtype)))
        return parts

    def prune(self, **options):
        raise unsupported("quantize -> palettize -> prune", "pruning a palettized quantization")

    def __repr__(self) -> str:
        return f"PalettizedQuantizeResult(shape={self.shape}, lut={self.lut.shape} {self.lut.dtype})"
