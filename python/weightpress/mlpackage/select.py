"""Which consts coremltools 9.0 compresses, with which config, along which axes.

A port (docs/formats.md, "Which consts are compressed") of the selection logic of
optimize/coreml/_quantization_passes.py
(AbstractCompressionPass.need_compress_const and each pass's transform_op guards),
_config.py (OptimizationConfig._get_const_op_config) and optimize/_utils.py
(select_input_output_channel_axis, infer_block_sizes) onto the protobuf program, so the
streaming path makes the same choices without loading the program into pyMIL.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..config import MethodConfig, OpConfig, PalettizeConfig, QuantizeConfig
from ..errors import ConfigError, PackageError


def all_ops(block):
    """Every op of a block, nested blocks' ops before the op that holds them."""
    for op in block.operations:
        for inner in op.blocks:
            yield from all_ops(inner)
        yield op


@dataclass
class Consumer:
    op: object  # MIL_pb2.Operation
    input: str


class Graph:
    """Consumers of every value name in one function (nested blocks included)."""

    def __init__(self, function_block):
        self.consumers: Dict[str, List[Consumer]] = defaultdict(list)
        self.consts: Dict[str, object] = {}
        self._walk(function_block)

    def _walk(self, block):
        for op in block.operations:
            if op.type == "const":
                self.consts[op.outputs[0].name] = op
            for key, arg in op.inputs.items():
                for binding in arg.arguments:
                    if binding.WhichOneof("binding") == "name":
                        self.consumers[binding.name].append(Consumer(op, key))
            for inner in op.blocks:
                self._walk(inner)

    def const_bool(self, consumer_op, key) -> bool:
        """An op's boolean input given by a const (matmul's transpose_x / transpose_y)."""
        arg = consumer_op.inputs.get(key)
        if arg is None or not arg.arguments:
            return False
        binding = arg.arguments[0]
        value = binding.value if binding.WhichOneof("binding") == "value" else None
        if value is None:
            const = self.consts.get(binding.name)
            if const is None:
                return False
            value = const.attributes["val"]
        bools = value.immediateValue.tensor.bools.values
        if len(bools) != 1:
            raise PackageError(f"{op_name(consumer_op)}: {key} must be one boolean, got {len(bools)} values")
        return bool(bools[0])


def op_name(op) -> str:
    """The op's name attribute (coremltools' op.name), else its first output's name."""
    attr = op.attributes.get("name")
    if attr is not None and attr.immediateValue.tensor.strings.values:
        return attr.immediateValue.tensor.strings.values[0]
    return op.outputs[0].name if op.outputs else ""


def const_config(config: MethodConfig, const_op, graph: Graph, function: Optional[str] = None) -> Optional[OpConfig]:
    """OptimizationConfig._get_const_op_config: the const's own name, else its consumers'
    (op name, then op type, then global); consumers disagreeing is an error. In a
    multifunction package an op name may be qualified as "function::op name", which wins
    over the bare name within that function."""
    name = const_op.outputs[0].name
    names = config.op_name_configs

    def by_name(op_name):
        if function is not None and f"{function}::{op_name}" in names:
            return True, names[f"{function}::{op_name}"]
        if op_name in names:
            return True, names[op_name]
        return False, None

    found, cfg = by_name(name)
    if found:
        return cfg
    consumers = graph.consumers.get(name, [])
    if not consumers:
        return None
    configs = []
    for c in consumers:
        found, cfg = by_name(op_name(c.op))
        if found:
            configs.append(cfg)
        elif c.op.type in config.op_type_configs:
            configs.append(config.op_type_configs[c.op.type])
        else:
            configs.append(config.global_config)
    for c, cfg in zip(consumers, configs):
        if cfg != configs[0]:
            raise ConfigError(f"compression config conflict between ops {op_name(consumers[0].op)} and "
                              f"{op_name(c.op)} consuming const {name}")
    return configs[0]


def io_axes(const_name: str, rank: int, graph: Graph) -> Tuple[Optional[int], Optional[int]]:
    """select_input_output_channel_axis: (input axis, output axis) from the consumers, None
    where consumers disagree."""
    outputs, inputs = set(), set()
    for c in graph.consumers.get(const_name, []):
        out_axis, in_axis = 0, 1
        if c.op.type == "conv_transpose":
            out_axis, in_axis = 1, 0
        elif c.op.type == "matmul":
            if c.input == "y":
                out_axis, in_axis = (-2, -1) if graph.const_bool(c.op, "transpose_y") else (-1, -2)
            else:
                out_axis, in_axis = (-1, -2) if graph.const_bool(c.op, "transpose_x") else (-2, -1)
        outputs.add(out_axis + rank if out_axis < 0 else out_axis)
        inputs.add(in_axis + rank if in_axis < 0 else in_axis)
    out_axis = None if len(outputs) > 1 else (outputs.pop() if outputs else 0)
    in_axis = None if len(inputs) > 1 else (inputs.pop() if inputs else 1)
    return in_axis, out_axis


def block_sizes(cfg: OpConfig, shape, in_axis, out_axis):
    """infer_block_sizes(..., return_channel_axis=True): (block sizes or None, channel axis)."""
    granularity = cfg.granularity
    if isinstance(cfg, QuantizeConfig) and granularity == "per_block" and not isinstance(cfg.block_size, int):
        sizes = list(cfg.block_size)
        if len(sizes) != len(shape):
            raise ConfigError(f"block_size {tuple(sizes)} needs one entry per axis of a rank-{len(shape)} weight")
        candidates = [a for a, (b, n) in enumerate(zip(sizes, shape)) if b != 0 and b != n]
        if len(candidates) == 1:
            out_axis = candidates[0]
        return sizes, out_axis
    if in_axis is None or out_axis is None:
        return None, out_axis
    palettize = isinstance(cfg, PalettizeConfig)
    if granularity == "per_grouped_channel" and palettize and cfg.channel_axis is not None:
        out_axis = cfg.channel_axis
    sizes = [0] * len(shape)
    in_block, out_block = {
        "per_tensor": (0, 0),
        "per_channel": (0, 1),
        "per_grouped_channel": (0, cfg.group_size if palettize else 0),
        "per_block": (cfg.block_size if isinstance(cfg, QuantizeConfig) else 0, 1),
    }[granularity]
    if in_axis < len(sizes):
        sizes[in_axis] = in_block
    if out_axis < len(sizes):
        sizes[out_axis] = out_block
    return sizes, out_axis


from ..methods import palettize_axis  # noqa: E402,F401  (one rule for every container)


STRUCTURAL_OK = {"conv": ("weight",), "linear": ("weight",)}


def structural_prune_applies(const_name: str, graph: Graph) -> bool:
    """OpMagnitudePrunerConfig._check_const_op_is_valid: block / n:m pruning only for the
    weight of conv and linear."""
    return all(c.op.type in STRUCTURAL_OK and c.input in STRUCTURAL_OK[c.op.type]
               for c in graph.consumers.get(const_name, []))
