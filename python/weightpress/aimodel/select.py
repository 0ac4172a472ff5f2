"""Which constants of a Core AI program are weights, and their channel axes: coreai-opt's
rules (coreai_utils/_utils/graph_utils.py), restated.

    WEIGHT_CONSUMERS          the ops whose constant operands are compressed
    THRESHOLD                 coreai-opt's default: constants of more than 1024 elements
    selected(op, threshold)   a float constant over the threshold whose every consumer is a
                              weight consumer (any consumer once it reaches 1e8 elements)
    io_axes(op)               (input axis, output axis) from the consumers, None where they
                              disagree
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

WEIGHT_CONSUMERS = frozenset({"coreai.batch_matmul", "coreai.conv2d", "coreai.decomposable.broadcasting_batch_matmul",
                              "coreai.gather_nd", "coreai.transpose"})
THRESHOLD = 1024
_MATMULS = ("coreai.batch_matmul", "coreai.decomposable.broadcasting_batch_matmul")


def selected(op, threshold: int = THRESHOLD) -> bool:
    size = int(np.prod(list(op.result.type.shape)))
    if size <= threshold:
        return False
    uses = [use.owner.name for use in op.result.uses]
    return all(name in WEIGHT_CONSUMERS for name in uses) or size >= 100_000_000


def _operand_index(consumer, producer) -> int:
    return next(i for i, operand in enumerate(consumer.operands) if operand.owner == producer)


def _matmul_axes(matmul, producer) -> Tuple[int, int]:
    """(input, output) axes of what `producer` feeds a matmul: as y (operand 1) its rows are
    the inputs, as x (operand 0) its columns are."""
    return (-2, -1) if _operand_index(matmul, producer) == 1 else (-1, -2)


def io_axes(op) -> Tuple[Optional[int], Optional[int]]:
    rank = op.result.type.rank
    inputs, outputs = set(), set()
    for use in op.result.uses:
        consumer = use.owner
        in_axis, out_axis = 1, 0
        if consumer.name in _MATMULS:
            in_axis, out_axis = _matmul_axes(consumer, op)
        elif consumer.name == "coreai.transpose":
            # a transposed weight: the axes the matmuls after it see, swapped back
            seen = {_matmul_axes(after.owner, consumer) for after in consumer.result.uses
                    if after.owner.name in _MATMULS}
            if len(seen) == 1:
                after_in, after_out = seen.pop()
                in_axis, out_axis = after_out, after_in
        inputs.add(in_axis % rank)
        outputs.add(out_axis % rank)
    in_axis = inputs.pop() if len(inputs) == 1 else (1 if not inputs else None)
    out_axis = outputs.pop() if len(outputs) == 1 else (0 if not outputs else None)
    return in_axis, out_axis
