"""Compute backends: the CPU (always) and Metal (Apple GPUs, when this build has it).

    backends()                 {"cpu": {...}, "metal": {...}}: availability and why not
    resolve_backend("auto")    "cpu" | "metal"
    require_cpu(backend, op)   for operations whose Metal kernels are not wired to the host yet

"auto" means the CPU: the Metal kernels have been tested on Linux only, through a C++
emulation of the shipped shader text (tests/test_metal_emu.py), never on a Mac. Until a
run on Apple hardware is recorded in metal/README.md, Metal is opt-in (backend="metal").
"""

from __future__ import annotations

from . import _core

NAMES = ("auto", "cpu", "metal")
METAL_VERIFIED_ON_HARDWARE = False  # flip only with a recorded Mac run (metal/README.md)


def backends() -> dict:
    available, reason = _core.metal_status()
    return {
        "cpu": {"available": True, "reason": "always available", "default": True},
        "metal": {
            "available": bool(available),
            "reason": reason,
            "default": False,
            "verified_on_hardware": METAL_VERIFIED_ON_HARDWARE,
        },
    }


def resolve_backend(backend: str = "auto", op: str = "weightpress") -> str:
    """The backend a call runs on, or ValueError naming why the requested one cannot be used."""
    if backend not in NAMES:
        raise ValueError(f"{op}: backend must be one of {', '.join(NAMES)}, got {backend!r}")
    if backend == "cpu" or (backend == "auto" and not (METAL_VERIFIED_ON_HARDWARE and backends()["metal"]["available"])):
        # ("auto" would pick Metal only once it is verified on hardware and available)
        return "cpu"
    info = backends()["metal"]
    if not info["available"]:
        raise ValueError(f"{op}: the Metal backend is not available: {info['reason']}")
    return "metal"


def require_cpu(backend: str, op: str) -> None:
    """Raises unless `backend` resolves to the CPU (the operation has no Metal host path)."""
    if resolve_backend(backend, op) == "metal":
        raise NotImplementedError(f"{op}: the Metal kernels for {op} are written and emulation-tested "
                                  "(metal/README.md) but not yet wired to the host; use backend='cpu'")
