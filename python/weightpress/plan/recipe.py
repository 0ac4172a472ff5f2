"""Recipes: the option chosen for every weight, as a file compress applies.

    {"format": "weightpress-recipe", "version": 1,
     "model": {"path": ..., "fingerprint": ...},        # which weights it was planned for
     "target": {"bits_per_weight": 4.5},                 # or {"max_size": bytes}
     "predicted": {"bytes": ..., "bits_per_weight": ..., "error": ..., "weight_file_bytes": ...},
     "sensitivity": "relative",
     "weights": {"<const>": {"option": "palettize:4/g16", "shape": [...], "dtype": "float16",
                             "bytes": ..., "error": ...}, ...}}

The fingerprint is a hash of every planned const's name, shape and dtype: a recipe applied to
another model (or another conversion of it) is refused by name. A recipe also exports as
coremltools OptimizationConfig YAML (one file per method, op_name_configs keyed by const
name), and ml-stable-diffusion's mixed-bit recipes (torch module names -> bits) import.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from ..config import MixedConfig
from ..errors import ConfigError
from .options import Option

FORMAT = "weightpress-recipe"
VERSION = 1


def fingerprint(weights: Iterable[Tuple[str, Tuple[int, ...], str]]) -> str:
    text = "\n".join(f"{n}|{','.join(map(str, s))}|{d}" for n, s, d in sorted(weights))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Choice:
    option: Option
    shape: Tuple[int, ...]
    dtype: str
    bytes: int
    error: float


@dataclass
class Recipe:
    weights: Dict[str, Choice]
    model_path: str = ""
    model_fingerprint: str = ""
    target: Dict[str, float] = field(default_factory=dict)
    predicted: Dict[str, float] = field(default_factory=dict)
    sensitivity: str = "relative"

    # ---------------------------------------------------------------- use
    def to_config(self) -> MixedConfig:
        """The per-const config compress runs (weights to keep are left out)."""
        configs = {name: c.option.op_config() for name, c in self.weights.items() if c.option.method != "keep"}
        if not configs:
            raise ConfigError("the recipe keeps every weight as it is: nothing to compress")
        return MixedConfig(op_name_configs=configs)

    def check_against(self, shapes: Dict[str, Tuple[Tuple[int, ...], str]], source: str) -> None:
        """Refuses a recipe for another model: consts it names that the model lacks, or of
        another shape or dtype, each listed."""
        missing = sorted(n for n in self.weights if n not in shapes)
        if missing:
            raise ConfigError(f"the recipe names consts {source} does not have: {', '.join(missing[:8])}"
                              + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
                              + " (a recipe for another model?)")
        wrong = [f"{n} is {list(shapes[n][0])} {shapes[n][1]}, the recipe says {list(c.shape)} {c.dtype}"
                 for n, c in self.weights.items() if (tuple(shapes[n][0]), shapes[n][1]) != (tuple(c.shape), c.dtype)]
        if wrong:
            raise ConfigError(f"the recipe does not fit {source}: {'; '.join(wrong[:4])}")

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for c in self.weights.values():
            out[c.option.label] = out.get(c.option.label, 0) + 1
        return dict(sorted(out.items()))

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION,
                "model": {"path": self.model_path, "fingerprint": self.model_fingerprint},
                "target": self.target, "predicted": self.predicted, "sensitivity": self.sensitivity,
                "weights": {n: {"option": c.option.label, "shape": list(c.shape), "dtype": c.dtype, "bytes": c.bytes,
                                "error": c.error} for n, c in self.weights.items()}}

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Recipe":
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"{path}: not a recipe (invalid JSON: {exc})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, data) -> "Recipe":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"not a weightpress recipe (no \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise ConfigError(f"recipe version {data.get('version')!r} is not supported (expected {VERSION})")
        weights = data.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise ConfigError("the recipe lists no weights")
        out = {}
        for name, entry in weights.items():
            if not isinstance(entry, dict) or "option" not in entry:
                raise ConfigError(f"weight {name!r}: expected {{\"option\": ..., \"shape\": ...}}")
            shape = entry.get("shape", [])
            if not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in shape):
                raise ConfigError(f"weight {name!r}: shape must be a list of non-negative integers, got {shape!r}"[:300])
            try:
                out[str(name)] = Choice(Option.from_label(entry["option"]), tuple(shape),
                                        str(entry.get("dtype", "float16")), int(entry.get("bytes", 0)),
                                        float(entry.get("error", 0.0)))
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"weight {name!r}: malformed entry {entry!r}"[:300]) from None
        for key in ("model", "target", "predicted"):
            if not isinstance(data.get(key, {}), dict):
                raise ConfigError(f"\"{key}\" must be an object, got {type(data[key]).__name__}")
        if not isinstance(data.get("sensitivity", ""), str):
            raise ConfigError(f"\"sensitivity\" must be a string, got {type(data['sensitivity']).__name__}")
        model = data.get("model") or {}
        return cls(out, str(model.get("path", "")), str(model.get("fingerprint", "")),
                   dict(data.get("target") or {}), dict(data.get("predicted") or {}),
                   str(data.get("sensitivity", "relative")))

    def export_yaml(self, directory: str) -> List[str]:
        """coremltools OptimizationConfig YAML files, one per method (op_name_configs keyed by
        const name, no global config): coremltools users apply each with
        OptimizationConfig.from_yaml and the matching palettize_weights / linear_quantize_weights."""
        import yaml

        os.makedirs(directory, exist_ok=True)
        written = []
        for method, config in self.to_config().by_method().items():
            ct_class = next(iter(config.op_name_configs.values())).coremltools_class
            body = {"config_type": ct_class, "op_name_configs": {
                name: _yaml_options(c) for name, c in sorted(config.op_name_configs.items())}}
            path = os.path.join(directory, f"{method}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(body, f, sort_keys=False)
            written.append(path)
        return written


def _yaml_options(c) -> dict:
    from dataclasses import fields

    skip = {"lut_function", "num_kmeans_workers", "method", "coremltools_class"}
    c._coremltools_options()  # refuses what coremltools cannot express (a best-error fit)
    skip |= set(c.weightpress_only)
    out = {}
    for f in fields(c):
        if f.name in skip:
            continue
        value = getattr(c, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# ---------------------------------------------------------------- ml-stable-diffusion


def const_for_module(module: str, consts: Dict[str, Tuple[Tuple[int, ...], str]]) -> Optional[str]:
    """The const coremltools' conversion made of torch module `module`'s weight: dots become
    underscores, "_weight" follows, a cast to fp16 adds "_to_fp16" (a wrapper may prefix it)."""
    stem = module.replace(".", "_") + "_weight"
    exact = [n for n in (stem, stem + "_to_fp16") if n in consts]
    if exact:
        return exact[0]
    suffixed = [n for n in consts if n.endswith("_" + stem) or n.endswith("_" + stem + "_to_fp16")]
    return suffixed[0] if len(suffixed) == 1 else None


def from_mbp(path: str, recipe_name: Optional[str], consts: Dict[str, Tuple[Tuple[int, ...], str]],
             fingerprints: Optional[Dict[str, Tuple]] = None) -> Tuple[Recipe, List[str]]:
    """An ml-stable-diffusion mixed-bit palettization recipe (mixed_bit_compression_pre_analysis
    JSON: {"recipes": {name: {torch module: nbits}}}) as a weightpress recipe for the package
    whose consts are `consts` (name -> (shape, dtype)). Modules map by coremltools' naming
    rule, else by `fingerprints` (module -> (shape, first value, sum) against the package's
    consts, when given). Returns the recipe and the modules that mapped to no const (never
    dropped silently: the caller reports them). 16 bits means keep."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc})") from None
    recipes = data.get("recipes") if isinstance(data, dict) else None
    if not isinstance(recipes, dict) or not recipes:
        raise ConfigError(f"{path}: not an ml-stable-diffusion mixed-bit recipe file (no \"recipes\")")
    if recipe_name is None:
        if len(recipes) != 1:
            raise ConfigError(f"{path} holds {len(recipes)} recipes; choose one of: {', '.join(sorted(recipes))}")
        recipe_name = next(iter(recipes))
    if recipe_name not in recipes:
        raise ConfigError(f"{path}: no recipe {recipe_name!r}; available: {', '.join(sorted(recipes))}")
    weights, unmapped = {}, []
    for module, nbits in recipes[recipe_name].items():
        name = const_for_module(module, consts)
        if name is None and fingerprints is not None:
            name = fingerprints.get(module)
        if name is None:
            unmapped.append(module)
            continue
        if nbits == 16:
            option = Option("keep")
        elif nbits in (1, 2, 4, 6, 8):
            option = Option("palettize", int(nbits), "per_tensor")
        else:
            raise ConfigError(f"{path}: {module}: {nbits} bits is not a palettization width (1, 2, 4, 6, 8 or 16)")
        shape, dtype = consts[name]
        weights[name] = Choice(option, tuple(shape), dtype, 0, 0.0)
    if not weights:
        raise ConfigError(f"{path}: none of the recipe's {len(unmapped)} modules maps to a const of the model")
    return Recipe(weights, target={"imported": f"{os.path.basename(path)}:{recipe_name}"}), unmapped
