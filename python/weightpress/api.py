"""The array API: one weight (numpy array or torch tensor) in, a compressed result out.

    palettize(weight, nbits, ...)   PalettizeResult   (k-means / uniform / unique / custom)
    quantize(weight, dtype, ...)    QuantizeResult    (blockwise linear, int4/uint4/int8/uint8)
    prune(weight, ...)              PruneResult       (threshold / magnitude / block / n:m)

Each runs its algorithm module (palettize.py, quantize.py, prune.py) and wraps the parts in
a result (results.py), whose methods chain further methods (joint compression).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence, Tuple, Union

from .palettize import palettize_parts
from .prune import prune_parts
from .quantize import quantize_parts
from .results import PalettizeResult, PruneResult, QuantizeResult

# coremltools 9.0 repeats a per-channel-scale LUT per input position on iOS18: warn when that
# LUT alone reaches this fraction of the dense weight
PCS_LUT_WARN_FRACTION = 0.25


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
    result = PalettizeResult(*palettize_parts(
        weight, nbits, mode=mode, granularity=granularity, group_size=group_size, channel_axis=channel_axis,
        cluster_dim=cluster_dim, enable_per_channel_scale=enable_per_channel_scale, lut_function=lut_function,
        sample_weight=sample_weight, num_threads=num_threads, backend=backend))
    if result.per_channel_scale is not None:
        emitted = result.stored_parts("iOS18")[1].nbytes
        dense = result.reference.nbytes
        if emitted >= PCS_LUT_WARN_FRACTION * dense:
            warnings.warn(
                f"palettize: with enable_per_channel_scale the iOS18 LUT is repeated per input position "
                f"({emitted} bytes, {emitted / dense:.0%} of the dense weight's {dense}); "
                "the iOS26 form avoids the repetition",
                stacklevel=2,
            )
    return result


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
    return QuantizeResult(*quantize_parts(
        weight, dtype, mode=mode, granularity=granularity, block_size=block_size, channel_axis=channel_axis,
        input_axis=input_axis, num_threads=num_threads, backend=backend))


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
    return PruneResult(*prune_parts(
        weight, threshold=threshold, minimum_sparsity_percentile=minimum_sparsity_percentile,
        target_sparsity=target_sparsity, block_size=block_size, n_m_ratio=n_m_ratio, dim=dim,
        num_threads=num_threads, backend=backend))
