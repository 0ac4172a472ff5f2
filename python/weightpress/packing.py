"""Core ML's sub-byte packing: an LSB-first bit stream (see cpp/include/weightpress/pack.h)."""

from __future__ import annotations

import numpy as np

from . import _core

SUPPORTED_NBITS = (1, 2, 3, 4, 6, 8)


def pack_bits(values, nbits: int, num_threads: int | None = None, backend: str = "auto") -> np.ndarray:
    """Packs integers into nbits fields, C order, as coremltools' pack_elements_into_bits.

    Signed values (int4 data) are stored as two's-complement fields. Returns uint8 bytes.
    backend: "auto" (the CPU), "cpu" or "metal" (see weightpress.backends()).
    """
    from .backends import device

    gpu = device(backend, "pack_bits")
    if nbits not in range(1, 9):
        raise ValueError(f"pack_bits: nbits must be in 1..8, got {nbits}")
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.integer) and v.dtype != np.bool_:
        raise TypeError(f"pack_bits: values must be integers, got {v.dtype}")
    flat = np.ascontiguousarray(v.reshape(-1)).astype(np.uint8, copy=False) if v.dtype.itemsize == 1 else (
        np.ascontiguousarray(v.reshape(-1)).astype(np.int64) & ((1 << nbits) - 1)
    ).astype(np.uint8)
    if gpu is not None:
        return gpu.pack_bits(flat.view(np.uint8), nbits)
    return _core.pack_bits(flat.view(np.uint8), nbits, num_threads or 0)


def unpack_bits(packed, count: int, nbits: int, signed: bool = False, num_threads: int | None = None) -> np.ndarray:
    """Inverse of pack_bits: `count` fields of nbits each (uint8, or int8 when signed)."""
    if nbits not in range(1, 9):
        raise ValueError(f"unpack_bits: nbits must be in 1..8, got {nbits}")
    if isinstance(packed, (bytes, bytearray, memoryview)):
        packed = np.frombuffer(packed, dtype=np.uint8)
    out = _core.unpack_bits(np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1), int(count), nbits, num_threads or 0)
    if signed and nbits < 8:  # two's complement of nbits, in place: (x ^ half) - half
        out ^= np.uint8(1 << (nbits - 1))
        out = out.view(np.int8)
        out -= np.int8(1 << (nbits - 1))
    elif signed:
        out = out.view(np.int8)
    return out
