"""Calibration data: what each compressed layer sees, from the source torch model.

    resolve(calibration)            (model, inputs) from "minilm", "MODULE:FUNCTION", a
                                    callable returning them, or the pair itself
    input_moments(model, inputs, consts)
                                    E[x^2] per input channel of every const whose torch module
                                    (Linear, Conv1d, Conv2d) is found, and the consts that were not
    column_weights(moments, shape, in_axis)
                                    the per-element importance of a weight: its input channel's
                                    E[x^2], repeated along the other axes
    choose_damping(result, hessian_folds)
                                    error feedback's damping, by cross-validation over folds of
                                    the calibration data (never the evaluation data)

A weight error on input channel j changes a layer's output by that error times x_j, so its
expected squared effect is the error squared times E[x_j^2]. K-means weighted by it
(activation-weighted palettization) spends the LUT's entries where the output is sensitive,
in exactly the same format. Inputs are the same contract as `plan --torch-model`.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

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


def input_moments(model, inputs, consts: Sequence[str]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """({const: E[x^2] per input channel}, [consts without a Linear/Conv module])."""
    import torch

    from .plan.quality import param_for_const, torch_activations

    if not isinstance(model, torch.nn.Module):
        raise CalibrationError(f"calibrate: the model must be a torch.nn.Module, got {type(model).__name__}")
    params = [n for n, _ in model.named_parameters()]
    modules = dict(model.named_modules())
    mapped = []
    for c in consts:
        p = param_for_const(c, params)
        module = modules.get(p.rsplit(".", 1)[0] if p and "." in p else "") if p else None
        if p and p.endswith(".weight") and isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            mapped.append(c)
    try:
        moments = torch_activations(model, inputs, mapped)
    except CalibrationError:
        raise
    except Exception as exc:  # the model refusing its own sample inputs (wrong shape, dtype)
        raise CalibrationError(f"calibrate: running the model on its sample inputs failed: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
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
DAMPING_CANDIDATES = (0.01, 0.03, 0.1, 0.3, 1.0)


def choose_damping(result, hessian_folds, candidates=DAMPING_CANDIDATES, num_threads=None):
    """The damping for `result.error_feedback` chosen on calibration data alone, by
    cross-validation: for each fold, error feedback fitted on the other folds' X^T X is scored
    on this fold's, tr(dW H_fold dW^T) with dW the weight's change; the candidate whose total is
    least wins (the smaller on ties). Returns (damping, {candidate: total})."""
    folds = [np.asarray(h, dtype=np.float64) for h in hessian_folds]
    if len(folds) < 2:
        raise ValueError("choose_damping: give at least two folds of X^T X")
    reference = np.asarray(result._reference, dtype=np.float64)
    total = sum(folds)
    scores = {}
    for damping in candidates:
        score = 0.0
        for h in folds:
            fitted = result.error_feedback(total - h, damping=damping, num_threads=num_threads)
            dw = reference - fitted.decompress().astype(np.float64)
            score += float(np.sum((dw @ h) * dw))
        scores[damping] = score
    best = min(candidates, key=lambda d: (scores[d], d))
    return best, scores
