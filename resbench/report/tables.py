"""What every report's tables share: one number formatter for cells ("—" for a missing or non-finite value)."""

from __future__ import annotations

import math

MISSING = "—"


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """`value` in the format `spec` (+ `suffix`), or "—" when it is None, NaN or infinite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return format(value, spec) + suffix
