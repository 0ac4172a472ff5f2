"""The method flags of the command line and the one place they become a Config.

Shared by `weightpress compress` and `weightpress demo`: methods apply in command-line order
(more than one is joint compression); --config adds a coremltools OptimizationConfig YAML
file as one step. config_from_args() is the only mapping from flags to config fields.
"""

from __future__ import annotations

import argparse
import os

from ..config import (Config, MagnitudePruneConfig, MethodConfig, PalettizeConfig, QuantizeConfig,
                      ThresholdPruneConfig)
from ..errors import ConfigError
from .errors import UsageError


class _Step(argparse.Action):
    """Records methods (and --config files) in the order they appear on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        steps = list(getattr(namespace, "steps", None) or [])
        steps.append((self.const, values))
        namespace.steps = steps


def _n_m(text):
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N:M (e.g. 2:4), got {text!r}") from None
    return n, m


def parse_size(text):
    """512M, 4G, 1.5GiB ... -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[: len(t) - len(unit)]) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 4G, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {text!r}")
    return int(value)


def add_method_arguments(p: argparse.ArgumentParser, granularity="per_tensor", group_size=32,
                         recipe: bool = False) -> None:
    m = p.add_argument_group("methods (applied in command-line order; several = joint compression)")
    m.add_argument("--palettize", type=int, metavar="NBITS", action=_Step, const="palettize",
                   help="k-means (or --mode) palettization with 2**NBITS entries")
    m.add_argument("--quantize", metavar="DTYPE", action=_Step, const="quantize",
                   choices=("int4", "uint4", "int8", "uint8"), help="linear quantization")
    m.add_argument("--prune", type=float, metavar="SPARSITY", action=_Step, const="prune",
                   help="magnitude pruning to this fraction of zeros")
    m.add_argument("--prune-threshold", type=float, metavar="T", action=_Step, const="prune_threshold",
                   help="prune |w| <= T")
    m.add_argument("--prune-n-m", type=_n_m, metavar="N:M", action=_Step, const="prune_n_m",
                   help="zero N of every M consecutive weights")
    m.add_argument("--config", metavar="FILE", action=_Step, const="config",
                   help="a coremltools OptimizationConfig YAML (repeatable, applied in order)")
    if recipe:
        m.add_argument("--recipe", metavar="FILE", action=_Step, const="recipe",
                       help="a recipe from `weightpress plan`: its method and options for every weight it names")
    pal = p.add_argument_group("palettization options")
    pal.add_argument("--mode", default="kmeans", choices=("kmeans", "uniform", "unique"))
    pal.add_argument("--granularity", default=granularity, choices=("per_tensor", "per_grouped_channel"))
    pal.add_argument("--group-size", type=int, default=group_size)
    pal.add_argument("--channel-axis", type=int, default=None)
    pal.add_argument("--cluster-dim", type=int, default=1)
    pal.add_argument("--per-channel-scale", action="store_true")
    q = p.add_argument_group("quantization options")
    q.add_argument("--quantize-mode", default="linear_symmetric", choices=("linear_symmetric", "linear"))
    q.add_argument("--quantize-granularity", default="per_channel", choices=("per_tensor", "per_channel", "per_block"))
    q.add_argument("--block-size", type=int, default=32)
    q.add_argument("--quantize-fit", default="coremltools", choices=("coremltools", "best"),
                   help="scale and zero point: coremltools' (byte-identical, default) or the best-error "
                        "parameters over the dtype's full range")
    pr = p.add_argument_group("pruning options")
    pr.add_argument("--prune-block-size", type=int, default=None)
    pr.add_argument("--prune-dim", type=int, default=None, choices=(0, 1))
    pr.add_argument("--prune-min-sparsity", type=float, default=0.5,
                    help="with --prune-threshold: skip weights that end up sparser than this (coremltools' "
                         "minimum_sparsity_percentile)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "metal"),
                   help="compute backend (auto = cpu; see weightpress.backends())")
    p.add_argument("--weight-threshold", type=int, default=2048,
                   help="compress consts with MORE than this many elements (default 2048)")
    p.set_defaults(steps=[])


def _op_config(kind, value, args):
    wt = args.weight_threshold
    if kind == "palettize":
        return PalettizeConfig(nbits=None if args.mode == "unique" else value, mode=args.mode,
                               granularity=args.granularity, group_size=args.group_size,
                               channel_axis=args.channel_axis, cluster_dim=args.cluster_dim,
                               enable_per_channel_scale=args.per_channel_scale, weight_threshold=wt)
    if kind == "quantize":
        return QuantizeConfig(dtype=value, mode=args.quantize_mode, granularity=args.quantize_granularity,
                              block_size=args.block_size, weight_threshold=wt, fit=args.quantize_fit)
    if kind == "prune":
        return MagnitudePruneConfig(target_sparsity=value, block_size=args.prune_block_size, dim=args.prune_dim,
                                    weight_threshold=wt)
    if kind == "prune_threshold":
        return ThresholdPruneConfig(threshold=value, minimum_sparsity_percentile=args.prune_min_sparsity,
                                    weight_threshold=wt)
    if kind == "prune_n_m":
        return MagnitudePruneConfig(n_m_ratio=value, dim=args.prune_dim, weight_threshold=wt)
    raise AssertionError(kind)


def _recipe_config(args) -> Config:
    """--recipe FILE: the planned per-const config, checked against the input package (a
    recipe for another model, or naming consts this one lacks, is refused by name)."""
    from ..plan.recipe import Recipe
    from ..plan.sources import package_consts

    if len(args.steps) != 1:
        raise UsageError("--recipe gives every weight its method: use it alone, without other methods")
    path = args.steps[0][1]
    try:
        recipe = Recipe.load(path)
        recipe.check_against(package_consts(args.input, 0), args.input)
        return Config((recipe.to_config(),))
    except ConfigError as exc:
        raise UsageError(f"--recipe {path}: {exc}") from None


def config_from_args(args) -> Config:
    """The methods of the command line as one Config; errors name the flag."""
    if not args.steps:
        raise UsageError("give at least one method: --palettize, --quantize, --prune, --prune-threshold, "
                         "--prune-n-m or --config")
    if any(kind == "recipe" for kind, _ in args.steps):
        return _recipe_config(args)
    steps = []
    for kind, value in args.steps:
        flag = f"--{kind.replace('_', '-')} {value}"
        try:
            if kind == "config":
                if not os.path.isfile(value):
                    raise UsageError(f"--config {value}: no such file")
                steps.append(MethodConfig.from_yaml(value))
            else:
                steps.append(MethodConfig(global_config=_op_config(kind, value, args)))
        except ConfigError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    try:
        return Config(tuple(steps))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
