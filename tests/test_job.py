"""The one job entry (python/weightpress/job.py): the checks every engine shares, and the
engine choice."""

import os

import numpy as np
import pytest

from coreml_oracle import decompressed_weights, linear_model
from weightpress.config import Config, MagnitudePruneConfig, PalettizeConfig, QuantizeConfig
from weightpress.errors import ConfigError, MemoryBudgetError
from weightpress.job import choose_target, compress_model


@pytest.fixture(scope="module")
def model(ct, tmp_path_factory):
    path = tmp_path_factory.mktemp("job") / "lin.mlpackage"
    w = (np.random.default_rng(0).standard_normal((64, 256)) * 0.05).astype(np.float16)
    linear_model(w, ct.target.iOS18).save(str(path))
    return str(path)


def test_outputs_that_would_touch_the_input_are_refused(model, tmp_path):
    for out, match in ((model, "must differ from the input"),
                       (os.path.join(model, "inner.mlpackage"), "inside the input package"),
                       (str(tmp_path / "o.zip"), "must be an .mlpackage")):
        with pytest.raises(ConfigError, match=match):
            compress_model(model, out, PalettizeConfig(nbits=4))
    assert not os.path.exists(os.path.join(model, "inner.mlpackage"))
    with pytest.raises(ConfigError, match="engine must be one of"):
        compress_model(model, str(tmp_path / "o.mlpackage"), PalettizeConfig(nbits=4), engine="gpu")


def test_targets():
    assert choose_target(9, None) == (9, None)
    version, note = choose_target(6, None)
    assert version == 7 and "iOS15" in note
    assert choose_target(7, "iOS18")[0] == 9
    with pytest.raises(ConfigError, match="cannot be lowered"):
        choose_target(9, "iOS16")
    with pytest.raises(ConfigError, match="target must be one of"):
        choose_target(9, "iOS15")


def test_engines_agree_and_joint_falls_back(ct, model, tmp_path):
    streamed = compress_model(model, str(tmp_path / "s.mlpackage"), PalettizeConfig(nbits=4))
    in_memory = compress_model(model, str(tmp_path / "m.mlpackage"), PalettizeConfig(nbits=4), engine="in-memory")
    assert (streamed.engine, in_memory.engine) == ("streaming", "in-memory")
    a = decompressed_weights(ct.models.MLModel(str(tmp_path / "s.mlpackage"), skip_model_load=True))
    b = decompressed_weights(ct.models.MLModel(str(tmp_path / "m.mlpackage"), skip_model_load=True))
    assert a["lin"].tobytes() == b["lin"].tobytes()
    joint = Config.of(MagnitudePruneConfig(target_sparsity=0.5), QuantizeConfig())
    r = compress_model(model, str(tmp_path / "j.mlpackage"), joint)
    assert r.engine == "in-memory" and any("running in memory" in n for n in r.notes)
    with pytest.raises(MemoryBudgetError, match="in-memory path would need"):
        compress_model(model, str(tmp_path / "j2.mlpackage"), joint, max_memory=1 << 20)
    with pytest.raises(ConfigError, match="streaming engine does not support joint"):
        compress_model(model, str(tmp_path / "j3.mlpackage"), joint, engine="streaming")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.mlpackage", "m.mlpackage", "s.mlpackage"]
