"""Palettization: the algorithm, from a weight to its parts (results.py wraps them).

Semantics follow coremltools 9.0's OpPalettizerConfig and
palettize_weights.grouped_channelwise_compress (docs/formats.md, "Palettization"): the
channel axis is swapped to the front, split into contiguous groups of `group_size`
channels, and each group is clustered on its C-order elements (or cluster_dim-long vectors
along the channel axis).

Scalar k-means is solved exactly (optimal weighted SSE) by the C++ core; see
cpp/include/weightpress/palettize.h and kmeans1d.h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from . import _core, rules
from ._arrays import as_sample_weight, as_weight, kernel_call, normalize_axis, threads_arg
from .backends import device as backend_device
from .errors import NotApplicableError
from .packing import SUPPORTED_NBITS

MODES = ("kmeans", "uniform", "unique", "custom")
GRANULARITIES = ("per_tensor", "per_grouped_channel")
IOS16_NBITS = (1, 2, 4, 6, 8)  # the iOS16 op takes LUTs of 2, 4, 16, 64 or 256 entries


@dataclass(frozen=True)
class LutParts:
    """One weight palettized, group by group (before any layout for Core ML).

    lut_groups    [G, 2**nbits, cluster_dim] in the weight's dtype
    index_groups  [G, elements per group / cluster_dim] uint8
    """

    nbits: int
    mode: str
    channel_axis: int
    group_size: int
    cluster_dim: int
    lut_groups: np.ndarray
    index_groups: np.ndarray
    per_channel_scale: Optional[np.ndarray]
    num_clusters: Optional[np.ndarray]
    objective: Optional[float]
    kernel_sse: Optional[float]


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
    reason = rules.palettize_groups(weight.shape, axis, size, cluster_dim)
    if reason:
        raise NotApplicableError(op, reason)
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


def _kmeans_scalar_on(device, flat, nbits, threads):
    """Scalar k-means of fp16 groups with the element passes on `device` (the Metal kernels):
    histograms there, the exact clustering on the CPU, the indices as a code-table gather
    there (encode at 8 bits per element). The same result as _kmeans_scalar, bit for bit."""
    bits = flat.view(np.uint16)
    counts = np.stack([device.histogram_f16(np.ascontiguousarray(row)) for row in bits])
    centroids, codes, objective, sse, clusters = _core.palettize_from_histograms(counts, nbits, threads)
    idx = np.stack([device.encode_pack(np.ascontiguousarray(row), codes[g], 8) for g, row in enumerate(bits)])
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
    reason = rules.unique_values(count)
    if reason:
        raise NotApplicableError("palettize", reason)
    nbits = next(b for b in SUPPORTED_NBITS if count <= 1 << b)
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


def palettize_parts(
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
) -> "tuple[np.ndarray, LutParts]":
    """The coerced weight and its palettization (the options of weightpress.palettize)."""
    gpu = backend_device(backend, "palettize")
    _check_options(mode, nbits, granularity, group_size, cluster_dim, lut_function, sample_weight)
    if gpu is not None and not (mode == "kmeans" and cluster_dim == 1 and not enable_per_channel_scale
                                and sample_weight is None):
        raise NotImplementedError("palettize: the Metal backend runs scalar k-means without sample_weight or a "
                                  "per-channel scale; use backend='cpu' for the other modes")
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
    if mode == "kmeans" and cluster_dim == 1 and gpu is not None and w.dtype == np.float16:
        lut, idx, clusters, objective, sse = kernel_call(lambda: _kmeans_scalar_on(gpu, flat, nbits, threads), w,
                                                         "palettize")
        kernel_sse = sse
    elif mode == "kmeans" and cluster_dim == 1:
        lut, idx, clusters, objective, sse = kernel_call(
            lambda: _kmeans_scalar(flat, flat_importance, nbits, threads), w, "palettize")
        kernel_sse = sse if scale is None else None
    elif mode == "kmeans":
        lut, idx, clusters, objective = _kmeans_vector(flat, flat_importance, swapped_shape, groups, nbits,
                                                       cluster_dim, threads)
    elif mode == "uniform":
        lut, idx = _uniform(flat, nbits)
        reason = rules.finite_parameters("palettize", "LUT", lut)
        if reason:
            raise NotApplicableError("palettize", reason)
    elif mode == "unique":
        nbits, lut, idx = _unique(flat, swapped_shape, groups, cluster_dim)
    else:
        nbits, lut, idx = _custom(np.swapaxes(source, 0, axis), groups, lut_function, cluster_dim, w.dtype)

    parts = LutParts(nbits=int(nbits), mode=mode, channel_axis=axis, group_size=w.shape[axis] // groups,
                     cluster_dim=int(cluster_dim), lut_groups=lut, index_groups=idx, per_channel_scale=scale,
                     num_clusters=clusters, objective=objective, kernel_sse=kernel_sse)
    return w, parts


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
    nbits: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """Optimal scalar k-means objective for every cluster count 1..2**max_nbits, from one DP.

    Returns curve[c-1] = minimum (sample-weighted) SSE with c clusters per group, summed
    over groups (or [groups, 2**max_nbits] with per_group=True). curve[2**b - 1] is what
    palettize(weight, b) achieves with float64 centroids, so bit-widths can be planned
    without re-clustering. With nbits=[b, ...] only those widths are solved (one fast solve
    each instead of the DP over every count): the result has one entry per width.
    """
    if isinstance(max_nbits, bool) or max_nbits not in range(1, 9):
        raise ValueError(f"sse_curve: max_nbits must be in 1..8, got {max_nbits}")
    _check_grouping(granularity, group_size, "sse_curve")
    # the kernel refuses NaN/Inf while collecting each group's values (kernel_call names it)
    w = as_weight(weight, "sse_curve", min_rank=2 if granularity == "per_grouped_channel" else 1, finite=False)
    axis = normalize_axis(channel_axis, w.ndim, "sse_curve")
    importance = as_sample_weight(sample_weight, w, "sse_curve") if sample_weight is not None else None
    groups, _ = _grouping(w, granularity, group_size, axis, 1, "sse_curve")
    flat = _groups_view(w, axis, groups)
    data = flat.view(np.uint16) if flat.dtype == np.float16 else flat
    imp = _groups_view(importance, axis, groups) if importance is not None else None
    ks = None
    if nbits is not None:
        widths = [int(b) for b in nbits]
        if not widths or any(b not in range(1, max_nbits + 1) for b in widths):
            raise ValueError(f"sse_curve: nbits must be widths in 1..max_nbits={max_nbits}, got {list(nbits)}")
        ks = [1 << b for b in widths]
    threads = threads_arg(num_threads, "sse_curve")
    curve = kernel_call(lambda: _core.sse_curve(data, imp, 1 << max_nbits, threads, ks), w, "sse_curve")
    return curve if per_group else curve.sum(axis=0)
