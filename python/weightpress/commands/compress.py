"""weightpress compress IN.mlpackage -o OUT.mlpackage --palettize 4 [--quantize int8] ...

Methods run in command-line order; more than one is joint compression (iOS18+). The
in-memory path runs coremltools' own compression passes with weightpress's kernels inside
(weightpress.coreml), so the output program is what coremltools would write.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from ..mlpackage.package import PackageError, check_weights, load_spec, open_package, package_size, save_model
from .errors import UsageError

TARGETS = {"iOS16": 7, "iOS17": 8, "iOS18": 9, "iOS26": 10}
SPEC_TARGETS = {6: "iOS15", 7: "iOS16", 8: "iOS17", 9: "iOS18", 10: "iOS26"}
METHODS = {
    "palettize": "palettize_weights",
    "quantize": "linear_quantize_weights",
    "prune": "prune_weights",
}


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="the .mlpackage to compress (never modified)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the .mlpackage to write")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    add_method_arguments(p)
    p.add_argument("--target", choices=tuple(TARGETS), default=None,
                   help="deployment target of the output (default: the model's own; iOS15 models become iOS16)")
    p.add_argument("--report", action="store_true", help="print per-layer SSE and PSNR")
    p.add_argument("--report-json", metavar="FILE", help="write the per-layer report as JSON")
    p.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                   help="memory budget for the streaming path, e.g. 512M or 4G (default: half the RAM)")
    p.add_argument("--in-memory", action="store_true",
                   help="run coremltools' own machinery on the whole model instead of streaming")


def _size(text):
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[: len(t) - len(unit)]) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 4G, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the memory budget must be positive, got {text!r}")
    return int(value)


def add_method_arguments(p: argparse.ArgumentParser, granularity="per_tensor", group_size=32) -> None:
    """The method flags and their options (shared with `weightpress demo`)."""
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


# ---------------------------------------------------------------- configs


def _op_config(kind, value, args, cto):
    common = dict(weight_threshold=args.weight_threshold)
    if kind == "palettize":
        unique = args.mode == "unique"
        return "palettize", cto.OpPalettizerConfig(
            mode=args.mode, nbits=None if unique else value, granularity=args.granularity,
            group_size=args.group_size, channel_axis=args.channel_axis, cluster_dim=args.cluster_dim,
            enable_per_channel_scale=args.per_channel_scale, **common)
    if kind == "quantize":
        return "quantize", cto.OpLinearQuantizerConfig(
            mode=args.quantize_mode, dtype=value, granularity=args.quantize_granularity,
            block_size=args.block_size, **common)
    if kind == "prune":
        return "prune", cto.OpMagnitudePrunerConfig(
            target_sparsity=value, block_size=args.prune_block_size, dim=args.prune_dim, **common)
    if kind == "prune_threshold":
        return "prune", cto.OpThresholdPrunerConfig(
            threshold=value, minimum_sparsity_percentile=args.prune_min_sparsity, **common)
    if kind == "prune_n_m":
        return "prune", cto.OpMagnitudePrunerConfig(n_m_ratio=value, dim=args.prune_dim, **common)
    raise AssertionError(kind)


def _stream_op_config(kind, value, args):
    from ..mlpackage.config import op_config

    wt = args.weight_threshold
    if kind == "palettize":
        return op_config("palettize", wt, mode=args.mode, nbits=None if args.mode == "unique" else value,
                         granularity=args.granularity, group_size=args.group_size, channel_axis=args.channel_axis,
                         cluster_dim=args.cluster_dim, enable_per_channel_scale=args.per_channel_scale)
    if kind == "quantize":
        return op_config("quantize", wt, mode=args.quantize_mode, dtype=value, granularity=args.quantize_granularity,
                         block_size=args.block_size)
    if kind == "prune":
        return op_config("prune_magnitude", wt, target_sparsity=value, block_size=args.prune_block_size,
                         dim=args.prune_dim)
    if kind == "prune_threshold":
        return op_config("prune_threshold", wt, threshold=value, minimum_sparsity_percentile=args.prune_min_sparsity)
    if kind == "prune_n_m":
        return op_config("prune_magnitude", wt, n_m_ratio=value, dim=args.prune_dim)
    raise AssertionError(kind)


def _each_step(args, build):
    """build(kind, value) for every method of the command line, in order; errors name the flag."""
    if not args.steps:
        raise UsageError("give at least one method: --palettize, --quantize, --prune, --prune-threshold, "
                         "--prune-n-m or --config")
    steps = []
    for kind, value in args.steps:
        try:
            steps.append(build(kind, value))
        except UsageError:
            raise
        except (ValueError, TypeError, OSError) as exc:
            raise UsageError(f"--{kind.replace('_', '-')} {value}: {exc}") from None
    return steps


def build_stream_steps(args):
    """The methods as weightpress configs (no coremltools import)."""
    from ..mlpackage.config import Config, from_yaml

    def build(kind, value):
        if kind != "config":
            return Config(global_config=_stream_op_config(kind, value, args))
        if not os.path.isfile(value):
            raise UsageError(f"--config {value}: no such file")
        config = from_yaml(value)
        config.method  # one method per file (ConfigError otherwise)
        return config

    return _each_step(args, build)


def _config_file(path, cto):
    """An OptimizationConfig YAML and the method its op configs belong to."""
    if not os.path.isfile(path):
        raise UsageError(f"--config {path}: no such file")
    try:
        config = cto.OptimizationConfig.from_yaml(path)
    except Exception as exc:  # yaml / cattrs errors of many types
        raise UsageError(f"--config {path}: not a valid coremltools OptimizationConfig ({exc})") from None
    kinds = {type(c).__name__ for c in _all_op_configs(config)}
    methods = set()
    for name in kinds:
        if "Palettizer" in name:
            methods.add("palettize")
        elif "Quantizer" in name:
            methods.add("quantize")
        elif "Pruner" in name:
            methods.add("prune")
    if len(methods) != 1:
        raise UsageError(f"--config {path}: expected the op configs of one method, found {sorted(kinds) or 'none'}")
    return methods.pop(), config


def _all_op_configs(config):
    configs = [config.global_config] + list(config.op_type_configs.values()) + list(config.op_name_configs.values())
    return [c for c in configs if c is not None]


def build_steps(args, cto):
    """The methods as (method, coremltools OptimizationConfig) pairs."""

    def build(kind, value):
        if kind == "config":
            return _config_file(value, cto)
        method, op_config = _op_config(kind, value, args, cto)
        return method, cto.OptimizationConfig(global_config=op_config)

    return _each_step(args, build)


# ---------------------------------------------------------------- running


@contextlib.contextmanager
def _progress(label):
    """coremltools' per-pass loop over consts shows one progress bar (on a terminal only);
    its MIL pipeline bars are silenced."""
    from tqdm import tqdm

    from coremltools.converters.mil.mil.passes import pass_pipeline
    from coremltools.optimize.coreml import _quantization_passes as passes

    interactive = sys.stderr.isatty()

    def weights_bar(iterable, desc=None, unit=None, **kw):
        return tqdm(iterable, desc=label, unit=" weights", disable=not interactive, leave=False)

    def silent(iterable, *a, **kw):
        return iterable

    saved = passes.tqdm, pass_pipeline.tqdm
    passes.tqdm, pass_pipeline.tqdm = weights_bar, silent
    try:
        yield
    finally:
        passes.tqdm, pass_pipeline.tqdm = saved


def apply_step(mlmodel, method, config, joint, spec_version):
    """One coremltools compression pass, as its public function runs it, but at the target's
    spec version, with weightpress's kernels inside."""
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.models.utils import _apply_graph_pass

    from ..coreml import enabled

    graph_pass = PASS_REGISTRY[f"compression::{METHODS[method]}"]
    graph_pass.set_options([PassOption("config", config), PassOption("joint_compression", joint)])
    with enabled():
        return _apply_graph_pass(mlmodel, graph_pass, spec_version=spec_version)


def _where(exc) -> str:
    import traceback

    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"assertion in {frame.name}, {os.path.basename(frame.filename)}:{frame.lineno}"


def _constexpr_count(spec):
    count = 0
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            count += sum(op.type.startswith("constexpr_") for op in block.operations)
    return count


def _load_spec(package):
    try:
        return load_spec(package)
    except PackageError as exc:
        raise UsageError(str(exc)) from None


def run(args) -> int:
    start = time.perf_counter()
    out = args.output
    if not out.endswith(".mlpackage"):
        raise UsageError(f"-o {out}: the output must be an .mlpackage")
    if os.path.lexists(out) and not args.force:
        raise UsageError(f"{out} exists (use --force to overwrite)")
    if os.path.abspath(out) == os.path.abspath(args.input):
        raise UsageError("OUT must differ from IN (the input is never modified)")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    check_backend(args.backend)
    try:
        package = open_package(args.input)
    except PackageError as exc:
        raise UsageError(str(exc)) from None

    if not args.in_memory:
        from ..mlpackage.stream import StreamingUnsupported

        try:
            return _run_streaming(args, package, start)
        except StreamingUnsupported as exc:
            _fallback_or_exit(args, package, str(exc))
    return _run_in_memory(args, package, start)


def check_backend(name):
    from ..backends import resolve_backend

    try:
        backend = resolve_backend(name, "--backend")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if backend != "cpu":
        raise UsageError("--backend metal: the command line runs on the CPU until the Metal backend has been "
                         "verified on a Mac (metal/README.md)")


def _fallback_or_exit(args, package, reason):
    """The streaming path cannot express something: run in memory if that fits the budget."""
    from ..mlpackage.stream import default_budget

    budget = args.max_memory or default_budget()
    weights = os.path.getsize(package.weight_file) if package.weight_file else 0
    estimate = COREMLTOOLS_BASELINE + IN_MEMORY_FACTOR * weights
    if estimate > budget:
        raise UsageError(f"the streaming path does not support {reason}, and the in-memory path would need about "
                         f"{estimate / 2**20:.0f} MiB (budget {budget / 2**20:.0f} MiB); raise --max-memory or "
                         "use --in-memory")
    print(f"note: the streaming path does not support {reason}; running in memory (estimated peak "
          f"{estimate / 2**20:.0f} MiB fits the {budget / 2**20:.0f} MiB budget)", file=sys.stderr)


# coremltools' in-memory round trip: ~400 MB for importing it (torch included) and a few
# copies of the weights (loaded program, compressed values, serialisation)
COREMLTOOLS_BASELINE = 400 << 20
IN_MEMORY_FACTOR = 4


def _run_streaming(args, package, start):
    from ..mlpackage.config import ConfigError
    from ..mlpackage.stream import MemoryBudgetError, compress_mlpackage
    from ..mlpackage.weight_file import WeightFileError

    steps = build_stream_steps(args)
    target = TARGETS[args.target] if args.target else None
    print(f"compressing {args.input}: {' then '.join(c.method for c in steps)} (streaming)", file=sys.stderr,
          flush=True)
    try:
        result = compress_mlpackage(args.input, args.output, steps, target=target, max_memory=args.max_memory,
                                    overwrite=args.force, num_threads=args.threads, progress=sys.stderr.isatty(),
                                    report=bool(args.report or args.report_json),
                                    notes=sys.stderr)
    except (PackageError, WeightFileError, ConfigError, MemoryBudgetError) as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(f"{steps[0].method}: {exc}") from None
    _summary(args, time.perf_counter() - start, result.rows)
    return 0


def _summary(args, elapsed, rows):
    size_in, size_out = package_size(args.input), package_size(args.output)
    print(f"wrote {args.output}")
    print(f"size:  {size_in / 1e6:.2f} MB -> {size_out / 1e6:.2f} MB ({size_in / max(size_out, 1):.2f}x smaller)")
    print(f"time:  {elapsed:.1f} s")
    if rows is not None and args.report:
        from .report import print_report

        print_report(rows)
    if rows is not None and args.report_json:
        with open(args.report_json, "w") as f:
            json.dump({"input": args.input, "output": args.output, "size_in": size_in, "size_out": size_out,
                       "seconds": elapsed, "layers": rows}, f, indent=2)


def _run_in_memory(args, package, start):
    import logging
    import warnings

    out = args.output
    warnings.filterwarnings("ignore", module="coremltools")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from .. import set_num_threads
    from ..coreml import UnsupportedVersionError, check_versions

    try:
        check_versions()
    except UnsupportedVersionError as exc:
        raise UsageError(str(exc)) from None
    steps = build_steps(args, cto)
    spec = _load_spec(package)
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise UsageError(f"{args.input} is a {kind} model; weight compression needs an ML program (mlprogram)")
    if len(spec.mlProgram.functions) > 1:
        raise UsageError(f"{args.input} has {len(spec.mlProgram.functions)} functions; multifunction packages are "
                         "not supported (coremltools' compression refuses them too)")
    try:
        check_weights(package, spec)
    except PackageError as exc:
        raise UsageError(str(exc)) from None

    model_version = spec.specificationVersion
    if args.target is None:
        spec_version = max(model_version, TARGETS["iOS16"])
    else:
        spec_version = TARGETS[args.target]
        if spec_version < model_version:
            raise UsageError(f"--target {args.target} is below the model's own target "
                             f"{SPEC_TARGETS.get(model_version, model_version)}; a model cannot be lowered")
    if model_version < TARGETS["iOS16"]:
        print(f"note: {args.input} targets {SPEC_TARGETS.get(model_version, f'spec {model_version}')}; "
              f"compressed weights need iOS16, so the output targets {SPEC_TARGETS[spec_version]} "
              "(as coremltools does)", file=sys.stderr)
    if len(steps) > 1 and spec_version < TARGETS["iOS18"]:
        raise UsageError(f"joint compression ({' then '.join(m for m, _ in steps)}) needs --target iOS18 or later; "
                         f"the model targets {SPEC_TARGETS.get(spec_version)}")
    if args.threads:
        set_num_threads(args.threads)

    try:
        model = ct.models.MLModel(args.input, skip_model_load=True)
    except Exception as exc:
        raise UsageError(f"{args.input}: coremltools cannot load it ({type(exc).__name__}: {exc})") from None
    before = _constexpr_count(spec)
    print(f"compressing {args.input}: {' then '.join(m for m, _ in steps)} "
          f"(target {SPEC_TARGETS[spec_version]}, in memory)", file=sys.stderr, flush=True)
    compressed = model
    for i, (method, config) in enumerate(steps):
        try:
            with _progress(method):
                compressed = apply_step(compressed, method, config, i > 0, spec_version)
        except (ValueError, NotImplementedError) as exc:
            raise UsageError(f"{method}: {exc}") from None
        except AssertionError as exc:  # coremltools' own internal checks on combinations it cannot handle
            raise UsageError(f"{method}: coremltools 9.0 cannot apply this {'joint ' if i else ''}step "
                             f"({_where(exc)}{': ' + str(exc) if str(exc) else ''})") from None
    if _constexpr_count(compressed.get_spec()) == before:
        raise UsageError(f"{args.input}: no compressible weights (no const with more than {args.weight_threshold} "
                         "elements that the chosen methods apply to)")

    try:
        save_model(compressed, out, overwrite=args.force)
    except PackageError as exc:
        raise UsageError(str(exc)) from None
    rows = None
    if args.report or args.report_json:
        from .report import layer_report

        rows = layer_report(model, compressed, spec_version)
    _summary(args, time.perf_counter() - start, rows)
    return 0
