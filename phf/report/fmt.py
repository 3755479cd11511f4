"""Number and text formatting shared by the report's tables and sentences."""

from __future__ import annotations

import math
import re


def _mantissa(v: float) -> int:
    """Leading digit of a positive number (0.05 -> 5)."""
    return round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0


def _fmt(x: float, digits: int = 4) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{digits}g}"


def _ci(r: dict, key: str, digits: int = 3) -> str:
    lo, hi = r.get(f"{key}_ci_low", math.nan), r.get(f"{key}_ci_high", math.nan)
    value = _fmt(r[key], digits)
    return value if not (math.isfinite(lo) and math.isfinite(hi)) else f"{value} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _code(text: str) -> str:
    """``text`` as Markdown inline code, fenced by more backticks than it contains in a row."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"
