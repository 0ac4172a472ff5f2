"""One weight, one method's op config: the kernel call every container shares.

    compress_weight(weight, cfg, sizes, channel_axis, importance=None)

`sizes` are the block sizes the container inferred from the weight's consumers (coremltools'
infer_block_sizes for an .mlpackage, coreai-opt's rule for an .aimodel) and `channel_axis` the
output axis; `importance` weighs k-means per element (calibration). Returns the result, or
raises NotApplicableError when coremltools' rules skip the weight. What a container cannot
express (custom LUT functions, structured pruning of other ops, target limits) is checked by
the container before or after this call.
"""

from __future__ import annotations

from . import rules
from .config import MagnitudePruneConfig, PalettizeConfig, QuantizeConfig, ThresholdPruneConfig
from .errors import NotApplicableError


def palettize_axis(sizes, shape, channel_axis):
    """The grouped axis and its group size from the inferred block sizes."""
    from .errors import ConfigError

    group, axis = 0, channel_axis
    for a, (b, n) in enumerate(zip(sizes, shape)):
        if b != 0 and b != n:
            if axis is not None and axis != a:
                raise ConfigError("General block-wise palettization is not supported")
            axis, group = a, b
    if axis is None:
        axis = 0
    return axis, group or shape[axis]


def compress_weight(weight, cfg, sizes, channel_axis, importance=None):
    from .api import palettize, prune, quantize

    if isinstance(cfg, PalettizeConfig):
        axis, group = palettize_axis(sizes, weight.shape, channel_axis)
        return palettize(weight, None if cfg.mode == "unique" else cfg.nbits, mode=cfg.mode,
                         granularity="per_grouped_channel", group_size=group, channel_axis=axis,
                         cluster_dim=cfg.cluster_dim, enable_per_channel_scale=cfg.enable_per_channel_scale,
                         sample_weight=importance)
    if isinstance(cfg, QuantizeConfig):
        return quantize(weight, cfg.dtype, mode=cfg.mode, granularity="per_block", block_size=tuple(sizes),
                        fit=cfg.fit)
    if isinstance(cfg, ThresholdPruneConfig):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = prune(weight, threshold=cfg.threshold, minimum_sparsity_percentile=cfg.minimum_sparsity_percentile)
        reason = rules.prune_threshold_sparsity(r.sparsity, cfg.minimum_sparsity_percentile)
        if reason:
            raise NotApplicableError("prune", reason)
        return r
    assert isinstance(cfg, MagnitudePruneConfig)
    if cfg.n_m_ratio is not None:
        return prune(weight, n_m_ratio=cfg.n_m_ratio, dim=cfg.dim)
    return prune(weight, target_sparsity=cfg.target_sparsity, block_size=cfg.block_size, dim=cfg.dim)
