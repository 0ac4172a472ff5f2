"""Quality of a recipe, measured with torch on Linux (Core ML cannot predict here): the source
torch model runs on sample inputs with every planned weight replaced by what the recipe
would store, decompressed exactly as Core ML reconstructs it (the array API computes the same
bytes compress writes), and its outputs are compared with the original model's.

    PSNR    20 log10(max |reference| / RMSE) over all outputs (ml-stable-diffusion's measure)
    cosine  of the flattened outputs

Also the activation statistics of the `activations` sensitivity: E[x^2] of every input
channel of every Linear / Conv weight, from the same sample inputs.

Weights map to torch parameters by coremltools' naming rule (module path with dots as
underscores, "_weight", "_to_fp16" after an fp16 cast, a wrapper's prefix allowed).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..errors import ConfigError


def param_for_const(const: str, params: Sequence[str]) -> Optional[str]:
    """The torch parameter a const was converted from (None when no parameter or several fit)."""
    name = const.split("::")[-1]
    for suffix in ("_to_fp16", "_to_fp32"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    flat = {p.replace(".", "_"): p for p in params}
    if name in flat:
        return flat[name]
    matches = [p for f, p in flat.items() if name.endswith("_" + f)]
    return matches[0] if len(matches) == 1 else None


def _outputs(result) -> np.ndarray:
    import torch

    if isinstance(result, torch.Tensor):
        return result.detach().float().numpy().reshape(-1)
    if hasattr(result, "to_tuple"):  # transformers ModelOutput
        result = result.to_tuple()
    if isinstance(result, dict):
        result = list(result.values())
    if isinstance(result, (list, tuple)):
        return np.concatenate([_outputs(r) for r in result if r is not None]) if result else np.zeros(0)
    raise ConfigError(f"quality: cannot read the model's output of type {type(result).__name__}")


def _run(model, inputs) -> np.ndarray:
    import torch

    batches = inputs if isinstance(inputs, list) else [inputs]
    outs = []
    with torch.no_grad():
        for batch in batches:
            if isinstance(batch, dict):
                outs.append(_outputs(model(**batch)))
            elif isinstance(batch, tuple):
                outs.append(_outputs(model(*batch)))
            else:
                outs.append(_outputs(model(batch)))
    return np.concatenate(outs)


def compare(reference: np.ndarray, output: np.ndarray) -> Dict[str, float]:
    ref, out = reference.astype(np.float64), output.astype(np.float64)
    mse = float(np.mean((ref - out) ** 2))
    peak = float(np.abs(ref).max())
    psnr = float("inf") if mse == 0 else 20 * np.log10(peak / np.sqrt(mse))
    cosine = float(ref @ out / (np.linalg.norm(ref) * np.linalg.norm(out) + 1e-30))
    return {"psnr": psnr, "cosine": cosine, "mse": mse}


def decompressed(recipe, weights: Dict[str, np.ndarray], axes: Dict[str, tuple]) -> Dict[str, np.ndarray]:
    """What the recipe stores for every planned weight, decompressed (float arrays)."""
    from ..api import palettize, quantize
    from .analysis import lut_grouping, option_sizes

    out = {}
    for name, choice in recipe.weights.items():
        if choice.option.method == "keep" or name not in weights:
            continue
        w = weights[name]
        in_axis, out_axis = axes.get(name, (1, 0))
        sizes = option_sizes(choice.option, w.shape, in_axis, out_axis)
        if choice.option.method == "palettize":
            axis, group = lut_grouping(choice.option, sizes, w.shape, out_axis)
            r = palettize(w, choice.option.nbits, granularity="per_grouped_channel", group_size=group,
                          channel_axis=axis)
        else:
            r = quantize(w, choice.option.dtype, granularity="per_block", block_size=tuple(sizes),
                         fit=choice.option.fit)
        out[name] = r.decompress()
    return out


class TorchQuality:
    """quality(recipe) -> {"psnr", "cosine"} of the torch model carrying the recipe's weights.

    model: the source torch module (eval mode); inputs: one batch (a tensor, a tuple of
    positional arguments or a dict of keyword arguments) or a list of batches; weights:
    {const: array} the planned weights as the package stores them (their values are what gets
    compressed), axes: {const: (input axis, output axis)} as compress infers them."""

    def __init__(self, model, inputs, weights: Dict[str, np.ndarray], axes: Dict[str, tuple] = None):
        self.model, self.inputs = model, inputs
        self.weights, self.axes = weights, axes or {}
        names = [n for n, _ in model.named_parameters()]
        self.params = {c: param_for_const(c, names) for c in weights}
        unmapped = sorted(c for c, p in self.params.items() if p is None)
        if unmapped:
            raise ConfigError(f"quality: no torch parameter for {', '.join(unmapped[:6])}"
                              + (f" and {len(unmapped) - 6} more" if len(unmapped) > 6 else ""))
        self.reference = _run(model, inputs)
        self.calls = 0

    def __call__(self, recipe) -> Dict[str, float]:
        import torch

        self.calls += 1
        new = decompressed(recipe, self.weights, self.axes)
        params = dict(self.model.named_parameters())
        saved = {}
        try:
            with torch.no_grad():
                for const, value in new.items():
                    p = params[self.params[const]]
                    saved[const] = p.detach().clone()
                    p.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32).reshape(tuple(p.shape))))
            return compare(self.reference, _run(self.model, self.inputs))
        finally:
            with torch.no_grad():
                for const, old in saved.items():
                    params[self.params[const]].copy_(old)


def calibrate(quality: Callable, analyses, progress: bool = False) -> Dict[tuple, float]:
    """Coefficients of the linear error model of the `calibrated` sensitivity: output MSE ~
    sum over weights of a * (the weight's SSE / its energy), with one slope a per weight and
    method (palettization and linear quantization spread their error differently: k-means
    puts centroids on outliers, a per-channel scale rounds them, and which of the two a
    layer tolerates shows only in its outputs). Each slope is measured with one forward pass,
    the weight alone compressed by a probe option of that method (the one of median error
    among them: the medium-bit regime where the model is linear), every other weight as it
    is. A probe that changes nothing gets the median slope of the others.
    Returns {(weight name, method): slope}."""
    from .recipe import Choice, Recipe

    probes = []
    for a in analyses:
        for method in ("palettize", "quantize"):
            options = sorted((c for c in a.candidates if c.option.method == method and c.sse > 0), key=lambda c: c.sse)
            if options:
                probes.append((a, method, options[len(options) // 2]))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(probes), unit=" passes", desc="calibrating (forward passes)", leave=False)
    slopes: Dict[tuple, float] = {}
    try:
        for a, method, probe in probes:
            q = quality(Recipe({a.name: Choice(probe.option, a.shape, a.dtype, probe.bytes.total, 0.0)}))
            if "mse" not in q:
                raise ConfigError("plan: the calibrated sensitivity needs a quality check that reports 'mse'")
            slopes[(a.name, method)] = q["mse"] / (probe.sse / (a.energy if a.energy > 0 else 1.0))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    measured = [v for v in slopes.values() if v > 0]
    fallback = float(np.median(measured)) if measured else 1.0
    return {(a.name, m): slopes.get((a.name, m)) or fallback for a in analyses for m in ("palettize", "quantize")}


def torch_activations(model, inputs, consts: Sequence[str]) -> Dict[str, np.ndarray]:
    """E[x^2] per input channel for the Linear / Conv weights among `consts` (by parameter
    name), from running `inputs`; consts of other modules (embeddings) are left out."""
    import torch

    names = [n for n, _ in model.named_parameters()]
    wanted = {param_for_const(c, names): c for c in consts}
    sums: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = {}
    hooks = []
    for module_name, module in model.named_modules():
        param = f"{module_name}.weight" if module_name else "weight"
        if param not in wanted or not isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            continue
        const = wanted[param]

        def hook(mod, args, const=const):
            x = args[0].detach().double()
            if isinstance(mod, torch.nn.Linear):
                flat = x.reshape(-1, x.shape[-1])
                sq = (flat * flat).sum(0)
                n = flat.shape[0]
            else:  # channels on axis 1; a conv weight's input axis expands by its kernel
                moved = x.transpose(0, 1).reshape(x.shape[1], -1)
                sq = (moved * moved).sum(1)
                n = moved.shape[1]
            sums[const] = sums.get(const, 0) + sq.numpy()
            counts[const] = counts.get(const, 0) + n

        hooks.append(module.register_forward_pre_hook(hook))
    try:
        _run(model, inputs)
    finally:
        for h in hooks:
            h.remove()
    return {c: sums[c] / max(1, counts[c]) for c in sums}


def torch_check(source, model, inputs, weight_threshold: int = 2048, activations: bool = False):
    """(TorchQuality, activation statistics or None) for `source` (an .mlpackage path or
    {name: array}, read as the planner reads it) and the source torch model with sample
    inputs: the quality check of plan(torch_model=..., sample_inputs=...) and --torch-model."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from .sources import package_sources

        with package_sources(str(source), weight_threshold) as (sources, _, _, _):
            weights = {s.name: s.read().copy() for s in sources}
            axes = {s.name: (s.in_axis, s.out_axis) for s in sources}
    else:
        from .sources import array_sources

        sources = array_sources(source, weight_threshold)
        weights = {s.name: s.read() for s in sources}
        axes = {s.name: (s.in_axis, s.out_axis) for s in sources}
    quality = TorchQuality(model, inputs, weights, axes)
    columns = torch_activations(model, inputs, list(weights)) if activations else None
    return quality, columns


def factory(spec: str) -> Callable:
    """--torch-model MODULE:FUNCTION (FUNCTION() -> (model, inputs)), or "minilm"."""
    if spec == "minilm":
        from ..minilm import quality_inputs

        return quality_inputs
    module, _, function = spec.partition(":")
    if not module or not function:
        raise ConfigError(f"--torch-model {spec}: expected MODULE:FUNCTION (a function returning (model, inputs)) "
                          "or minilm")
    import importlib

    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--torch-model {spec}: {exc}") from None
