"""Blockwise linear quantization (int4/uint4/int8/uint8): the algorithm, from a weight to its
parts (results.py wraps them).

Byte-identical to coremltools 9.0's optimize/_utils.py::compute_qparams_by_dtype for float16
and float32 weights (docs/formats.md, "Linear quantization"); the math runs in one fused C++
pass per block (cpp/include/weightpress/quantize.h).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import _core, rules
from ._arrays import as_weight, check_finite, kernel_call, normalize_axis, threads_arg
from .backends import device as backend_device
from .errors import NotApplicableError

DTYPES = {"int4": (4, True), "uint4": (4, False), "int8": (8, True), "uint8": (8, False)}
MODES = ("linear_symmetric", "linear")
GRANULARITIES = ("per_tensor", "per_channel", "per_block")
# "coremltools": its scale and zero point from each block's extrema (byte-identical output);
# "best": the parameters of least squared error over the dtype's full range
# (cpp/include/weightpress/quantize_fit.h, docs/formats.md "Best-error scales")
FITS = ("coremltools", "best")


@dataclass(frozen=True)
class QuantParts:
    """data: int8 (int4/int8) or uint8 (uint4/uint8) values in the weight's shape, or None
    when `packed` holds them (4-bit data comes from the kernel packed LSB-first, as Core ML
    stores it; QuantizeResult unpacks it only when asked); scale: the weight's dtype, one
    entry per block; offset: the zero point in data's dtype, or None where coremltools omits
    it (signed symmetric)."""

    dtype: str
    mode: str
    block_sizes: Tuple[int, ...]
    data: Optional[np.ndarray]
    scale: np.ndarray
    offset: Optional[np.ndarray]
    packed: Optional[np.ndarray] = None


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


def quantize_parts(
    weight,
    dtype: str = "int8",
    *,
    mode: str = "linear_symmetric",
    granularity: str = "per_channel",
    block_size: Union[int, Sequence[int]] = 32,
    channel_axis: int = 0,
    input_axis: Optional[int] = None,
    fit: str = "coremltools",
    num_threads: Optional[int] = None,
    backend: str = "auto",
) -> "tuple[np.ndarray, QuantParts]":
    """The coerced weight and its quantization (the options of weightpress.quantize)."""
    if fit not in FITS:
        raise ValueError(f"quantize: fit must be one of {', '.join(FITS)}, got {fit!r}")
    gpu = backend_device(backend, "quantize")
    if fit == "best" and gpu is not None:
        raise ValueError("quantize: fit='best' runs on the CPU backend only")
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
    reason = rules.quantize_blocks(w.shape, sizes)
    if reason:
        raise NotApplicableError("quantize", reason)
    blocks = [b if b else n for n, b in zip(w.shape, sizes)]
    nbits, signed = DTYPES[dtype]
    source = w.view(np.uint16) if w.dtype == np.float16 else w
    threads = threads_arg(num_threads, "quantize")
    if gpu is not None:
        data, scale, offset = _quantize_on(gpu, w, source, blocks, nbits, signed, mode == "linear_symmetric")
    else:
        # sub-byte data packed as it is produced: no byte-per-value array for a 4-bit weight
        data, scale, offset = kernel_call(
            lambda: _core.quantize_blockwise(source, blocks, nbits, signed, mode == "linear_symmetric", threads,
                                             packed=nbits < 8, best=fit == "best"),
            w, "quantize")
    packed = None
    if gpu is None and nbits < 8:
        data, packed = None, data
    if w.dtype == np.float16:
        scale = scale.view(np.float16)
    reason = rules.finite_parameters("quantize", "scale", scale)
    if reason:
        raise NotApplicableError("quantize", reason)
    return w, QuantParts(dtype=dtype, mode=mode, block_sizes=tuple(sizes), data=data, scale=scale, offset=offset,
                         packed=packed)


def _quantize_on(device, w, source, blocks, nbits, signed, symmetric):
    """The Metal kernel sees the weight as axis 0 x (all other axes); blocks must cover every
    axis after the second fully (linear and conv per-block / per-channel / per-tensor do)."""
    check_finite(w, "quantize")
    if w.ndim > 2 and any(b != n for b, n in zip(blocks[2:], w.shape[2:])):
        raise ValueError(f"quantize: the Metal backend needs blocks spanning axes 2+ of {w.shape}, got {blocks}")
    rows = w.shape[0]
    cols = w.size // rows
    block_cols = int(np.prod(blocks[1:])) if w.ndim > 1 else 1
    data, scale, zp = device.quantize(source.reshape(rows, cols), rows, cols, blocks[0], block_cols, nbits, signed,
                                      symmetric)
    grid = tuple(n // b for n, b in zip(w.shape, blocks))
    data = data.reshape(w.shape).view(np.int8 if signed else np.uint8)
    scale = scale.reshape(grid)
    offset = None if (signed and symmetric) else zp.view(np.int8 if signed else np.uint8).reshape(grid)
    return data, scale, offset
