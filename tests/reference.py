"""Readable numpy references for the kernels: slow, obviously correct, used only by tests."""

from __future__ import annotations

import itertools

import numpy as np

# ---------------------------------------------------------------- packing


def pack_bits_ref(values, nbits: int) -> np.ndarray:
    """LSB-first bit stream: bit b of element i is stream bit i*nbits + b."""
    v = np.asarray(values).reshape(-1).astype(np.int64) & ((1 << nbits) - 1)
    bits = ((v[:, None] >> np.arange(nbits)) & 1).reshape(-1).astype(np.uint8)
    return np.packbits(bits, bitorder="little")


# ---------------------------------------------------------------- 1-D k-means


def partition_cost(x, w, starts) -> float:
    """Weighted SSE of the contiguous partition of sorted x given by cluster start indices."""
    total = 0.0
    bounds = list(starts) + [len(x)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        xs, ws = x[a:b], w[a:b]
        if len(xs) and ws.sum() > 0:
            mu = np.dot(xs, ws) / ws.sum()
            total += float(np.dot(ws, (xs - mu) ** 2))
    return total


def kmeans1d_bruteforce(x, w, k) -> float:
    """Minimum weighted SSE over every contiguous partition of sorted distinct x into
    min(k, n) clusters (optimal 1-D k-means clusters are contiguous)."""
    n = len(x)
    k = min(k, n)
    best = np.inf
    for cuts in itertools.combinations(range(1, n), k - 1):
        best = min(best, partition_cost(x, w, (0,) + cuts))
    return best


def kmeans1d_dp_ref(x, w, k) -> float:
    """Optimal weighted SSE of sorted distinct x in k clusters by the textbook O(k n^2) DP
    (centred sums per interval, no prefix-sum tricks): slow, independent of the C++ arithmetic."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = len(x)
    cost = np.zeros((n, n))
    for j in range(n):
        ws, xs = w[j:], x[j:]
        cw, cx = np.cumsum(ws), np.cumsum(ws * xs)
        mu = cx / cw
        for i in range(j, n):
            seg = slice(j, i + 1)
            cost[j, i] = float(np.dot(w[seg], (x[seg] - mu[i - j]) ** 2))
    best = cost[0].copy()  # one cluster over [0, i]
    for c in range(1, min(k, n)):
        new = np.full(n, np.inf)
        for i in range(c, n):
            new[i] = min(best[j - 1] + cost[j, i] for j in range(c, i + 1))
        best = new
    return float(best[n - 1])


def labels_objective(values, weights, labels) -> float:
    """Weighted SSE of a labelling against the float64 (weighted) mean of each cluster."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    total = 0.0
    for label in np.unique(labels):
        sel = labels == label
        ws = weights[sel]
        if ws.sum() == 0:
            continue
        mu = np.dot(values[sel], ws) / ws.sum()
        total += float(np.dot(ws, (values[sel] - mu) ** 2))
    return total


def lut_to_dense_ref(lut_groups, index_groups):
    """Scalar decode per group: out[g, e] = lut[g, idx[g, e]]."""
    return np.stack([lut[idx] for lut, idx in zip(lut_groups, index_groups)])


# ---------------------------------------------------------------- pruning


def block_magnitude_ref(w, block_size, dim):
    """Block L2-norm map with coremltools' numpy operations (weight dtype throughout)."""
    rank = w.ndim
    val = np.abs(w)
    perm = [1, 0] + list(range(2, rank))
    if dim == 1:
        val = np.transpose(val, axes=perm)
    channel = val.shape[0]
    if channel % block_size:
        val = np.pad(val, [(0, block_size - channel % block_size)] + [(0, 0)] * (rank - 1))
    padded = val.shape
    val = val.reshape([padded[0] // block_size, block_size] + list(padded[1:]))
    val = np.sqrt(np.sum(val * val, axis=1, keepdims=True))
    reps = [1] * (rank + 1)
    reps[1] = block_size
    val = np.tile(val, reps).reshape(padded)[:channel]
    return np.transpose(val, axes=perm) if dim == 1 else val
