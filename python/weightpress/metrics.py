"""Error measures shared by reports, the demo and the planner."""

from __future__ import annotations

import math


def psnr(mse: float, peak: float) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(peak^2 / mse); inf for an exact copy."""
    if mse == 0:
        return math.inf
    if peak <= 0:
        return -math.inf
    return 10 * math.log10(peak * peak / mse)
