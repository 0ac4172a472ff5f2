"""The candidate ways to store one weight, and the --options language that lists them.

    palettize:2,3,4,6,8;granularity:per_tensor,per_grouped_channel:16,32;quantize:int8,int4/32;keep

palettize: bit widths; granularity: per_tensor and/or per_grouped_channel with group sizes
(the palettization options are every bit width at every granularity); quantize: int8 (per
channel) and/or int4/uintN with /B for per-block blocks of B (int4 without /B: blocks of 32),
each with @best for best-error scales instead of coremltools' (int4/32@best);
keep: leaving the weight as it is. Clauses may come in any order; the text lists every
candidate (palettization without a granularity clause is per_tensor); DEFAULT_OPTIONS is
used when none is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from ..config import PALETTIZE_NBITS, QUANTIZE_DTYPES, OpConfig, PalettizeConfig, QuantizeConfig
from ..errors import ConfigError

# 8-bit storage comes from int8 quantization (an 8-bit LUT per group of 16 channels costs more
# to measure and to store); add palettize:8 for the 8-bit per-tensor LUT
DEFAULT_OPTIONS = "palettize:2,3,4,6;granularity:per_tensor,per_grouped_channel:16;quantize:int8,int4/32;keep"


@dataclass(frozen=True, order=True)
class Option:
    """One way to store a weight."""

    method: str  # "palettize", "quantize" or "keep"
    nbits: int = 16
    granularity: str = ""  # palettize: per_tensor / per_grouped_channel; quantize: per_channel / per_block
    group_size: int = 0  # per_grouped_channel group / per_block block
    dtype: str = ""  # quantize: int8, int4, ...
    fit: str = "coremltools"  # quantize: "best" for best-error scales (label suffix @best)

    @property
    def label(self) -> str:
        if self.method == "keep":
            return "keep"
        if self.method == "palettize":
            grouping = f"/g{self.group_size}" if self.granularity == "per_grouped_channel" else ""
            return f"palettize:{self.nbits}{grouping}"
        blocks = f"/b{self.group_size}" if self.granularity == "per_block" else ""
        fit = "@best" if self.fit == "best" else ""
        return f"quantize:{self.dtype}{blocks}{fit}"

    def op_config(self) -> OpConfig:
        """The op config compress applies for this option (every size: the recipe decides)."""
        if self.method == "palettize":
            if self.granularity == "per_grouped_channel":
                return PalettizeConfig(nbits=self.nbits, granularity="per_grouped_channel",
                                       group_size=self.group_size, weight_threshold=0)
            return PalettizeConfig(nbits=self.nbits, weight_threshold=0)
        if self.method == "quantize":
            if self.granularity == "per_block":
                return QuantizeConfig(dtype=self.dtype, granularity="per_block", block_size=self.group_size,
                                      weight_threshold=0, fit=self.fit)
            return QuantizeConfig(dtype=self.dtype, granularity="per_channel", weight_threshold=0, fit=self.fit)
        raise ValueError("keep has no op config")

    @classmethod
    def from_label(cls, label: str) -> "Option":
        """The inverse of .label (recipe files)."""
        text = str(label).strip()
        if text == "keep":
            return cls("keep")
        method, _, rest = text.partition(":")
        try:  # the same checks as the --options language
            if method == "palettize":
                bits, _, group = rest.partition("/g")
                if group:
                    return cls("palettize", _bits(bits), "per_grouped_channel", _positive(group, "group size"))
                return cls("palettize", _bits(bits), "per_tensor")
            if method == "quantize":
                rest, fit = _fit_suffix(rest)
                dtype, _, block = rest.partition("/b")
                if block:
                    return cls("quantize", _quantize_bits(dtype), "per_block", _positive(block, "block size"), dtype,
                               fit)
                return cls("quantize", _quantize_bits(dtype), "per_channel", 0, dtype, fit)
        except ConfigError:
            pass
        raise ConfigError(f"unknown option {label!r} (expected e.g. palettize:4, palettize:4/g16, quantize:int8, "
                          "quantize:int4/b32, quantize:int4/b32@best, keep)")


def parse_options(text: str = DEFAULT_OPTIONS) -> List[Option]:
    """The candidate options from the --options language (see the module docstring)."""
    clauses = _clauses(text)
    bits = [_bits(b) for b in clauses.get("palettize", [])]
    granularities: List[Tuple[str, int]] = []
    current = None
    for item in clauses.get("granularity", ["per_tensor"]):
        name, _, size = item.partition(":")
        if name.isdigit() and current == "per_grouped_channel":
            granularities.append((current, _positive(name, "group size")))
            continue
        if name == "per_tensor":
            granularities.append(("per_tensor", 0))
        elif name == "per_grouped_channel":
            granularities.append((name, _positive(size or "16", "group size")))
        else:
            raise ConfigError(f"--options: unknown granularity {item!r} (per_tensor or per_grouped_channel:N)")
        current = name
    options = [Option("palettize", b, g, n) for b in bits for g, n in granularities]
    for item in clauses.get("quantize", []):
        item, fit = _fit_suffix(item)
        dtype, _, block = item.partition("/")
        nbits = _quantize_bits(dtype)
        if block or nbits == 4:
            options.append(Option("quantize", nbits, "per_block", _positive(block.lstrip("b") or "32", "block size"),
                                  dtype, fit))
        else:
            options.append(Option("quantize", nbits, "per_channel", 0, dtype, fit))
    if "keep" in clauses:
        options.append(Option("keep"))
    if not options:
        raise ConfigError("--options: no candidate options")
    return sorted(set(options))


def _clauses(text):
    out = {}
    for clause in str(text).split(";"):
        clause = clause.strip()
        if not clause:
            continue
        name, _, values = clause.partition(":")
        name = name.strip()
        if name not in ("palettize", "granularity", "quantize", "keep"):
            raise ConfigError(f"--options: unknown clause {name!r} (palettize, granularity, quantize, keep)")
        out[name] = [v.strip() for v in values.split(",") if v.strip()]
    return out


def _fit_suffix(text):
    """"int4/32@best" -> ("int4/32", "best"); no suffix: coremltools' fit."""
    text, at, fit = text.partition("@")
    if at and fit != "best":
        raise ConfigError(f"--options: unknown quantize fit {fit!r} (only @best)")
    return text, "best" if at else "coremltools"


def _quantize_bits(dtype):
    if dtype not in QUANTIZE_DTYPES:
        raise ConfigError(f"--options: unknown quantize dtype {dtype!r} ({', '.join(QUANTIZE_DTYPES)})")
    return 4 if "4" in dtype else 8


def _bits(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value not in PALETTIZE_NBITS:
        raise ConfigError(f"--options: palettization bits must be among {', '.join(map(str, PALETTIZE_NBITS))}, "
                          f"got {text!r}")
    return value


def _positive(text, what):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"--options: {what} must be a positive integer, got {text!r}")
    return value
