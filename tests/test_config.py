"""The one config model (python/weightpress/config.py): typed fields with coremltools 9.0's
defaults and validation, the same object from flags, YAML and coremltools, and back."""

import argparse

import pytest

from weightpress.commands.options import add_method_arguments, config_from_args
from weightpress.commands.errors import UsageError
from weightpress.config import (Config, MagnitudePruneConfig, MethodConfig, PalettizeConfig, QuantizeConfig,
                                ThresholdPruneConfig, as_config)
from weightpress.errors import ConfigError


def args_of(*argv):
    p = argparse.ArgumentParser()
    add_method_arguments(p)
    return p.parse_args(list(map(str, argv)))


def test_defaults_are_coremltools_defaults(ct):
    import coremltools.optimize.coreml as cto

    pairs = [(PalettizeConfig(nbits=4), cto.OpPalettizerConfig(nbits=4)),
             (QuantizeConfig(), cto.OpLinearQuantizerConfig()),
             (MagnitudePruneConfig(target_sparsity=0.5), cto.OpMagnitudePrunerConfig(target_sparsity=0.5)),
             (ThresholdPruneConfig(), cto.OpThresholdPrunerConfig())]
    for ours, theirs in pairs:
        assert MethodConfig.from_coremltools(cto.OptimizationConfig(global_config=theirs)).global_config == ours
        back = ours.to_coremltools()
        assert type(back) is type(theirs)
        for name in ours.options():
            if name != "dtype" and name not in ours.weightpress_only:
                want = getattr(theirs, name)
                got = getattr(back, name)
                assert got == want or str(got).lower() == str(want).lower(), name
    assert MagnitudePruneConfig(n_m_ratio=(2, 4)).dim == 1 and MagnitudePruneConfig(target_sparsity=.5, block_size=4).dim == 0


@pytest.mark.parametrize("make,match", [
    (lambda: PalettizeConfig(), "nbits is required"),
    (lambda: PalettizeConfig(nbits=5), "nbits must be one of"),
    (lambda: PalettizeConfig(nbits=4, mode="fancy"), "mode must be one of"),
    (lambda: PalettizeConfig(mode="unique", nbits=4), "inferred"),
    (lambda: PalettizeConfig(nbits=4, granularity="per_block"), "granularity must be one of"),
    (lambda: PalettizeConfig(nbits=4, group_size=-1), "group_size must be >= 0"),
    (lambda: QuantizeConfig(dtype="int3"), "dtype must be one of"),
    (lambda: QuantizeConfig(block_size="x"), "block_size must be an int"),
    (lambda: MagnitudePruneConfig(), "exactly one of target_sparsity and n_m_ratio"),
    (lambda: MagnitudePruneConfig(target_sparsity=2.0), r"in \[0, 1\]"),
    (lambda: MagnitudePruneConfig(n_m_ratio=(5, 4)), "0 <= n <= m"),
    (lambda: MagnitudePruneConfig(target_sparsity=0.5, dim=1), "dim applies to block_size or n_m_ratio"),
    (lambda: ThresholdPruneConfig(threshold=-1.0), "threshold must be >= 0"),
    (lambda: QuantizeConfig(weight_threshold=-5), "weight_threshold must be >= 0"),
    (lambda: MethodConfig(PalettizeConfig(nbits=4), {"linear": QuantizeConfig()}), "one method"),
    (lambda: MethodConfig(PalettizeConfig(nbits=4), {"const": PalettizeConfig(nbits=2)}), "const ops cannot"),
    (lambda: Config.of(PalettizeConfig(nbits=4), PalettizeConfig(nbits=2)), "palettize appears twice"),
])
def test_invalid_configs_name_the_option(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_flags_make_the_same_config_as_python():
    args = args_of("--prune", 0.5, "--palettize", 4, "--granularity", "per_grouped_channel", "--group-size", 16,
                   "--weight-threshold", 100)
    assert config_from_args(args) == Config.of(
        MagnitudePruneConfig(target_sparsity=0.5, weight_threshold=100),
        PalettizeConfig(nbits=4, granularity="per_grouped_channel", group_size=16, weight_threshold=100))
    assert config_from_args(args_of("--prune-n-m", "2:4", "--quantize", "int4", "--quantize-granularity",
                                    "per_block")).steps[1].global_config == QuantizeConfig(
        dtype="int4", granularity="per_block")
    with pytest.raises(UsageError, match="--palettize 5: palettize: nbits must be one of"):
        config_from_args(args_of("--palettize", 5))
    with pytest.raises(UsageError, match="palettize appears twice"):
        config_from_args(args_of("--palettize", 4, "--palettize", 2))
    with pytest.raises(UsageError, match="at least one method"):
        config_from_args(args_of())


def test_yaml_matches_coremltools_from_yaml(ct, tmp_path):
    import coremltools.optimize.coreml as cto

    text = ("config_type: OpPalettizerConfig\n"
            "global_config:\n  nbits: 4\n  granularity: per_grouped_channel\n  group_size: 16\n"
            "op_type_configs:\n  matmul: null\n  conv:\n    nbits: 2\n    weight_threshold: 100\n"
            "op_name_configs:\n  linear_0:\n    mode: uniform\n    nbits: 6\n")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    ours = MethodConfig.from_yaml(str(path))
    assert ours == MethodConfig.from_coremltools(cto.OptimizationConfig.from_yaml(str(path)))
    assert ours.op_type_configs["matmul"] is None and ours.op_type_configs["conv"].weight_threshold == 100
    bad = tmp_path / "bad.yaml"
    for content, match in (("config_type: Nope\n", "config_type must be one of"),
                           ("config_type: OpPalettizerConfig\nglobal_config:\n  bits: 4\n", r"unknown options 'bits'"),
                           ("config_type: [\n", "not valid YAML"),
                           ("config_type: OpPalettizerConfig\nextra: 1\n", r"unknown keys 'extra'")):
        bad.write_text(content)
        with pytest.raises(ConfigError, match=match):
            MethodConfig.from_yaml(str(bad))


def test_as_config_takes_every_form(ct):
    import coremltools.optimize.coreml as cto

    expected = Config.of(PalettizeConfig(nbits=2))
    assert as_config(PalettizeConfig(nbits=2)) == expected
    assert as_config(MethodConfig(PalettizeConfig(nbits=2))) == expected
    assert as_config(cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=2))) == expected
    assert as_config([PalettizeConfig(nbits=2)]) == expected and as_config(expected) is expected
    assert as_config([MagnitudePruneConfig(target_sparsity=0.5), QuantizeConfig()]).joint
