"""coremltools 9.0's rules for whether a weight can take a compression, written once.

Each rule returns None when the weight qualifies, or the reason coremltools gives when it
skips the weight. What a reason means is the caller's business:

    array API (palettize, quantize, prune)   raises NotApplicableError(reason)
    coremltools hooks (weightpress.coreml)    hands the weight back to coremltools, which
                                              warns and skips it as it always did
    streaming engine (mlpackage.stream)       skips the const with a warning naming it

Which consts coremltools considers at all (rank, size, weight_threshold, consumers) is a
property of the program graph, not of a weight: see mlpackage/select.py.
"""

from __future__ import annotations

from typing import Optional, Sequence

UNIQUE_MAX_VALUES = 256  # the largest LUT Core ML takes (8-bit indices)


def palettize_groups(shape: Sequence[int], axis: int, group_size: int, cluster_dim: int) -> Optional[str]:
    """grouped_channelwise_compress: the channel axis splits into groups of group_size channels
    (0 = one group), and each group into vectors of cluster_dim channels."""
    channels = shape[axis]
    group = group_size or channels
    if channels % group:
        return f"group_size {group} does not divide the {channels} channels on axis {axis} (coremltools skips such a weight)"
    if group % cluster_dim:
        return (f"cluster_dim {cluster_dim} does not divide the group of {group} channels on axis {axis} "
                "(coremltools skips such a weight)")
    return None


def unique_values(count: int) -> Optional[str]:
    """Mode "unique": every group's distinct values (or vectors) must fit a 256-entry LUT."""
    if count > UNIQUE_MAX_VALUES:
        return (f"mode 'unique' needs at most {UNIQUE_MAX_VALUES} distinct values per group, found {count} "
                "(coremltools skips such a weight)")
    return None


def quantize_blocks(shape: Sequence[int], block_sizes: Sequence[int]) -> Optional[str]:
    """compute_qparams_by_dtype: every block size (0 = the whole axis) divides its axis."""
    for axis, (n, b) in enumerate(zip(shape, block_sizes)):
        if b and n % b:
            return f"block size {b} does not divide axis {axis} of size {n} (coremltools skips such a weight)"
    return None


def quantize_finite(has_inf: bool) -> Optional[str]:
    """linear_quantize_weights skips a const holding +-Inf (NaN it quantizes silently;
    weightpress refuses NaN everywhere)."""
    return "the weight contains inf/-inf, which quantization does not support" if has_inf else None


def finite_parameters(op: str, what: str, values) -> Optional[str]:
    """weightpress's own rule (coremltools has none): parameters a compression computes must be
    finite. An fp16 block whose range max - min exceeds 65504 gets an infinite scale (linear
    quantization) or an infinite LUT step (uniform palettization), and would decompress to
    NaN; such a weight is refused (array API) or skipped (model level), never written."""
    import numpy as np

    bad = ~np.isfinite(np.asarray(values))
    if bad.any():
        return (f"the {what} of {int(bad.sum())} block(s) is not finite (first at flat index "
                f"{int(np.flatnonzero(bad.reshape(-1))[0])}): the weight's range overflows its dtype and would "
                "decompress to NaN")
    return None


def prune_blocks(shape: Sequence[int], dim: int, block_size: int) -> Optional[str]:
    """compress_by_magnitude with block_size: blocks of at most half the channels along dim."""
    channel = shape[dim]
    if block_size > channel / 2:
        return (f"block_size {block_size} is more than half of the {channel} channels on axis {dim} "
                "(coremltools skips such a weight)")
    return None


def prune_n_m(shape: Sequence[int], dim: int, m: int) -> Optional[str]:
    """compress_by_nm_sparsity: groups of m of at most half the channels along dim."""
    channel = shape[dim]
    if m > channel / 2:
        return f"m = {m} is more than half of the {channel} channels on axis {dim} (coremltools skips such a weight)"
    return None


def prune_threshold_sparsity(sparsity: float, minimum: float) -> Optional[str]:
    """compress_by_threshold: the result must reach minimum_sparsity_percentile."""
    if sparsity < minimum:
        return f"sparsity {sparsity} < minimum_sparsity_percentile {minimum}"
    return None
