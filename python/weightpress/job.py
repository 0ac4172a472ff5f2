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
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import List, Optional

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
    engine: str  # "streaming" or "in-memory"
    spec_version: int
    seconds: float = 0.0
    size_in: int = 0
    size_out: int = 0
    compressed: List[str] = field(default_factory=list)  # const names (streaming)
    skipped: List[str] = field(default_factory=list)  # "name: reason" (streaming)
    rows: Optional[list] = None  # per-weight SSE and PSNR, with report=True
    notes: List[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return TARGET_NAMES[self.spec_version]


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


def check_output(input_path: str, output: str, overwrite: bool) -> None:
    if not str(output).endswith(".mlpackage"):
        raise ConfigError(f"{output}: the output must be an .mlpackage")
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
                   calibration=None) -> JobResult:
    """Compresses the .mlpackage `input` into `output`.

    config: a weightpress Config (or anything as_config takes: op configs, MethodConfigs,
    coremltools OptimizationConfigs, a list of them in order). target: "iOS16" ... "iOS26"
    (default: the model's). engine: "auto", "streaming" or "in-memory". max_memory: bytes of
    working memory (default: half the RAM). report: per-weight SSE/PSNR in result.rows.
    verify: read the written package back before publishing it (streaming: every compressed
    weight decoded and compared with what was computed; in memory: the files validated).
    notes: a stream that receives remarks as they happen (they are also in result.notes).
    calibration: "minilm", "MODULE:FUNCTION", a callable returning (torch model, sample
    inputs), or that pair: k-means palettization then weighs each weight by its input
    channel's E[x^2] on those inputs (weightpress.calibrate); consts without a Linear/Conv
    module are compressed without data, each named in a note. Streaming engine only.
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
    if calibration is not None:
        _check_calibrated(config, engine)
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
    moments = None
    if calibration is not None:
        moments = _calibration_moments(calibration, input, config, note)
    try:
        return _run_engine(result, package, spec, input, output, config, spec_version, engine, max_memory,
                           num_threads, overwrite, report, progress, verify, note, start, moments)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        parent = os.path.dirname(os.path.abspath(output))
        free = shutil.disk_usage(parent).free
        need = package_size(input)
        raise OutOfSpaceError(f"cannot write {output}: {exc.strerror} (the output needs up to {need / 1e6:.1f} MB, "
                              f"the size of the input; {free / 1e6:.1f} MB free in {parent}); nothing was "
                              "written") from None


def _check_calibrated(config, engine):
    """Calibration weighs k-means palettization, on the streaming engine."""
    from .config import PalettizeConfig

    if config.joint or engine == "in-memory":
        raise ConfigError("calibrate: runs on the streaming engine only (joint compression and the in-memory engine "
                          "run coremltools' passes)")
    if not any(isinstance(c, PalettizeConfig) and c.mode == "kmeans" for step in config.steps for c in step.all()):
        raise ConfigError("calibrate: applies to k-means palettization (--palettize N); quantization and pruning "
                          "do not use calibration data yet")


def _calibration_moments(calibration, input, config, note):
    """E[x^2] per input channel of every const with a torch Linear/Conv module; the others
    named in a note (they are compressed without data)."""
    from . import calibrate
    from .plan.sources import package_consts

    model, inputs = calibrate.resolve(calibration)
    thresholds = [c.weight_threshold for step in config.steps for c in step.all() if c is not None]
    consts = [n for n, (shape, _) in package_consts(input, min(thresholds, default=0)).items() if len(shape) >= 2]
    moments, unmapped = calibrate.input_moments(model, inputs, consts)
    if not moments:
        raise ConfigError("calibrate: no const of the package matches a Linear or Conv weight of the torch model")
    if unmapped:
        note(f"calibration: no torch Linear/Conv module for {len(unmapped)} const(s), compressed without data: "
             f"{', '.join(unmapped)}")
    return moments


def _run_engine(result, package, spec, input, output, config, spec_version, engine, max_memory, num_threads,
                overwrite, report, progress, verify, note, start, moments=None):
    from .mlpackage.stream import StreamingUnsupported, default_budget, stream_compress

    budget = max_memory or default_budget()
    with num_threads_default(num_threads):
        if engine != "in-memory":
            try:
                if config.joint:
                    raise StreamingUnsupported("joint compression (more than one method)")
                streamed = stream_compress(package, spec, output, config.steps[0], spec_version, budget=budget,
                                           overwrite=overwrite, progress=progress, report=report, verify=verify,
                                           moments=moments)
            except StreamingUnsupported as exc:
                if engine == "streaming" or isinstance(config.steps[0], MixedConfig) or moments is not None:
                    raise ConfigError(f"the streaming engine does not support {exc}") from None
                note(_fallback(package, str(exc), budget))
            else:
                result.compressed, result.skipped, result.rows = streamed.compressed, streamed.skipped, streamed.rows
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
