"""The errors weightpress raises, as types: callers branch on the class, never on message text.

Everything a user can cause (bad input, a file that is not what it claims, a config
coremltools would reject) is a WeightpressError, itself a ValueError, with a message that
names the operation and the offending value.
"""

from __future__ import annotations

from typing import Optional


class WeightpressError(ValueError):
    """Base class: bad input, options or files."""


class NonFiniteWeightError(WeightpressError):
    """A weight holds NaN or Inf, which no compression represents."""

    def __init__(self, op: str, value: float, index: int, name: Optional[str] = None, what: str = "weight"):
        self.op, self.value, self.index, self.name = op, float(value), int(index), name
        where = f"const '{name}'" if name else what
        super().__init__(f"{op}: {where} contains {value} at flat index {index}; NaN and Inf cannot be compressed")

    @property
    def is_nan(self) -> bool:
        return self.value != self.value


class NotApplicableError(WeightpressError):
    """coremltools 9.0 would skip this weight for this compression (see weightpress.rules);
    `reason` is coremltools' reason."""

    def __init__(self, op: str, reason: str):
        self.op, self.reason = op, reason
        super().__init__(f"{op}: {reason}")


class ConfigError(WeightpressError):
    """A compression config coremltools would reject, or one that does not apply here."""


class PackageError(WeightpressError):
    """Not a readable .mlpackage (missing, malformed, or its files disagree)."""


class WeightFileError(WeightpressError):
    """weight.bin is truncated, corrupt, or not what the program says it is."""


class MemoryBudgetError(WeightpressError):
    """A weight needs more working memory than the budget allows."""


class OutOfSpaceError(WeightpressError):
    """The output's file system ran out of space (or the file size limit was hit)."""


class CheckpointError(WeightpressError):
    """A model checkpoint, or a package it needs, is missing, unreadable or does not fit the
    model's architecture."""
