"""MIL values in the protobuf program: tensor types, immediate values and weight.bin blobs.

Mirrors how coremltools' MILProtoExporter serialises a const (converters/mil/backend/mil/
helper.py and load.py; docs/formats.md): a value goes to weight.bin when it has at least 10 elements and a
blob-able dtype (should_use_weight_file), else it is stored inline; inline fp16, 8-bit and
sub-byte values (packed LSB-first) and uint32 go to the `bytes` field, fp32 to `floats`,
other integers to `ints`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..packing import pack_bits, unpack_bits
from ..errors import WeightFileError

# MIL_pb2.DataType codes
FLOAT16, FLOAT32, INT8, INT16, INT32, INT4 = 10, 11, 21, 22, 23, 25
UINT8, UINT16, UINT32, UINT4, UINT2, UINT1, UINT6, UINT3 = 31, 32, 33, 35, 36, 37, 38, 39
STRING, BOOL = 2, 1

# MIL dtype code -> (name, bits, numpy dtype holding one element)
TYPES = {
    FLOAT16: ("float16", 16, np.float16), FLOAT32: ("float32", 32, np.float32),
    INT8: ("int8", 8, np.int8), UINT8: ("uint8", 8, np.uint8),
    INT16: ("int16", 16, np.int16), UINT16: ("uint16", 16, np.uint16),
    INT32: ("int32", 32, np.int32), UINT32: ("uint32", 32, np.uint32),
    INT4: ("int4", 4, np.int8), UINT4: ("uint4", 4, np.uint8), UINT2: ("uint2", 2, np.uint8),
    UINT1: ("uint1", 1, np.uint8), UINT6: ("uint6", 6, np.uint8), UINT3: ("uint3", 3, np.uint8),
}
CODES = {name: code for code, (name, _, _) in TYPES.items()}
SUB_BYTE = {INT4, UINT4, UINT2, UINT1, UINT6, UINT3}
IN_BYTES = {FLOAT16, INT4, INT8, UINT1, UINT2, UINT3, UINT4, UINT6, UINT8, UINT32}
SPEC_IOS18 = 9


@dataclass
class Tensor:
    """A typed tensor value: `data` holds one element per entry (sub-byte types unpacked),
    or, with `packed`, a zero-cost view giving the shape while `packed` holds the bytes
    already packed LSB-first (a pruning mask is born packed)."""

    dtype: int  # MIL dtype code
    data: np.ndarray
    packed: Optional[object] = None  # a buffer (numpy array or bytes) of the packed elements

    @property
    def shape(self):
        return tuple(self.data.shape)

    @classmethod
    def prepacked(cls, dtype, shape, packed):
        return cls(dtype, np.broadcast_to(np.zeros((), np.uint8), tuple(shape)), packed)


def tensor_type_of(value):
    t = value.type.tensorType
    return t.dataType, tuple(d.constant.size for d in t.dimensions)


def goes_to_weight_file(dtype: int, count: int, spec_version: int) -> bool:
    """should_use_weight_file: at least 10 elements of a type weight.bin can hold."""
    blobbable = {FLOAT16, FLOAT32, UINT8, INT8} | SUB_BYTE
    if spec_version >= SPEC_IOS18:
        blobbable |= {UINT16, INT16, INT32, UINT32}
    return count >= 10 and dtype in blobbable


def _packed_bytes(tensor: Tensor):
    """The tensor's elements packed LSB-first (a buffer: a numpy array or bytes)."""
    if tensor.packed is not None:
        return tensor.packed
    bits = TYPES[tensor.dtype][1]
    flat = tensor.data.reshape(-1)
    if tensor.dtype == INT4:
        flat = flat.astype(np.int8, copy=False)
    return pack_bits(flat, bits)


def set_tensor_type(proto_type, dtype, shape):
    t = proto_type.tensorType
    t.dataType = dtype
    t.rank = len(shape)
    del t.dimensions[:]
    for n in shape:
        t.dimensions.add().constant.size = int(n)


def make_value(MIL_pb2, tensor: Tensor, spec_version: int, blobs):
    """A MIL Value for `tensor`: a weight.bin blob (written through `blobs`) or inline."""
    value = MIL_pb2.Value()
    set_tensor_type(value.type, tensor.dtype, tensor.shape)
    if goes_to_weight_file(tensor.dtype, tensor.data.size, spec_version):
        if tensor.dtype in SUB_BYTE:
            data = _packed_bytes(tensor)
        else:
            data = np.ascontiguousarray(tensor.data, dtype=TYPES[tensor.dtype][2])
        value.blobFileValue.fileName = "@model_path/weights/weight.bin"
        value.blobFileValue.offset = blobs.write(TYPES[tensor.dtype][0], data, tensor.data.size)
        return value
    field = value.immediateValue.tensor
    if tensor.data.size == 0:  # an empty tensor still names its field
        (field.bytes if tensor.dtype in IN_BYTES else field.floats if tensor.dtype == FLOAT32
         else field.ints).SetInParent()
    elif tensor.dtype in SUB_BYTE:
        field.bytes.values = bytes(_packed_bytes(tensor))
    elif tensor.dtype in IN_BYTES:
        field.bytes.values = np.ascontiguousarray(tensor.data, dtype=TYPES[tensor.dtype][2]).tobytes()
    elif tensor.dtype == FLOAT32:
        field.floats.values.extend(tensor.data.reshape(-1).tolist())
    elif tensor.dtype in (INT32, INT16, UINT16):
        field.ints.values.extend(int(v) for v in tensor.data.reshape(-1))
    else:
        raise ValueError(f"cannot store a {TYPES[tensor.dtype][0]} value inline")
    return value


def scalar_int32(MIL_pb2, v: int):
    value = MIL_pb2.Value()
    value.type.tensorType.dataType = INT32
    value.immediateValue.tensor.ints.values.append(int(v))
    return value


def string_value(MIL_pb2, text: str):
    value = MIL_pb2.Value()
    value.type.tensorType.dataType = STRING
    value.immediateValue.tensor.strings.values.append(text)
    return value


def read_value(value, reader) -> Tensor:
    """The tensor a const's `val` holds, from weight.bin (`reader`) or inline."""
    dtype, shape = tensor_type_of(value)
    if dtype not in TYPES:
        raise WeightFileError(f"unsupported const data type {dtype}")
    count = int(np.prod(shape)) if shape else 1
    name, bits, storage = TYPES[dtype]
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        if dtype in SUB_BYTE:
            blob = reader.blob(value.blobFileValue.offset)
            if blob.dtype != name or blob.element_count() != count:
                raise WeightFileError(f"{reader.path}: blob at {blob.offset} holds {blob.element_count()} {blob.dtype}, "
                                      f"the program expects {count} {name}")
            raw = np.frombuffer(reader.read_bytes(blob), np.uint8)
            data = unpack_bits(raw, count, bits, signed=dtype == INT4)
        else:
            data = reader.read_array(value.blobFileValue.offset, name, count)
        return Tensor(dtype, np.asarray(data, dtype=storage).reshape(shape))
    field = value.immediateValue.tensor
    which = field.WhichOneof("value")
    if which == "bytes":
        raw = np.frombuffer(field.bytes.values, np.uint8)
        expected = (count * bits + 7) // 8
        if raw.size != expected:
            raise WeightFileError(f"inline value holds {raw.size} bytes, its type ({count} {name}) needs {expected}")
        data = unpack_bits(raw, count, bits, signed=dtype == INT4) if dtype in SUB_BYTE else raw.view(storage)
    elif which == "floats" and dtype in (FLOAT16, FLOAT32):
        data = np.array(field.floats.values, dtype=storage)
    elif which == "ints" and np.issubdtype(storage, np.integer) and dtype not in SUB_BYTE:
        wide = np.array(field.ints.values, dtype=np.int64)
        limits = np.iinfo(storage)
        if wide.size and (wide.min() < limits.min or wide.max() > limits.max):
            raise WeightFileError(f"inline {name} value holds integers outside the {name} range")
        data = wide.astype(storage)
    else:
        raise WeightFileError(f"a {name} value stored inline as {which or 'nothing'}")
    if data.size != count:
        raise WeightFileError(f"inline value holds {data.size} elements, its type says {count}")
    return Tensor(dtype, data.reshape(shape))
