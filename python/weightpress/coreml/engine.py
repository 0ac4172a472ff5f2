"""The in-memory engine: coremltools' own compression passes, weightpress's math inside.

    compress_in_memory(package, out_path, config, spec_version, ...)

loads the model with coremltools, applies each method of the config as coremltools' public
functions do (joint compression for every step after the first) but at the job's target
spec version, with the hooks of weightpress.coreml on, and saves atomically. This is the
engine for what streaming does not express: joint chains, custom LUT functions, quantizing
integer consts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Optional

from ..config import Config
from ..errors import ConfigError, PackageError
from ..mlpackage.package import ModelPackage, save_model

PASSES = {"palettize": "palettize_weights", "quantize": "linear_quantize_weights", "prune": "prune_weights"}


@dataclass
class InMemoryResult:
    rows: Optional[list]
    seconds: float


@contextlib.contextmanager
def quiet_coremltools(progress_label: Optional[str] = None, capture_stderr: bool = False):
    """coremltools' warnings and pipeline progress bars silenced; with a label, its per-const
    loop shows one weightpress-style bar instead (on a terminal only). capture_stderr also
    swallows what its converters print (their own progress bars)."""
    import io
    import logging
    import warnings

    from tqdm import tqdm

    from coremltools.converters.mil.mil.passes import pass_pipeline
    from coremltools.optimize.coreml import _quantization_passes as passes

    interactive = sys.stderr.isatty() and progress_label is not None

    def weights_bar(iterable, desc=None, unit=None, **kw):
        return tqdm(iterable, desc=progress_label, unit=" weights", disable=not interactive, leave=False)

    def silent(iterable, *a, **kw):
        return iterable

    logger = logging.getLogger("coremltools")
    saved = passes.tqdm, pass_pipeline.tqdm, logger.level
    passes.tqdm, pass_pipeline.tqdm = weights_bar, silent
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), (contextlib.redirect_stderr(io.StringIO()) if capture_stderr
                                         else contextlib.nullcontext()):
            warnings.simplefilter("ignore")
            yield
    finally:
        passes.tqdm, pass_pipeline.tqdm, level = saved
        logger.setLevel(level)


def apply_step(mlmodel, method_config, joint: bool, spec_version: int):
    """One coremltools compression pass, as its public function runs it, but at the target's
    spec version, with weightpress's kernels inside."""
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models.utils import _apply_graph_pass

    from . import enabled

    graph_pass = PASS_REGISTRY[f"compression::{PASSES[method_config.method]}"]
    graph_pass.set_options([PassOption("config", method_config.to_coremltools()), PassOption("joint_compression", joint)])
    with enabled():
        return _apply_graph_pass(mlmodel, graph_pass, spec_version=spec_version)


def compress_in_memory(package: ModelPackage, out_path: str, config: Config, spec_version: int, *,
                       overwrite: bool = False, report: bool = False, progress: bool = False,
                       verify: bool = False) -> InMemoryResult:
    import coremltools as ct

    from . import check_versions

    start = time.perf_counter()
    check_versions()
    try:
        model = ct.models.MLModel(package.path, skip_model_load=True)
    except Exception as exc:
        raise PackageError(f"{package.path}: coremltools cannot load it ({type(exc).__name__}: {exc})") from None
    before = _constexpr_count(model.get_spec())
    compressed = model
    for i, step in enumerate(config.steps):
        try:
            with quiet_coremltools(step.method if progress else None):
                compressed = apply_step(compressed, step, i > 0, spec_version)
        except (ValueError, NotImplementedError) as exc:
            raise ConfigError(f"{step.method}: {exc}") from None
        except AssertionError as exc:  # coremltools' own checks on combinations it cannot handle
            raise ConfigError(f"{step.method}: coremltools 9.0 cannot apply this {'joint ' if i else ''}step "
                              f"({_where(exc)}{': ' + str(exc) if str(exc) else ''})") from None
    if _constexpr_count(compressed.get_spec()) == before:
        weight_thresholds = sorted({c.weight_threshold for s in config.steps for c in s.all() if c is not None})
        raise ConfigError(f"{package.path}: no compressible weights (no const with more than "
                          f"{weight_thresholds[0] if weight_thresholds else 2048} elements that the chosen methods "
                          "apply to)")
    save_model(compressed, out_path, overwrite=overwrite, check=_check_written if verify else None)
    rows = None
    if report:
        from .report import layer_report

        with quiet_coremltools():
            rows = layer_report(model, compressed, spec_version)
    return InMemoryResult(rows, time.perf_counter() - start)


def _check_written(path: str) -> None:
    """--verify in memory: the staged package opens, parses and its weight.bin agrees with
    its program (what coremltools computed is coremltools' own)."""
    from ..mlpackage.package import read_package

    read_package(path)


def _where(exc) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"assertion in {frame.name}, {os.path.basename(frame.filename)}:{frame.lineno}"


def _constexpr_count(spec):
    count = 0
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            count += sum(op.type.startswith("constexpr_") for op in block.operations)
    return count
