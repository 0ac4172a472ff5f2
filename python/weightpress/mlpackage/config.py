"""Compression configs for the streaming path, without coremltools.

The same fields and defaults as coremltools 9.0's OpPalettizerConfig, OpLinearQuantizerConfig,
OpMagnitudePrunerConfig and OpThresholdPrunerConfig (optimize/coreml/_config.py), held as
plain frozen records. They are built from coremltools' own config objects (duck-typed, so
coremltools need not be imported by this module), from the command line, or from an
OptimizationConfig YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple

KINDS = ("palettize", "quantize", "prune_magnitude", "prune_threshold")
METHOD_OF = {"palettize": "palettize", "quantize": "quantize", "prune_magnitude": "prune", "prune_threshold": "prune"}

DEFAULTS = {
    "palettize": dict(mode="kmeans", nbits=None, granularity="per_tensor", group_size=32, channel_axis=None,
                      cluster_dim=1, enable_per_channel_scale=False, lut_function=None, num_kmeans_workers=1),
    "quantize": dict(mode="linear_symmetric", dtype="int8", granularity="per_channel", block_size=32),
    "prune_magnitude": dict(target_sparsity=None, block_size=None, n_m_ratio=None, dim=None),
    "prune_threshold": dict(threshold=1e-12, minimum_sparsity_percentile=0.5),
}
CLASS_KIND = {
    "OpPalettizerConfig": "palettize",
    "OpLinearQuantizerConfig": "quantize",
    "OpMagnitudePrunerConfig": "prune_magnitude",
    "OpThresholdPrunerConfig": "prune_threshold",
}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class OpConfig:
    kind: str
    options: Tuple[Tuple[str, object], ...]
    weight_threshold: int = 2048

    def __getitem__(self, key):
        return dict(self.options)[key]

    @property
    def method(self) -> str:
        return METHOD_OF[self.kind]

    @property
    def structural(self) -> bool:
        return self.kind == "prune_magnitude" and (self["n_m_ratio"] is not None or self["block_size"] is not None)


def _norm(value):
    """coremltools enums and builtin types -> lower-case strings; lists -> tuples."""
    if hasattr(value, "name") and type(value).__name__ == "CompressionGranularity":
        return value.name.lower()
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, list):
        return tuple(value)
    return value


def op_config(kind: str, weight_threshold: int = 2048, **options) -> OpConfig:
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}")
    unknown = set(options) - set(DEFAULTS[kind])
    if unknown:
        raise ConfigError(f"{kind}: unknown options {sorted(unknown)}")
    merged = dict(DEFAULTS[kind], **{k: _norm(v) for k, v in options.items()})
    if kind == "prune_magnitude" and merged["dim"] is None:
        if merged["n_m_ratio"] is not None:
            merged["dim"] = 1
        elif merged["block_size"] is not None:
            merged["dim"] = 0
    if weight_threshold is None or weight_threshold < 0:
        raise ConfigError(f"weight_threshold must be an int >= 0, got {weight_threshold!r}")
    return OpConfig(kind, tuple(sorted(merged.items())), int(weight_threshold))


def from_coremltools_op_config(config) -> Optional[OpConfig]:
    if config is None:
        return None
    kind = CLASS_KIND.get(type(config).__name__)
    if kind is None:
        raise ConfigError(f"unsupported config type {type(config).__name__}")
    options = {name: getattr(config, name) for name in DEFAULTS[kind]}
    if kind == "quantize":
        options["dtype"] = _dtype_name(config.dtype)
    return op_config(kind, config.weight_threshold, **options)


def _dtype_name(dtype) -> str:
    """int4 / uint8 ... from a string, a numpy type or a MIL builtin int type."""
    if isinstance(dtype, str):
        return dtype.lower()
    if hasattr(dtype, "get_bitwidth"):  # MIL builtin (coremltools.converters.mil.mil.types)
        return f"{'u' if dtype.is_unsigned() else ''}int{dtype.get_bitwidth()}"
    import numpy as np

    return np.dtype(dtype).name


@dataclass(frozen=True)
class Config:
    """An OptimizationConfig: global, per-op-type and per-op-name configs (None = skip)."""

    global_config: Optional[OpConfig] = None
    op_type_configs: Dict[str, Optional[OpConfig]] = field(default_factory=dict)
    op_name_configs: Dict[str, Optional[OpConfig]] = field(default_factory=dict)

    @property
    def method(self) -> str:
        methods = {c.method for c in self.all() if c is not None}
        if len(methods) != 1:
            raise ConfigError(f"a config applies one method; found {sorted(methods) or 'none'}")
        return methods.pop()

    def all(self):
        return [self.global_config, *self.op_type_configs.values(), *self.op_name_configs.values()]

    def with_weight_threshold(self, threshold: int) -> "Config":
        def fix(c):
            return None if c is None else replace(c, weight_threshold=threshold)

        return Config(fix(self.global_config), {k: fix(v) for k, v in self.op_type_configs.items()},
                      {k: fix(v) for k, v in self.op_name_configs.items()})


def from_coremltools(config) -> Config:
    """weightpress Config from a coremltools OptimizationConfig (or a Config, returned as is)."""
    if isinstance(config, Config):
        return config
    if getattr(config, "_is_deprecated", False):
        raise ConfigError("deprecated op_selector configs are not supported")
    convert = from_coremltools_op_config
    return Config(convert(config.global_config),
                  {k: convert(v) for k, v in (config.op_type_configs or {}).items()},
                  {k: convert(v) for k, v in (config.op_name_configs or {}).items()})


def from_dict(data: dict) -> Config:
    """The OptimizationConfig.from_dict layout: config_type, global_config, op_type_configs,
    op_name_configs."""
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with config_type and global_config / op_type_configs / op_name_configs")
    kind = CLASS_KIND.get(data.get("config_type"))
    if kind is None:
        raise ConfigError(f"config_type must be one of {sorted(CLASS_KIND)}, got {data.get('config_type')!r}")
    unknown = set(data) - {"config_type", "global_config", "op_type_configs", "op_name_configs"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}")

    def build(options):
        if options is None:
            return None
        options = dict(options)
        threshold = options.pop("weight_threshold", 2048)
        return op_config(kind, threshold, **options)

    return Config(build(data.get("global_config")),
                  {k: build(v) for k, v in (data.get("op_type_configs") or {}).items()},
                  {k: build(v) for k, v in (data.get("op_name_configs") or {}).items()})


def from_yaml(path: str) -> Config:
    import yaml

    with open(path) as f:
        return from_dict(yaml.safe_load(f))
