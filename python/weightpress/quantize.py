"""weightpress.quantize: blockwise linear quantization (int4/uint4/int8/uint8).

Byte-identical to coremltools 9.0's optimize/_utils.py::compute_qparams_by_dtype for float16
and float32 weights (reference: coremltools-formats.md 3.1); the math runs in one fused C++
pass per block (cpp/include/weightpress/quantize.h).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Sequence, Union

import numpy as np

from . import _core
from ._arrays import as_weight, kernel_call, normalize_axis, sum_squared_error, threads_arg
from .packing import pack_bits

DTYPES = {"int4": (4, True), "uint4": (4, False), "int8": (8, True), "uint8": (8, False)}
MODES = ("linear_symmetric", "linear")
GRANULARITIES = ("per_tensor", "per_channel", "per_block")


@dataclass(frozen=True)
class Ios16Quant:
    """Inputs of iOS16 constexpr_affine_dequantize: rank-0/1 scale and zero point, int32 axis."""

    quantized_data: np.ndarray
    zero_point: np.ndarray
    scale: np.ndarray
    axis: int


class QuantizeResult:
    """Compressed parts in constexpr_blockwise_shift_scale (iOS18) layout:

    data    int8 (int4/int8) or uint8 (uint4/uint8) values, the weight's shape
    scale   the weight's dtype, same rank, one entry per block
    offset  zero point, same shape as scale, data's dtype; None where coremltools omits it
            (signed symmetric)
    """

    def __init__(self, *, weight, dtype, mode, block_sizes, data, scale, offset):
        self.dtype = dtype
        self.nbits, self.signed = DTYPES[dtype]
        self.mode = mode
        self.block_sizes = tuple(block_sizes)
        self.data = data
        self.scale = scale
        self.offset = offset
        self.shape = weight.shape
        self.weight_dtype = weight.dtype
        self._weight = weight

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

    @cached_property
    def sse(self) -> float:
        return sum_squared_error(self.decompress(), self._weight)

    def with_data(self, data: np.ndarray) -> "QuantizeResult":
        """The same scale and offset over other integer data (joint compression)."""
        return QuantizeResult(weight=self._weight, dtype=self.dtype, mode=self.mode, block_sizes=self.block_sizes,
                              data=data, scale=self.scale, offset=self.offset)

    # ---------------------------------------------------------------- joint compression
    def palettize(self, nbits: int, *, round_lut: bool = False, **options):
        """quantize -> palettize: clusters the 8-bit integer data (options of
        weightpress.palettize); the LUT holds integers of the data's dtype, truncated toward
        zero as coremltools does or, with round_lut=True, rounded to nearest. Returns a
        joint.PalettizedQuantizeResult."""
        from .joint import quantize_then_palettize

        return quantize_then_palettize(self, nbits, round_lut=round_lut, **options)

    def prune(self, **options):
        """quantize -> prune: prunes the dequantized values (options of weightpress.prune),
        keeps scale and offset and stores the integers only where kept. Returns a
        joint.SparseQuantizeResult."""
        from .joint import quantize_then_prune

        return quantize_then_prune(self, options)

    @property
    def nbytes(self) -> int:
        size = self.packed_data.nbytes + self.scale.nbytes
        return size + (self.offset.nbytes * self.nbits // 8 if self.offset is not None else 0)

    def __repr__(self) -> str:
        return (f"QuantizeResult(dtype={self.dtype!r}, mode={self.mode!r}, shape={self.shape}, "
                f"block_sizes={self.block_sizes}, scale={self.scale.shape})")


def block_sizes_for(shape, granularity, block_size, channel_axis, input_axis):
    """Per-axis block sizes (0 = whole axis) as coremltools' infer_block_sizes picks them."""
    rank = len(shape)
    if granularity == "per_tensor":
        return [0] * rank
    if granularity == "per_channel":
        sizes = [0] * rank
        sizes[channel_axis] = 1
        return sizes
    if isinstance(block_size, (tuple, list)):
        if len(block_size) != rank:
            raise ValueError(f"quantize: block_size {tuple(block_size)} needs one entry per axis of a "
                             f"rank-{rank} weight")
        if any(not isinstance(b, (int, np.integer)) or b < 0 for b in block_size):
            raise ValueError(f"quantize: block sizes must be ints >= 0, got {tuple(block_size)}")
        return [int(b) for b in block_size]
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"quantize: block_size must be an int >= 1 or a per-axis tuple, got {block_size!r}")
    if rank < 2:
        raise ValueError(f"quantize: per_block with an int block_size needs a weight of rank >= 2, got {shape}")
    if input_axis == channel_axis:
        raise ValueError(f"quantize: input_axis and channel_axis are both {input_axis}")
    sizes = [0] * rank
    sizes[channel_axis] = 1
    sizes[input_axis] = int(block_size)
    return sizes


def quantize(
    weight,
    dtype: str = "int8",
    *,
    mode: str = "linear_symmetric",
    granularity: str = "per_channel",
    block_size: Union[int, Sequence[int]] = 32,
    channel_axis: int = 0,
    input_axis: Optional[int] = None,
    num_threads: Optional[int] = None,
    backend: str = "auto",
) -> QuantizeResult:
    """Quantizes one weight (numpy array or torch tensor, float16 or float32).

    Options mirror coremltools' OpLinearQuantizerConfig. per_block with an int block_size
    blocks `input_axis` (default 1, the input axis of linear/conv weights; 0 for
    conv_transpose) and quantizes every output channel (`channel_axis`) separately.
    backend: "auto" (the CPU), "cpu" or "metal" (see weightpress.backends()).
    """
    from .backends import resolve_backend

    use_metal = resolve_backend(backend, "quantize") == "metal"
    if not isinstance(dtype, str) or dtype.lower() not in DTYPES:
        raise ValueError(f"quantize: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    dtype = dtype.lower()
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ValueError(f"quantize: mode must be one of {', '.join(MODES)}, got {mode!r}")
    mode = mode.lower()
    if granularity not in GRANULARITIES:
        raise ValueError(f"quantize: granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    w = as_weight(weight, "quantize", min_rank=1, finite=False)  # the kernel checks in its min/max pass
    axis = normalize_axis(channel_axis, w.ndim, "quantize")
    in_axis = normalize_axis(1 if input_axis is None else input_axis, max(w.ndim, 2), "quantize", "input_axis")
    sizes = block_sizes_for(w.shape, granularity, block_size, axis, in_axis)
    for a, (n, b) in enumerate(zip(w.shape, sizes)):
        if b and n % b:
            raise ValueError(f"quantize: block size {b} does not divide axis {a} of size {n}")
    blocks = [b if b else n for n, b in zip(w.shape, sizes)]
    nbits, signed = DTYPES[dtype]
    source = w.view(np.uint16) if w.dtype == np.float16 else w
    threads = threads_arg(num_threads, "quantize")
    if use_metal:
        data, scale, offset = _metal_quantize(w, source, blocks, nbits, signed, mode == "linear_symmetric")
    else:
        data, scale, offset = kernel_call(
            lambda: _core.quantize_blockwise(source, blocks, nbits, signed, mode == "linear_symmetric", threads),
            w, "quantize")
    if w.dtype == np.float16:
        scale = scale.view(np.float16)
    return QuantizeResult(weight=w, dtype=dtype, mode=mode, block_sizes=sizes, data=data, scale=scale,
                          offset=offset)


def _metal_quantize(w, source, blocks, nbits, signed, symmetric):
    """The Metal kernel sees the weight as axis 0 x (all other axes); blocks must cover every
    axis after the second fully (linear and conv per-block / per-channel / per-tensor do)."""
    from ._arrays import check_finite

    check_finite(w, "quantize")
    if w.ndim > 2 and any(b != n for b, n in zip(blocks[2:], w.shape[2:])):
        raise ValueError(f"quantize: the Metal backend needs blocks spanning axes 2+ of {w.shape}, got {blocks}")
    rows = w.shape[0]
    cols = w.size // rows
    block_cols = int(np.prod(blocks[1:])) if w.ndim > 1 else 1
    data, scale, zp = _core.metal_quantize(source.reshape(rows, cols), rows, cols, blocks[0], block_cols, nbits,
                                           signed, symmetric)
    grid = tuple(n // b for n, b in zip(w.shape, blocks))
    data = data.reshape(w.shape).view(np.int8 if signed else np.uint8)
    scale = scale.reshape(grid)
    offset = None if (signed and symmetric) else zp.view(np.int8 if signed else np.uint8).reshape(grid)
    return data, scale, offset
