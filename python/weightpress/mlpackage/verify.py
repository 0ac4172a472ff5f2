"""--verify: the written package read back and decoded, before it is published.

decode() evaluates the constexpr ops that replace one const (docs/formats.md, "The constexpr
ops") from the values as they were serialised (inline or in the staged weight.bin), with
numpy operations in the weight's dtype, as the result objects' decompress() computes them.
The streaming engine compares a digest of that with a digest of what it computed, for
every compressed const, and publishes only when all agree.
"""

from __future__ import annotations

import hashlib
from typing import Dict, List

import numpy as np

from ..errors import WeightFileError
from . import values as V


def digest(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


class VerifyError(WeightFileError):
    """The written package does not decode to what was computed."""


def _value(op, key, reader, produced):
    """An op's parameter: an attribute (iOS16), an inline or blob input, or another op's output."""
    if key in op.attributes and key != "name":
        return V.read_value(op.attributes[key], reader).data
    arg = op.inputs.get(key)
    if arg is None or not arg.arguments:
        return None
    binding = arg.arguments[0]
    if binding.WhichOneof("binding") == "name":
        return produced[binding.name]
    return V.read_value(binding.value, reader).data


def _repeat_to(a: np.ndarray, shape) -> np.ndarray:
    for axis, (have, want) in enumerate(zip(a.shape, shape)):
        if want != have:
            a = np.repeat(a, want // have, axis=axis)
    return a


def _float_dtype(op):
    code = op.outputs[0].type.tensorType.dataType
    return np.dtype(V.TYPES[code][2])


def _lut_to_dense(op, reader, produced):
    dtype = _float_dtype(op)
    if "shape" in op.attributes:  # iOS16: flat LUT, packed indices, explicit shape
        lut = _value(op, "lut", reader, produced)
        shape = tuple(int(v) for v in _value(op, "shape", reader, produced))
        nbits = int(np.log2(lut.size))
        from ..packing import unpack_bits

        idx = unpack_bits(_value(op, "indices", reader, produced), int(np.prod(shape)), nbits)
        return lut[idx.astype(np.intp)].reshape(shape)
    indices = _value(op, "indices", reader, produced).astype(np.intp)
    lut = _value(op, "lut", reader, produced)
    vector_axis = _value(op, "vector_axis", reader, produced)
    c = lut.shape[-1]
    lead = lut.shape[:-2]
    # group index of every position: position // (indices.shape / lut lead shape)
    grid = np.indices(indices.shape)
    flat_group = np.zeros(indices.shape, np.intp)
    for axis, b in enumerate(lead):
        block = indices.shape[axis] // b
        flat_group = flat_group * b + grid[axis] // block
    luts = lut.reshape(-1, lut.shape[-2], c)
    vectors = luts[flat_group, indices]  # [..., c]
    if c == 1:
        return vectors[..., 0].astype(dtype, copy=False)
    axis = int(np.asarray(vector_axis).reshape(-1)[0])
    vectors = np.moveaxis(vectors, -1, axis + 1)  # the vector elements right after their axis
    shape = list(indices.shape)
    shape[axis] *= c
    return vectors.reshape(shape).astype(dtype, copy=False)


def _shift_scale(op, reader, produced):
    data = _value(op, "data", reader, produced)
    scale = _value(op, "scale", reader, produced)
    offset = _value(op, "offset", reader, produced)
    values = data.astype(scale.dtype)
    if offset is not None:
        values = values - _repeat_to(offset, data.shape).astype(scale.dtype)
    return _repeat_to(scale, data.shape) * values


def _affine_dequantize(op, reader, produced):
    q = _value(op, "quantized_data", reader, produced)
    zp = np.asarray(_value(op, "zero_point", reader, produced))
    scale = np.asarray(_value(op, "scale", reader, produced))
    axis = int(np.asarray(_value(op, "axis", reader, produced)).reshape(-1)[0])
    shape = [1] * q.ndim
    if scale.ndim:
        shape[axis] = scale.size
    values = q.astype(scale.dtype)
    if zp.ndim or zp.size:
        values = values - zp.reshape(shape if zp.ndim else ()).astype(scale.dtype)
    return scale.reshape(shape if scale.ndim else ()) * values


def _sparse_to_dense(op, reader, produced):
    nonzero = _value(op, "nonzero_data", reader, produced)
    mask = _value(op, "mask", reader, produced)
    if "shape" in op.attributes:  # iOS16: packed mask bytes and an explicit shape
        shape = tuple(int(v) for v in _value(op, "shape", reader, produced))
        mask = np.unpackbits(mask, count=int(np.prod(shape)), bitorder="little").reshape(shape)
    dense = np.zeros(mask.shape, dtype=nonzero.dtype)
    dense[mask.astype(bool)] = nonzero
    return dense


DECODERS = {
    "constexpr_lut_to_dense": _lut_to_dense,
    "constexpr_blockwise_shift_scale": _shift_scale,
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_sparse_to_dense": _sparse_to_dense,
}


def decode(ops: List, reader) -> np.ndarray:
    """The dense tensor the ops (producer first) compute; the last op's output is the weight."""
    produced: Dict[str, np.ndarray] = {}
    for op in ops:
        decoder = DECODERS.get(op.type)
        if decoder is None:
            raise VerifyError(f"--verify: no decoder for {op.type}")
        produced[op.outputs[0].name] = decoder(op, reader, produced)
    return produced[ops[-1].outputs[0].name]
