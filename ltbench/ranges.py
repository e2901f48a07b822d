"""The values a number may take (``Range``): declared by methods for their options and by run settings, checked
before anything trains."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """The values a number may take: ``low``..``high`` with ``bounds`` "[]", "[)", "(]" or "()" (an open end
    excludes it), plus the special values in ``also`` (e.g. -1: "pick it on validation data"). NaN and
    infinity are never in a range. Declared by methods (``Method.ranges``) and run settings (``SETTING_RANGES``), checked before
    anything trains."""

    low: float = -math.inf
    high: float = math.inf
    bounds: str = "[]"
    also: tuple = ()

    def __post_init__(self):
        if self.bounds not in ("[]", "[)", "(]", "()"):
            raise ValueError(f"Range bounds must be '[]', '[)', '(]' or '()', got {self.bounds!r}")

    @classmethod
    def of(cls, spec) -> "Range":
        """A Range, or the short form (low, high[, bounds[, also]])."""
        return spec if isinstance(spec, Range) else cls(*spec)

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if value in self.also:
            return True
        if not math.isfinite(value):  # NaN compares false with everything; infinity is never a setting
            return False
        above = value >= self.low if self.bounds[0] == "[" else value > self.low
        below = value <= self.high if self.bounds[1] == "]" else value < self.high
        return above and below

    def problem(self, value) -> str | None:
        """None when ``value`` is in the range, else what it must be ("must be in [0, 1)")."""
        if value in self:
            return None
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return f"must be {'' if finite else 'finite and '}{self}"

    def __str__(self) -> str:
        """"in [0, 1)", "> 0", "<= 2", "in [0, 2] or -1"."""
        low, high = _number(self.low), _number(self.high)
        if self.low == -math.inf and self.high == math.inf:
            text = "a finite number"
        elif self.high == math.inf:
            text = (">= " if self.bounds[0] == "[" else "> ") + low
        elif self.low == -math.inf:
            text = ("<= " if self.bounds[1] == "]" else "< ") + high
        else:
            text = f"in {self.bounds[0]}{low}, {high}{self.bounds[1]}"
        return text + "".join(f" or {_number(value)}" for value in self.also)


def _number(value: float) -> str:
    """2, 0.5, 4294967295 (integers in full, not 4.29497e+09)."""
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else f"{value:g}"
