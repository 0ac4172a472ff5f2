"""compress_aimodel: one method over a Core AI program, the .aimodel room beside the
.mlpackage streaming engine, with the same configs and the same kernels.

The program is loaded whole (an .aimodel's weights live inside its bytecode), every selected
constant (select.selected: coreai-opt's consumers and threshold) is compressed with the
method's config and replaced by the Core AI ops of its result (emit.Emitter), and the program
is saved through a staging sibling. Block sizes follow the constant's channel axes as
coreai-opt infers them (select.io_axes), with the same rules as an .mlpackage's
(mlpackage.select.block_sizes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..config import DEFAULT_WEIGHT_THRESHOLD, MethodConfig, PalettizeConfig, QuantizeConfig
from ..errors import ConfigError, NonFiniteWeightError, NotApplicableError
from ..metrics import psnr
from . import program as P
from .select import THRESHOLD, io_axes, selected

logger = logging.getLogger("weightpress.aimodel")

@dataclass
class AimodelResult:
    compressed: List[str] = field(default_factory=list)  # constants, by shape and position
    skipped: List[str] = field(default_factory=list)
    rows: Optional[list] = None
    seconds: float = 0.0


def _label(index: int, op) -> str:
    shape = "x".join(str(d) for d in op.result.type.shape)
    return f"constant {index} ({shape} {op.result.type.element_type})"


def compress_aimodel(input_path: str, output_path: str, step: MethodConfig, *, report: bool = False
                     ) -> AimodelResult:
    from ..mlpackage.select import block_sizes
    from ..methods import compress_weight

    start = time.perf_counter()
    cfg = step.global_config
    if cfg is None or step.op_name_configs or step.op_type_configs:
        raise ConfigError("an .aimodel takes a global config only: its constants have no names or op types "
                          "that Core ML configs select by")
    if isinstance(cfg, PalettizeConfig) and (cfg.mode == "custom" or cfg.enable_per_channel_scale):
        raise ConfigError("an .aimodel does not take LUTs with a custom function or a per-channel scale yet")
    # an OpConfig's default is coremltools' 2048; an .aimodel takes coreai-opt's 1024 instead
    threshold = THRESHOLD if cfg.weight_threshold == DEFAULT_WEIGHT_THRESHOLD else cfg.weight_threshold
    result = AimodelResult(rows=[] if report else None)
    prog = P.load(input_path)
    for index, op in enumerate(P.constants(prog)):
        if op.result.type.rank < 2 or not selected(op, threshold):
            continue
        label = _label(index, op)
        weight = P.read(op)
        sizes = channel_axis = None
        if isinstance(cfg, (PalettizeConfig, QuantizeConfig)):
            in_axis, out_axis = io_axes(op)
            sizes, channel_axis = block_sizes(cfg, weight.shape, in_axis, out_axis)
            if sizes is None:
                result.skipped.append(f"{label}: cannot infer the channel axis (consumers disagree)")
                continue
        try:
            r = compress_weight(weight, cfg, sizes, channel_axis)
        except NotApplicableError as exc:
            logger.warning("%s skipped: %s", label, exc.reason)
            result.skipped.append(f"{label}: {exc.reason}")
            continue
        except NonFiniteWeightError as exc:
            raise NonFiniteWeightError(cfg.method, exc.value, exc.index, name=label) from None
        verb = "palettize" if hasattr(r, "lut") else "quantize" if hasattr(r, "scale") else "prune"
        P.replace(op, lambda e, r=r, verb=verb: getattr(e, verb)(r))
        result.compressed.append(label)
        if report:
            sse = float(r.sse)
            result.rows.append({"weight": label, "compressed_as": verb, "shape": list(weight.shape), "sse": sse,
                                "psnr_db": psnr(sse / weight.size, float(np.abs(weight).max()))})
    if not result.compressed:
        raise ConfigError(f"{input_path}: no compressible weights (no constant over {threshold} elements that feeds "
                          "a matmul, conv, gather or transpose)")
    P.save(prog, output_path)
    result.seconds = time.perf_counter() - start
    return result
