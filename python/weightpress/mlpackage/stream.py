"""The streaming engine: an .mlpackage compressed one weight in memory at a time.

    stream_compress(package, spec, out_path, method_config, spec_version, ...)

walks the program's consts in order, reads each weight blob from weight.bin with pread,
compresses the ones coremltools would compress (select.py, weightpress.rules) with the
array kernels, writes the new blobs to the output weight.bin as it goes, and replaces those
consts by the constexpr ops coremltools would write (emit.py). Every other blob is copied,
every other package item passes through unchanged, and the output appears atomically. No
coremltools import (and so no torch): the protobuf classes come from coremltools' generated
modules (proto.py).

The package has been opened and validated, and the target chosen, by weightpress.job.
Working memory is bounded per weight: a weight whose estimate exceeds the budget stops the
run with an error naming it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .. import rules
from ..config import MagnitudePruneConfig, MethodConfig, OpConfig, PalettizeConfig, QuantizeConfig, ThresholdPruneConfig
from ..errors import ConfigError, MemoryBudgetError, NonFiniteWeightError, NotApplicableError, WeightFileError
from ..metrics import psnr
from . import values as V
from .emit import Emitter
from .package import OPSETS, SPEC_IOS18, ModelPackage, function_order, publish, remove, temporary_sibling
from .select import Graph, block_sizes, const_config, io_axes, structural_prune_applies
from .weight_file import WeightFileReader, WeightFileWriter

logger = logging.getLogger("weightpress.stream")


class StreamingUnsupported(Exception):
    """Something the streaming engine does not express (the job may fall back to the
    in-memory engine)."""


@dataclass
class StreamResult:
    compressed: List[str] = field(default_factory=list)  # const names
    rows: Optional[list] = None  # per-weight SSE / PSNR, with report=True
    skipped: List[str] = field(default_factory=list)  # with the reason, as warned
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    # calibration: how each calibrated const's numbers were chosen ("error feedback, damping
    # 0.3", "activation-weighted", "plain rounding: held-out folds preferred it")
    calibrated: Dict[str, str] = field(default_factory=dict)


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
    if isinstance(cfg, PalettizeConfig):
        extra = 5 * n + dense
        if dtype_size == 4 and cfg.mode == "kmeans" and cfg.cluster_dim == 1:
            channels = shape[channel_axis or 0]
            groups = 1 if cfg.granularity == "per_tensor" else max(1, channels // (cfg.group_size or channels))
            per_group = n // groups
            workers = min(os.cpu_count() or 1, groups)
            # sort keys (8 per element); per distinct value in a worker's group: the values,
            # weights and counts, prefix sums and the windowed DP's passes (~100 bytes)
            extra += 8 * n + workers * per_group * 104
        if cfg.cluster_dim > 1:
            extra += 8 * n * 2  # float64 points
        return dense + extra
    if isinstance(cfg, QuantizeConfig):
        return 2 * dense + 2 * n
    return 3 * dense + n  # pruning: magnitudes, mask, gathered values


def stream_compress(package: ModelPackage, spec, out_path: str, config: MethodConfig, spec_version: int, *,
                    budget: int, overwrite: bool = False, progress: bool = False,
                    report: bool = False, verify: bool = False, calibration=None) -> StreamResult:
    """Compresses `package` (its parsed `spec`) into `out_path` with one method's config at
    `spec_version`, publishing the output atomically. Raises StreamingUnsupported before
    anything is published when the config or the program needs the in-memory engine.
    verify: before publishing, every compressed const is decoded from what was written and
    compared with what was computed (VerifyError names the first that differs).
    calibration: weightpress.calibrate.LayerStatistics: k-means palettization of the consts it
    measured weighs every element by its input channel's E[x^2]; where it holds X^T X, the
    LUT's indices or the quantized integers are chosen by error feedback."""
    from .proto import modules

    start = time.perf_counter()
    _, MIL_pb2 = modules()
    functions = spec.mlProgram.functions
    names = function_order(spec)
    tmp = temporary_sibling(out_path)
    result = StreamResult(bytes_in=os.path.getsize(package.weight_file) if package.weight_file else 0,
                          rows=[] if report else None)
    bar = _progress_bar(progress, result.bytes_in)
    try:
        shutil.copytree(package.path, tmp, ignore=_skip_files(package))
        weights_dir = os.path.join(tmp, os.path.relpath(package.weights_dir, package.path)) if package.weights_dir \
            else os.path.join(tmp, "Data", "com.apple.CoreML", "weights")
        os.makedirs(weights_dir, exist_ok=True)
        # blobs waiting to be written: part of the memory budget
        queue = max(1 << 20, min(256 << 20, budget // 4))
        with _reader(package) as reader, WeightFileWriter(os.path.join(weights_dir, "weight.bin"), queue) as writer:
            shared = _Shared(Emitter(MIL_pb2, spec_version, writer))
            walks = []
            for name in names:
                function = functions[name]
                block = function.block_specializations[function.opset]
                walk = _Walk(config, Graph(block), reader, writer, shared, spec_version, budget, result, bar, verify,
                             function=name if len(names) > 1 else None, calibration=calibration)
                walk.block(block)
                _rename_uses(block, walk.renames)
                walks.append(walk)
        if verify:
            _verify([c for w in walks for c in w.checks], os.path.join(weights_dir, "weight.bin"))
        if not result.compressed:
            raise ConfigError(f"{package.path}: no compressible weights (no const that the config selects and "
                              "coremltools would compress)")
        spec.specificationVersion = spec_version
        for name in names:
            if OPSETS[spec_version] != functions[name].opset:
                _retarget(functions[name], OPSETS[spec_version])
        with open(os.path.join(tmp, os.path.relpath(package.spec_path, package.path)), "wb") as f:
            f.write(spec.SerializeToString())
        publish(tmp, out_path, overwrite)
    finally:
        remove(tmp)
        if bar is not None:
            bar.close()
    result.bytes_out = os.path.getsize(os.path.join(out_path, os.path.relpath(package.weight_file, package.path))) \
        if package.weight_file else 0
    result.seconds = time.perf_counter() - start
    return result


class _Shared:
    """What the functions of a multifunction package share: a const that reads the same source
    blob with the same config and the same axes is compressed once and its values written
    once; every other function that used the blob gets the same ops (renamed for its const),
    referring to the same output blobs. The resolved config of each shared blob is
    remembered: functions that would compress it differently are an error naming it (the
    output could not keep the sharing)."""

    def __init__(self, emitter):
        self.emitter = emitter
        self.results = {}  # (source offset, config key) -> (const name, ops, report row, digest)
        self.configs = {}  # source offset -> (function, const name, config key)
        self.copied = {}  # source offset of a kept blob -> its output offset

    def claim(self, offset, function, name, key):
        seen = self.configs.get(offset)
        if seen is None:
            self.configs[offset] = (function, name, key)
        elif seen[2] != key:
            raise ConfigError(f"const {name} of function {function} shares its weights with const {seen[1]} of "
                              f"function {seen[0]}, but the two would be compressed differently; give them the same "
                              "config")


class _NoReader:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _reader(package):
    return WeightFileReader(package.weight_file) if package.weight_file else _NoReader()


class _Walk:
    """One pass over the program: every const kept (its blobs copied) or replaced."""

    def __init__(self, config, graph, reader, writer, shared, spec_version, budget, result, bar, verify=False,
                 function=None, calibration=None):
        self.config, self.graph, self.reader, self.writer = config, graph, reader, writer
        self.shared, self.emitter = shared, shared.emitter
        self.spec_version, self.budget, self.result, self.bar = spec_version, budget, result, bar
        self.function = function  # the function's name in a multifunction package, else None
        self.copied = shared.copied  # kept blobs are copied once across functions
        self.renames = {}
        self.checks = [] if verify else None  # (const name, its ops, digest of what was computed)
        self.calibration = calibration  # weightpress.calibrate.LayerStatistics, or None
        self.moments = calibration.moments if calibration is not None else {}
        self.hessians = calibration.hessian_files if calibration is not None else {}

    def block(self, blk):
        new_ops = []
        ops = blk.operations
        for i, op in enumerate(ops):
            if i + 1 < len(ops):
                _prefetch_blobs(ops[i + 1], self.reader)  # read ahead while this one computes
            for inner in op.blocks:
                self.block(inner)
            replacement = self.const(op) if op.type == "const" else None
            if replacement is None:
                _copy_blobs(op, self.reader, self.writer, self.copied)
                new_ops.append(op)
            else:
                self.renames[op.outputs[0].name] = replacement[-1].outputs[0].name
                new_ops.extend(replacement)
                _release_blobs(op, self.reader)
            if self.bar is not None and op.type == "const":
                self.bar.update(_blob_bytes(op, self.reader))
        del blk.operations[:]
        blk.operations.extend(new_ops)

    def const(self, op):
        """The replacement ops for one const, or None to keep it (as coremltools would)."""
        name = op.outputs[0].name
        val = op.attributes.get("val")
        if val is None:
            return None
        dtype, shape = V.tensor_type_of(val)
        size = int(np.prod(shape)) if shape else 1
        # should_use_weight_file: >= 10 elements of a blob-able type
        if not V.goes_to_weight_file(dtype, size, self.spec_version):
            return None
        cfg = const_config(self.config, op, self.graph, self.function)
        if cfg is None:
            return None
        if any(c.op.type.startswith("constexpr_") for c in self.graph.consumers.get(name, [])):
            return None
        if len(shape) <= 1 or size <= cfg.weight_threshold:
            return None
        if dtype not in (V.FLOAT16, V.FLOAT32):
            if isinstance(cfg, QuantizeConfig):
                raise StreamingUnsupported(f"const {name}: quantizing {V.TYPES[dtype][0]} data")
            return None  # coremltools cannot palettize or prune integer consts in a useful way
        np_dtype = np.float16 if dtype == V.FLOAT16 else np.float32

        in_axis, out_axis = io_axes(name, len(shape), self.graph)
        sizes = channel_axis = None
        if isinstance(cfg, (PalettizeConfig, QuantizeConfig)):
            _check_target(cfg, self.spec_version)
            sizes, channel_axis = block_sizes(cfg, shape, in_axis, out_axis)
            if sizes is None:
                return self.skip(name, "cannot infer the channel axis (consumers disagree)")

        need = estimate_bytes(cfg, np.dtype(np_dtype).itemsize, shape, channel_axis)
        if name in self.moments:
            need += 8 * size  # the per-element importance, float64
        feedback_over = None  # why error feedback does not fit the budget for this const
        if name in self.hessians:
            from ..calibrate import hessian_bytes, size_text

            extra = hessian_bytes(size // shape[0], len(self.hessians[name])) + 16 * size  # + float64 weight copies
            if need + extra <= self.budget or need > self.budget:
                need += extra
            else:  # the const alone fits: compressed with activation weighting only
                feedback_over = (f"error feedback needs about {size_text(need + extra)}, over the "
                                 f"{size_text(self.budget)} budget (--max-memory)")
        if self.result.rows is not None:
            need += 24 * size  # the SSE: a decompressed copy and float64 differences
        if need > self.budget:
            raise MemoryBudgetError(f"const {name} {list(shape)} needs about {need / 2**20:.0f} MiB of working "
                                    f"memory, over the {self.budget / 2**20:.0f} MiB budget (--max-memory)")
        source = val.blobFileValue.offset if val.WhichOneof("value") == "blobFileValue" else None
        key = (cfg, tuple(sizes) if sizes is not None else None, channel_axis, self._structural_ok(name, cfg),
               name if name in self.moments else None)
        if source is not None:
            self.shared.claim(source, self.function, name, key)
            cached = self.shared.results.get((source,) + key)
            if cached is not None:  # the same blob, compressed the same way in an earlier function
                return self.reuse(name, cached)
        if source is not None:
            self.reader.populate(self.reader.blob(source))
        try:
            weight = V.read_value(val, self.reader).data.astype(np_dtype, copy=False)
        except WeightFileError as exc:
            raise WeightFileError(f"const {name}: {exc}") from None
        try:
            r = self.compress(name, weight, cfg, sizes, channel_axis, in_axis)
            if r is not None and name in self.moments:
                r = self.calibrate(name, cfg, r, in_axis, feedback_over)
        except NonFiniteWeightError as exc:
            # the kernels found NaN/Inf in their own pass (no separate scan of every weight)
            if isinstance(cfg, QuantizeConfig) and not exc.is_nan:
                return self.skip(name, rules.quantize_finite(True))
            raise NonFiniteWeightError(cfg.method, exc.value, exc.index, name=name) from None
        except NotApplicableError as exc:
            return self.skip(name, exc.reason)
        if r is None:
            return None
        ops, row, computed = self.finish(name, dtype, shape, weight, r)
        if source is not None and self.function is not None:
            self.shared.results[(source,) + key] = (name, [_copy_op(op) for op in ops], row, computed)
        return ops

    def _structural_ok(self, name, cfg):
        return not getattr(cfg, "structural", False) or structural_prune_applies(name, self.graph) or \
            name in self.config.op_name_configs

    def finish(self, name, dtype, shape, weight, r):
        """Emits the ops for a compressed const; returns them with its report row and digest."""
        computed = None
        if self.checks is not None:
            from .verify import digest

            computed = digest(r.decompress())
        ops = self.emit(name, dtype, shape, r)
        row = report_row(name, ops[-1].outputs[0].name, weight, r) if self.result.rows is not None else None
        self.record(name, ops, row, computed)
        return ops, row, computed

    def reuse(self, name, cached):
        """The ops another function wrote for the same blob and config, renamed for this const:
        they refer to the blobs already written."""
        first, ops, row, computed = cached
        ops = [_copy_op(op) for op in ops]
        _rename_ops(ops, first, name)
        if row is not None:
            row = dict(row, weight=name, compressed_as=ops[-1].outputs[0].name)
        self.record(name, ops, row, computed)
        return ops

    def record(self, name, ops, row, computed):
        if computed is not None:
            self.checks.append((name, ops, computed))
        self.result.compressed.append(name)
        if row is not None:
            if self.function is not None:
                row = dict(row, function=self.function)
            self.result.rows.append(row)

    def compress(self, name, weight, cfg, sizes, channel_axis, in_axis=None):
        """weightpress.methods.compress_weight, with what an .mlpackage cannot express refused
        first: custom LUT functions, vector sizes a conv's groups split, structured pruning
        of other ops, LUT sizes iOS16 lacks."""
        from ..methods import compress_weight, palettize_axis

        importance = None
        if isinstance(cfg, PalettizeConfig):
            if cfg.mode == "custom":
                raise StreamingUnsupported(f"const {name}: custom LUT functions")
            axis, _ = palettize_axis(sizes, weight.shape, channel_axis)
            if cfg.cluster_dim > 1 and not _cluster_dim_valid(weight.shape, cfg.cluster_dim, axis, name, self.graph):
                raise NotApplicableError("palettize", f"cluster_dim {cfg.cluster_dim} is invalid for this op")
            if self._activation_weighted(name, cfg):
                from ..calibrate import column_weights

                importance = column_weights(self.moments[name], weight.shape, in_axis)
        if isinstance(cfg, MagnitudePruneConfig) and not self._structural_ok(name, cfg):
            raise NotApplicableError("prune", "structured pruning applies to conv and linear weights only")
        r = compress_weight(weight, cfg, sizes, channel_axis, importance)
        if isinstance(cfg, PalettizeConfig) and self.spec_version < SPEC_IOS18 and r.nbits not in (1, 2, 4, 6, 8):
            raise ConfigError(f"const {name}: iOS16 LUTs take 2, 4, 16, 64 or 256 entries, not {1 << r.nbits}")
        return r

    def _activation_weighted(self, name, cfg) -> bool:
        """Calibration weighs this const's k-means by its inputs' E[x^2] (scalar LUTs without a
        per-channel scale)."""
        return name in self.moments and isinstance(cfg, PalettizeConfig) and cfg.mode == "kmeans" \
            and cfg.cluster_dim == 1 and not cfg.enable_per_channel_scale

    def calibrate(self, name, cfg, r, in_axis, feedback_over=None):
        """Error feedback on a compressed const whose X^T X calibration measured, where its
        format allows (inputs on axis 1; the result's own feedback_limit); records how the
        const's numbers were chosen."""
        from ..calibrate import feed_back

        weighted = "activation-weighted" if self._activation_weighted(name, cfg) else "data-free"
        why = self.calibration.weighted_only.get(name) or feedback_over
        if why is None and name not in self.hessians:
            why = "no X^T X"
        elif why is None and in_axis != 1:
            why = f"its inputs lie on axis {in_axis}"
        elif why is None:
            why = getattr(r, "feedback_limit", "pruning is not fed back")
        if why is not None:
            self.result.calibrated[name] = f"{weighted} ({why})"
            return r
        fed, damping = feed_back(r, self.calibration.hessian_folds(name), damping=self.calibration.damping)
        self.result.calibrated[name] = (f"error feedback, damping {damping:g}" if damping is not None else
                                        f"{weighted}, plain rounding (it scored better on the held-out fold)")
        return fed

    def emit(self, name, dtype, shape, r):
        if hasattr(r, "lut"):
            return self.emitter.palettize(name, dtype, shape, r)
        if hasattr(r, "scale"):
            return self.emitter.quantize(name, dtype, shape, r)
        return self.emitter.prune(name, dtype, shape, r)

    def skip(self, name, reason):
        logger.warning("const %s skipped: %s", name, reason)
        self.result.skipped.append(f"{name}: {reason}")
        return None


def _verify(checks, weight_file):
    """Every compressed const decoded from the staged package equals what was computed."""
    from .verify import VerifyError, decode, digest

    with WeightFileReader(weight_file) as reader:
        for name, ops, expected in checks:
            if digest(decode(ops, reader)) != expected:
                raise VerifyError(f"--verify: const {name} does not decode to what was computed; the output was "
                                  "not published")


def _check_target(cfg, spec_version):
    """What iOS16/17 cannot express (coremltools raises the same)."""
    if spec_version >= SPEC_IOS18:
        return
    if isinstance(cfg, PalettizeConfig) and (cfg.granularity == "per_grouped_channel" or cfg.cluster_dim > 1):
        kind = "per_grouped_channel" if cfg.granularity == "per_grouped_channel" else "vector"
        raise ConfigError(f"The {kind} palettization is supported since iOS18")
    if isinstance(cfg, QuantizeConfig) and (cfg.granularity == "per_block" or cfg.dtype in ("int4", "uint4")):
        kind = "per_block" if cfg.granularity == "per_block" else "4-bit"
        raise ConfigError(f"The {kind} quantization is supported since iOS18")


def report_row(name, compressed_as, weight, r) -> dict:
    sse = float(r.sse)
    return {"weight": name, "compressed_as": compressed_as, "shape": list(weight.shape), "sse": sse,
            "psnr_db": psnr(sse / weight.size, float(np.abs(weight).max()))}


def _cluster_dim_valid(shape, cluster_dim, axis, name, graph) -> bool:
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
    """Copies the blobs an op keeps into the output weight.bin (once per source blob),
    straight from the input's mapping; their pages are released once written."""
    for value in _blob_values(op):
        old = value.blobFileValue.offset
        if old not in copied:
            blob = reader.blob(old)
            data = reader.read_bytes(blob)
            bits = {"int4": 4, "uint4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint6": 6}.get(blob.dtype)
            count = blob.element_count() if bits else len(data)
            copied[old] = writer.write(blob.dtype, data, count, done=lambda blob=blob: reader.release(blob))
        value.blobFileValue.offset = copied[old]


def _prefetch_blobs(op, reader):
    if reader is not None and op.type == "const":
        for value in _blob_values(op):
            reader.prefetch(reader.blob(value.blobFileValue.offset))


def _release_blobs(op, reader):
    if reader is not None:
        for value in _blob_values(op):
            reader.release(reader.blob(value.blobFileValue.offset))


def _copy_op(op):
    copy = type(op)()
    copy.CopyFrom(op)
    return copy


def _rename_ops(ops, old: str, new: str):
    """Ops emitted for const `old` renamed for const `new` (outputs, name attributes and the
    references between them: every such name is `old` + a suffix)."""
    def renamed(text):
        return new + text[len(old):] if text.startswith(old) else text

    for op in ops:
        for out in op.outputs:
            out.name = renamed(out.name)
        attr = op.attributes.get("name")
        if attr is not None and attr.immediateValue.tensor.strings.values:
            attr.immediateValue.tensor.strings.values[0] = renamed(attr.immediateValue.tensor.strings.values[0])
        for arg in op.inputs.values():
            for b in arg.arguments:
                if b.WhichOneof("binding") == "name":
                    b.name = renamed(b.name)


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

