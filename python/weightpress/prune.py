"""Pruning (threshold, magnitude, block and n:m): the algorithm, from a weight to its parts
(results.py wraps them).

Semantics of coremltools 9.0's prune_weights.compress_by_threshold / compress_by_magnitude /
compress_by_nm_sparsity (docs/formats.md, "Pruning"). The survivors are decided, the mask
packed and the non-zero values gathered in one fused C++ pass.

Deviation, by design: NaN/Inf weights are refused (coremltools prunes NaN silently).
n:m ties: among equal magnitudes the lower index is pruned first (numpy's argsort, which
coremltools uses, leaves that order implementation-defined).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import _core, rules
from ._arrays import as_weight, check_finite, kernel_call, threads_arg
from .backends import device as backend_device
from .errors import NotApplicableError


@dataclass(frozen=True)
class SparseParts:
    """packed_mask: the mask as LSB-first bytes (True = stored); nonzero_data: the stored values
    in C order, the weight's dtype; meets_minimum_sparsity: False when a threshold left less
    sparsity than coremltools requires (it would skip the weight)."""

    packed_mask: np.ndarray
    nonzero_data: np.ndarray
    meets_minimum_sparsity: bool = True


def _bits(w):
    return w.view(np.uint16) if w.dtype == np.float16 else w


def _sparsify(w, threads, magnitude=None, pruned=None, threshold=0.0, gpu=None):
    if gpu is not None:
        if magnitude is not None or pruned is not None:
            raise NotImplementedError("prune: the Metal backend prunes by magnitude or threshold; block and n:m "
                                      "pruning run on the CPU (backend='cpu')")
        check_finite(w, "prune")  # the Metal kernels do not look for NaN/Inf
        packed, nonzero = gpu.sparsify(_bits(w).reshape(-1), float(threshold))
        return packed, np.array(nonzero.view(np.float16) if w.dtype == np.float16 else nonzero)
    mag = _bits(np.ascontiguousarray(magnitude, dtype=w.dtype)) if magnitude is not None else None
    # the kernel refuses NaN/Inf in its own pass and sizes the values array exactly
    packed, nonzero = kernel_call(lambda: _core.sparsify(_bits(w), mag, pruned, float(threshold), threads), w,
                                  "prune")
    return packed, nonzero.view(np.float16) if w.dtype == np.float16 else nonzero


def _block_magnitude(w, block_size, dim, threads):
    """coremltools' block L2-norm map (see cpp/include/weightpress/prune.h), weight dtype."""
    outer = 1 if dim == 0 else w.shape[0]
    channel = w.shape[dim]
    inner = w.size // (outer * channel)
    out = _core.block_magnitude(_bits(w), outer, channel, inner, block_size, threads)
    return (out.view(np.float16) if w.dtype == np.float16 else out).reshape(w.shape)


def _percentile(magnitude, q, threads, weight):
    """np.percentile(np.abs(magnitude), q) (method "linear", q a Python float), bit for bit:
    the two neighbouring order statistics of |magnitude| come from the C++ selection, the
    interpolation repeats numpy's _lerp in the magnitude's dtype. NaN (from a NaN in
    `weight`) is refused naming the weight's element."""
    n = magnitude.size
    virtual = (n - 1) * np.true_divide(q, 100)
    if virtual >= n - 1:
        below = above = n - 1
    else:
        below = int(np.floor(virtual))
        above = below + 1
    gamma = float(virtual - below)
    flat = np.ascontiguousarray(magnitude).reshape(-1)
    values = kernel_call(lambda: _core.order_statistics(_bits(flat), [below, above], threads), weight, "prune")
    if magnitude.dtype == np.float16:
        values = values.view(np.float16)
    a, b = values[0], values[1]
    diff = b - a
    result = a + diff * gamma
    if gamma >= 0.5:
        result = b - diff * (1 - gamma)
    return result


def _check_dim(dim, w, what):
    if dim not in (0, 1):
        raise ValueError(f"prune: {what} dim must be 0 or 1, got {dim!r}")
    if not 2 <= w.ndim <= 5:
        raise ValueError(f"prune: {what} pruning needs a weight of rank 2 to 5, got shape {w.shape}")


def prune_parts(
    weight,
    *,
    threshold: Optional[float] = None,
    minimum_sparsity_percentile: float = 0.5,
    target_sparsity: Optional[float] = None,
    block_size: Optional[int] = None,
    n_m_ratio: Optional[Tuple[int, int]] = None,
    dim: Optional[int] = None,
    num_threads: Optional[int] = None,
    backend: str = "auto",
) -> "tuple[np.ndarray, SparseParts]":
    """The coerced weight and its pruning (the options of weightpress.prune)."""
    gpu = backend_device(backend, "prune")
    chosen = [name for name, v in (("threshold", threshold), ("target_sparsity", target_sparsity),
                                   ("n_m_ratio", n_m_ratio)) if v is not None]
    if len(chosen) != 1:
        raise ValueError(f"prune: give exactly one of threshold, target_sparsity, n_m_ratio (got {chosen or 'none'})")
    w = as_weight(weight, "prune", min_rank=1, finite=False)  # the kernels check in their own passes
    threads = threads_arg(num_threads, "prune")

    if threshold is not None:
        if not np.isscalar(threshold) or not threshold >= 0:
            raise ValueError(f"prune: threshold must be a number >= 0, got {threshold!r}")
        if not 0 <= minimum_sparsity_percentile <= 1:
            raise ValueError(f"prune: minimum_sparsity_percentile must be in [0, 1], got {minimum_sparsity_percentile}")
        packed, nonzero = _sparsify(w, threads, threshold=w.dtype.type(threshold), gpu=gpu)
        sparsity = 1.0 - nonzero.size / float(w.size)
        meets = rules.prune_threshold_sparsity(sparsity, minimum_sparsity_percentile) is None
        if not meets:
            warnings.warn(f"prune: sparsity {sparsity:.4f} is below minimum_sparsity_percentile "
                          f"{minimum_sparsity_percentile}; coremltools skips such a weight", stacklevel=3)
        return w, SparseParts(packed, nonzero, meets)

    if target_sparsity is not None:
        if not np.isscalar(target_sparsity) or not 0 <= target_sparsity <= 1:
            raise ValueError(f"prune: target_sparsity must be in [0, 1], got {target_sparsity!r}")
        magnitude = None
        if block_size is not None:
            dim = 0 if dim is None else dim
            _check_dim(dim, w, "block")
            if not isinstance(block_size, (int, np.integer)) or block_size < 2:
                raise ValueError(f"prune: block_size must be an int > 1, got {block_size!r}")
            reason = rules.prune_blocks(w.shape, dim, block_size)
            if reason:
                raise NotApplicableError("prune", reason)
            magnitude = _block_magnitude(w, int(block_size), dim, threads)
        q = float(target_sparsity) * 100  # a Python float, as in coremltools' config
        if q == 100:
            return w, SparseParts(np.zeros((w.size + 7) // 8, np.uint8), np.zeros(0, w.dtype))
        if q == 0:
            packed, nonzero = _sparsify(w, threads, pruned=np.zeros(w.size, np.uint8))
            return w, SparseParts(packed, nonzero)
        # np.percentile of the magnitudes by counting selection; plain magnitude pruning
        # reads |w| straight from the weight (no abs copy)
        cut = _percentile(w if magnitude is None else magnitude, q, threads, w)
        packed, nonzero = _sparsify(w, threads, magnitude=magnitude, threshold=cut, gpu=gpu)
        return w, SparseParts(packed, nonzero)

    # n:m
    if block_size is not None:
        raise ValueError("prune: block_size cannot be combined with n_m_ratio")
    try:
        n, m = (int(v) for v in n_m_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"prune: n_m_ratio must be a pair of ints (n, m), got {n_m_ratio!r}") from None
    if not 0 <= n <= m or m < 1:
        raise ValueError(f"prune: n_m_ratio needs 0 <= n <= m and m >= 1, got ({n}, {m})")
    dim = 1 if dim is None else dim
    _check_dim(dim, w, "n:m")
    reason = rules.prune_n_m(w.shape, dim, m)
    if reason:
        raise NotApplicableError("prune", reason)
    # groups of m along `dim` for every position of the other axes: the weight as [outer,
    # channel, inner] in place (no transposes), ranked by the bit patterns themselves
    # (|x| order = order of the bits without the sign: no abs or float32 copy)
    outer = 1 if dim == 0 else w.shape[0]
    channel = w.shape[dim]
    inner = w.size // (outer * channel)
    bits = np.ascontiguousarray(w).view(np.uint16 if w.dtype == np.float16 else np.uint32)
    pruned = _core.nm_prune_mask(bits.reshape(-1), outer, channel, inner, n, m, threads)
    packed, nonzero = _sparsify(w, threads, pruned=pruned, gpu=gpu)
    return w, SparseParts(packed, nonzero)
