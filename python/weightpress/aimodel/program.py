"""A Core AI program (.aimodel) as weightpress reads, edits and runs it, through coreai-core.

    load(path)                    the program of an .aimodel directory
    constants(program)            its coreai.constant ops of float tensors, in program order
    read(op)                      a constant's value as numpy (inline or dense_resource blob)
    replace(op, build)            build(emitter) at the constant's place, its uses rewired to
                                  the result (the dead constant is dropped on save)
    save(program, path)           write an .aimodel directory (main.mlirb, main.hash,
                                  metadata.json) through a staging sibling, then rename
    run(path, inputs)             Apple's Core AI runtime (a CPU runtime on Linux) on one call

An .aimodel holds MLIR bytecode with the weights inside it (no weight.bin): a new weight means
rebuilding the program through coreai-core's bindings and saving it again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import numpy as np

from .emit import Emitter

_FLOAT_TYPES = {"f16": np.float16, "f32": np.float32}


def load(path):
    from coreai.authoring.asset import AIModelAsset

    return AIModelAsset.load(Path(path)).program


def _module(program):
    return program._module._mlir_module  # coreai-core keeps the MLIR module here


def _element_name(op) -> str:
    return str(op.result.type.element_type)


def constants(program) -> list:
    """coreai.constant ops holding float16/float32 tensors."""
    from coreai._compiler.ir import RankedTensorType, WalkResult

    found = []

    def visit(op):
        if op.name == "coreai.constant" and RankedTensorType.isinstance(op.result.type) \
                and _element_name(op) in _FLOAT_TYPES:
            found.append(op)
        return WalkResult.ADVANCE

    _module(program).operation.walk(visit)
    return found


def read(op) -> np.ndarray:
    """The constant's value (a copy), in its float dtype and shape."""
    from coreai._compiler._mlir_libs._coreaiIR import _bindings

    dtype = _FLOAT_TYPES[_element_name(op)]
    shape = list(op.result.type.shape)
    buf = np.zeros(int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    _bindings.compiler.copy_constant_value_to_array(constant_op=op, destination=buf)
    return buf.view(dtype).reshape(shape)


def consumers(op) -> list:
    """The names of the ops that use the constant (coreai.transpose, coreai.conv2d, ...)."""
    return [use.owner.name for use in op.result.uses]


def replace(op, build) -> None:
    """Builds the replacement with build(Emitter()) where the constant is, and rewires every
    use of the constant to it."""
    from coreai._compiler.ir import InsertionPoint

    with op.context, op.location, InsertionPoint(op):
        value = build(Emitter())
    op.result.replace_all_uses_with(value)


def save(program, path) -> None:
    """Writes the .aimodel at `path` through a staging sibling: a reader never sees half of it."""
    path = Path(path)
    staging = path.with_name(f".{path.stem}.staging-{os.getpid()}.aimodel")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        program.save_asset(staging)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(path, inputs: dict, function: str = "main") -> dict:
    """{output name: numpy array} of one call of `function` on Apple's Core AI runtime."""
    import coreai
    from coreai.authoring.asset import AIModelAsset

    async def call():
        async with AIModelAsset.load(Path(path)).executable() as model:
            fn = model.load_function(function)
            out = await fn({k: coreai.runtime.NDArray(np.ascontiguousarray(v)) for k, v in inputs.items()})
            return {k: v.numpy().copy() for k, v in out.items()}

    return asyncio.run(call())
