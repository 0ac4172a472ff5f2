"""The constexpr ops coremltools 9.0 writes for a compressed const, as protobuf Operations.

iOS16/17 programs carry an op's parameters as attributes; iOS18+ programs as inputs, which
lets one constexpr op feed another. Names follow coremltools: the op replacing const C is
C_palettized / C_quantized / C_sparsified, and with a per-channel scale the scale op is
C_palettized_pcs (docs/formats.md, "The constexpr ops"). Every value goes to weight.bin or
inline by coremltools' rule (values.make_value).
"""

from __future__ import annotations

import numpy as np

from . import values as V

IOS18 = 9
IOS26 = 10
QUANT_CODES = {"int4": V.INT4, "uint4": V.UINT4, "int8": V.INT8, "uint8": V.UINT8}


class Emitter:
    def __init__(self, MIL_pb2, spec_version: int, blobs):
        self.MIL = MIL_pb2
        self.spec_version = spec_version
        self.blobs = blobs

    # ---------------------------------------------------------------- building blocks
    def _op(self, op_type, name, dtype, shape):
        op = self.MIL.Operation()
        op.type = op_type
        out = op.outputs.add()
        out.name = name
        V.set_tensor_type(out.type, dtype, shape)
        op.attributes["name"].CopyFrom(V.string_value(self.MIL, name))
        return op

    def _value(self, tensor):
        return V.make_value(self.MIL, tensor, self.spec_version, self.blobs)

    def _input(self, op, key, tensor=None, ref=None, scalar=None):
        binding = op.inputs[key].arguments.add()
        if ref is not None:
            binding.name = ref
        elif scalar is not None:
            binding.value.CopyFrom(V.scalar_int32(self.MIL, scalar))
        else:
            binding.value.CopyFrom(self._value(tensor))

    def _attr(self, op, key, tensor=None, scalar=None):
        value = V.scalar_int32(self.MIL, scalar) if scalar is not None else self._value(tensor)
        op.attributes[key].CopyFrom(value)

    # ---------------------------------------------------------------- methods
    def palettize(self, name, dtype, shape, r):
        """PalettizeResult -> ops (in program order); the last one's output replaces the const."""
        if self.spec_version < IOS18:
            ios16 = r.ios16
            op = self._op("constexpr_lut_to_dense", f"{name}_palettized", dtype, shape)
            self._attr(op, "indices", V.Tensor(V.UINT8, ios16.indices))
            self._attr(op, "lut", V.Tensor(dtype, ios16.lut))
            self._attr(op, "shape", V.Tensor(V.UINT32, ios16.shape))
            return [op]
        indices = V.Tensor(V.CODES[f"uint{r.nbits}"], r.indices)
        if r.per_channel_scale is None:
            op = self._op("constexpr_lut_to_dense", f"{name}_palettized", dtype, shape)
            self._lut_inputs(op, indices, V.Tensor(dtype, r.lut), r.vector_axis)
            return [op]
        if self.spec_version < IOS26:  # the scale folded into a LUT repeated per scale entry
            lut = r.emitted_lut()
            scale_op = self._op("constexpr_blockwise_shift_scale", f"{name}_palettized", dtype, lut.shape)
            self._input(scale_op, "data", V.Tensor(dtype, lut))
            self._input(scale_op, "scale", V.Tensor(dtype, r.per_channel_scale.reshape(r.per_channel_scale.shape + (1, 1))))
            lut_op = self._op("constexpr_lut_to_dense", f"{name}_palettized_pcs", dtype, shape)
            self._input(lut_op, "indices", indices)
            self._input(lut_op, "lut", ref=f"{name}_palettized")
            if r.vector_axis is not None:
                self._input(lut_op, "vector_axis", scalar=r.vector_axis)
            return [scale_op, lut_op]
        lut_op = self._op("constexpr_lut_to_dense", f"{name}_palettized", dtype, shape)
        self._lut_inputs(lut_op, indices, V.Tensor(dtype, r.lut), r.vector_axis)
        scale_op = self._op("constexpr_blockwise_shift_scale", f"{name}_palettized_pcs", dtype, shape)
        self._input(scale_op, "data", ref=f"{name}_palettized")
        self._input(scale_op, "scale", V.Tensor(dtype, r.per_channel_scale))
        return [lut_op, scale_op]

    def _lut_inputs(self, op, indices, lut, vector_axis):
        self._input(op, "indices", indices)
        self._input(op, "lut", lut)
        if vector_axis is not None:
            self._input(op, "vector_axis", scalar=vector_axis)

    def quantize(self, name, dtype, shape, r):
        code = QUANT_CODES[r.dtype]
        if self.spec_version < IOS18:
            q = r.ios16
            op = self._op("constexpr_affine_dequantize", f"{name}_quantized", dtype, shape)
            self._attr(op, "axis", scalar=q.axis)
            self._attr(op, "quantized_data", V.Tensor(code, q.quantized_data))
            self._attr(op, "scale", V.Tensor(dtype, np.asarray(q.scale)))
            self._attr(op, "zero_point", V.Tensor(code, np.asarray(q.zero_point)))
            return [op]
        op = self._op("constexpr_blockwise_shift_scale", f"{name}_quantized", dtype, shape)
        data = V.Tensor.prepacked(code, shape, r.packed_data) if r.nbits < 8 else V.Tensor(code, r.data)
        self._input(op, "data", data)
        self._input(op, "scale", V.Tensor(dtype, r.scale))
        if r.offset is not None:
            self._input(op, "offset", V.Tensor(code, r.offset))
        return [op]

    def prune(self, name, dtype, shape, r):
        if self.spec_version < IOS18:
            op = self._op("constexpr_sparse_to_dense", f"{name}_sparsified", dtype, shape)
            self._attr(op, "mask", V.Tensor(V.UINT8, r.packed_mask))
            self._attr(op, "nonzero_data", V.Tensor(dtype, r.nonzero_data))
            self._attr(op, "shape", V.Tensor(V.UINT32, np.array(shape, dtype=np.uint32)))
            return [op]
        op = self._op("constexpr_sparse_to_dense", f"{name}_sparsified", dtype, shape)
        self._input(op, "mask", V.Tensor.prepacked(V.UINT1, shape, r.packed_mask))
        self._input(op, "nonzero_data", V.Tensor(dtype, r.nonzero_data))
        return [op]
