"""coremltools' generated protobuf modules, loaded without importing coremltools.

Importing coremltools pulls in torch and most of its converter stack (hundreds of MB); the
streaming path needs only the message classes. The generated *_pb2.py files of the
installed coremltools 9.0 are loaded as a private package; protobuf shares descriptors by
file name, so if coremltools is imported later its classes are these very classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

_PACKAGE = "weightpress._coremltools_proto"


def _proto_dir() -> str:
    spec = importlib.util.find_spec("coremltools")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the streaming path reads Core ML specs with coremltools' protobuf modules: "
                          "pip install coremltools==9.0")
    return os.path.join(list(spec.submodule_search_locations)[0], "proto")


def modules():
    """(Model_pb2, MIL_pb2): from coremltools if it is already imported, else loaded alone."""
    if "coremltools.proto.Model_pb2" in sys.modules:
        return sys.modules["coremltools.proto.Model_pb2"], sys.modules["coremltools.proto.MIL_pb2"]
    package = sys.modules.get(_PACKAGE)
    if package is None:
        package = types.ModuleType(_PACKAGE)
        package.__path__ = [_proto_dir()]
        sys.modules[_PACKAGE] = package
    return importlib.import_module(f"{_PACKAGE}.Model_pb2"), importlib.import_module(f"{_PACKAGE}.MIL_pb2")
