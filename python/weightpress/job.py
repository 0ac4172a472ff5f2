"""One model compression job: open, validate, choose the target, run one engine, publish.

    compress_model(input, output, config, target=None, engine="auto", ...)  -> JobResult

The command line (`weightpress compress`), the demo and Python callers all come through
here with a Config (weightpress.config). The front half is the same for every engine: the
output path must be a new .mlpackage outside the input, the input an ML program whose
weight.bin agrees with its program, the target at least the model's own (an iOS15 model is
raised to iOS16, as coremltools does). Then:

    streaming   (weightpress.mlpackage.stream) one weight in memory at a time, no coremltools
    in-memory   (weightpress.coreml.engine) coremltools' own passes with weightpress kernels

engine="auto" streams, and runs in memory only what streaming does not express (joint
chains, multifunction packages, custom LUT functions, integer consts), and only when the
in-memory estimate fits the memory budget. Outputs appear atomically; the input is never
modified.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ._arrays import num_threads_default
from .config import Config, MixedConfig, as_config
from .errors import ConfigError, MemoryBudgetError, OutOfSpaceError, PackageError
from .mlpackage.package import (SPEC_IOS15, SPEC_IOS16, SPEC_IOS18, TARGET_NAMES, TARGETS, check_program,
                                check_weights, load_spec, open_package, package_size, remove_stale_staging)

ENGINES = ("auto", "streaming", "in-memory")
# coremltools' in-memory round trip: ~400 MB for importing it (torch included) and a few
# copies of the weights (loaded program, compressed values, serialisation)
COREMLTOOLS_BASELINE = 400 << 20
IN_MEMORY_FACTOR = 4


@dataclass
class JobResult:
    output: str
    engine: str  # "streaming", "in-memory" or "aimodel" (a Core AI program)
    spec_version: int
    seconds: float = 0.0
    size_in: int = 0
    size_out: int = 0
    compressed: List[str] = field(default_factory=list)  # const names (streaming)
    skipped: List[str] = field(default_factory=list)  # "name: reason" (streaming)
    rows: Optional[list] = None  # per-weight SSE and PSNR, with report=True
    notes: List[str] = field(default_factory=list)
    calibrated: Dict[str, str] = field(default_factory=dict)  # const: how calibration chose its numbers

    @property
    def target(self) -> str:
        return "Core AI" if self.engine == "aimodel" else TARGET_NAMES[self.spec_version]


def choose_target(model_version: int, target: Optional[str]) -> "tuple[int, Optional[str]]":
    """(spec version, note) for a requested target name; None keeps the model's own (iOS15
    raised to iOS16, as coremltools does)."""
    if target is None:
        version = max(model_version, SPEC_IOS16)
    else:
        if target not in TARGETS or TARGETS[target] < SPEC_IOS16:
            raise ConfigError(f"target must be one of {', '.join(t for t in TARGETS if TARGETS[t] >= SPEC_IOS16)}, "
                              f"got {target!r}")
        version = TARGETS[target]
        if version < model_version:
            raise ConfigError(f"target {target} is below the model's own target "
                              f"{TARGET_NAMES.get(model_version, model_version)}; a model cannot be lowered")
    note = None
    if model_version <= SPEC_IOS15:
        note = (f"the model targets {TARGET_NAMES.get(model_version, f'spec {model_version}')}; compressed weights "
                f"need iOS16, so the output targets {TARGET_NAMES[version]} (as coremltools does)")
    return version, note


def check_output(input_path: str, output: str, overwrite: bool, kind: str = ".mlpackage") -> None:
    if not str(output).rstrip(os.sep).endswith(kind):
        raise ConfigError(f"{output}: the output must be an {kind}")
    src, dst = os.path.realpath(input_path), os.path.realpath(output)
    if dst == src:
        raise ConfigError("the output must differ from the input (the input is never modified)")
    if dst.startswith(src.rstrip(os.sep) + os.sep):
        raise ConfigError(f"{output} lies inside the input package {input_path}; the input is never modified")
    if os.path.lexists(output) and not overwrite:
        raise ConfigError(f"{output} exists (use --force to overwrite)")


def compress_model(input: str, output: str, config, *, target: Optional[str] = None, engine: str = "auto",
                   max_memory: Optional[int] = None, num_threads: Optional[int] = None, overwrite: bool = False,
                   report: bool = False, progress: bool = False, verify: bool = False, notes=None,
                   calibration=None, error_feedback: bool = True, damping="auto") -> JobResult:
    """Compresses the .mlpackage `input` into `output`.

    config: a weightpress Config (or anything as_config takes: op configs, MethodConfigs,
    coremltools OptimizationConfigs, a list of them in order). target: "iOS16" ... "iOS26"
    (default: the model's). engine: "auto", "streaming" or "in-memory". max_memory: bytes of
    working memory (default: half the RAM). report: per-weight SSE/PSNR in result.rows.
    verify: read the written package back before publishing it (streaming: every compressed
    weight decoded and compared with what was computed; in memory: the files validated).
    notes: a stream that receives remarks as they happen (they are also in result.notes).
    calibration: "minilm", "MODULE:FUNCTION", a callable returning (torch model, sample
    inputs), or that pair (weightpress.calibrate): k-means palettization weighs each weight
    by its input channel's E[x^2] on those inputs, and with error_feedback the LUT indices or
    quantized integers of Linear and Conv weights are chosen by error feedback on X^T X of
    their inputs (damping: "auto", cross-validated per layer on the calibration inputs with
    plain rounding kept where it scores better, or a number, relative to the mean diagonal
    of X^T X). Consts without a
    Linear/Conv module are compressed without data, and layers whose X^T X exceeds the memory
    budget are activation-weighted only; each is named in a note, and result.calibrated says
    how every calibrated const was done. Streaming engine only.
    """
    start = time.perf_counter()
    config = as_config(config)
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if any(isinstance(step, MixedConfig) for step in config.steps) and (config.joint or engine == "in-memory"):
        raise ConfigError("a recipe (a method chosen per const) runs alone, on the streaming engine")
    if (config.joint or engine == "in-memory") and any(
            getattr(c, "fit", "coremltools") != "coremltools" for step in config.steps for c in step.all()):
        raise ConfigError("quantize: fit 'best' runs on the streaming engine only (joint compression and the "
                          "in-memory engine run coremltools' passes, which take its own parameters)")
    if str(input).rstrip(os.sep).endswith(".aimodel"):
        return _compress_aimodel(input, output, config, engine, overwrite, report, calibration, target, notes, start)
    if calibration is not None:
        _check_calibrated(config, engine, error_feedback)
    damping = _check_damping(damping)
    check_output(input, output, overwrite)
    package = open_package(input)
    spec = load_spec(package)
    check_program(package, spec)
    functions = len(spec.mlProgram.functions)
    if functions > 1 and (engine == "in-memory" or config.joint):
        what = "the in-memory engine" if engine == "in-memory" else f"joint compression ({config.describe()})"
        raise ConfigError(f"{input} has {functions} functions: multifunction packages are compressed by the streaming "
                          f"engine only, which does not support {what} (coremltools' compression refuses "
                          "multifunction packages)")
    check_weights(package, spec)
    spec_version, target_note = choose_target(spec.specificationVersion, target)
    if config.joint and spec_version < SPEC_IOS18:
        raise ConfigError(f"joint compression ({config.describe()}) needs target iOS18 or later; the model targets "
                          f"{TARGET_NAMES[spec_version]}")
    result = JobResult(output=output, engine="streaming", spec_version=spec_version)

    def note(text):
        result.notes.append(text)
        if notes is not None:
            print(f"note: {text}", file=notes, flush=True)

    if target_note:
        note(target_note)
    for stale in remove_stale_staging(output):
        note(f"removed {stale}, left staged by an interrupted run")
    stats = None
    try:
        if calibration is not None:
            from .mlpackage.stream import default_budget

            with num_threads_default(num_threads):
                stats = _calibration_statistics(calibration, input, config, note, max_memory or default_budget(),
                                                error_feedback, damping)
        done = _run_engine(result, package, spec, input, output, config, spec_version, engine, max_memory,
                           num_threads, overwrite, report, progress, verify, note, start, stats)
        if stats is not None:
            _calibration_summary(done.calibrated, stats.weighted_only, note)
        return done
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        parent = os.path.dirname(os.path.abspath(output))
        free = shutil.disk_usage(parent).free
        need = package_size(input)
        raise OutOfSpaceError(f"cannot write {output}: {exc.strerror} (the output needs up to {need / 1e6:.1f} MB, "
                              f"the size of the input; {free / 1e6:.1f} MB free in {parent}); nothing was "
                              "written") from None
    finally:
        if stats is not None:
            stats.close()


def _compress_aimodel(input, output, config, engine, overwrite, report, calibration, target, notes, start):
    """A Core AI program: one method over its selected constants (weightpress.aimodel)."""
    from .aimodel.compress import compress_aimodel

    if config.joint or any(isinstance(step, MixedConfig) for step in config.steps):
        raise ConfigError("an .aimodel takes one method for now (no joint compression or recipes)")
    if engine == "in-memory" or calibration is not None or target is not None:
        what = "--in-memory" if engine == "in-memory" else "--calibrate" if calibration is not None else "--target"
        raise ConfigError(f"an .aimodel does not take {what} (a Core ML option)")
    if any(getattr(c, "fit", "coremltools") != "coremltools" for step in config.steps for c in step.all()):
        raise ConfigError("an .aimodel takes coremltools' quantization parameters only for now (no --quantize-fit best)")
    check_output(input, output, overwrite, ".aimodel")
    if not os.path.isfile(os.path.join(input, "main.mlirb")):
        raise PackageError(f"{input}: not an .aimodel (no main.mlirb)")
    try:
        import coreai  # noqa: F401
    except ImportError:
        raise ConfigError("an .aimodel needs coreai-core: pip install coreai-core") from None
    done = compress_aimodel(input, output, config.steps[0], report=report)
    result = JobResult(output=output, engine="aimodel", spec_version=0, compressed=done.compressed,
                       skipped=done.skipped, rows=done.rows)
    return _finish(result, input, output, start)


def _check_calibrated(config, engine, error_feedback):
    """Calibration weighs k-means palettization and, with error feedback, chooses the indices
    of LUTs and the integers of quantization; on the streaming engine."""
    from .config import PalettizeConfig, QuantizeConfig

    if config.joint or engine == "in-memory":
        raise ConfigError("calibrate: runs on the streaming engine only (joint compression and the in-memory engine "
                          "run coremltools' passes)")
    configs = [c for step in config.steps for c in step.all() if c is not None]
    if any(isinstance(c, PalettizeConfig) and c.mode == "kmeans" for c in configs):
        return
    if error_feedback and any(isinstance(c, QuantizeConfig) or (isinstance(c, PalettizeConfig) and c.mode == "uniform")
                              for c in configs):
        return
    raise ConfigError("calibrate: applies to k-means palettization and, with error feedback, to uniform LUTs and "
                      "quantization; pruning does not use calibration data"
                      + ("" if error_feedback else " (error feedback is off)"))


def _check_damping(damping):
    """None for "auto" (cross-validated), else the number."""
    if damping == "auto" or damping is None:
        return None
    try:
        value = float(damping)
    except (TypeError, ValueError):
        value = float("nan")
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"calibrate: damping must be 'auto' or a finite number >= 0, got {damping!r}")
    return value


def _calibration_statistics(calibration, input, config, note, budget, error_feedback, damping=None):
    """E[x^2] per input channel and (error feedback) X^T X of every const with a torch
    Linear/Conv module, within the memory budget; the consts left without data or without
    X^T X named in notes."""
    from . import calibrate
    from .plan.sources import package_consts

    model, inputs = calibrate.resolve(calibration)
    thresholds = [c.weight_threshold for step in config.steps for c in step.all() if c is not None]
    consts = [n for n, (shape, _) in package_consts(input, min(thresholds, default=0)).items() if len(shape) >= 2]
    stats = calibrate.layer_statistics(model, inputs, consts, error_feedback=error_feedback, budget=budget,
                                       damping=damping)
    if not stats.moments:
        stats.close()
        raise ConfigError("calibrate: no const of the package matches a Linear or Conv weight of the torch model")
    if stats.unmapped:
        note(f"calibration: no torch Linear/Conv module for {len(stats.unmapped)} const(s), compressed without data: "
             f"{', '.join(stats.unmapped)}")
    for const, why in stats.weighted_only.items():
        note(f"calibration: {const}: activation weighting only, no error feedback: {why}")
    if stats.hessian_files:
        note(f"calibration: X^T X of {len(stats.hessian_files)} layer(s) in {stats.passes} pass(es) over the inputs, "
             f"{stats.seconds:.1f} s")
    return stats


def _calibration_summary(calibrated, noted, note):
    """A note for each const the memory budget kept from error feedback while compressing
    (those the statistics left out were named already), then one counting how the
    calibrated consts were done."""
    for name, how in calibrated.items():
        if "--max-memory" in how and name not in noted:
            note(f"calibration: {name}: {how}")
    counts = {}
    for how in calibrated.values():
        key = how.split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    if counts:
        note("calibration: " + "; ".join(f"{n} x {how}" for how, n in sorted(counts.items(), key=lambda kv: -kv[1])))


def _run_engine(result, package, spec, input, output, config, spec_version, engine, max_memory, num_threads,
                overwrite, report, progress, verify, note, start, calibration=None):
    from .mlpackage.stream import StreamingUnsupported, default_budget, stream_compress

    budget = max_memory or default_budget()
    with num_threads_default(num_threads):
        if engine != "in-memory":
            try:
                if config.joint:
                    raise StreamingUnsupported("joint compression (more than one method)")
                streamed = stream_compress(package, spec, output, config.steps[0], spec_version, budget=budget,
                                           overwrite=overwrite, progress=progress, report=report, verify=verify,
                                           calibration=calibration)
            except StreamingUnsupported as exc:
                if engine == "streaming" or isinstance(config.steps[0], MixedConfig) or calibration is not None:
                    raise ConfigError(f"the streaming engine does not support {exc}") from None
                note(_fallback(package, str(exc), budget))
            else:
                result.compressed, result.skipped, result.rows = streamed.compressed, streamed.skipped, streamed.rows
                result.calibrated = streamed.calibrated
                return _finish(result, input, output, start)
        from .coreml.engine import compress_in_memory

        result.engine = "in-memory"
        done = compress_in_memory(package, output, config, spec_version, overwrite=overwrite, report=report,
                                  progress=progress, verify=verify)
        result.rows = done.rows
    return _finish(result, input, output, start)


def _fallback(package, reason: str, budget: int) -> str:
    """The streaming engine cannot express something: the in-memory engine if it fits."""
    weights = os.path.getsize(package.weight_file) if package.weight_file else 0
    estimate = COREMLTOOLS_BASELINE + IN_MEMORY_FACTOR * weights
    if estimate > budget:
        raise MemoryBudgetError(f"the streaming path does not support {reason}, and the in-memory path would need "
                                f"about {estimate / 2**20:.0f} MiB (budget {budget / 2**20:.0f} MiB); raise "
                                "--max-memory or use --in-memory")
    return (f"the streaming path does not support {reason}; running in memory (estimated peak "
            f"{estimate / 2**20:.0f} MiB fits the {budget / 2**20:.0f} MiB budget)")


def _finish(result: JobResult, input: str, output: str, start: float) -> JobResult:
    result.size_in, result.size_out = package_size(input), package_size(output)
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["ENGINES", "JobResult", "choose_target", "compress_model", "PackageError"]
