"""The planner's measurements: for every weight, every applicable option's exact bytes and
error.

Errors are exact SSEs: palettization from the optimal 1-D k-means of every candidate width
(weightpress.sse_curve with the widths asked for: the histogram once, one fast solve per
width); linear quantization from the kernel itself. A sensitivity turns SSE into the error the solver adds
up across weights:
    none         the SSE
    relative     the SSE over the weight's energy (sum of squares): each weight's relative
                 error counts alike (end-to-end loss is close to a sum of relative weight
                 errors at medium bit widths)
    activations  the SSE with every input channel weighted by E[x^2] of the activations it
                 multiplies, over the weight's weighted energy (from sample inputs through the
                 source torch model; weights no activation reaches fall back to relative)
    calibrated   the relative error times a slope per weight and method, each measured with
                 one forward pass of the source torch model (quality.calibrate): output MSE
                 ~ sum of a * relative error, the linear model with measured slopes

A package is read the way compress reads it (same validation, same selection of consts, the
same axis inference), one weight in memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .. import rules
from ..config import PalettizeConfig, QuantizeConfig
from ..mlpackage import values as V
from .options import Option
from .sizes import Footprint, footprint

SENSITIVITIES = ("none", "relative", "activations", "calibrated")


@dataclass
class Candidate:
    option: Option
    bytes: Footprint
    sse: float
    error: float = 0.0  # the sse under the sensitivity (filled by weigh)


@dataclass
class WeightAnalysis:
    name: str  # the const ("function::const" in a multifunction package)
    shape: Tuple[int, ...]
    dtype: str
    energy: float  # sum of squares
    candidates: List[Candidate] = field(default_factory=list)
    note: str = ""  # why some options do not apply

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class WeightSource:
    """One weight to analyse: its name, how to read it, and the axes compress would use."""

    name: str
    shape: Tuple[int, ...]
    dtype_code: int
    read: Callable[[], np.ndarray]
    in_axis: Optional[int]
    out_axis: Optional[int]
    column_weights: Optional[np.ndarray] = None  # E[x^2] per input channel (activations)


def option_sizes(option: Option, shape, in_axis, out_axis):
    """The per-axis block sizes compress infers for this option, or None when coremltools
    would skip the weight with it (indivisible groups or blocks, unknown axes)."""
    from ..mlpackage.select import block_sizes

    if option.method == "keep":
        return [0] * len(shape)
    cfg = option.op_config()
    if len(shape) < 2 and (option.granularity in ("per_grouped_channel", "per_block", "per_channel")):
        return None
    sizes, channel_axis = block_sizes(cfg, shape, in_axis, out_axis)
    if sizes is None:
        return None
    if isinstance(cfg, PalettizeConfig) and cfg.granularity == "per_grouped_channel":
        from ..mlpackage.select import palettize_axis

        axis, group = palettize_axis(sizes, shape, channel_axis)
        if rules.palettize_groups(shape, axis, group, 1):
            return None
    if isinstance(cfg, QuantizeConfig) and rules.quantize_blocks(shape, sizes):
        return None
    return sizes


def lut_grouping(option: Option, sizes, shape, out_axis) -> Tuple[int, int]:
    """(axis, channels per LUT) of a palettization option as compress groups it; (0, 0) for
    one LUT per tensor (the key its SSE curve is stored under)."""
    from ..mlpackage.select import palettize_axis

    if option.granularity != "per_grouped_channel":
        return 0, 0
    return palettize_axis(sizes, shape, out_axis if out_axis is not None else 0)


def analyse(source: WeightSource, options: Iterable[Option], spec_version: int = 9) -> WeightAnalysis:
    """Every applicable option of one weight with its bytes and SSE."""
    from ..api import quantize
    from ..palettize import sse_curve

    w = source.read()
    analysis = WeightAnalysis(source.name, tuple(source.shape), V.TYPES[source.dtype_code][0], _energy(w))
    planned = [(o, option_sizes(o, source.shape, source.in_axis, source.out_axis)) for o in options]
    skipped = [o.label for o, s in planned if s is None]
    if skipped:
        analysis.note = f"not applicable: {', '.join(skipped)}"
    # palettization: one DP per granularity gives the SSE of every bit width
    by_grouping: Dict[Tuple[int, int], List[Option]] = {}
    for o, sizes in planned:
        if sizes is not None and o.method == "palettize":
            by_grouping.setdefault(lut_grouping(o, sizes, source.shape, source.out_axis), []).append(o)
    sse_by_width = {}
    for (axis, group), opts in by_grouping.items():
        widths = sorted({o.nbits for o in opts})
        if group:
            values = sse_curve(w, max(widths), granularity="per_grouped_channel", group_size=group,
                               channel_axis=axis, nbits=widths)
        else:
            values = sse_curve(w, max(widths), nbits=widths)
        for b, v in zip(widths, values):
            sse_by_width[(axis, group, b)] = float(v)
    for o, sizes in planned:
        if sizes is None:
            continue
        size = footprint(o, source.shape, source.dtype_code, sizes, spec_version)
        if o.method == "keep":
            sse = 0.0
        elif o.method == "palettize":
            sse = sse_by_width[lut_grouping(o, sizes, source.shape, source.out_axis) + (o.nbits,)]
        else:
            r = quantize(w, o.dtype, granularity="per_block", block_size=tuple(sizes), fit=o.fit)
            sse = float(r.sse) if source.column_weights is None else _weighted_sse(w, r.decompress(), source)
        analysis.candidates.append(Candidate(o, size, sse))
    if source.column_weights is not None:
        _activation_errors(w, source, analysis)
    return analysis


def _energy(w: np.ndarray, chunk: int = 1 << 16) -> float:
    """Sum of squares in float64, a cache-sized piece at a time (one float64 copy of a large
    weight costs more in page faults than the sum itself)."""
    flat = w.reshape(-1)
    buf = np.empty(min(chunk, flat.size), dtype=np.float64)
    total = 0.0
    for start in range(0, flat.size, chunk):
        piece = buf[: min(chunk, flat.size - start)]
        np.copyto(piece, flat[start:start + chunk])
        total += float(piece @ piece)
    return total


def _weighted_sse(w, dense, source) -> float:
    diff = dense.astype(np.float64) - w.astype(np.float64)
    return float(np.sum(diff * diff * _column_scale(source, w.shape)))


def _column_scale(source, shape):
    scale = np.ones(shape)
    axis = source.in_axis if source.in_axis is not None else 1
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return scale * np.asarray(source.column_weights, dtype=np.float64).reshape(view)


def _activation_errors(w, source, analysis):
    """The activation-weighted SSE of each palettization as compress computes it (unweighted
    k-means, then weighted error): the weights are clustered for real here."""
    from ..api import palettize

    for c in analysis.candidates:
        if c.option.method != "palettize":
            continue
        sizes = option_sizes(c.option, source.shape, source.in_axis, source.out_axis)
        axis, group = lut_grouping(c.option, sizes, source.shape, source.out_axis)
        r = palettize(w, c.option.nbits, granularity="per_grouped_channel", group_size=group, channel_axis=axis)
        c.sse = _weighted_sse(w, r.decompress(), source)
    analysis.energy = float(np.sum(w.astype(np.float64) ** 2 * _column_scale(source, w.shape)))


def weigh(analyses: List[WeightAnalysis], sensitivity: str, coefficients: Optional[Dict[str, float]] = None) -> None:
    """Fills every candidate's error from its SSE under the sensitivity (calibrated: times
    the slope of the weight and the option's method, {(name, method): slope})."""
    if sensitivity not in SENSITIVITIES:
        from ..errors import ConfigError

        raise ConfigError(f"sensitivity must be one of {', '.join(SENSITIVITIES)}, got {sensitivity!r}")
    for a in analyses:
        scale = 1.0 if sensitivity == "none" else 1.0 / (a.energy if a.energy > 0 else 1.0)
        for c in a.candidates:
            slope = (coefficients or {}).get((a.name, c.option.method), 1.0) if sensitivity == "calibrated" else 1.0
            c.error = c.sse * scale * slope
