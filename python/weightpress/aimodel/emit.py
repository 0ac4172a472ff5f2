"""Core AI ops from weightpress's compressed parts: the .aimodel twin of mlpackage.emit.

    Emitter.palettize(r)   coreai.lut_to_dense(indices uiN, lut [.., 2^n, V], axis si16)
    Emitter.quantize(r)    coreai.blockwise_shift_scale(data, scale, offset1 = zero point,
                           offset2 = 0)
    Emitter.prune(r)       coreai.build_sparse_with_bitmask(values 1-D, mask ui1) then
                           coreai.sparse_with_bitmask_to_dense

Each verb builds its constants and ops at the current MLIR insertion point (the caller holds
the context, location and insertion point of the weight constant it replaces) and returns the
MLIR value of the dense weight. The numbers are Core ML's iOS18 ones: the same LUTs, indices,
scales, zero points and masks, and the same LSB-first packing of sub-byte integers, which Core
AI's constants take as they are (the elements attribute of a uiN / siN tensor holds the packed
bytes). Needs coreai-core (imported on first use).
"""

from __future__ import annotations

import numpy as np


def _mlir():
    # coreai.authoring first: the dialect's constant module imports it (coreai-core's order)
    from coreai import authoring
    from coreai._compiler._mlir_libs._coreaiIR._bindings.mlir.dialects.coreai import create_elements_attr
    from coreai._compiler.dialects._coreai_ops_gen import ConstantOp
    from coreai._compiler.ir import F16Type, F32Type, IntegerType, Location, RankedTensorType

    return authoring, create_elements_attr, ConstantOp, F16Type, F32Type, IntegerType, Location, RankedTensorType


class Emitter:
    """Builds the ops that decompress one weight, at the caller's insertion point."""

    def __init__(self):
        (self.authoring, self._elements, self._constant_op, self._f16, self._f32, self._integer, self._location,
         self._tensor) = _mlir()

    # ---------------------------------------------------------------- constants
    def _element_type(self, dtype):
        dtype = np.dtype(dtype)
        if dtype == np.float16:
            return self._f16.get()
        if dtype == np.float32:
            return self._f32.get()
        if dtype.kind in "iu":
            bits = dtype.itemsize * 8
            return self._integer.get_signed(bits) if dtype.kind == "i" else self._integer.get_unsigned(bits)
        raise ValueError(f"aimodel: no Core AI element type for {dtype}")

    def _const(self, shape, element_type, payload):
        attr = self._elements(self._location.unknown(), self._tensor.get(list(shape), element_type),
                              np.ascontiguousarray(payload))
        return self._constant_op(value=attr).result

    def dense(self, array) -> object:
        """A constant holding `array` as it is (float16/32, int8/16/32, uint8/16/32)."""
        array = np.asarray(array)
        if array.ndim == 0:
            array = array.reshape(1)
        return self._const(array.shape, self._element_type(array.dtype), array)

    def packed(self, packed_bytes, shape, bits: int, signed: bool) -> object:
        """A uN / siN constant of `shape` from bytes already packed LSB-first."""
        element = self._integer.get_signed(bits) if signed else self._integer.get_unsigned(bits)
        return self._const(shape, element, np.asarray(packed_bytes, dtype=np.uint8))

    def _wrap(self, value):
        from coreai.authoring.operation import Value

        return Value._from_mlir(value)  # coreai-core's facade over an MLIR value

    @staticmethod
    def _unwrap(value):
        return value._to_mlir() if hasattr(value, "_to_mlir") else value

    # ---------------------------------------------------------------- verbs
    def quantize(self, r) -> object:
        """blockwise_shift_scale(data, scale, zero point, 0): scale * (data - zero point), the
        scale in the weight's dtype, every operand of the weight's rank."""
        from ..packing import pack_bits

        shape, bits, signed = r.data.shape, r.nbits, r.signed
        data = self.packed(r.packed_data, shape, bits, signed) if bits < 8 else self.dense(
            r.data.astype(np.int8 if signed else np.uint8))
        scale = np.asarray(r.scale)
        zero = np.zeros(scale.shape, dtype=np.int8 if signed else np.uint8) if r.offset is None \
            else np.asarray(r.offset).astype(np.int8 if signed else np.uint8)
        offset1 = self.packed(pack_bits(zero, bits), scale.shape, bits, signed) if bits < 8 else self.dense(zero)
        offset2 = self.dense(np.zeros(scale.shape, dtype=scale.dtype))
        out = self.authoring.blockwise_shift_scale(self._wrap(data), self._wrap(self.dense(scale)),
                                                   self._wrap(offset1), self._wrap(offset2))
        return self._unwrap(out)

    def palettize(self, r) -> object:
        """lut_to_dense(indices, lut, axis): the LUT in iOS18's layout, the axis the vector
        axis (0 for scalar LUTs)."""
        if r.per_channel_scale is not None:
            raise NotImplementedError("aimodel: LUTs with a per-channel scale are not emitted yet")
        indices = self.packed(r.packed_indices, r.indices.shape, r.nbits, False)
        lut = self.dense(np.asarray(r.lut))
        axis = self._const([], self._integer.get_signed(16),
                           np.array([r.vector_axis if r.vector_axis is not None else 0], dtype=np.int16))
        out = self.authoring.lut_to_dense(self._wrap(indices), self._wrap(lut), self._wrap(axis))
        return self._unwrap(out)

    def prune(self, r) -> object:
        """build_sparse_with_bitmask(the stored values, the mask) -> sparse_with_bitmask_to_dense."""
        values = self.dense(np.asarray(r.nonzero_data).reshape(-1))
        mask = self.packed(r.packed_mask, r.shape, 1, False)
        sparse = self.authoring.build_sparse_with_bitmask(self._wrap(values), self._wrap(mask))
        return self._unwrap(self.authoring.sparse_with_bitmask_to_dense(sparse))
