"""Mixed-bit planning: the best way to store every weight for a size budget.

    weightpress.plan(source, target_bpw=4.5)           # or max_size=..., or min_psnr=... with a quality check
        -> Plan: .recipe (compress applies it: compress_model(..., plan.recipe.to_config())),
                 .table() per weight, .curve (the trade-off one analysis offers)

source: an .mlpackage path (read like compress reads it, one weight at a time) or a dict of
named arrays. Every weight's candidate options (options.py) are measured exactly -- bytes as
compress writes them (sizes.py), SSE from one k-means DP per granularity or from the
quantization kernel (analysis.py) -- weighed by a sensitivity, and the least total error
within the budget is solved for (solver.py). docs/planning.md explains the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..mlpackage import values as V
from .analysis import SENSITIVITIES, Candidate, WeightAnalysis, analyse, weigh
from .options import DEFAULT_OPTIONS, Option, parse_options
from .recipe import Choice, Recipe, fingerprint, from_mbp
from .solver import Item, solve

__all__ = ["DEFAULT_OPTIONS", "Option", "Plan", "Recipe", "from_mbp", "parse_options", "plan"]


@dataclass
class CurvePoint:
    bits_per_weight: float
    bytes: int
    error: float
    recipe: Recipe


@dataclass
class _Solver:
    """What turns a budget into a recipe: the measured options of every weight."""

    analyses: List[WeightAnalysis]
    items: List[Item]
    aliases: Dict[str, List[str]]  # source name -> every const name that uses it
    elements: int
    fixed_bytes: int
    path: str
    model_fingerprint: str
    sensitivity: str

    @property
    def smallest(self) -> int:
        return sum(min(b for b, _ in it.options) for it in self.items)

    @property
    def largest(self) -> int:
        return sum(max(b for b, _ in it.options) for it in self.items)

    def recipe(self, budget: int, target: Dict[str, float]) -> Recipe:
        chosen = [a.candidates[i] for a, i in zip(self.analyses, solve(self.items, budget))]
        weights = {name: Choice(c.option, a.shape, a.dtype, c.bytes.total, c.error)
                   for a, c in zip(self.analyses, chosen) for name in self.aliases[a.name]}
        total = sum(c.bytes.total for c in chosen)
        predicted = {"bytes": total, "bits_per_weight": 8.0 * total / self.elements,
                     "error": sum(c.error for c in chosen),
                     "weight_file_bytes": self.fixed_bytes + sum(c.bytes.blob_bytes for c in chosen)}
        return Recipe(weights, self.path, self.model_fingerprint, target, predicted, self.sensitivity)

    def recipe_for(self, target_bpw: Optional[float], max_size: Optional[int]) -> Recipe:
        smallest, largest, n = self.smallest, self.largest, self.elements
        if target_bpw is not None:
            budget = int(target_bpw * n / 8)
            _reachable(budget, smallest, largest, f"{target_bpw} bits per weight", 8.0 * smallest / n,
                       8.0 * largest / n, "bits per weight")
            return self.recipe(budget, {"bits_per_weight": target_bpw})
        budget = int(max_size) - self.fixed_bytes
        _reachable(budget, smallest, largest + 1, f"{max_size} bytes", smallest + self.fixed_bytes,
                   largest + self.fixed_bytes, "bytes")
        return self.recipe(budget, {"max_size": int(max_size)})


@dataclass
class Plan:
    analyses: List[WeightAnalysis]
    recipe: Recipe
    curve: List[CurvePoint]
    elements: int  # parameters planned
    fixed_bytes: int  # weight.bin bytes of everything not planned (package sources)
    seconds: float
    quality: Dict[str, float] = field(default_factory=dict)  # the chosen recipe's, when checked
    _solver: Optional[_Solver] = field(default=None, repr=False)

    def recipe_for(self, *, target_bpw: Optional[float] = None, max_size: Optional[int] = None) -> Recipe:
        """Another recipe from the same analysis (no weight is measured again): the least
        error at target_bpw bits per planned weight, or within max_size bytes of weight.bin."""
        if (target_bpw is None) == (max_size is None):
            raise ConfigError("recipe_for: give exactly one of target_bpw, max_size")
        return self._solver.recipe_for(target_bpw, max_size)

    @property
    def bytes(self) -> int:
        """The planned bytes (a blob several functions share counted once)."""
        return int(self.recipe.predicted["bytes"])

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.bytes / max(1, self.elements)

    def table(self) -> str:
        rows = [("weight", "shape", "stored as", "bits/weight", "error")]
        for a in self.analyses:
            c = self.recipe.weights[a.name]
            rows.append((a.name, "x".join(map(str, a.shape)), c.option.label, f"{8.0 * c.bytes / a.elements:.2f}",
                         f"{c.error:.3g}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)

    def curve_table(self) -> str:
        lines = ["bits/weight  MB      predicted error"]
        for p in self.curve:
            lines.append(f"{p.bits_per_weight:10.2f}  {p.bytes / 1e6:6.2f}  {p.error:.4g}")
        return "\n".join(lines)


def plan(source, *, target_bpw: Optional[float] = None, max_size: Optional[int] = None,
         min_psnr: Optional[float] = None, quality: Optional[Callable[[Recipe], Dict[str, float]]] = None,
         sensitivity: Optional[str] = None, options=None, weight_threshold: int = 2048,
         column_weights: Optional[Dict[str, np.ndarray]] = None, curve_points: int = 12,
         torch_model=None, sample_inputs=None, progress: bool = False) -> Plan:
    """Plans `source` (an .mlpackage path or {name: array}) to one target:
        target_bpw  bits per planned weight, everything stored included (indices, LUTs, scales)
        max_size    bytes of the whole weight.bin (package sources)
        min_psnr    the smallest recipe on the trade-off curve whose quality(recipe)["psnr"]
                    reaches it (a bisection, about log2(curve_points) quality checks)
    options: an --options string or a list of Option. sensitivity: none, relative,
    activations (needs column_weights: {weight name: E[x^2] per input channel};
    quality.torch_activations computes them), calibrated (needs quality: a forward pass per
    weight and method measures its slope; the default when quality is given, else
    relative). Raises ConfigError for unreachable targets."""
    if (torch_model is None) != (sample_inputs is None):
        raise ConfigError("plan: torch_model and sample_inputs go together")
    if torch_model is not None:
        if quality is not None:
            raise ConfigError("plan: give torch_model and sample_inputs, or quality, not both")
        from .quality import torch_check

        quality, columns = torch_check(source, torch_model, sample_inputs, weight_threshold,
                                       activations=sensitivity == "activations" and not column_weights)
        column_weights = column_weights or columns
    targets = [t for t in (target_bpw, max_size, min_psnr) if t is not None]
    if len(targets) != 1:
        raise ConfigError("plan: give exactly one of target_bpw, max_size, min_psnr")
    if min_psnr is not None and quality is None:
        raise ConfigError("plan: min_psnr needs a quality check (a torch model and sample inputs)")
    if sensitivity is None:  # measured slopes when a quality check can measure them, else data-free
        sensitivity = "calibrated" if quality is not None else "relative"
    if sensitivity not in SENSITIVITIES:
        raise ConfigError(f"plan: sensitivity must be one of {', '.join(SENSITIVITIES)}, got {sensitivity!r}")
    if sensitivity == "activations" and not column_weights:
        raise ConfigError("plan: sensitivity 'activations' needs activation statistics (column_weights)")
    if sensitivity == "calibrated" and quality is None:
        raise ConfigError("plan: sensitivity 'calibrated' needs a quality check (a torch model and sample inputs)")
    if options is None or isinstance(options, str):
        candidates = parse_options(DEFAULT_OPTIONS if options is None else options)
    else:
        candidates = list(options)
    start = time.perf_counter()
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from .sources import package_sources

        with package_sources(str(source), weight_threshold) as (sources, aliases, fixed, shapes):
            analyses = _analyse_all(sources, candidates, column_weights, progress)
        path = str(source)
    else:
        from .sources import array_sources

        sources = array_sources(source, weight_threshold)
        aliases = {s.name: [s.name] for s in sources}
        fixed, path = 0, ""
        shapes = {s.name: (s.shape, V.TYPES[s.dtype_code][0]) for s in sources}
        analyses = _analyse_all(sources, candidates, column_weights, progress)
    if not analyses:
        raise ConfigError(f"plan: no weight to plan (none with more than {weight_threshold} elements)")
    coefficients = None
    if sensitivity == "calibrated":
        from .quality import calibrate

        coefficients = calibrate(quality, analyses, progress)
    weigh(analyses, sensitivity, coefficients)
    solver = _Solver(analyses, [Item(tuple((c.bytes.total, c.error) for c in a.candidates)) for a in analyses],
                     aliases, sum(a.elements for a in analyses), fixed, path,
                     fingerprint((n, shape, dtype) for n, (shape, dtype) in shapes.items()), sensitivity)
    points = max(2, curve_points)
    curve = []
    for k in range(points):
        budget = solver.smallest + (solver.largest - solver.smallest) * k // (points - 1)
        r = solver.recipe(budget, {"bytes": budget})
        curve.append(CurvePoint(r.predicted["bits_per_weight"], int(r.predicted["bytes"]), r.predicted["error"], r))
    measured = {}
    if min_psnr is not None:
        recipe, measured = _bisect(curve, quality, min_psnr)
    else:
        recipe = solver.recipe_for(target_bpw, max_size)
    if quality is not None and not measured:
        measured = quality(recipe)
    return Plan(analyses, recipe, curve, solver.elements, fixed, time.perf_counter() - start, measured, solver)


def _reachable(budget, smallest, largest, asked, low, high, unit):
    if budget < smallest:
        raise ConfigError(f"plan: {asked} is below the smallest options ({low:.3f} {unit}); choose a larger target "
                          "or add smaller options")
    if budget > largest:
        raise ConfigError(f"plan: {asked} is above what the largest options take ({high:.3f} {unit}): nothing "
                          "to trade off; choose a smaller target")


def _bisect(curve: Sequence[CurvePoint], quality, min_psnr):
    """The smallest curve point whose measured PSNR reaches min_psnr (quality is monotone
    enough along the curve for a bisection; each probe is one forward pass)."""
    lo, hi = 0, len(curve) - 1
    top = quality(curve[hi].recipe)
    if top["psnr"] < min_psnr:
        raise ConfigError(f"plan: even the largest recipe reaches {top['psnr']:.2f} dB, below --min-psnr {min_psnr}")
    best, best_quality = curve[hi].recipe, top
    while lo < hi:
        mid = (lo + hi) // 2
        q = quality(curve[mid].recipe)
        if q["psnr"] >= min_psnr:
            best, best_quality, hi = curve[mid].recipe, q, mid
        else:
            lo = mid + 1
    best.target = {"min_psnr": min_psnr}
    return best, best_quality


def _analyse_all(sources, candidates, column_weights, progress) -> List[WeightAnalysis]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(int(np.prod(s.shape)) for s in sources), unit=" params", unit_scale=True,
                   desc="measuring options", leave=False)
    out = []
    try:
        for s in sources:
            if column_weights and s.name in column_weights:
                s.column_weights = np.asarray(column_weights[s.name], dtype=np.float64)
            out.append(analyse(s, candidates))
            if bar is not None:
                bar.update(int(np.prod(s.shape)))
    finally:
        if bar is not None:
            bar.close()
    return out
