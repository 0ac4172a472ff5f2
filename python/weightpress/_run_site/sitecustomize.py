"""Loaded at start-up by every Python process that `weightpress run` starts, spawns or
execs (this folder is first on their PYTHONPATH): arranges for weightpress's hooks to be
enabled as soon as the process imports coremltools, then runs the sitecustomize it shadows,
if the environment has one. Outside `weightpress run` (WEIGHTPRESS_RUN unset) it does
nothing but that chaining."""

import importlib.machinery
import importlib.util
import os
import sys


def _install():
    try:
        from weightpress.coreml import _autoload
    except Exception as exc:  # noqa: BLE001 (another interpreter, a broken install: say so, run anyway)
        print(f"weightpress run: weightpress is not importable in {sys.executable} ({exc}); running without "
              "its kernels", file=sys.stderr)
        return
    _autoload.install()


def _chain():
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if os.environ.get("WEIGHTPRESS_RUN"):
    _install()
_chain()
