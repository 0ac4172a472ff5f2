"""weightpress.coreml: coremltools.optimize.coreml's API on weightpress kernels.

    palettize_weights(mlmodel, config, joint_compression=False)
    linear_quantize_weights(mlmodel, config, joint_compression=False)
    prune_weights(mlmodel, config, joint_compression=False)
    decompress_weights(mlmodel)

take coremltools' own MLModel and OptimizationConfig objects and return what coremltools
returns: coremltools' graph machinery (const selection, axis inference, op construction,
serialisation) runs unchanged; the arithmetic runs in weightpress (see _hooks.py).
Deviation: a selected const holding NaN is refused with an error naming it.

    enable() / disable() / enabled()

switch coremltools' own functions (coremltools.optimize.coreml.*, and the 1-D k-means of
coremltools.optimize.torch's palettizers) onto weightpress kernels, so unchanged scripts run
faster.
"""

from __future__ import annotations

from ._hooks import UnsupportedVersionError, check_versions, disable, enable, enabled, is_enabled


def _run(method: str, mlmodel, config, joint_compression: bool):
    check_versions()
    import coremltools.optimize.coreml as cto

    with enabled():
        return getattr(cto, method)(mlmodel, config, joint_compression=joint_compression)


def palettize_weights(mlmodel, config, joint_compression: bool = False):
    """coremltools.optimize.coreml.palettize_weights on weightpress kernels (exact scalar k-means,
    all groups of a tensor in parallel)."""
    return _run("palettize_weights", mlmodel, config, joint_compression)


def linear_quantize_weights(mlmodel, config, joint_compression: bool = False):
    """coremltools.optimize.coreml.linear_quantize_weights on weightpress kernels (byte-identical)."""
    return _run("linear_quantize_weights", mlmodel, config, joint_compression)


def prune_weights(mlmodel, config, joint_compression: bool = False):
    """coremltools.optimize.coreml.prune_weights on weightpress kernels."""
    return _run("prune_weights", mlmodel, config, joint_compression)


def decompress_weights(mlmodel):
    """coremltools.optimize.coreml.decompress_weights (re-exported for symmetry)."""
    check_versions()
    import coremltools.optimize.coreml as cto

    return cto.decompress_weights(mlmodel)


__all__ = [
    "UnsupportedVersionError",
    "decompress_weights",
    "disable",
    "enable",
    "enabled",
    "is_enabled",
    "linear_quantize_weights",
    "palettize_weights",
    "prune_weights",
]
