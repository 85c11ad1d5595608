"""Numbers as the report shows them: formatted once, here. Missing or non-finite values
print as "n/a" rather than failing, since a run may not have produced every figure."""

from __future__ import annotations

import math
from typing import Any


def num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def metric(x: Any) -> str:
    """A training metric: three decimals, or three significant digits where three decimals
    would read 0.000 (a learning rate of 3.3e-4 during warmup, 5e-6 at a cosine's end)."""
    if isinstance(x, float) and x and abs(x) < 0.0005:
        return f"{x:.3g}"
    return num(x)


def pct(x: Any, digits: int = 0) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.{digits}f}%"


def interval(ci: Any, fmt=pct) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2 or None in ci:
        return ""
    return f"{fmt(ci[0])} – {fmt(ci[1])}"


def pvalue(p: Any) -> str:
    if not isinstance(p, int | float) or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def signed_pct(x: Any) -> str:
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.0f} pts"
