"""Structure-aware mutations for the binary inputs (libFuzzer custom mutators).

Byte-level mutation of a protobuf or of weight.bin mostly yields inputs rejected at the first
check (a parse error, a bad sentinel), so the deeper readers -- the program walk, the blob
references, the op emission -- would barely be reached. These mutators decode the input,
change one field the way a damaged or hostile file would (a dtype code, a dimension, a blob
offset, an op's outputs, a size of 2^60 ...) and re-encode it; a share of the mutations stay
byte-level (atheris.Mutate), so malformed encodings are still tried.
"""

from __future__ import annotations

import random
import struct

import atheris

import targets

INTERESTING_U64 = [0, 1, 2, 7, 63, 64, 65, 4096, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
                   1 << 40, 1 << 60, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
OP_TYPES = ["const", "linear", "conv", "conv_transpose", "matmul", "reshape", "constexpr_lut_to_dense",
            "constexpr_blockwise_shift_scale", "constexpr_sparse_to_dense", "", "add"]
MIL_DTYPES = [0, 1, 2, 10, 11, 13, 14, 21, 22, 23, 25, 31, 32, 33, 35, 36, 37, 38, 39, 40, 99]


def _bytewise(data, max_size, seed):
    return atheris.Mutate(data, max_size)


# ------------------------------------------------------------------------- the spec
def _ops(block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _ops(inner)


def _all_ops(model):
    return [op for f in model.mlProgram.functions.values() for b in f.block_specializations.values() for op in _ops(b)]


def _mutate_op(rng, model, op):
    consts = [o for o in _all_ops(model) if o.type == "const" and o.outputs]
    choice = rng.randrange(12)
    val = op.attributes.get("val")
    if choice == 0:
        op.type = rng.choice(OP_TYPES)
    elif choice == 1 and op.outputs:
        del op.outputs[rng.randrange(len(op.outputs))]
    elif choice == 2 and op.outputs:
        op.outputs[0].name = rng.choice(["", "x", consts[0].outputs[0].name if consts else "y"])
    elif choice == 3 and val is not None:
        val.type.tensorType.dataType = rng.choice(MIL_DTYPES)
    elif choice == 4 and val is not None:
        dims = val.type.tensorType.dimensions
        if dims and rng.random() < 0.7:
            dims[rng.randrange(len(dims))].constant.size = rng.choice(INTERESTING_U64[:16])
        elif dims and rng.random() < 0.5:
            del dims[rng.randrange(len(dims))]
        else:
            dims.add().constant.size = rng.choice([1, 2, 16])
    elif choice == 5 and val is not None and val.WhichOneof("value") == "blobFileValue":
        val.blobFileValue.offset = rng.choice(INTERESTING_U64 + [64 * rng.randrange(200)])
    elif choice == 6 and val is not None:
        if rng.random() < 0.5:
            val.blobFileValue.fileName = rng.choice(["@model_path/weights/other.bin", "", "/etc/passwd"])
        else:
            val.immediateValue.tensor.bytes.values = bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
    elif choice == 7:
        for key in list(op.attributes.keys()):
            if rng.random() < 0.5:
                del op.attributes[key]
    elif choice == 8 and op.inputs:
        key = rng.choice(list(op.inputs.keys()))
        arg = op.inputs[key]
        if arg.arguments and rng.random() < 0.6:
            arg.arguments[0].name = rng.choice(["missing"] + [c.outputs[0].name for c in consts])
        else:
            del op.inputs[key]
    elif choice == 9 and val is not None:
        val.type.tensorType.rank = rng.choice([0, 1, 5, -1])
    elif choice == 10 and val is not None:
        val.ClearField("type")
    else:
        for key in list(op.inputs.keys()):
            arg = op.inputs[key]
            for binding in arg.arguments:
                if binding.WhichOneof("binding") == "value":
                    binding.value.immediateValue.tensor.bools.values[:] = []


def _mutate_model(rng, model):
    choice = rng.randrange(10)
    functions = model.mlProgram.functions
    if choice == 0:
        model.specificationVersion = rng.choice([0, 1, 6, 7, 8, 9, 10, 11, 12, (1 << 31) - 1])
    elif choice == 1 and functions:
        name = rng.choice(list(functions.keys()))
        functions[name].opset = rng.choice(["CoreML5", "CoreML7", "CoreML8", "CoreML9", ""])
    elif choice == 2 and functions:
        # a second function sharing the first's blobs (the multifunction layout)
        name = next(iter(functions.keys()))
        functions[rng.choice(["other", name + "_2"])].CopyFrom(functions[name])
        model.mlProgram.attributes  # noqa: B018 (touch)
    elif choice == 3 and functions:
        del functions[rng.choice(list(functions.keys()))]
    else:
        ops = _all_ops(model)
        if ops:
            _mutate_op(rng, model, rng.choice(ops))


def mutate_spec(data, max_size, seed):
    from weightpress.mlpackage.proto import modules

    rng = random.Random(seed)
    if rng.random() < 0.25:
        return _bytewise(data, max_size, seed)
    Model_pb2, _ = modules()
    model = Model_pb2.Model()
    try:
        model.ParseFromString(data)
    except Exception:
        return _bytewise(data, max_size, seed)
    for _ in range(rng.randrange(1, 4)):
        _mutate_model(rng, model)
    out = model.SerializeToString()
    return out if len(out) <= max_size else _bytewise(data, max_size, seed)


# ------------------------------------------------------------------------- weight.bin
def _metadata_offsets(data):
    return [o for o in range(64, len(data) - 63, 64) if data[o:o + 4] == b"\xef\xbe\xad\xde"]


def mutate_weights(data, max_size, seed):
    rng = random.Random(seed)
    if rng.random() < 0.25 or len(data) < 64:
        return _bytewise(data, max_size, seed)
    buf = bytearray(data)
    blobs = _metadata_offsets(data)
    choice = rng.randrange(6)
    if choice == 0:  # header: count, version
        struct.pack_into("<I", buf, rng.choice([0, 4]), rng.choice(INTERESTING_U64[:12]) & 0xFFFFFFFF)
    elif choice == 1:  # truncate or extend
        cut = rng.randrange(len(buf) + 1)
        buf = buf[:cut] if rng.random() < 0.7 else buf + bytes(rng.randrange(1, 200))
    elif blobs:
        at = rng.choice(blobs)
        field, fmt = rng.choice([(0, "<I"), (4, "<I"), (8, "<Q"), (16, "<Q"), (24, "<Q"), (32, "<Q")])
        value = rng.choice(INTERESTING_U64 + [len(data), len(data) - at, at + 64])
        if fmt == "<I":
            value &= 0xFFFFFFFF
        struct.pack_into(fmt, buf, at + field, value)
    return bytes(buf[:max_size])


# ------------------------------------------------------------------------- a whole package
def mutate_package(data, max_size, seed):
    rng = random.Random(seed)
    manifest, spec, weights = targets.split_package(data)
    manifest = manifest or b""
    spec = spec or b""
    weights = weights or b""
    part = rng.randrange(3)
    budget = max(0, max_size - 8 - len(manifest) - len(spec) - len(weights))
    if part == 0:
        manifest = _bytewise(manifest, len(manifest) + budget, seed)
    elif part == 1:
        spec = mutate_spec(spec, len(spec) + budget, seed)
    else:
        weights = mutate_weights(weights, len(weights) + budget, seed)
    return targets.join_package(manifest, spec, weights)[:max_size]


# ------------------------------------------------------------------------- recipes (JSON)
JSON_VALUES = [None, True, 0, -1, 1 << 62, 1e308, float("nan"), "", "palettize:4", "palettize:4/g0",
               "quantize:int4/b0", "quantize:int3", "keep", "x" * 300, [], [1, 2], [0] * 9, {}, {"a": 1}]


def _json_nodes(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_nodes(v, path + (i,))


def mutate_recipe(data, max_size, seed):
    """Replaces one node of the recipe's JSON tree (a field's type, a label, a shape entry, a
    whole object) or deletes a key; byte-level otherwise (or when the input is not JSON)."""
    import json

    rng = random.Random(seed)
    try:
        tree = json.loads(data)
    except (ValueError, RecursionError):
        return _bytewise(data, max_size, seed)
    if rng.random() < 0.2:
        return _bytewise(data, max_size, seed)
    nodes = list(_json_nodes(tree))
    path, _ = rng.choice(nodes)
    if not path:
        tree = rng.choice(JSON_VALUES)
    else:
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.25:
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(JSON_VALUES)
    out = json.dumps(tree).encode()
    return out[:max_size]


MUTATORS = {"spec": mutate_spec, "weights": mutate_weights, "package": mutate_package, "recipe": mutate_recipe}
