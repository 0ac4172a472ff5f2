"""weightpress.palettize: k-means (and uniform / unique / custom) palettization of one weight.

Semantics follow coremltools 9.0's OpPalettizerConfig and
palettize_weights.grouped_channelwise_compress (reference: coremltools-formats.md 3.2):
the channel axis is swapped to the front, split into contiguous groups of `group_size`
channels, and each group is clustered on its C-order elements (or cluster_dim-long
vectors along the channel axis). The result carries coremltools' iOS18 layouts, the iOS16
form where that target can express it, and decompress().

Scalar k-means is solved exactly (optimal weighted SSE) by the C++ core; see
cpp/include/weightpress/palettize.h and kmeans1d.h.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional

import numpy as np

from . import _core
from ._arrays import as_sample_weight, as_weight, kernel_call, normalize_axis, sum_squared_error, threads_arg
from .packing import SUPPORTED_NBITS, pack_bits

MODES = ("kmeans", "uniform", "unique", "custom")
GRANULARITIES = ("per_tensor", "per_grouped_channel")
IOS16_NBITS = (1, 2, 4, 6, 8)  # the iOS16 op takes LUTs of 2, 4, 16, 64 or 256 entries
PCS_LUT_WARN_FRACTION = 0.25


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


class PalettizeResult:
    """Compressed parts of one weight. Arrays use coremltools' iOS18 layouts:

    lut      [..., 2**nbits, cluster_dim] in the weight's dtype, rank = weight rank + 2
    indices  uint8 values < 2**nbits, the weight's shape with the channel axis divided by
             cluster_dim (Core ML stores them as uint{nbits}; see packed_indices)
    per_channel_scale  weight dtype, the weight's shape with 1 on the channel axis, or None
    """

    def __init__(self, *, weight, nbits, mode, channel_axis, group_size, cluster_dim, lut_groups,
                 index_groups, per_channel_scale, num_clusters, objective=None, kernel_sse=None):
        self.nbits = int(nbits)
        self.mode = mode
        self.channel_axis = channel_axis
        self.group_size = group_size
        self.cluster_dim = cluster_dim
        self.vector_axis = channel_axis if cluster_dim > 1 else None
        self.per_channel_scale = per_channel_scale
        self.num_clusters = num_clusters  # clusters actually used, per group
        self.objective = objective  # optimal clustering objective (float64 centroids), kmeans only
        self.dtype = weight.dtype
        self.shape = weight.shape
        self._weight = weight
        self._lut_groups = lut_groups  # [G, 2**nbits, cluster_dim]
        self._index_groups = index_groups  # [G, elements per group / cluster_dim]
        self._kernel_sse = kernel_sse

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

    def emitted_lut(self) -> np.ndarray:
        """The LUT as coremltools stores it on iOS18 with a per-channel scale: repeated along
        every axis where the scale has more entries (common::canonicalize_quantized_lut_pattern)."""
        lut = self.lut
        if self.per_channel_scale is None:
            return lut
        for axis, n in enumerate(self.per_channel_scale.shape):
            if n > lut.shape[axis]:
                lut = np.repeat(lut, n // lut.shape[axis], axis=axis)
        return lut

    def _emitted_lut_size(self) -> int:
        size = self._lut_groups.shape[1] * self.cluster_dim
        for axis, n in enumerate(self.lut.shape[:-2]):
            size *= max(n, self.per_channel_scale.shape[axis]) if self.per_channel_scale is not None else n
        return size

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
                     num_threads: Optional[int] = None):
        """palettize -> quantize: the LUT stored as dtype integers with one per-tensor scale
        (coremltools' joint compression; iOS18+). Returns a joint.QuantizedLutResult."""
        from .joint import palettize_then_quantize_lut

        return palettize_then_quantize_lut(self, dtype, mode, granularity, num_threads)

    def prune(self, **options):
        """palettize -> prune: prunes the depalettized values (options of weightpress.prune),
        keeps the LUT and stores indices only where kept. Returns a joint.SparsePalettizeResult."""
        from .joint import palettize_then_prune

        return palettize_then_prune(self, options)

    @cached_property
    def sse(self) -> float:
        """Sum of squared errors of decompress() against the input weight (float64)."""
        if self._kernel_sse is not None:
            return float(self._kernel_sse)
        return sum_squared_error(self.decompress(), self._weight)

    @property
    def nbytes(self) -> int:
        """Bytes Core ML stores for this weight on iOS18 (packed indices + emitted LUT + scale)."""
        size = self.packed_indices.nbytes + self._emitted_lut_size() * self.dtype.itemsize
        if self.per_channel_scale is not None:
            size += self.per_channel_scale.nbytes
        return size

    def __repr__(self) -> str:
        return (f"PalettizeResult(mode={self.mode!r}, nbits={self.nbits}, shape={self.shape}, "
                f"dtype={self.dtype}, lut={self.lut.shape}, cluster_dim={self.cluster_dim})")


# ---------------------------------------------------------------- validation


def _check_grouping(granularity, group_size, op):
    if granularity not in GRANULARITIES:
        raise ValueError(f"{op}: granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if not isinstance(group_size, (int, np.integer)) or isinstance(group_size, bool) or group_size < 0:
        raise ValueError(f"{op}: group_size must be an int >= 0, got {group_size!r}")


def _check_options(mode, nbits, granularity, group_size, cluster_dim, lut_function, sample_weight):
    if mode not in MODES:
        raise ValueError(f"palettize: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode in ("kmeans", "uniform"):
        if nbits is None:
            raise ValueError(f"palettize: nbits is required for mode {mode!r}")
    elif nbits is not None:
        raise ValueError(f"palettize: nbits is inferred for mode {mode!r}; do not pass it (got {nbits})")
    if nbits is not None and (isinstance(nbits, bool) or nbits not in SUPPORTED_NBITS):
        raise ValueError(f"palettize: nbits must be one of {', '.join(map(str, SUPPORTED_NBITS))}, got {nbits}")
    if (mode == "custom") != (lut_function is not None):
        raise ValueError("palettize: lut_function is required for mode 'custom' and only for it")
    _check_grouping(granularity, group_size, "palettize")
    if not isinstance(cluster_dim, (int, np.integer)) or isinstance(cluster_dim, bool) or cluster_dim < 1:
        raise ValueError(f"palettize: cluster_dim must be an int >= 1, got {cluster_dim!r}")
    if cluster_dim > 1 and mode == "uniform":
        raise ValueError("palettize: mode 'uniform' does not support cluster_dim > 1")
    if sample_weight is not None and mode != "kmeans":
        raise ValueError(f"palettize: sample_weight applies to mode 'kmeans' only, got mode {mode!r}")


def _grouping(weight, granularity, group_size, axis, cluster_dim, op="palettize"):
    channels = weight.shape[axis]
    size = channels if granularity == "per_tensor" or group_size == 0 else int(group_size)
    if channels % size:
        raise ValueError(f"{op}: group_size {size} does not divide the {channels} channels on axis {axis}")
    if size % cluster_dim:
        raise ValueError(f"palettize: cluster_dim {cluster_dim} does not divide the group of {size} channels "
                         f"on axis {axis}")
    return channels // size, size


def _groups_view(array, axis, groups):
    """[G, elements per group] in the swapped C order coremltools clusters in."""
    return np.ascontiguousarray(np.swapaxes(array, 0, axis)).reshape(groups, -1)


def _vector_points(flat_groups, swapped_shape, groups, cluster_dim):
    """[G, P, cluster_dim]: point (j, r) of a group is rows j*c..j*c+c-1 at position r
    (coremltools' reshape_weight_for_vector_lut on the group, vector axis 0)."""
    per_group = swapped_shape[0] // groups
    rest = tuple(swapped_shape[1:])
    x = flat_groups.reshape((groups, per_group // cluster_dim, cluster_dim) + rest)
    x = np.moveaxis(x, 2, -1)
    return np.ascontiguousarray(x).reshape(groups, -1, cluster_dim)


# ---------------------------------------------------------------- modes


def _kmeans_scalar(flat, importance, nbits, threads):
    data = flat.view(np.uint16) if flat.dtype == np.float16 else flat
    centroids, idx, objective, sse, clusters = _core.palettize_scalar(data, importance, nbits, threads)
    return centroids.astype(flat.dtype)[:, :, None], idx, clusters, float(objective.sum()), float(sse.sum())


def _kmeans_vector(flat, importance, swapped_shape, groups, nbits, cluster_dim, threads):
    points = _vector_points(flat, swapped_shape, groups, cluster_dim).astype(np.float64)
    weights = None
    if importance is not None:
        weights = _vector_points(importance, swapped_shape, groups, cluster_dim).sum(axis=-1)
    centroids, labels, objective, clusters = _core.vector_kmeans(points, 1 << nbits, weights, threads=threads)
    return centroids.astype(flat.dtype), labels, clusters, float(objective.sum())


def _uniform(flat, nbits):
    """coremltools compress_uniform, vectorised over groups with the same numpy operations
    (weight-dtype arithmetic, round half to even, LUT in float64 then cast)."""
    levels = (1 << nbits) - 1
    lo = np.amin(flat, axis=1, keepdims=True)
    hi = np.amax(flat, axis=1, keepdims=True)
    scale = (hi - lo) / levels
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.round(((flat - lo) / (hi - lo)) * levels)
    q = np.where(np.isnan(q), 0, q).astype(np.uint8)  # max == min: 0/0 -> index 0
    lut = np.arange(1 << nbits, dtype=np.int64)[None, :] * scale.astype(np.float64) + lo.astype(np.float64)
    return lut.astype(flat.dtype)[:, :, None], q


def _unique(flat, swapped_shape, groups, cluster_dim):
    points = _vector_points(flat, swapped_shape, groups, cluster_dim)
    uniques = [np.unique(p, axis=0, return_inverse=True) for p in points]
    count = max(len(u) for u, _ in uniques)
    nbits = next((b for b in SUPPORTED_NBITS if count <= 1 << b), None)
    if nbits is None:
        raise ValueError(f"palettize: mode 'unique' needs at most 256 distinct values per group, found {count}")
    lut = np.zeros((groups, 1 << nbits, cluster_dim), dtype=flat.dtype)
    idx = np.empty((groups, points.shape[1]), dtype=np.uint8)
    for g, (values, inverse) in enumerate(uniques):
        lut[g, : len(values)] = values
        idx[g] = inverse.reshape(-1)
    return nbits, lut, idx


def _custom(weight_swapped, groups, lut_function, cluster_dim, dtype):
    luts, idxs = [], []
    for part in np.split(weight_swapped, groups, axis=0):
        lut, idx = lut_function(part)
        luts.append(np.asarray(lut))
        idxs.append(np.asarray(idx).reshape(-1))
    lut = np.stack(luts, axis=0)
    entries = lut.shape[1]
    nbits = int(math.ceil(math.log2(entries))) if entries > 1 else 1
    if nbits not in SUPPORTED_NBITS or entries != 1 << nbits:
        raise ValueError(f"palettize: lut_function returned a LUT of {entries} entries; "
                         f"expected 2**nbits with nbits in {SUPPORTED_NBITS}")
    lut = lut.reshape(groups, entries, cluster_dim).astype(dtype)
    idx = np.stack(idxs, axis=0)
    if idx.min() < 0 or idx.max() >= entries:
        raise ValueError(f"palettize: lut_function returned indices outside [0, {entries})")
    return nbits, lut, idx.astype(np.uint8)


# ---------------------------------------------------------------- API


def _cpu_only(backend, op):
    from .backends import resolve_backend

    if resolve_backend(backend, op) == "metal":
        raise NotImplementedError(f"{op}: the Metal kernels for {op} are written and emulation-tested "
                                  "(metal/README.md) but not yet wired to the host; use backend='cpu'")


def palettize(
    weight,
    nbits: Optional[int] = None,
    *,
    mode: str = "kmeans",
    granularity: str = "per_tensor",
    group_size: int = 32,
    channel_axis: int = 0,
    cluster_dim: int = 1,
    enable_per_channel_scale: bool = False,
    lut_function: Optional[Callable] = None,
    sample_weight=None,
    num_threads: Optional[int] = None,
    backend: str = "auto",
) -> PalettizeResult:
    """Palettizes one weight (numpy array or torch tensor, float16 or float32).

    Options mirror coremltools' OpPalettizerConfig. Scalar k-means is exact: the
    clustering of every group has the minimum (sample-weighted) SSE; for fp16 groups of at
    least 10,000 elements the LUT and indices equal coremltools' bit for bit.
    sample_weight gives per-element importance (>= 0) for sensitivity-weighted k-means.
    backend: "auto" (the CPU), "cpu" or "metal" (see weightpress.backends()).
    """
    _cpu_only(backend, "palettize")
    _check_options(mode, nbits, granularity, group_size, cluster_dim, lut_function, sample_weight)
    needs_axis = granularity == "per_grouped_channel" or cluster_dim > 1 or enable_per_channel_scale
    # Scalar k-means finds NaN/Inf in its own histogram/sort pass; the other modes check here.
    scalar_kmeans = mode == "kmeans" and cluster_dim == 1 and not enable_per_channel_scale
    w = as_weight(weight, "palettize", min_rank=2 if needs_axis else 1, finite=not scalar_kmeans)
    axis = normalize_axis(channel_axis, w.ndim, "palettize")
    threads = threads_arg(num_threads, "palettize")
    importance = as_sample_weight(sample_weight, w, "palettize") if sample_weight is not None else None
    groups, _ = _grouping(w, granularity, group_size, axis, cluster_dim)

    scale = None
    source = w
    if enable_per_channel_scale:
        # coremltools 9.0: the max is taken over the channel (output) axis, giving one scale
        # per position along the other axes; zeros become 1; division in the weight dtype.
        scale = np.max(np.abs(w), axis=axis, keepdims=True)
        scale[scale == 0] = 1
        source = w / scale

    swapped_shape = np.swapaxes(source, 0, axis).shape
    flat = _groups_view(source, axis, groups)
    flat_importance = _groups_view(importance, axis, groups) if importance is not None else None
    objective = kernel_sse = None
    clusters = None
    if mode == "kmeans" and cluster_dim == 1:
        lut, idx, clusters, objective, sse = kernel_call(
            lambda: _kmeans_scalar(flat, flat_importance, nbits, threads), w, "palettize")
        kernel_sse = sse if scale is None else None
    elif mode == "kmeans":
        lut, idx, clusters, objective = _kmeans_vector(flat, flat_importance, swapped_shape, groups, nbits,
                                                       cluster_dim, threads)
    elif mode == "uniform":
        lut, idx = _uniform(flat, nbits)
    elif mode == "unique":
        nbits, lut, idx = _unique(flat, swapped_shape, groups, cluster_dim)
    else:
        nbits, lut, idx = _custom(np.swapaxes(source, 0, axis), groups, lut_function, cluster_dim, w.dtype)

    result = PalettizeResult(
        weight=w, nbits=nbits, mode=mode, channel_axis=axis,
        group_size=w.shape[axis] // groups, cluster_dim=int(cluster_dim), lut_groups=lut, index_groups=idx,
        per_channel_scale=scale, num_clusters=clusters, objective=objective, kernel_sse=kernel_sse,
    )
    if scale is not None:
        emitted = result._emitted_lut_size() * w.dtype.itemsize
        if emitted >= PCS_LUT_WARN_FRACTION * w.nbytes:
            warnings.warn(
                f"palettize: with enable_per_channel_scale the iOS18 LUT is repeated per input position "
                f"({emitted} bytes, {emitted / w.nbytes:.0%} of the dense weight's {w.nbytes}); "
                "the iOS26 form avoids the repetition",
                stacklevel=2,
            )
    return result


def sse_curve(
    weight,
    max_nbits: int,
    *,
    granularity: str = "per_tensor",
    group_size: int = 32,
    channel_axis: int = 0,
    sample_weight=None,
    per_group: bool = False,
    num_threads: Optional[int] = None,
) -> np.ndarray:
    """Optimal scalar k-means objective for every cluster count 1..2**max_nbits, from one DP.

    Returns curve[c-1] = minimum (sample-weighted) SSE with c clusters per group, summed
    over groups (or [groups, 2**max_nbits] with per_group=True). curve[2**b - 1] is what
    palettize(weight, b) achieves with float64 centroids, so bit-widths can be planned
    without re-clustering.
    """
    if isinstance(max_nbits, bool) or max_nbits not in range(1, 9):
        raise ValueError(f"sse_curve: max_nbits must be in 1..8, got {max_nbits}")
    _check_grouping(granularity, group_size, "sse_curve")
    w = as_weight(weight, "sse_curve", min_rank=2 if granularity == "per_grouped_channel" else 1)
    axis = normalize_axis(channel_axis, w.ndim, "sse_curve")
    importance = as_sample_weight(sample_weight, w, "sse_curve") if sample_weight is not None else None
    groups, _ = _grouping(w, granularity, group_size, axis, 1, "sse_curve")
    flat = _groups_view(w, axis, groups)
    data = flat.view(np.uint16) if flat.dtype == np.float16 else flat
    imp = _groups_view(importance, axis, groups) if importance is not None else None
    curve = _core.sse_curve(data, imp, 1 << max_nbits, threads_arg(num_threads, "sse_curve"))
    return curve if per_group else curve.sum(axis=0)
