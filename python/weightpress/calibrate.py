"""Calibration data: what each compressed layer sees, from the source torch model.

    resolve(calibration)            (model, inputs) from "minilm", "MODULE:FUNCTION", a
                                    callable returning them, or the pair itself
    input_moments(model, inputs, consts)
                                    E[x^2] per input channel of every const whose torch module
                                    (Linear, Conv1d, Conv2d) is found, and the consts that were not
    column_weights(moments, shape, in_axis)
                                    the per-element importance of a weight: its input channel's
                                    E[x^2], repeated along the other axes
    layer_statistics(model, inputs, consts, error_feedback=True, budget=...)
                                    the above plus X^T X of every mapped layer's inputs per
                                    fold of the calibration data (conv inputs unfolded), held
                                    in a temporary directory, collected in as many forward
                                    passes as the memory budget needs
    choose_damping(result, hessian_folds)
                                    error feedback's damping, by cross-validation over folds of
                                    the calibration data (never the evaluation data)
    feed_back(result, hessian_folds)
                                    error feedback at that damping, or the plain rounding when
                                    it scores better on the held-out folds

A weight error on input channel j changes a layer's output by that error times x_j, so its
expected squared effect is the error squared times E[x_j^2]. K-means weighted by it
(activation-weighted palettization) spends the LUT's entries where the output is sensitive,
in exactly the same format. Inputs are the same contract as `plan --torch-model`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError


class CalibrationError(ConfigError):
    """The calibration source cannot be used (exit 2 on the command line)."""


def resolve(calibration) -> Tuple[object, object]:
    """(torch model, sample inputs) from a spec string, a callable or the pair."""
    if isinstance(calibration, (tuple, list)) and len(calibration) == 2:
        return tuple(calibration)
    if isinstance(calibration, str):
        from .plan.quality import factory

        try:
            fn = factory(calibration)
        except ConfigError as exc:
            raise CalibrationError(f"calibrate: {exc}") from None
        name = calibration
    elif callable(calibration):
        fn, name = calibration, getattr(calibration, "__name__", repr(calibration))
    else:
        raise CalibrationError(f"calibrate: expected 'minilm', 'MODULE:FUNCTION', a callable or (model, inputs), "
                               f"got {type(calibration).__name__}")
    try:
        got = fn()
    except ConfigError as exc:
        raise CalibrationError(f"calibrate: {name}: {exc}") from None
    except Exception as exc:  # the user's function: any failure is one line naming it
        raise CalibrationError(f"calibrate: {name}() failed: {type(exc).__name__}: {exc}") from None
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise CalibrationError(f"calibrate: {name}() must return (model, sample inputs), got {type(got).__name__}")
    return tuple(got)


def _layer_modules(model, consts: Sequence[str]) -> Dict[str, object]:
    """{const: its torch Linear / Conv1d / Conv2d module}, for the consts that are the
    `.weight` of one."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise CalibrationError(f"calibrate: the model must be a torch.nn.Module, got {type(model).__name__}")
    from .plan.quality import param_for_const

    params = [n for n, _ in model.named_parameters()]
    modules = dict(model.named_modules())
    found = {}
    for c in consts:
        p = param_for_const(c, params)
        module = modules.get(p.rsplit(".", 1)[0] if p and "." in p else "") if p else None
        if p and p.endswith(".weight") and isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            found[c] = module
    return found


def _model_failed(exc: Exception) -> CalibrationError:
    """The model refusing its own sample inputs (wrong shape, dtype), as one line."""
    return CalibrationError(f"calibrate: running the model on its sample inputs failed: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _run_model(model, inputs):
    from .plan.quality import _run

    try:
        _run(model, inputs)
    except CalibrationError:
        raise
    except Exception as exc:
        raise _model_failed(exc) from None


def input_moments(model, inputs, consts: Sequence[str]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """({const: E[x^2] per input channel}, [consts without a Linear/Conv module])."""
    from .plan.quality import torch_activations

    mapped = list(_layer_modules(model, consts))
    try:
        moments = torch_activations(model, inputs, mapped)
    except CalibrationError:
        raise
    except Exception as exc:
        raise _model_failed(exc) from None
    for c, m in moments.items():
        if not np.all(np.isfinite(m)):
            raise CalibrationError(f"calibrate: the input of {c} holds NaN or Inf activations")
    unmapped = [c for c in consts if c not in moments]
    return moments, unmapped


def column_weights(moments: np.ndarray, shape, in_axis: int) -> np.ndarray:
    """Each element's importance: E[x^2] of its input channel (axis `in_axis`; a conv
    weight's kernel positions share their channel's). Channels the data never excites get a
    floor of 1e-6 of the mean, so that their weights still shape the LUT a little (a group
    of them alone would otherwise have no importance at all)."""
    if in_axis is None or moments.shape != (shape[in_axis],):
        raise CalibrationError(f"calibrate: a weight of shape {tuple(shape)} does not take {moments.size} input "
                               "channels")
    m = moments.astype(np.float64)
    m = np.maximum(m, 1e-6 * float(m.mean()) if m.mean() > 0 else 1.0)
    view = [1] * len(shape)
    view[in_axis] = shape[in_axis]
    return np.broadcast_to(m.reshape(view), tuple(shape))


# Damping candidates for error feedback, relative to the mean diagonal of X^T X.
# (MiniLM's layers chose 1.0 most often from 0.01 ... 1.0 with ~600 tokens, hence 3.0.)
DAMPING_CANDIDATES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def _output_error(result, fitted, hessians) -> float:
    """sum over `hessians` of tr(dW H dW^T), dW = the weight `result` compressed minus what
    `fitted` decodes to, both as (output channels, inputs): the squared output error on those
    inputs."""
    reference = np.asarray(result._reference, dtype=np.float64)
    reference = reference.reshape(reference.shape[0], -1)
    dw = reference - fitted.decompress().astype(np.float64).reshape(reference.shape)
    return sum(float(np.sum((dw @ h) * dw)) for h in hessians)


def choose_damping(result, hessian_folds, candidates=DAMPING_CANDIDATES, num_threads=None, stop_early=True):
    """The damping for `result.error_feedback` chosen on calibration data alone, by
    cross-validation: for each fold, error feedback fitted on the other folds' X^T X is scored
    on this fold's, tr(dW H_fold dW^T) with dW the weight's change; the candidate whose total is
    least wins (the smaller on ties). Returns (damping, {candidate: total}).

    stop_early: candidates are tried from the largest down and the search stops at the first
    whose score is worse than the best so far. The score is a bias-variance trade in the
    damping (too little fits the folds' noise, too much ignores their correlations) and has
    one minimum in practice; with ~600 tokens the large dampings win, so this usually tries
    2-3 of the 6 (each try is a factorisation and a feedback pass per fold)."""
    folds = [np.asarray(h, dtype=np.float64) for h in hessian_folds]
    if len(folds) < 2:
        raise ValueError("choose_damping: give at least two folds of X^T X")
    total = sum(folds)
    scores = {}
    for damping in sorted(candidates, reverse=True):
        score = sum(_output_error(result, result.error_feedback(total - h, damping=damping, num_threads=num_threads),
                                  [h]) for h in folds)
        if stop_early and scores and score > min(scores.values()):
            scores[damping] = score
            break
        scores[damping] = score
    best = min(scores, key=lambda d: (scores[d], d))
    return best, scores


def feed_back(result, hessian_folds, candidates=DAMPING_CANDIDATES, num_threads=None, damping=None):
    """(result after error feedback on the folds' total X^T X at the cross-validated damping,
    that damping), or (result, None) when plain rounding already scores at least as well on
    the held-out folds: error feedback fitted to little data can do worse than none on
    new inputs, and a layer is never made worse by calibration that way. A given `damping`
    skips the cross-validation (and its guard): one feedback pass on the total."""
    folds = [np.asarray(h, dtype=np.float64) for h in hessian_folds]
    if damping is not None:
        return result.error_feedback(sum(folds), damping=damping, num_threads=num_threads), damping
    damping, scores = choose_damping(result, folds, candidates, num_threads)
    if _output_error(result, result, folds) <= scores[damping]:
        return result, None
    return result.error_feedback(sum(folds), damping=damping, num_threads=num_threads), damping


# ---------------------------------------------------------------- layer statistics

FOLDS = 2


@dataclass
class LayerStatistics:
    """What calibration measured of each const's layer, by const name. Its X^T X matrices
    live in a temporary directory until close() (or the end of a with block)."""

    moments: Dict[str, np.ndarray]  # E[x^2] per input channel
    unmapped: List[str]  # no Linear/Conv module: compressed without data
    weighted_only: Dict[str, str] = field(default_factory=dict)  # const: why it has no X^T X
    hessian_files: Dict[str, List[str]] = field(default_factory=dict)  # const: X^T X per fold (.npy)
    damping: Optional[float] = None  # error feedback's damping; None: cross-validated per layer
    passes: int = 0  # forward passes over the calibration inputs for X^T X
    seconds: float = 0.0
    _directory: Optional[str] = None

    def hessian_folds(self, const: str) -> List[np.ndarray]:
        """X^T X of each fold of the calibration inputs (read-only, memory-mapped)."""
        return [np.load(f, mmap_mode="r") for f in self.hessian_files[const]]

    def close(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def size_text(n: int) -> str:
    """Bytes as MiB, or KiB below one MiB (a small budget should not read as 0 MiB)."""
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def hessian_bytes(inputs: int, folds: int = FOLDS) -> int:
    """Working memory of one layer's error feedback: X^T X per fold, their total, the damped
    copy and its factor (float64 each)."""
    return (folds + 3) * inputs * inputs * 8


def layer_inputs(module) -> int:
    """Columns of the layer's weight as error feedback sees it: in_features, or a conv's
    input channels times its kernel positions."""
    return int(module.weight[0].numel())


def split_folds(inputs, folds: int = FOLDS) -> list:
    """The calibration inputs in `folds` parts: a list of batches dealt round-robin, else one
    batch (a tensor, or a tuple / dict of tensors sharing their first axis) cut along that
    axis. Fewer parts when there are fewer samples."""
    import torch

    batches = inputs if isinstance(inputs, list) else [inputs]
    if len(batches) >= folds:
        return [batches[i::folds] for i in range(folds)]
    if len(batches) != 1:
        return [batches]
    batch = batches[0]
    tensors = list(batch.values()) if isinstance(batch, dict) else list(batch) if isinstance(batch, tuple) else [batch]
    sizes = {t.shape[0] for t in tensors if isinstance(t, torch.Tensor) and t.ndim > 0}
    if len(sizes) != 1 or min(sizes) < folds:
        return [batches]
    n = sizes.pop()

    def cut(value, part):
        lo, hi = part * n // folds, (part + 1) * n // folds
        return value[lo:hi] if isinstance(value, torch.Tensor) and value.ndim > 0 else value

    if isinstance(batch, dict):
        return [[{k: cut(v, i) for k, v in batch.items()}] for i in range(folds)]
    if isinstance(batch, tuple):
        return [[tuple(cut(v, i) for v in batch)] for i in range(folds)]
    return [[cut(batch, i)] for i in range(folds)]


def _unfolded(module, x):
    """The layer's input as rows of its weight's columns (float64): tokens for a Linear;
    for a conv, every output position's receptive field, channels then kernel positions
    (torch's unfold order, which is the weight's (in, kernel...) order)."""
    import torch
    import torch.nn.functional as F

    x = x.detach().double()
    if isinstance(module, torch.nn.Linear):
        return x.reshape(-1, x.shape[-1])
    conv1d = isinstance(module, torch.nn.Conv1d)
    if conv1d:
        x = x.unsqueeze(-2)
    if x.ndim == 3:  # an unbatched input
        x = x.unsqueeze(0)
    kernel = (1,) + tuple(module.kernel_size) if conv1d else tuple(module.kernel_size)
    dilation = (1,) + tuple(module.dilation) if conv1d else tuple(module.dilation)
    stride = (1,) + tuple(module.stride) if conv1d else tuple(module.stride)
    if isinstance(module.padding, str):  # "valid" or "same" (stride 1), as torch pads them
        pads = []
        for k, d in zip(reversed(kernel), reversed(dilation)):
            total = d * (k - 1) if module.padding == "same" else 0
            pads += [total // 2, total - total // 2]
    else:
        padding = (0,) + tuple(module.padding) if conv1d else tuple(module.padding)
        pads = [p for q in reversed(padding) for p in (q, q)]
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    if any(pads):
        x = F.pad(x, pads, mode=mode)
    cols = F.unfold(x, kernel, dilation=dilation, stride=stride)  # (N, C * prod(kernel), positions)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def layer_statistics(model, inputs, consts: Sequence[str], *, error_feedback: bool = True,
                     budget: Optional[int] = None, folds: int = FOLDS, damping: Optional[float] = None
                     ) -> LayerStatistics:
    """E[x^2] per input channel of every const with a Linear/Conv module and, for error
    feedback, X^T X of its inputs per fold of the calibration data (one fold when `damping`
    is given: nothing to cross-validate).

    Memory stays within `budget` bytes (default 4 GiB): a layer whose error feedback alone
    would need more (hessian_bytes) is left to activation weighting and named in
    weighted_only; the others are collected in forward passes that each hold at most half the
    budget of matrices, every finished matrix going to a temporary directory."""
    start = time.perf_counter()
    moments, unmapped = input_moments(model, inputs, consts)
    stats = LayerStatistics(moments, unmapped, damping=damping)
    if not error_feedback or not moments:
        stats.seconds = time.perf_counter() - start
        return stats
    budget = budget or (4 << 30)
    modules = _layer_modules(model, list(moments))
    parts = split_folds(inputs, folds) if damping is None else [inputs if isinstance(inputs, list) else [inputs]]
    todo = []
    for c, module in modules.items():
        d = layer_inputs(module)
        if len(parts) < 2 and damping is None:
            stats.weighted_only[c] = ("one calibration sample: error feedback's damping needs at least two to be "
                                      "cross-validated (or give one: --damping)")
        elif getattr(module, "groups", 1) != 1:
            stats.weighted_only[c] = f"a grouped convolution (groups={module.groups})"
        elif hessian_bytes(d, len(parts)) > budget:
            stats.weighted_only[c] = (f"X^T X of its {d} inputs needs {size_text(hessian_bytes(d, len(parts)))}, "
                                      f"over the {size_text(budget)} budget (--max-memory)")
        else:
            todo.append((c, module, d))
    if todo:
        stats._directory = tempfile.mkdtemp(prefix="weightpress-calibration-")
    try:
        while todo:
            batch, held = [], 0
            while todo and (not batch or held + len(parts) * todo[0][2] ** 2 * 8 <= budget // 2):
                batch.append(todo.pop(0))
                held += len(parts) * batch[-1][2] ** 2 * 8
            _accumulate(model, parts, batch, stats)
            stats.passes += 1
    except BaseException:
        stats.close()
        raise
    stats.seconds = time.perf_counter() - start
    return stats


def _accumulate(model, parts, layers, stats: LayerStatistics) -> None:
    """One pass per fold over the calibration inputs, summing X^T X of `layers`' inputs; each
    matrix saved to the statistics' directory."""
    import torch

    sums = {c: [np.zeros((d, d)) for _ in parts] for c, _, d in layers}
    fold = [0]
    hooks = []
    for c, module, _ in layers:
        def hook(mod, args, c=c):
            rows = _unfolded(mod, args[0])
            acc = torch.from_numpy(sums[c][fold[0]])
            acc.addmm_(rows.T, rows)

        hooks.append(module.register_forward_pre_hook(hook))
    try:
        for i, part in enumerate(parts):
            fold[0] = i
            _run_model(model, part)
    finally:
        for h in hooks:
            h.remove()
    for c, _, _ in layers:
        files = []
        for i, h in enumerate(sums.pop(c)):
            if not np.all(np.isfinite(h)):
                raise CalibrationError(f"calibrate: the input of {c} holds NaN or Inf activations")
            path = os.path.join(stats._directory, f"{len(stats.hessian_files)}-{i}.npy")
            np.save(path, h)
            files.append(path)
        stats.hessian_files[c] = files
