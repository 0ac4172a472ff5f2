"""The array API: one weight (numpy array or torch tensor) in, a compressed result out.

    palettize(weight, nbits, ...)   PalettizeResult   (k-means / uniform / unique / custom)
    quantize(weight, dtype, ...)    QuantizeResult    (blockwise linear, int4/uint4/int8/uint8)
    prune(weight, ...)              PruneResult       (threshold / magnitude / block / n:m)

Each is its algorithm module's parts function (palettize.py, quantize.py, prune.py: the one
place its options are declared) with the parts wrapped in a result (results.py), whose
methods chain further methods (joint compression).
"""

from __future__ import annotations

import inspect
import warnings

from .palettize import palettize_parts
from .prune import prune_parts
from .quantize import quantize_parts
from .results import PalettizeResult, PruneResult, QuantizeResult

# coremltools 9.0 repeats a per-channel-scale LUT per input position on iOS18: warn when that
# LUT alone reaches this fraction of the dense weight
PCS_LUT_WARN_FRACTION = 0.25


def _public(name, parts, result, doc, check=None):
    """The public function: `parts` with its signature, returning `result` of the parts."""

    def api(*args, **kwargs):
        r = result(*parts(*args, **kwargs))
        if check is not None:
            check(r)
        return r

    api.__signature__ = inspect.signature(parts).replace(return_annotation=result.__name__)
    api.__name__ = api.__qualname__ = name
    api.__module__ = "weightpress"
    api.__doc__ = doc
    return api


def _warn_repeated_lut(result: PalettizeResult) -> None:
    if result.per_channel_scale is None:
        return
    emitted = result.stored_parts("iOS18")[1].nbytes
    dense = result.reference.nbytes
    if emitted >= PCS_LUT_WARN_FRACTION * dense:
        warnings.warn(f"palettize: with enable_per_channel_scale the iOS18 LUT is repeated per input position "
                      f"({emitted} bytes, {emitted / dense:.0%} of the dense weight's {dense}); the iOS26 form "
                      "avoids the repetition", stacklevel=3)


palettize = _public("palettize", palettize_parts, PalettizeResult, """Palettizes one weight (numpy array or
    torch tensor, float16 or float32).

    Options mirror coremltools' OpPalettizerConfig. Scalar k-means is exact: the clustering of
    every group has the minimum (sample-weighted) SSE; for fp16 groups of at least 10,000
    elements the LUT and indices equal coremltools' bit for bit. sample_weight gives
    per-element importance (>= 0) for sensitivity-weighted k-means. backend: "auto" (the
    CPU), "cpu" or "metal" (see weightpress.backends()).
    """, check=_warn_repeated_lut)

quantize = _public("quantize", quantize_parts, QuantizeResult, """Quantizes one weight (numpy array or torch
    tensor, float16 or float32).

    Options mirror coremltools' OpLinearQuantizerConfig. per_block with an int block_size
    blocks `input_axis` (default 1, the input axis of linear/conv weights; 0 for
    conv_transpose) and quantizes every output channel (`channel_axis`) separately. fit:
    "coremltools" (default: its scale and zero point, byte-identical) or "best" (per block the
    parameters of least squared error over the dtype's full range, never worse than
    coremltools'; CPU only). backend: "auto" (the CPU), "cpu" or "metal" (see
    weightpress.backends()).
    """)

prune = _public("prune", prune_parts, PruneResult, """Prunes one weight (numpy array or torch tensor,
    float16 or float32).

    Exactly one of: threshold=T (|w| <= T pruned, compared in the weight's dtype; when the
    resulting sparsity is below minimum_sparsity_percentile coremltools skips the weight: the
    result says so in .meets_minimum_sparsity and a warning is issued); target_sparsity=s in
    [0, 1] (magnitude pruning at numpy's percentile, ties at the threshold pruned;
    block_size=b ranks blocks of b channels along dim (default 0) by L2 norm);
    n_m_ratio=(n, m): the n smallest of every m consecutive elements along dim (default 1)
    are zeroed. backend: "auto" (the CPU), "cpu" or "metal" (see weightpress.backends()).
    """)
