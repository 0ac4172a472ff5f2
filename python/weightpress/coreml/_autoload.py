"""The hooks of `weightpress run`: enabled the moment a process finishes importing
coremltools (nothing is imported early, so a script that never touches coremltools starts
as fast as without weightpress), and this process's counts saved when it exits, for the
summary line. Installed by weightpress/_run_site/sitecustomize.py."""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import sys

_installed = False


class _EnableAfterImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of the coremltools package: once its __init__ has run, the hooks go on."""

    def find_spec(self, name, path, target=None):
        if name != "coremltools":
            return None
        sys.meta_path.remove(self)  # one shot, and the lookup below must not come back here
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_init = spec.loader.exec_module

        def exec_module(module):
            run_init(module)
            _enable()

        spec.loader.exec_module = exec_module
        return spec


def _enable():
    from . import _hooks

    try:
        _hooks.enable(import_torch=False)
    except _hooks.UnsupportedVersionError as exc:
        print(f"weightpress run: hooks not enabled ({exc}); coremltools runs on its own", file=sys.stderr)


def _save():
    from ._hooks import STATS

    STATS.save()


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(_save)
    # multiprocessing children leave through os._exit after running their finalizers
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _save, exitpriority=100)
    if "coremltools" in sys.modules:
        _enable()
    else:
        sys.meta_path.insert(0, _EnableAfterImport())
