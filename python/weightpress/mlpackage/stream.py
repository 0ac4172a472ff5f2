"""Streaming compression of an .mlpackage: one weight in memory at a time.

    compress_mlpackage(in_path, out_path, config, ...)

reads the model spec (small), walks the program's consts in order, reads each weight blob
from weight.bin with pread, compresses the ones coremltools would compress (select.py) with
the weightpress kernels, writes the new blobs to the output weight.bin as it goes, and
replaces those consts by the constexpr ops coremltools would write (emit.py). Every other
blob is copied, every other package item passes through unchanged, and the output package
appears atomically. No coremltools import (and so no torch): protobuf classes come from
coremltools' generated modules (proto.py).

Peak memory is the baseline of the process plus what the largest single weight needs; a
weight whose estimate exceeds the budget stops the run with an error naming it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from . import values as V
from .config import Config, ConfigError, OpConfig, from_coremltools
from .emit import Emitter
from .package import PackageError, check_weights, load_spec, open_package, publish, remove, temporary_sibling
from .select import Graph, block_sizes, const_config, io_axes, structural_prune_applies
from .weight_file import WeightFileReader, WeightFileWriter

logger = logging.getLogger("weightpress.stream")

SPEC_IOS16, SPEC_IOS18 = 7, 9
OPSETS = {6: "CoreML5", 7: "CoreML6", 8: "CoreML7", 9: "CoreML8", 10: "CoreML9"}


class StreamingUnsupported(Exception):
    """Something the streaming path does not express (the caller may fall back to the
    in-memory path)."""


class MemoryBudgetError(Exception):
    pass


@dataclass
class StreamResult:
    compressed: List[str] = field(default_factory=list)  # const names
    rows: Optional[list] = None  # per-weight SSE / PSNR, with report=True
    skipped: List[str] = field(default_factory=list)  # with the reason, as warned
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0


def current_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: a conservative guess
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def default_budget() -> int:
    """Half the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 4 << 30


def estimate_bytes(cfg: OpConfig, dtype_size: int, shape, channel_axis: Optional[int]) -> int:
    """Working memory to compress one weight (measured on the kernels, rounded up): the blob
    read, the kernels' outputs and scratch, the emitted values."""
    n = int(np.prod(shape))
    dense = n * dtype_size
    if cfg.kind == "palettize":
        extra = 5 * n + dense
        if dtype_size == 4 and cfg["mode"] == "kmeans" and cfg["cluster_dim"] == 1:
            groups = 1 if cfg["granularity"] == "per_tensor" else max(1, shape[channel_axis or 0] // (cfg["group_size"] or shape[channel_axis or 0]))
            per_group = n // groups
            k = 1 << (cfg["nbits"] or 8)
            workers = min(os.cpu_count() or 1, groups)
            extra += 8 * n + workers * per_group * (4 * k + 48)  # sort keys, DP split table
        if cfg["cluster_dim"] > 1:
            extra += 8 * n * 2  # float64 points
        return dense + extra
    if cfg.kind == "quantize":
        return 2 * dense + 2 * n
    return 3 * dense + n  # pruning: magnitudes, mask, gathered values


def _as_steps(config):
    steps = config if isinstance(config, (list, tuple)) else [config]
    return [from_coremltools(c) for c in steps]


def compress_mlpackage(in_path: str, out_path: str, config, *, target: Optional[int] = None,
                       max_memory: Optional[int] = None, overwrite: bool = False, num_threads: Optional[int] = None,
                       progress: bool = False, report: bool = False, notes=None) -> StreamResult:
    """Compresses `in_path` into `out_path` without loading the model into memory.

    config: a weightpress.mlpackage.config.Config or a coremltools OptimizationConfig (one
    method; a list of several is joint compression, which raises StreamingUnsupported).
    target: output spec version (7 = iOS16 ... 10 = iOS26; default: the model's, iOS15
    raised to iOS16). max_memory: bytes of working memory above the process's own baseline
    (default: half of physical memory). report: also compute each weight's SSE and PSNR
    (result.rows). notes: a stream for remarks such as an iOS15 model being raised to iOS16.
    """
    from .. import _arrays
    from .proto import modules

    start = time.perf_counter()
    steps = _as_steps(config)
    if len(steps) != 1:
        raise StreamingUnsupported("joint compression (more than one method) runs on the in-memory path")
    cfg = steps[0]
    method = cfg.method
    _, MIL_pb2 = modules()
    package = open_package(in_path)
    spec = load_spec(package)
    if spec.WhichOneof("Type") != "mlProgram":
        raise PackageError(f"{in_path} is a {spec.WhichOneof('Type')} model; weight compression needs an ML program")
    functions = spec.mlProgram.functions
    if len(functions) != 1:
        raise StreamingUnsupported(f"{len(functions)} functions (multifunction packages are not supported)")
    check_weights(package, spec)
    version = spec.specificationVersion
    spec_version = max(version, SPEC_IOS16) if target is None else target
    if spec_version < version:
        raise ConfigError(f"target spec {spec_version} is below the model's {version}; a model cannot be lowered")
    if spec_version not in OPSETS:
        raise PackageError(f"unsupported specification version {spec_version}")
    if version < SPEC_IOS16 and notes is not None:
        print(f"note: {in_path} targets iOS15 (spec {version}); compressed weights need iOS16, so the output "
              f"targets iOS16 (as coremltools does)", file=notes)
    budget = max_memory or default_budget()
    threads_before = _arrays._default_threads
    if num_threads:
        _arrays.set_num_threads(num_threads)

    (fn_name, function), = functions.items()
    block = function.block_specializations[function.opset]
    graph = Graph(block)
    tmp = temporary_sibling(out_path)
    result = StreamResult(bytes_in=os.path.getsize(package.weight_file) if package.weight_file else 0,
                          rows=[] if report else None)
    bar = _progress_bar(progress, result.bytes_in)
    try:
        shutil.copytree(package.path, tmp, ignore=_skip_files(package))
        weights_dir = os.path.join(tmp, os.path.relpath(package.weights_dir, package.path)) if package.weights_dir \
            else os.path.join(tmp, "Data", "com.apple.CoreML", "weights")
        os.makedirs(weights_dir, exist_ok=True)
        reader = WeightFileReader(package.weight_file) if package.weight_file else None
        with WeightFileWriter(os.path.join(weights_dir, "weight.bin")) as writer:
            emitter = Emitter(MIL_pb2, spec_version, writer)
            copied = {}
            renames = {}

            def process(blk):
                new_ops = []
                for op in blk.operations:
                    for inner in op.blocks:
                        process(inner)
                    replacement = None
                    if op.type == "const":
                        replacement = _maybe_compress(op, cfg, method, graph, reader, emitter, spec_version,
                                                      budget, result)
                    if replacement is None:
                        _copy_blobs(op, reader, writer, copied)
                        new_ops.append(op)
                    else:
                        renames[op.outputs[0].name] = replacement[-1].outputs[0].name
                        new_ops.extend(replacement)
                    if bar is not None and op.type == "const":
                        bar.update(_blob_bytes(op, reader))
                del blk.operations[:]
                blk.operations.extend(new_ops)

            process(block)
            _rename_uses(block, renames)
        if reader is not None:
            reader.close()
        if not result.compressed:
            raise ConfigError(f"{in_path}: no compressible weights (no const that the config selects and "
                              "coremltools would compress)")
        spec.specificationVersion = spec_version
        if OPSETS[spec_version] != function.opset:
            _retarget(function, OPSETS[spec_version])
        with open(os.path.join(tmp, os.path.relpath(package.spec_path, package.path)), "wb") as f:
            f.write(spec.SerializeToString())
        publish(tmp, out_path, overwrite)
    finally:
        remove(tmp)
        if bar is not None:
            bar.close()
        _arrays._default_threads = threads_before
    result.bytes_out = os.path.getsize(os.path.join(out_path, os.path.relpath(package.weight_file, package.path))) \
        if package.weight_file else 0
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- per const


def _maybe_compress(op, cfg_all: Config, method, graph, reader, emitter, spec_version, budget, result):
    """The replacement ops for one const, or None to keep it (as coremltools would)."""
    name = op.outputs[0].name
    val = op.attributes.get("val")
    if val is None:
        return None
    dtype, shape = V.tensor_type_of(val)
    size = int(np.prod(shape)) if shape else 1
    tensor_stub = V.Tensor(dtype, np.empty(0))
    # should_use_weight_file: >= 10 elements of a blob-able type
    if size < 10 or not V.goes_to_weight_file(V.Tensor(dtype, np.empty(size, np.uint8)), spec_version):
        return None
    del tensor_stub
    cfg = const_config(cfg_all, op, graph)
    if cfg is None:
        return None
    consumers = graph.consumers.get(name, [])
    if any(c.op.type.startswith("constexpr_") for c in consumers):
        return None
    if len(shape) <= 1 or size <= cfg.weight_threshold:
        return None
    if dtype not in (V.FLOAT16, V.FLOAT32):
        if method == "quantize":
            raise StreamingUnsupported(f"const {name}: quantizing {V.TYPES[dtype][0]} data")
        return None  # coremltools cannot palettize or prune integer consts in a useful way
    np_dtype = np.float16 if dtype == V.FLOAT16 else np.float32

    in_axis, out_axis = io_axes(name, len(shape), graph)
    sizes = channel_axis = None
    if method in ("palettize", "quantize"):
        if spec_version < SPEC_IOS18:
            if method == "palettize" and (cfg["granularity"] == "per_grouped_channel" or cfg["cluster_dim"] > 1):
                kind = "per_grouped_channel" if cfg["granularity"] == "per_grouped_channel" else "vector"
                raise ConfigError(f"The {kind} palettization is supported since iOS18")
            if method == "quantize" and (cfg["granularity"] == "per_block" or cfg["dtype"] in ("int4", "uint4")):
                kind = "per_block" if cfg["granularity"] == "per_block" else "4-bit"
                raise ConfigError(f"The {kind} quantization is supported since iOS18")
        sizes, channel_axis = block_sizes(cfg, shape, in_axis, out_axis)
        if sizes is None:
            return _skip(result, name, "cannot infer the channel axis (consumers disagree)")

    need = estimate_bytes(cfg, np.dtype(np_dtype).itemsize, shape, channel_axis)
    if result.rows is not None:
        need += 24 * size  # the SSE: a decompressed copy and float64 differences
    if need > budget:
        raise MemoryBudgetError(f"const {name} {list(shape)} needs about {need / 2**20:.0f} MiB of working memory, "
                                f"over the {budget / 2**20:.0f} MiB budget (--max-memory)")
    weight = V.read_value(val, reader).data.astype(np_dtype, copy=False)
    try:
        return _compress_const(name, op, weight, dtype, shape, cfg, cfg_all, method, sizes, channel_axis, graph,
                               emitter, spec_version, result)
    except ValueError as exc:
        if "NaN and Inf cannot be compressed" not in str(exc):
            raise
        # the kernels found NaN/Inf in their own pass (no separate scan of every weight)
        if method == "quantize" and not np.isnan(weight).any():
            return _skip(result, name, "contains inf/-inf, which quantization does not support")
        flat = int(np.flatnonzero(~np.isfinite(weight).reshape(-1))[0])
        raise ValueError(f"const '{name}' contains {weight.reshape(-1)[flat]} at flat index {flat}; "
                         "weightpress refuses to compress NaN/Inf") from None


def _compress_const(name, op, weight, dtype, shape, cfg, cfg_all, method, sizes, channel_axis, graph, emitter,
                    spec_version, result):
    from ..palettize import palettize
    from ..quantize import DTYPES, quantize

    if method == "palettize":
        if cfg["mode"] == "custom" or cfg["lut_function"] is not None:
            raise StreamingUnsupported(f"const {name}: custom LUT functions")
        group, axis = 0, channel_axis
        for a, (b, n) in enumerate(zip(sizes, shape)):
            if b != 0 and b != n:
                if axis is not None and axis != a:
                    raise ConfigError("General block-wise palettization is not supported")
                axis, group = a, b
        if axis is None:
            axis = 0
        c = cfg["cluster_dim"]
        if c > 1 and not _cluster_dim_valid(name, shape, c, axis, graph):
            return _skip(result, name, f"cluster_dim {c} is invalid for this op")
        channels = shape[axis]
        group = group or channels
        if channels % group or group % c:
            return _skip(result, name, f"{channels} channels on axis {axis} do not split into groups of {group}"
                                       + (f" divisible by cluster_dim {c}" if c > 1 else ""))
        nbits = None if cfg["mode"] == "unique" else cfg["nbits"]
        try:
            r = palettize(weight, nbits, mode=cfg["mode"], granularity="per_grouped_channel", group_size=group,
                          channel_axis=axis, cluster_dim=c, enable_per_channel_scale=cfg["enable_per_channel_scale"])
        except ValueError as exc:
            if "distinct values" in str(exc):
                return _skip(result, name, str(exc))
            raise
        if spec_version < SPEC_IOS18 and r.nbits not in (1, 2, 4, 6, 8):
            raise ConfigError(f"const {name}: iOS16 LUTs take 2, 4, 16, 64 or 256 entries, not {1 << r.nbits}")
        ops = emitter.palettize(name, dtype, shape, r)
    elif method == "quantize":
        if any(b and n % b for n, b in zip(shape, sizes)):
            return _skip(result, name, f"block sizes {tuple(sizes)} do not divide the shape {tuple(shape)}")
        if cfg["dtype"] not in DTYPES:
            raise ConfigError(f"unsupported quantization dtype {cfg['dtype']}")
        r = quantize(weight, cfg["dtype"], mode=cfg["mode"], granularity="per_block", block_size=tuple(sizes))
        ops = emitter.quantize(name, dtype, shape, r)
    else:
        r = _prune(name, weight, cfg, graph, cfg_all, result)
        if r is None:
            return None
        ops = emitter.prune(name, dtype, shape, r)
    result.compressed.append(name)
    if result.rows is not None:
        _report_row(result.rows, name, ops[-1].outputs[0].name, weight, r)
    return ops


def _report_row(rows, name, compressed_as, weight, r):
    import math

    sse = float(r.sse)
    mse = sse / weight.size
    peak = float(np.abs(weight).max())
    psnr = math.inf if mse == 0 else (10 * math.log10(peak * peak / mse) if peak > 0 else -math.inf)
    rows.append({"weight": name, "compressed_as": compressed_as, "shape": list(weight.shape), "sse": sse, "psnr_db": psnr})


def _prune(name, weight, cfg, graph, cfg_all, result):
    import warnings

    from ..prune import prune

    if cfg.kind == "prune_threshold":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = prune(weight, threshold=cfg["threshold"],
                               minimum_sparsity_percentile=cfg["minimum_sparsity_percentile"])
        if not r.meets_minimum_sparsity:
            return _skip(result, name, f"sparsity {r.sparsity} < minimum_sparsity_percentile "
                                       f"{cfg['minimum_sparsity_percentile']}")
        return r
    if cfg.structural and not structural_prune_applies(name, graph) and name not in cfg_all.op_name_configs:
        return _skip(result, name, "structured pruning applies to conv and linear weights only")
    dim = cfg["dim"]
    if cfg["n_m_ratio"] is not None:
        n, m = cfg["n_m_ratio"]
        if m > weight.shape[dim] / 2:
            return _skip(result, name, f"m > channel / 2 is not applicable for n:m pruning (m = {m}, "
                                       f"channel = {weight.shape[dim]})")
        return prune(weight, n_m_ratio=(n, m), dim=dim)
    if cfg["block_size"] is not None and cfg["block_size"] > weight.shape[dim] / 2:
        return _skip(result, name, f"block_size > channel / 2 (block_size = {cfg['block_size']}, "
                                   f"channel = {weight.shape[dim]})")
    return prune(weight, target_sparsity=cfg["target_sparsity"], block_size=cfg["block_size"], dim=dim)


def _cluster_dim_valid(name, shape, cluster_dim, axis, graph) -> bool:
    """is_cluster_dim_valid: within each conv group the channel axis must split into vectors."""
    for c in graph.consumers.get(name, []):
        if c.op.type in ("conv", "conv_transpose"):
            effective = list(shape)
            groups = _const_int(c.op, "groups", graph)
            if groups and groups > 1:
                effective[0] //= groups
            if effective[axis] % cluster_dim:
                return False
    return True


def _const_int(op, key, graph):
    arg = op.inputs.get(key)
    if arg is None or not arg.arguments:
        return None
    b = arg.arguments[0]
    value = b.value if b.WhichOneof("binding") == "value" else graph.consts[b.name].attributes["val"]
    ints = value.immediateValue.tensor.ints.values
    return int(ints[0]) if ints else None


def _skip(result, name, reason):
    logger.warning("const %s skipped: %s", name, reason)
    result.skipped.append(f"{name}: {reason}")
    return None


# ---------------------------------------------------------------- program plumbing


def _blob_values(op):
    for value in op.attributes.values():
        if value.WhichOneof("value") == "blobFileValue":
            yield value
    for arg in op.inputs.values():
        for b in arg.arguments:
            if b.WhichOneof("binding") == "value" and b.value.WhichOneof("value") == "blobFileValue":
                yield b.value


def _blob_bytes(op, reader):
    return sum(reader.blob(v.blobFileValue.offset).nbytes for v in _blob_values(op)) if reader else 0


def _copy_blobs(op, reader, writer, copied):
    """Copies the blobs an op keeps into the output weight.bin (once per source blob)."""
    for value in _blob_values(op):
        old = value.blobFileValue.offset
        if old not in copied:
            blob = reader.blob(old)
            data = reader.read_bytes(blob)
            bits = {"int4": 4, "uint4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint6": 6}.get(blob.dtype)
            count = blob.element_count() if bits else len(data)
            copied[old] = writer.write(blob.dtype, data, count)
        value.blobFileValue.offset = copied[old]


def _rename_uses(block, renames):
    if not renames:
        return
    for op in block.operations:
        for arg in op.inputs.values():
            for b in arg.arguments:
                if b.WhichOneof("binding") == "name" and b.name in renames:
                    b.name = renames[b.name]
        for inner in op.blocks:
            _rename_uses(inner, renames)
    outputs = [renames.get(n, n) for n in block.outputs]
    del block.outputs[:]
    block.outputs.extend(outputs)


def _retarget(function, opset):
    block = function.block_specializations[function.opset]
    function.block_specializations[opset].CopyFrom(block)
    del function.block_specializations[function.opset]
    function.opset = opset


def _skip_files(package):
    spec = os.path.abspath(package.spec_path)
    weights = os.path.abspath(package.weight_file) if package.weight_file else None

    def ignore(directory, names):
        skip = []
        for n in names:
            full = os.path.abspath(os.path.join(directory, n))
            if full in (spec, weights):
                skip.append(n)
        return skip

    return ignore


def _progress_bar(enabled, total):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="compressing", leave=False)
