"""Replace the math inside coremltools 9.0 with weightpress kernels, keep its graph machinery.

coremltools' compression passes select consts, infer axes and block sizes, build the
constexpr ops and serialise; all of that stays. What is replaced are the functions that do
the arithmetic (docs/formats.md, "coremltools' hook points"):

    coremltools._deps._kmeans1d.cluster                      1-D k-means (optimize.coreml and .torch)
    quantization_utils._get_kmeans_lookup_table_and_weight   the legacy per-tensor k-means LUT
                                                             (palettize_weights.compress, the neural
                                                             network quantizer, ml-stable-diffusion's
                                                             mixed-bit analysis, torchao's codebooks)
    palettize_weights.grouped_channelwise_compress           every group of a tensor at once, in C++
    coremltools.optimize._utils.compute_qparams_by_dtype     blockwise linear quantization
    prune_weights.compress_by_threshold / _magnitude / _nm_sparsity

plus two behaviours: a const holding NaN (or Inf, for palettization and pruning) is refused
with an error naming it (coremltools would compress NaN silently), and optimize.torch's
spawned k-means workers enable the hooks before they start.

Whatever a replacement does not handle (other dtypes, custom LUT functions, inputs that
coremltools skips with a warning) goes to the original function, so behaviour outside the
fast path is coremltools' own. These are private coremltools internals: the versions they
were written against are checked before anything is patched.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from .. import rules
from .._arrays import first_nonfinite
from ..errors import NonFiniteWeightError

SUPPORTED_COREMLTOOLS = ("9.0",)
SUPPORTED_NUMPY_MAJOR = (2,)

_originals: dict = {}  # (owner, attribute) -> original value, while enabled


class Stats:
    """What went through weightpress's kernels in this process: weights compressed (a tensor
    palettized, quantized or pruned, a legacy LUT) and k-means problems solved for
    optimize.torch, with the seconds spent in them. `weightpress run` collects it from every
    process of the script it runs (WEIGHTPRESS_RUN_STATS names a directory for the files)."""

    def __init__(self):
        self.weights = 0
        self.kmeans = 0
        self.seconds = 0.0
        self._written = 0.0

    @contextlib.contextmanager
    def counting(self, kind: str):
        import time

        start = time.perf_counter()
        yield
        now = time.perf_counter()
        self.seconds += now - start
        if kind == "weights":
            self.weights += 1
        else:
            self.kmeans += 1
        if now - self._written > 0.5:  # a process that is killed still leaves a recent count
            self._written = now
            self.save()

    def save(self) -> None:
        import json
        import os

        folder = os.environ.get("WEIGHTPRESS_RUN_STATS")
        if not folder or not (self.weights or self.kmeans):
            return
        try:
            path = os.path.join(folder, f"{os.getpid()}.json")
            with open(path + ".tmp", "w") as f:
                json.dump({"weights": self.weights, "kmeans": self.kmeans, "seconds": self.seconds}, f)
            os.replace(path + ".tmp", path)
        except OSError:
            pass


STATS = Stats()


class UnsupportedVersionError(RuntimeError):
    pass


def check_versions() -> None:
    """Raises UnsupportedVersionError unless coremltools and numpy are the versions the hooks
    were written and verified against."""
    try:
        import coremltools
    except ImportError:
        raise UnsupportedVersionError(
            "weightpress.coreml needs coremltools 9.0: pip install 'weightpress[coreml]'") from None
    if coremltools.__version__ not in SUPPORTED_COREMLTOOLS:
        raise UnsupportedVersionError(
            f"weightpress.coreml hooks into coremltools internals verified for coremltools "
            f"{', '.join(SUPPORTED_COREMLTOOLS)}; found {coremltools.__version__}")
    major = int(np.__version__.split(".")[0])
    if major not in SUPPORTED_NUMPY_MAJOR:
        raise UnsupportedVersionError(
            f"weightpress.coreml is verified with numpy 2.x (coremltools' fp16 percentile and promotion "
            f"rules differ under numpy {np.__version__})")


# ---------------------------------------------------------------- the replacements


def _ct_logger():
    from coremltools.optimize.coreml._quantization_passes import logger

    return logger


def _original(owner, name):
    """The coremltools function a replacement stands in for (the attribute itself when the
    hooks are off, so replacements can also be called directly)."""
    original = _originals.get((owner, name))
    if original is None:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    return original.__func__ if isinstance(original, staticmethod) else original


def kmeans1d_cluster(array, k, *, weights=None):
    """Drop-in for kmeans1d.cluster: exact weighted 1-D k-means on raw per-element input.

    Duplicated values are merged into one weighted point (identical values always share a
    cluster in an optimal solution); for distinct values the arithmetic is kmeans1d's own,
    so the result is identical. When k exceeds the number of distinct values (kmeans1d then
    splits equal values across clusters), for non-finite input and for non-positive weights,
    the original runs.
    """
    from coremltools._deps import _kmeans1d

    from .. import _core

    original = _original(_kmeans1d, "cluster")
    x = np.asarray(array, dtype=np.float64).reshape(-1)
    if not k > 0 or x.size == 0:
        return original(array, k, weights=weights)  # kmeans1d's own error for these
    k = min(int(k), x.size)
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size != x.size:
            raise ValueError(f"kmeans1d: len(weights)={w.size} != len(array)={x.size}")
    if not np.isfinite(x).all() or (w is not None and not (np.isfinite(w).all() and (w > 0).all())):
        return original(array, k, weights=weights)
    values, inverse = np.unique(x, return_inverse=True)
    if values.size < k:
        return original(array, k, weights=weights)
    counts = np.bincount(inverse, weights=w, minlength=values.size).astype(np.float64)
    with STATS.counting("kmeans"):
        starts, centroids, _ = _core.kmeans1d_solve(values, counts, k)
    value_labels = np.repeat(np.arange(k), np.diff(starts.astype(np.int64)))
    labels = value_labels[inverse]
    if values.size < x.size:
        # merged duplicates: recompute each centroid as kmeans1d does, element by element
        order = np.argsort(x, kind="stable")
        raw_starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))]).astype(np.uint64)
        centroids = _core.kmeans1d_running_means(x[order], np.ones(x.size) if w is None else w[order], raw_starts)
    return _kmeans1d.Clustered(clusters=labels, centroids=centroids)


def kmeans_lookup_table_and_weight(nbits, weight, force_kmeans1d=False, cluster_dim=1, vector_axis=None):
    """Drop-in for quantization_utils._get_kmeans_lookup_table_and_weight: kmeans1d's branch
    (distinct values weighted by their counts, optimal 1-D k-means) for every scalar LUT, where
    coremltools takes it only for fp16 tensors of at least 10,000 values and otherwise runs
    scikit-learn. So the legacy entry points cluster exactly as the grouped path does and
    agree with it. Returns a 1-D float64 LUT of 2**nbits entries (zeros past the clusters)
    and the cluster of every element, as that branch does. Vector LUTs (cluster_dim > 1),
    non-float or non-finite weights: the original."""
    from coremltools.models.neural_network import quantization_utils

    from .. import _core

    original = _original(quantization_utils, "_get_kmeans_lookup_table_and_weight")
    w = np.asarray(weight)
    if cluster_dim != 1 or w.dtype not in (np.float16, np.float32, np.float64) or w.size == 0 \
            or not np.isfinite(w).all() or not isinstance(nbits, (int, np.integer)) or not 0 < nbits <= 8:
        return original(nbits, weight, force_kmeans1d=force_kmeans1d, cluster_dim=cluster_dim,
                        vector_axis=vector_axis)
    values, inverse, counts = np.unique(w.reshape(-1), return_inverse=True, return_counts=True)
    k = min(values.size, 1 << int(nbits))
    with STATS.counting("weights"):
        starts, centroids, _ = _core.kmeans1d_solve(values.astype(np.float64), counts.astype(np.float64), k)
    lut = np.zeros(1 << int(nbits))
    lut[:k] = centroids
    value_labels = np.repeat(np.arange(k), np.diff(starts.astype(np.int64)))
    return lut, value_labels[inverse.reshape(-1)]


def grouped_channelwise_compress(original_data, mode, nbits, channel_axis, channel_group_size,
                                 lut_function=None, cluster_dim=1, num_kmeans_workers=1):
    """Drop-in for palettize_weights.grouped_channelwise_compress: all groups of the tensor in
    one C++ call (threads over groups; num_kmeans_workers is not needed)."""
    from coremltools.converters.mil.mil import types
    from coremltools.optimize import _utils as optimize_utils
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    from ..api import palettize
    from ..errors import NotApplicableError

    def original():
        return _original(palettize_weights, "grouped_channelwise_compress")(
            original_data, mode, nbits, channel_axis, channel_group_size, lut_function, cluster_dim,
            num_kmeans_workers)

    mode_name = str(mode).upper()
    if mode_name not in ("KMEANS", "UNIFORM", "UNIQUE") or not isinstance(original_data, np.ndarray):
        return original()
    rank = original_data.ndim
    if (nbits is not None and nbits not in palettize_weights._SUPPORTED_NBITS) or not -rank <= channel_axis < rank:
        return original()  # raises coremltools' own error
    axis = channel_axis % rank
    if rules.palettize_groups(original_data.shape, axis, channel_group_size, cluster_dim):
        return original()  # coremltools warns and skips
    group = channel_group_size or original_data.shape[axis]
    data = original_data
    integer = data.dtype.kind in "iu"
    if integer:
        # quantize -> palettize clusters int32 copies of 8-bit data; float32 holds them exactly
        if data.size and np.abs(data).max() >= 1 << 24:
            return original()
        data = data.astype(np.float32)
    elif data.dtype not in (np.float16, np.float32):
        return original()
    try:
        with STATS.counting("weights"):
            result = palettize(data, None if mode_name == "UNIQUE" else nbits, mode=mode_name.lower(),
                               granularity="per_grouped_channel", group_size=group, channel_axis=axis,
                               cluster_dim=cluster_dim)
    except NotApplicableError as exc:
        if mode_name == "UNIQUE":
            return original()  # too many distinct values for mode unique: coremltools warns and skips
        _ct_logger().warning(f"weightpress: {exc}. Skipped.")  # a non-finite LUT (rules.finite_parameters)
        return None
    lut = result.lut.astype(original_data.dtype) if integer else result.lut  # astype truncates, as coremltools
    index_type = types.nptype_from_builtin(types.string_to_builtin(f"uint{result.nbits}"))
    return optimize_utils.LutParams(result.indices.astype(index_type), lut,
                                    None if cluster_dim == 1 else axis)


_QUANT_DTYPES = ("int4", "uint4", "int8", "uint8")


def compute_qparams_by_dtype(weight, dtype, quantization_mode, block_sizes):
    """Drop-in for coremltools.optimize._utils.compute_qparams_by_dtype (byte-identical)."""
    from coremltools.converters.mil.mil import types
    from coremltools.optimize import _utils as optimize_utils

    from ..api import quantize
    from ..errors import NotApplicableError

    def original():
        return _original(optimize_utils, "compute_qparams_by_dtype")(weight, dtype, quantization_mode, block_sizes)

    if not isinstance(weight, np.ndarray) or weight.dtype not in (np.float16, np.float32) or weight.size == 0:
        return original()
    if len(block_sizes) != weight.ndim or not isinstance(quantization_mode, str):
        return original()
    builtin = types.string_to_builtin(dtype) if isinstance(dtype, str) else dtype
    name = types.builtin_to_string(builtin)
    mode = quantization_mode.lower()
    if name not in _QUANT_DTYPES or mode not in ("linear_symmetric", "linear"):
        return original()
    sizes = [int(b) for b in block_sizes]
    if any(b < 0 for b in sizes) or rules.quantize_blocks(weight.shape, sizes) or not np.isfinite(weight).all():
        return original()  # coremltools warns and skips (indivisible), or its own Inf behaviour
    try:
        with STATS.counting("weights"):
            r = quantize(weight, name, mode=mode, granularity="per_block", block_size=tuple(sizes))
    except NotApplicableError as exc:  # a non-finite scale: skip the weight, loudly (rules.finite_parameters)
        _ct_logger().warning(f"weightpress: {exc}. Skipped.")
        return None
    np_dtype = types.nptype_from_builtin(builtin)
    zero_point = None if r.offset is None else r.offset.astype(np_dtype)
    return r.data.astype(np_dtype), r.scale, zero_point


def _sparse_params(result, shape):
    from coremltools.optimize import _utils as optimize_utils

    return optimize_utils.SparseParamsIos16(nonzero_data=result.nonzero_data, mask=result.packed_mask, shape=shape)


def _prunable(val):
    return isinstance(val, np.ndarray) and val.dtype in (np.float16, np.float32) and val.size > 0 \
        and np.isfinite(val).all()


def compress_by_threshold(val, threshold, minimum_sparsity_percentile):
    from coremltools.optimize.coreml._quantization_passes import logger as ct_logger
    from coremltools.optimize.coreml._quantization_passes import prune_weights

    from ..api import prune

    if not _prunable(val):
        return _original(prune_weights, "compress_by_threshold")(val, threshold, minimum_sparsity_percentile)
    with STATS.counting("weights"):  # minimum 0: prune never warns; the rule decides below
        r = prune(val, threshold=threshold, minimum_sparsity_percentile=0.0)
    if rules.prune_threshold_sparsity(r.sparsity, minimum_sparsity_percentile):
        ct_logger.warning(f"weight value has sparsity of {r.sparsity} < minimum_sparsity_percentile "
                          f"{minimum_sparsity_percentile}. Skipped.")
        return None
    return _sparse_params(r, val.shape)


def compress_by_magnitude(val, target_sparsity, block_size=None, dim=None):
    from coremltools.optimize.coreml._quantization_passes import prune_weights

    from ..api import prune

    def original():
        return _original(prune_weights, "compress_by_magnitude")(val, target_sparsity, block_size, dim)

    if not _prunable(val):
        return original()
    if block_size is not None:
        if dim not in (0, 1) or not 2 <= val.ndim <= 5 or block_size < 2 or rules.prune_blocks(val.shape, dim,
                                                                                                block_size):
            return original()  # coremltools' own assertion or warning-and-skip
    with STATS.counting("weights"):
        r = prune(val, target_sparsity=target_sparsity, block_size=block_size, dim=dim)
    return _sparse_params(r, val.shape)


def compress_by_nm_sparsity(val, n_m_ratio, dim):
    from coremltools.optimize.coreml._quantization_passes import prune_weights

    from ..api import prune

    def original():
        return _original(prune_weights, "compress_by_nm_sparsity")(val, n_m_ratio, dim)

    n, m = n_m_ratio
    if not _prunable(val) or dim not in (0, 1) or not 2 <= val.ndim <= 5 or not 0 <= n <= m:
        return original()
    if rules.prune_n_m(val.shape, dim, m):
        return original()  # coremltools warns and skips
    with STATS.counting("weights"):
        r = prune(val, n_m_ratio=(n, m), dim=dim)
    return _sparse_params(r, val.shape)


def need_compress_const(self, op, _is_deprecated, weight_threshold):
    """coremltools' selection, then: a selected const holding NaN (any method) or Inf
    (palettization, pruning; quantization skips Inf itself) is refused by name."""
    from coremltools.optimize.coreml._quantization_passes import AbstractCompressionPass, linear_quantize_weights

    selected = _original(AbstractCompressionPass, "need_compress_const")(self, op, _is_deprecated, weight_threshold)
    if selected and op.op_type == "const":
        val = op.outputs[0].val
        if isinstance(val, np.ndarray) and val.dtype.kind == "f":
            # quantization: only NaN (coremltools skips Inf itself, rules.quantize_finite)
            found = first_nonfinite(np.where(np.isinf(val), 0, val) if isinstance(self, linear_quantize_weights)
                                    else val)
            if found is not None:
                raise NonFiniteWeightError(type(self).__name__, found[1], found[0], name=op.name)
    return selected


def _spawned_worker(enable_hooks, target, *args):
    """Entry point of a spawned optimize.torch k-means worker: hooks on, then the real work."""
    if enable_hooks:
        enable()
    return target(*args)


def prepare_worker_processes(cls, num_workers):
    """optimize.torch's ParallelKMeans spawns its workers; they start with fresh interpreters,
    so each one is routed through _spawned_worker, which enables the hooks first."""
    from coremltools.optimize.torch._utils.k_means import ParallelKMeans

    work_q, results_q, processes = _originals[(ParallelKMeans, "_prepare_worker_processes")].__func__(cls, num_workers)
    for p in processes or []:
        p._target, p._args = _spawned_worker, (True, p._target) + tuple(p._args)
    return work_q, results_q, processes


# ---------------------------------------------------------------- switching


def _patch_table(import_torch=True):
    from coremltools._deps import _kmeans1d
    from coremltools.optimize import _utils as optimize_utils
    from coremltools.optimize.coreml._quantization_passes import (
        AbstractCompressionPass,
        palettize_weights,
        prune_weights,
    )

    from coremltools.models.neural_network import quantization_utils
    from coremltools.optimize.coreml import _quantization_passes

    table = [
        (_kmeans1d, "cluster", kmeans1d_cluster),
        # the function, and the name _quantization_passes imported it under
        (quantization_utils, "_get_kmeans_lookup_table_and_weight", kmeans_lookup_table_and_weight),
        (_quantization_passes, "_get_kmeans_lookup_table_and_weight", kmeans_lookup_table_and_weight),
        (palettize_weights, "grouped_channelwise_compress", staticmethod(grouped_channelwise_compress)),
        (optimize_utils, "compute_qparams_by_dtype", compute_qparams_by_dtype),
        (prune_weights, "compress_by_threshold", staticmethod(compress_by_threshold)),
        (prune_weights, "compress_by_magnitude", staticmethod(compress_by_magnitude)),
        (prune_weights, "compress_by_nm_sparsity", staticmethod(compress_by_nm_sparsity)),
        (AbstractCompressionPass, "need_compress_const", need_compress_const),
    ]
    k_means = "coremltools.optimize.torch._utils.k_means"
    if import_torch or k_means in sys.modules:
        try:
            from coremltools.optimize.torch._utils.k_means import ParallelKMeans
        except ImportError:  # optimize.torch needs torch; without it there is nothing to spawn
            pass
        else:
            table.append((ParallelKMeans, "_prepare_worker_processes", classmethod(prepare_worker_processes)))
    return table


def is_enabled() -> bool:
    return bool(_originals)


def enable(import_torch: bool = True) -> None:
    """Routes coremltools' compression math through weightpress until disable().
    import_torch=False leaves optimize.torch's worker spawning alone unless it is already
    imported (`weightpress run`: every process it starts enables the hooks itself, and a
    script that never uses torch should not pay for importing it)."""
    if _originals:
        return
    check_versions()
    for owner, name, replacement in _patch_table(import_torch):
        _originals[(owner, name)] = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        setattr(owner, name, replacement)


def disable() -> None:
    """Restores coremltools' own functions."""
    while _originals:
        (owner, name), original = _originals.popitem()
        setattr(owner, name, original)


@contextlib.contextmanager
def enabled():
    """with weightpress.coreml.enabled(): ... — hooks on inside, previous state restored after."""
    was = is_enabled()
    enable()
    try:
        yield
    finally:
        if not was:
            disable()
