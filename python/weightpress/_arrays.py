"""Input coercion shared by the array APIs: numpy or torch in, validated numpy out.

Nothing here loops over elements in Python; the only copies made are the ones the
kernels need (a non-contiguous input, or bfloat16, which numpy cannot hold).
"""

from __future__ import annotations

import contextlib

import numpy as np

from .errors import NonFiniteWeightError

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def _from_torch(weight, op: str):
    """Zero-copy view of a CPU torch tensor through DLPack (bfloat16 widens to float32)."""
    import torch  # only reached when a torch tensor was passed

    t = weight.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()  # exact: every bfloat16 value is a float32 value
    if not t.is_contiguous():
        t = t.contiguous()
    try:
        return np.from_dlpack(t)
    except (TypeError, RuntimeError, BufferError) as exc:  # pragma: no cover - exotic tensors
        raise TypeError(f"{op}: cannot read torch tensor of dtype {t.dtype}: {exc}") from None


def as_weight(weight, op: str, *, min_rank: int = 1, finite: bool = True) -> np.ndarray:
    """Returns `weight` as a C-contiguous float16/float32 numpy array, or raises.

    Rejects non-float dtypes, empty arrays, ranks below `min_rank`, and NaN/Inf, each
    with a message that names the operation and the offending value. finite=False leaves
    the NaN/Inf check to a kernel that detects them in its own pass (see kernel_call).
    """
    if type(weight).__module__.startswith("torch"):
        weight = _from_torch(weight, op)
    if not isinstance(weight, np.ndarray):
        if isinstance(weight, (list, tuple)) or np.isscalar(weight):
            raise TypeError(f"{op}: expected a numpy array or torch tensor, got {type(weight).__name__}")
        try:
            weight = np.asarray(weight)
        except Exception:
            raise TypeError(f"{op}: expected a numpy array or torch tensor, got {type(weight).__name__}") from None
    if weight.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: weight dtype must be float16 or float32, got {weight.dtype}")
    if weight.ndim < min_rank:
        raise ValueError(f"{op}: weight must have rank >= {min_rank}, got shape {weight.shape}")
    if weight.size == 0:
        raise ValueError(f"{op}: weight is empty (shape {weight.shape})")
    weight = np.ascontiguousarray(weight)
    if finite:
        check_finite(weight, op)
    return weight


def kernel_call(fn, weight: np.ndarray, op: str):
    """Runs a kernel that refuses NaN/Inf in its own pass over the data (raising
    _core.NonFiniteError) and names the first offending element (NonFiniteWeightError)."""
    from . import _core

    try:
        return fn()
    except _core.NonFiniteError:
        check_finite(weight, op)
        raise


def first_nonfinite(values: np.ndarray):
    """(flat index, value) of the first NaN/Inf in values, or None."""
    finite = np.isfinite(values)
    if finite.all():
        return None
    bad = int(np.flatnonzero(~finite.reshape(-1))[0])
    return bad, values.reshape(-1)[bad]


def check_finite(weight: np.ndarray, op: str, what: str = "weight") -> None:
    found = first_nonfinite(weight)
    if found is not None:
        raise NonFiniteWeightError(op, found[1], found[0], what=what)


def normalize_axis(axis: int, ndim: int, op: str, name: str = "channel_axis") -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{op}: {name} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: {name} {axis} is out of range for a rank-{ndim} weight")
    return int(axis) % ndim


def as_sample_weight(sample_weight, weight: np.ndarray, op: str) -> np.ndarray:
    """Per-element importance: same shape as the weight, finite, >= 0, as float64."""
    if type(sample_weight).__module__.startswith("torch"):
        sample_weight = _from_torch(sample_weight, op)
    sw = np.asarray(sample_weight)
    if sw.shape != weight.shape:
        raise ValueError(f"{op}: sample_weight shape {sw.shape} does not match weight shape {weight.shape}")
    if not np.issubdtype(sw.dtype, np.floating) and not np.issubdtype(sw.dtype, np.integer):
        raise TypeError(f"{op}: sample_weight must be numeric, got {sw.dtype}")
    sw = np.ascontiguousarray(sw, dtype=np.float64)
    check_finite(sw, op, "sample_weight")
    if (sw < 0).any():
        raise ValueError(f"{op}: sample_weight must be >= 0, got {sw.min()}")
    return sw


_default_threads = 0  # 0: all cores (the kernels' own choice)


def set_num_threads(num_threads) -> None:
    """Default worker-thread count for every call that does not pass num_threads (None or 0:
    all cores). Used by the command line's --threads and by the coremltools hooks."""
    global _default_threads
    _default_threads = 0 if not num_threads else threads_arg(num_threads, "set_num_threads")


@contextlib.contextmanager
def num_threads_default(num_threads):
    """The default thread count inside the block (None: leave it), restored after."""
    global _default_threads
    saved = _default_threads
    if num_threads:
        set_num_threads(num_threads)
    try:
        yield
    finally:
        _default_threads = saved


def threads_arg(num_threads, op: str) -> int:
    if num_threads is None:
        return _default_threads
    if not isinstance(num_threads, (int, np.integer)) or isinstance(num_threads, bool) or num_threads < 1:
        raise ValueError(f"{op}: num_threads must be a positive int or None, got {num_threads!r}")
    return int(num_threads)


def sum_squared_error(dense: np.ndarray, weight: np.ndarray) -> float:
    """SSE of a decompressed tensor against the original, accumulated in float64."""
    diff = (dense.astype(np.float64) - weight.astype(np.float64)).reshape(-1)
    return float(np.dot(diff, diff))
