"""Compute backends: the CPU (always) and Metal (Apple GPUs, when this build has it).

    backends()                 {"cpu": {...}, "metal": {...}}: availability and why not
    resolve_backend("auto")    "cpu" | "metal"
    device(backend, op)        None for the CPU, else the Metal kernels the array API runs

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


class MetalDevice:
    """The shipped Metal kernels as the array API calls them (metal/metal_backend.mm through
    weightpress._core). Each method has the contract of the CPU step it replaces; tests drive
    the same call sites with a CPU stand-in of this class (tests/test_backends.py)."""

    @staticmethod
    def histogram_f16(bits):
        """65,536-bin counts of a uint16 array of fp16 bit patterns."""
        return _core.metal_histogram_f16(bits)

    @staticmethod
    def encode_pack(bits, codes, nbits):
        """codes[bits] packed LSB-first at nbits per element (nbits 8: one code per byte)."""
        return _core.metal_encode_pack(bits, codes, nbits)

    @staticmethod
    def pack_bits(values, nbits):
        return _core.metal_pack_bits(values, nbits)

    @staticmethod
    def sparsify(values, cut):
        """(packed mask, kept values) for |w| > cut and w != 0; values fp16 bits or float32."""
        return _core.metal_sparsify(values, float(cut))

    @staticmethod
    def quantize(values, rows, cols, block_rows, block_cols, nbits, signed, symmetric):
        return _core.metal_quantize(values, rows, cols, block_rows, block_cols, nbits, signed, symmetric)


METAL = MetalDevice()


def device(backend: str, op: str):
    """None when `backend` resolves to the CPU, else the Metal device (ValueError naming why
    Metal cannot be used)."""
    return METAL if resolve_backend(backend, op) == "metal" else None
