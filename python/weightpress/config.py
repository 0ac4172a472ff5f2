"""Compression configs: one typed model of "which consts, which method, which options".

    PalettizeConfig, QuantizeConfig, MagnitudePruneConfig, ThresholdPruneConfig
        one op's options: the fields, defaults and validation of coremltools 9.0's
        OpPalettizerConfig, OpLinearQuantizerConfig, OpMagnitudePrunerConfig and
        OpThresholdPrunerConfig (optimize/coreml/_config.py)
    MethodConfig   one method: a global config plus per-op-type and per-op-name configs
                   (coremltools' OptimizationConfig; None leaves those ops alone)
    Config         the methods in the order they apply (more than one is joint compression)

Built from the command line (commands/options.py), coremltools objects (from_coremltools),
OptimizationConfig YAML files or dicts (from_yaml, from_dict) or a recipe; turned back into
coremltools objects with to_coremltools() where coremltools' own passes run. coremltools is
imported only for those conversions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar, Dict, Mapping, Optional, Tuple, Union

from .errors import ConfigError

PALETTIZE_MODES = ("kmeans", "uniform", "unique", "custom")
PALETTIZE_NBITS = (1, 2, 3, 4, 6, 8)
PALETTIZE_GRANULARITIES = ("per_tensor", "per_grouped_channel")
QUANTIZE_MODES = ("linear_symmetric", "linear")
QUANTIZE_DTYPES = ("int4", "uint4", "int8", "uint8")
QUANTIZE_GRANULARITIES = ("per_tensor", "per_channel", "per_block")
QUANTIZE_FITS = ("coremltools", "best")
METHODS = ("palettize", "quantize", "prune")
DEFAULT_WEIGHT_THRESHOLD = 2048


def _lower(value):
    """coremltools enums (CompressionGranularity) and strings -> lower-case names."""
    if hasattr(value, "name") and type(value).__name__ == "CompressionGranularity":
        return value.name.lower()
    return value.lower() if isinstance(value, str) else value


def _int(value, name, kind, minimum=None, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise ConfigError(f"{kind}: {name} must be an int, got {value!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{kind}: {name} must be >= {minimum}, got {value}")
    return value


def _choice(value, name, kind, choices):
    value = _lower(value)
    if value not in choices:
        raise ConfigError(f"{kind}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _dtype_name(dtype) -> str:
    """int4 / uint8 ... from a string, a numpy type or a MIL builtin int type."""
    if isinstance(dtype, str):
        return dtype.lower()
    if hasattr(dtype, "get_bitwidth"):  # MIL builtin (coremltools.converters.mil.mil.types)
        return f"{'u' if dtype.is_unsigned() else ''}int{dtype.get_bitwidth()}"
    import numpy as np

    return np.dtype(dtype).name


class _OpConfig:
    """Shared behaviour of the four op configs (each a frozen dataclass)."""

    method: ClassVar[str]
    coremltools_class: ClassVar[str]
    weightpress_only: ClassVar[Tuple[str, ...]] = ()  # fields coremltools' class does not have

    def options(self) -> Dict[str, object]:
        """The fields as keyword arguments (of the coremltools class, too)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_coremltools(self):
        import coremltools.optimize.coreml as cto

        return getattr(cto, self.coremltools_class)(**self._coremltools_options())

    def _coremltools_options(self):
        return self.options()

    def _check_weight_threshold(self, kind):
        object.__setattr__(self, "weight_threshold", _int(self.weight_threshold, "weight_threshold", kind, 0))


@dataclass(frozen=True)
class PalettizeConfig(_OpConfig):
    nbits: Optional[int] = None
    mode: str = "kmeans"
    granularity: str = "per_tensor"
    group_size: int = 32
    channel_axis: Optional[int] = None
    cluster_dim: int = 1
    enable_per_channel_scale: bool = False
    lut_function: Optional[Callable] = None
    num_kmeans_workers: int = 1
    weight_threshold: int = DEFAULT_WEIGHT_THRESHOLD
    method: ClassVar[str] = "palettize"
    coremltools_class: ClassVar[str] = "OpPalettizerConfig"

    def __post_init__(self):
        kind = "palettize"
        object.__setattr__(self, "mode", _choice(self.mode, "mode", kind, PALETTIZE_MODES))
        object.__setattr__(self, "granularity", _choice(self.granularity, "granularity", kind,
                                                        PALETTIZE_GRANULARITIES))
        if self.nbits is None and self.mode in ("kmeans", "uniform"):
            raise ConfigError(f"palettize: nbits is required for mode {self.mode!r}")
        if self.nbits is not None and self.mode in ("unique", "custom"):
            raise ConfigError(f"palettize: nbits is inferred for mode {self.mode!r}; do not pass it")
        if self.nbits is not None and (isinstance(self.nbits, bool) or self.nbits not in PALETTIZE_NBITS):
            raise ConfigError(f"palettize: nbits must be one of {', '.join(map(str, PALETTIZE_NBITS))}, "
                              f"got {self.nbits}")
        if (self.mode == "custom") != (self.lut_function is not None):
            raise ConfigError("palettize: lut_function is required for mode 'custom' and only for it")
        object.__setattr__(self, "group_size", _int(self.group_size, "group_size", kind, 0))
        object.__setattr__(self, "channel_axis", _int(self.channel_axis, "channel_axis", kind, optional=True))
        object.__setattr__(self, "cluster_dim", _int(self.cluster_dim, "cluster_dim", kind, 1))
        object.__setattr__(self, "num_kmeans_workers", _int(self.num_kmeans_workers, "num_kmeans_workers", kind, 1))
        if not isinstance(self.enable_per_channel_scale, bool):
            raise ConfigError(f"palettize: enable_per_channel_scale must be a bool, got {self.enable_per_channel_scale!r}")
        self._check_weight_threshold(kind)


@dataclass(frozen=True)
class QuantizeConfig(_OpConfig):
    dtype: str = "int8"
    mode: str = "linear_symmetric"
    granularity: str = "per_channel"
    block_size: Union[int, Tuple[int, ...]] = 32
    weight_threshold: int = DEFAULT_WEIGHT_THRESHOLD
    fit: str = "coremltools"  # weightpress's own: "best" has no coremltools counterpart
    method: ClassVar[str] = "quantize"
    coremltools_class: ClassVar[str] = "OpLinearQuantizerConfig"
    weightpress_only: ClassVar[Tuple[str, ...]] = ("fit",)

    def _coremltools_options(self):
        if self.fit != "coremltools":
            raise ConfigError(f"quantize: fit {self.fit!r} has no coremltools counterpart; it runs on weightpress's "
                              "streaming engine only (not in joint compression or the in-memory engine)")
        options = self.options()
        del options["fit"]
        return options

    def __post_init__(self):
        kind = "quantize"
        object.__setattr__(self, "dtype", _choice(_dtype_name(self.dtype), "dtype", kind, QUANTIZE_DTYPES))
        object.__setattr__(self, "mode", _choice(self.mode, "mode", kind, QUANTIZE_MODES))
        object.__setattr__(self, "granularity", _choice(self.granularity, "granularity", kind,
                                                        QUANTIZE_GRANULARITIES))
        object.__setattr__(self, "fit", _choice(self.fit, "fit", kind, QUANTIZE_FITS))
        if isinstance(self.block_size, (list, tuple)):
            object.__setattr__(self, "block_size",
                               tuple(_int(b, "block_size", kind, 0) for b in self.block_size))
        else:
            object.__setattr__(self, "block_size", _int(self.block_size, "block_size", kind, 0))
        self._check_weight_threshold(kind)


@dataclass(frozen=True)
class MagnitudePruneConfig(_OpConfig):
    target_sparsity: Optional[float] = None
    block_size: Optional[int] = None
    n_m_ratio: Optional[Tuple[int, int]] = None
    dim: Optional[int] = None
    weight_threshold: int = DEFAULT_WEIGHT_THRESHOLD
    method: ClassVar[str] = "prune"
    coremltools_class: ClassVar[str] = "OpMagnitudePrunerConfig"

    def __post_init__(self):
        kind = "prune"
        if (self.target_sparsity is None) == (self.n_m_ratio is None):
            raise ConfigError("prune: give exactly one of target_sparsity and n_m_ratio")
        if self.target_sparsity is not None:
            try:
                sparsity = float(self.target_sparsity)
            except (TypeError, ValueError):
                raise ConfigError(f"prune: target_sparsity must be a number, got {self.target_sparsity!r}") from None
            if not 0 <= sparsity <= 1:
                raise ConfigError(f"prune: target_sparsity must be in [0, 1], got {sparsity}")
            object.__setattr__(self, "target_sparsity", sparsity)
        if self.n_m_ratio is not None:
            try:
                n, m = (int(v) for v in self.n_m_ratio)
            except (TypeError, ValueError):
                raise ConfigError(f"prune: n_m_ratio must be a pair of ints (n, m), got {self.n_m_ratio!r}") from None
            if not 0 <= n <= m or m < 1:
                raise ConfigError(f"prune: n_m_ratio needs 0 <= n <= m and m >= 1, got ({n}, {m})")
            object.__setattr__(self, "n_m_ratio", (n, m))
            if self.block_size is not None:
                raise ConfigError("prune: block_size cannot be combined with n_m_ratio")
        if self.block_size is not None:
            object.__setattr__(self, "block_size", _int(self.block_size, "block_size", kind, 2))
        if self.dim is not None:
            if self.block_size is None and self.n_m_ratio is None:
                raise ConfigError("prune: dim applies to block_size or n_m_ratio only")
            if self.dim not in (0, 1):
                raise ConfigError(f"prune: dim must be 0 or 1, got {self.dim!r}")
        elif self.n_m_ratio is not None:
            object.__setattr__(self, "dim", 1)  # coremltools' defaults
        elif self.block_size is not None:
            object.__setattr__(self, "dim", 0)
        self._check_weight_threshold(kind)

    @property
    def structural(self) -> bool:
        """Block or n:m pruning, which coremltools applies to conv and linear weights only."""
        return self.n_m_ratio is not None or self.block_size is not None


@dataclass(frozen=True)
class ThresholdPruneConfig(_OpConfig):
    threshold: float = 1e-12
    minimum_sparsity_percentile: float = 0.5
    weight_threshold: int = DEFAULT_WEIGHT_THRESHOLD
    method: ClassVar[str] = "prune"
    coremltools_class: ClassVar[str] = "OpThresholdPrunerConfig"

    def __post_init__(self):
        try:
            object.__setattr__(self, "threshold", float(self.threshold))
            object.__setattr__(self, "minimum_sparsity_percentile", float(self.minimum_sparsity_percentile))
        except (TypeError, ValueError):
            raise ConfigError(f"prune: threshold and minimum_sparsity_percentile must be numbers, got "
                              f"{self.threshold!r}, {self.minimum_sparsity_percentile!r}") from None
        if not self.threshold >= 0:
            raise ConfigError(f"prune: threshold must be >= 0, got {self.threshold}")
        if not 0 <= self.minimum_sparsity_percentile <= 1:
            raise ConfigError(f"prune: minimum_sparsity_percentile must be in [0, 1], got "
                              f"{self.minimum_sparsity_percentile}")
        self._check_weight_threshold("prune")

    structural = False


OpConfig = Union[PalettizeConfig, QuantizeConfig, MagnitudePruneConfig, ThresholdPruneConfig]
OP_CONFIG_CLASSES = (PalettizeConfig, QuantizeConfig, MagnitudePruneConfig, ThresholdPruneConfig)
BY_COREMLTOOLS_CLASS = {c.coremltools_class: c for c in OP_CONFIG_CLASSES}


@dataclass(frozen=True)
class MethodConfig:
    """One method's configs: global, per op type and per op name (None = skip those ops)."""

    global_config: Optional[OpConfig] = None
    op_type_configs: Mapping[str, Optional[OpConfig]] = field(default_factory=dict)
    op_name_configs: Mapping[str, Optional[OpConfig]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "op_type_configs", dict(self.op_type_configs or {}))
        object.__setattr__(self, "op_name_configs", dict(self.op_name_configs or {}))
        configs = [c for c in self.all() if c is not None]
        for c in configs:
            if not isinstance(c, OP_CONFIG_CLASSES):
                raise ConfigError(f"unsupported op config {type(c).__name__}")
        methods = {c.method for c in configs}
        if len(methods) != 1:
            raise ConfigError(f"a method config holds the op configs of one method; found {sorted(methods) or 'none'}")
        if "const" in self.op_type_configs:
            raise ConfigError("const ops cannot be set by op type; use the global config")

    @property
    def method(self) -> str:
        return next(c.method for c in self.all() if c is not None)

    def all(self):
        return [self.global_config, *self.op_type_configs.values(), *self.op_name_configs.values()]

    # ---------------------------------------------------------------- conversions
    @classmethod
    def from_coremltools(cls, config) -> "MethodConfig":
        """From a coremltools OptimizationConfig (duck-typed: coremltools is not imported)."""
        if isinstance(config, MethodConfig):
            return config
        if getattr(config, "_is_deprecated", False):
            raise ConfigError("deprecated op_selector configs are not supported")
        convert = op_config_from_coremltools
        return cls(convert(config.global_config),
                   {k: convert(v) for k, v in (config.op_type_configs or {}).items()},
                   {k: convert(v) for k, v in (config.op_name_configs or {}).items()})

    def to_coremltools(self):
        import coremltools.optimize.coreml as cto

        def convert(c):
            return None if c is None else c.to_coremltools()

        return cto.OptimizationConfig(global_config=convert(self.global_config),
                                      op_type_configs={k: convert(v) for k, v in self.op_type_configs.items()},
                                      op_name_configs={k: convert(v) for k, v in self.op_name_configs.items()})

    @classmethod
    def from_dict(cls, data: dict) -> "MethodConfig":
        """The OptimizationConfig.from_dict layout: config_type, global_config,
        op_type_configs, op_name_configs."""
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping with config_type and global_config / op_type_configs / "
                              "op_name_configs")
        config_type = data.get("config_type")
        config_class = BY_COREMLTOOLS_CLASS.get(config_type) if isinstance(config_type, str) else None
        if config_class is None:
            raise ConfigError(f"config_type must be one of {sorted(BY_COREMLTOOLS_CLASS)}, "
                              f"got {data.get('config_type')!r}")
        unknown = set(data) - {"config_type", "global_config", "op_type_configs", "op_name_configs"}
        if unknown:
            raise ConfigError(f"unknown keys {', '.join(sorted(map(repr, unknown)))}")

        def build(options):
            if options is None:
                return None
            if not isinstance(options, dict):
                raise ConfigError(f"{config_class.coremltools_class}: expected a mapping of options, got {options!r}")
            known = {f.name for f in fields(config_class)} - {"lut_function"}
            bad = set(options) - known
            if bad:
                raise ConfigError(f"{config_class.coremltools_class}: unknown options {', '.join(sorted(map(repr, bad)))}")
            try:
                return config_class(**options)
            except TypeError as exc:
                raise ConfigError(f"{config_class.coremltools_class}: {exc}") from None

        def mapping(key):
            value = data.get(key) or {}
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"{key} must be a mapping from names to options, got {value!r}")
            return {k: build(v) for k, v in value.items()}

        return cls(build(data.get("global_config")), mapping("op_type_configs"), mapping("op_name_configs"))

    @classmethod
    def from_yaml(cls, path: str) -> "MethodConfig":
        """An OptimizationConfig YAML file (coremltools' layout)."""
        import yaml

        try:
            with open(path, "rb") as f:
                data = yaml.safe_load(f)   # bytes: the YAML reader checks the encoding
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def op_config_from_coremltools(config) -> Optional[OpConfig]:
    """A weightpress op config from a coremltools one (duck-typed)."""
    if config is None:
        return None
    config_class = BY_COREMLTOOLS_CLASS.get(type(config).__name__)
    if config_class is None:
        raise ConfigError(f"unsupported config type {type(config).__name__}")
    own = getattr(config_class, "weightpress_only", ())
    options = {f.name: getattr(config, f.name) for f in fields(config_class) if f.name not in own}
    if config_class is QuantizeConfig:
        options["dtype"] = _dtype_name(config.dtype)
    if config_class is MagnitudePruneConfig and options.get("n_m_ratio") is not None:
        options["n_m_ratio"] = tuple(options["n_m_ratio"])
    return config_class(**options)


@dataclass(frozen=True)
class Config:
    """The methods in application order; more than one is joint compression (iOS18+)."""

    steps: Tuple[MethodConfig, ...]

    def __post_init__(self):
        steps = tuple(self.steps)
        if not steps:
            raise ConfigError("give at least one method")
        for s in steps:
            if not isinstance(s, MethodConfig):
                raise ConfigError(f"a Config holds MethodConfigs, got {type(s).__name__}")
        seen = set()
        for s in steps:
            if s.method in seen:
                raise ConfigError(f"{s.method} appears twice; coremltools 9.0 defines no chain that applies a "
                                  "method to its own result")
            seen.add(s.method)
        object.__setattr__(self, "steps", steps)

    @classmethod
    def of(cls, *items) -> "Config":
        """Config.of(PalettizeConfig(nbits=4)) or of MethodConfigs / coremltools objects, in order."""
        steps = []
        for item in items:
            if isinstance(item, OP_CONFIG_CLASSES):
                steps.append(MethodConfig(global_config=item))
            elif isinstance(item, MethodConfig):
                steps.append(item)
            else:
                steps.append(MethodConfig.from_coremltools(item))
        return cls(tuple(steps))

    @property
    def joint(self) -> bool:
        return len(self.steps) > 1

    @property
    def methods(self) -> Tuple[str, ...]:
        return tuple(s.method for s in self.steps)

    def describe(self) -> str:
        return " then ".join(f"a recipe ({' and '.join(s.methods())} per weight)" if isinstance(s, MixedConfig)
                             else s.method for s in self.steps)


@dataclass(frozen=True)
class MixedConfig(MethodConfig):
    """Each named const compressed its own way, any method per const (a planned recipe:
    weightpress.plan): op_name_configs maps const names ("function::name" in a multifunction
    package) to op configs of any method; every other const is left alone. Runs on the
    streaming engine, which picks the method per const."""

    def __post_init__(self):
        object.__setattr__(self, "op_type_configs", dict(self.op_type_configs or {}))
        object.__setattr__(self, "op_name_configs", dict(self.op_name_configs or {}))
        if self.global_config is not None or self.op_type_configs:
            raise ConfigError("a mixed (per-const) config names every const it compresses: no global or op-type "
                              "configs")
        for name, c in self.op_name_configs.items():
            if not isinstance(name, str) or not isinstance(c, OP_CONFIG_CLASSES):
                raise ConfigError(f"a mixed config maps const names to op configs, got {name!r}: {c!r}")
        if not self.op_name_configs:
            raise ConfigError("a mixed config must name at least one const")

    @property
    def method(self) -> str:
        return "mixed"

    def methods(self):
        return sorted({c.method for c in self.op_name_configs.values()})

    def by_method(self) -> Dict[str, MethodConfig]:
        """One coremltools-style MethodConfig per method (op_name_configs only)."""
        out: Dict[str, Dict[str, OpConfig]] = {}
        for name, c in self.op_name_configs.items():
            out.setdefault(c.method, {})[name] = c
        return {m: MethodConfig(op_name_configs=configs) for m, configs in sorted(out.items())}


def as_config(config) -> Config:
    """A Config from a Config, a MethodConfig, an op config, a coremltools OptimizationConfig,
    or a list of those (in order)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, (list, tuple)):
        return Config.of(*config)
    return Config.of(config)
