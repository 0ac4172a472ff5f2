"""weightpress.prune: threshold, magnitude (optionally block) and n:m pruning.

Semantics of coremltools 9.0's prune_weights.compress_by_threshold / compress_by_magnitude /
compress_by_nm_sparsity (reference: coremltools-formats.md 3.3). The survivors are decided,
the mask packed and the non-zero values gathered in one fused C++ pass.

Deviation, by design: NaN/Inf weights are refused (coremltools prunes NaN silently).
n:m ties: among equal magnitudes the lower index is pruned first (numpy's argsort, which
coremltools uses, leaves that order implementation-defined).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Tuple

import numpy as np

from . import _core
from ._arrays import as_weight, sum_squared_error, threads_arg


@dataclass(frozen=True)
class Ios16Sparse:
    """Inputs of iOS16 constexpr_sparse_to_dense: packed uint8 mask, non-zero data, uint32 shape."""

    nonzero_data: np.ndarray
    mask: np.ndarray
    shape: np.ndarray


class PruneResult:
    """mask: bool, the weight's shape (True = stored); nonzero_data: the stored values in C
    order, the weight's dtype; packed_mask: the mask as LSB-first bytes (numpy packbits little)."""

    def __init__(self, *, weight, packed_mask, nonzero_data, meets_minimum_sparsity=True):
        self.shape = weight.shape
        self.dtype = weight.dtype
        self.packed_mask = packed_mask
        self.nonzero_data = nonzero_data
        self.meets_minimum_sparsity = meets_minimum_sparsity
        self._weight = weight

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

    def decompress(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=self.dtype)
        dense[self.mask] = self.nonzero_data
        return dense

    @cached_property
    def sse(self) -> float:
        return sum_squared_error(self.decompress(), self._weight)

    @property
    def nbytes(self) -> int:
        return self.packed_mask.nbytes + self.nonzero_data.nbytes

    # ---------------------------------------------------------------- joint compression
    def palettize(self, nbits: Optional[int] = None, *, surviving_only: bool = False, **options):
        """prune -> palettize: palettizes the pruned weight (options of weightpress.palettize)
        and stores LUT indices only where kept (constexpr_lut_to_sparse).

        As in coremltools, k-means clusters the dense pruned weight, zeros included, so one
        centroid is usually spent on zero although pruned positions never read the LUT.
        surviving_only=True clusters only the kept values (exact k-means with zero weight on
        pruned positions): lower error for the same bits. Returns a joint.SparsePalettizeResult.
        """
        from .joint import prune_then_palettize

        return prune_then_palettize(self, nbits, surviving_only=surviving_only, **options)

    def quantize(self, dtype: str = "int8", **options):
        """prune -> quantize: quantizes the pruned weight (options of weightpress.quantize;
        scales from the dense tensor, zeros included, as coremltools) and stores integers only
        where kept (constexpr_sparse_blockwise_shift_scale). Returns a joint.SparseQuantizeResult."""
        from .joint import prune_then_quantize

        return prune_then_quantize(self, dtype, **options)

    def __repr__(self) -> str:
        return f"PruneResult(shape={self.shape}, dtype={self.dtype}, sparsity={self.sparsity:.4f})"


def _bits(w):
    return w.view(np.uint16) if w.dtype == np.float16 else w


def _sparsify(w, threads, magnitude=None, pruned=None, threshold=0.0):
    mag = _bits(np.ascontiguousarray(magnitude, dtype=w.dtype)) if magnitude is not None else None
    packed, nonzero = _core.sparsify(_bits(w), mag, pruned, float(threshold), threads)
    if w.dtype == np.float16:
        nonzero = nonzero.view(np.float16)
    return packed, np.array(nonzero)


def _block_magnitude(w, block_size, dim, threads):
    """coremltools' block L2-norm map (see cpp/include/weightpress/prune.h), weight dtype."""
    outer = 1 if dim == 0 else w.shape[0]
    channel = w.shape[dim]
    inner = w.size // (outer * channel)
    out = _core.block_magnitude(_bits(w), outer, channel, inner, block_size, threads)
    return (out.view(np.float16) if w.dtype == np.float16 else out).reshape(w.shape)


def _percentile(magnitude, q, threads):
    """np.percentile(np.abs(magnitude), q) (method "linear", q a Python float), bit for bit:
    the two neighbouring order statistics of |magnitude| come from the C++ selection, the
    interpolation repeats numpy's _lerp in the magnitude's dtype."""
    n = magnitude.size
    virtual = (n - 1) * np.true_divide(q, 100)
    if virtual >= n - 1:
        below = above = n - 1
    else:
        below = int(np.floor(virtual))
        above = below + 1
    gamma = float(virtual - below)
    values = _core.order_statistics(_bits(np.ascontiguousarray(magnitude).reshape(-1)), [below, above], threads)
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


def prune(
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
) -> PruneResult:
    """Prunes one weight (numpy array or torch tensor, float16 or float32).

    Exactly one of: threshold=T (|w| <= T pruned, compared in the weight's dtype; when the
    resulting sparsity is below minimum_sparsity_percentile coremltools skips the weight:
    the result says so in .meets_minimum_sparsity and a warning is issued);
    target_sparsity=s in [0, 1] (magnitude pruning at numpy's percentile, ties at the
    threshold pruned; block_size=b ranks blocks of b channels along dim (default 0) by L2
    norm); n_m_ratio=(n, m): the n smallest of every m consecutive elements along dim
    (default 1) are zeroed.
    backend: "auto" (the CPU), "cpu" or "metal" (see weightpress.backends()).
    """
    from .palettize import _cpu_only

    _cpu_only(backend, "prune")
    chosen = [name for name, v in (("threshold", threshold), ("target_sparsity", target_sparsity),
                                   ("n_m_ratio", n_m_ratio)) if v is not None]
    if len(chosen) != 1:
        raise ValueError(f"prune: give exactly one of threshold, target_sparsity, n_m_ratio (got {chosen or 'none'})")
    w = as_weight(weight, "prune", min_rank=1)
    threads = threads_arg(num_threads, "prune")

    if threshold is not None:
        if not np.isscalar(threshold) or not threshold >= 0:
            raise ValueError(f"prune: threshold must be a number >= 0, got {threshold!r}")
        if not 0 <= minimum_sparsity_percentile <= 1:
            raise ValueError(f"prune: minimum_sparsity_percentile must be in [0, 1], got {minimum_sparsity_percentile}")
        packed, nonzero = _sparsify(w, threads, threshold=w.dtype.type(threshold))
        result = PruneResult(weight=w, packed_mask=packed, nonzero_data=nonzero)
        if result.sparsity < minimum_sparsity_percentile:
            result.meets_minimum_sparsity = False
            warnings.warn(f"prune: sparsity {result.sparsity:.4f} is below minimum_sparsity_percentile "
                          f"{minimum_sparsity_percentile}; coremltools skips such a weight", stacklevel=2)
        return result

    if target_sparsity is not None:
        if not np.isscalar(target_sparsity) or not 0 <= target_sparsity <= 1:
            raise ValueError(f"prune: target_sparsity must be in [0, 1], got {target_sparsity!r}")
        magnitude = None
        if block_size is not None:
            dim = 0 if dim is None else dim
            _check_dim(dim, w, "block")
            if not isinstance(block_size, (int, np.integer)) or block_size < 2:
                raise ValueError(f"prune: block_size must be an int > 1, got {block_size!r}")
            if block_size > w.shape[dim] / 2:
                raise ValueError(f"prune: block_size {block_size} is more than half of the {w.shape[dim]} channels "
                                 f"on axis {dim} (coremltools skips such a weight)")
            magnitude = _block_magnitude(w, int(block_size), dim, threads)
        q = float(target_sparsity) * 100  # a Python float, as in coremltools' config
        if q == 100:
            return PruneResult(weight=w, packed_mask=np.zeros((w.size + 7) // 8, np.uint8),
                               nonzero_data=np.zeros(0, w.dtype))
        if q == 0:
            packed, nonzero = _sparsify(w, threads, pruned=np.zeros(w.size, np.uint8))
            return PruneResult(weight=w, packed_mask=packed, nonzero_data=nonzero)
        # np.percentile of the magnitudes by counting selection; plain magnitude pruning
        # reads |w| straight from the weight (no abs copy)
        cut = _percentile(w if magnitude is None else magnitude, q, threads)
        packed, nonzero = _sparsify(w, threads, magnitude=magnitude, threshold=cut)
        return PruneResult(weight=w, packed_mask=packed, nonzero_data=nonzero)

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
    rank = w.ndim
    perm = list(range(2, rank)) + [0, 1]
    if dim == 0:
        perm[-2], perm[-1] = 1, 0
    moved = np.transpose(w, axes=perm)
    channel = moved.shape[-1]
    if m > channel / 2:
        raise ValueError(f"prune: m = {m} is more than half of the {channel} channels on axis {dim} "
                         "(coremltools skips such a weight)")
    # ranked by the bit patterns themselves (|x| order = order of the bits without the sign):
    # no abs or float32 copy; for a 2-D weight pruned along dim 1 no transpose either
    identity = perm == list(range(rank))
    bits = np.ascontiguousarray(moved).view(np.uint16 if w.dtype == np.float16 else np.uint32)
    pruned = _core.nm_prune_mask(bits.reshape(-1, channel), n, m, threads)
    if not identity:
        back = [perm.index(i) for i in range(rank)]
        pruned = np.ascontiguousarray(np.transpose(pruned.reshape(moved.shape), axes=back))
    pruned = pruned.reshape(-1)
    packed, nonzero = _sparsify(w, threads, pruned=pruned)
    return PruneResult(weight=w, packed_mask=packed, nonzero_data=nonzero)
