"""What every compressed weight is: the base of the result classes (results.py, joint.py).

    CompressedWeight   shape, dtype, the reference weight, decompress(), sse, nbytes
    StoredPart         one array Core ML stores for it: element count and bits per element

nbytes is defined once, here: the sum of the stored parts, each packed to whole bytes as
Core ML stores sub-byte data (docs/formats.md, "Bit packing"). Each result class only says
which parts it stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ._arrays import sum_squared_error

TARGETS = ("iOS18", "iOS26")  # the forms whose stored parts differ (LUT repetition)


@dataclass(frozen=True)
class StoredPart:
    name: str
    count: int  # elements
    bits: int  # bits per element as stored

    @property
    def nbytes(self) -> int:
        return (self.count * self.bits + 7) // 8


def part(name: str, array_or_count, bits: int) -> StoredPart:
    count = array_or_count if isinstance(array_or_count, (int, np.integer)) else int(np.asarray(array_or_count).size)
    return StoredPart(name, int(count), int(bits))


def dtype_bits(dtype) -> int:
    return np.dtype(dtype).itemsize * 8


def repeated_shape(lut_shape: Sequence[int], scale_shape: Sequence[int]) -> Tuple[int, ...]:
    """The shape of a LUT [..., K, c] repeated along every leading axis where a scale has more
    entries: what coremltools 9.0 stores on iOS18 when a scale follows a LUT
    (common::canonicalize_quantized_lut_pattern; docs/formats.md)."""
    lead = [max(a, b) for a, b in zip(lut_shape[:-2], scale_shape)]
    return tuple(lead) + tuple(lut_shape[-2:])


def check_target(target: str, op: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"{op}: target must be one of {', '.join(TARGETS)}, got {target!r}")


class CompressedWeight:
    """A compressed weight and the weight it was compressed from.

    shape, dtype   the original weight's
    reference      the original weight (read-only view)
    decompress()   the dense tensor Core ML reconstructs, in the weight's dtype
    sse            sum of squared errors of decompress() against the reference (float64)
    nbytes         bytes Core ML stores for it on iOS18 (see stored_parts)
    """

    def __init__(self, reference: np.ndarray, kernel_sse: Optional[float] = None):
        self.shape = reference.shape
        self.dtype = reference.dtype
        self._reference = reference
        self._kernel_sse = kernel_sse  # the kernel's own SSE, when it computed one exactly

    @property
    def reference(self) -> np.ndarray:
        view = self._reference.view()
        view.flags.writeable = False
        return view

    def decompress(self) -> np.ndarray:
        raise NotImplementedError

    def stored_parts(self, target: str = "iOS18") -> List[StoredPart]:
        """The arrays Core ML stores for this weight on `target` ("iOS18" or "iOS26")."""
        raise NotImplementedError

    def nbytes_for(self, target: str = "iOS18") -> int:
        return sum(p.nbytes for p in self.stored_parts(target))

    @property
    def nbytes(self) -> int:
        return self.nbytes_for("iOS18")

    @cached_property
    def sse(self) -> float:
        if self._kernel_sse is not None:
            return float(self._kernel_sse)
        return sum_squared_error(self.decompress(), self._reference)
