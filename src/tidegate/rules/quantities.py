"""Reading a document's spec field by field: durations, ratios and counts, each error naming its field.

Durations accept every unit OpenSergo's CRDs allow ("500ms", "1s", "2m" or
"2min" or "2minute", "1h", "1d") or a bare number of seconds, and are 0 or
between `limits.MIN_DURATION_S` and `limits.MAX_DURATION_S`; ratios accept
"60%" or a number in [0, 1]; counts and thresholds are at most
`limits.MAX_QUANTITY`. Unknown keys are refused so a typo never silently
leaves a default in force.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from tidegate.errors import RuleError
from tidegate.rules import limits

_DURATION = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,15})?)\s*(ms|s|m|min|minute|h|d)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "d": 86400.0}
_UNITS = '"500ms", "1s", "2m" (or "2min", "2minute"), "1h", "1d"'


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


_PERCENT = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,15})?)\s*%\s*$")


class SpecFields:
    """Typed access to a mapping inside a document; `prefix` is its path, e.g. "spec"."""

    def __init__(self, document: str, spec: Any, prefix: str, known: tuple[str, ...]) -> None:
        self.document = document
        self.prefix = prefix
        if not isinstance(spec, Mapping):
            raise RuleError("must be a mapping", document=document, field=prefix)
        for key in spec:
            if key not in known:
                raise RuleError(f"unknown field (known: {', '.join(known)})", document=document, field=self.path(str(key)))
        self.spec = spec

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, reason: str) -> RuleError:
        return RuleError(reason, document=self.document, field=self.path(key))

    def has(self, key: str) -> bool:
        return self.spec.get(key) is not None

    def required(self, key: str) -> Any:
        if self.spec.get(key) is None:
            raise self.error(key, "is required")
        return self.spec[key]

    def text(self, key: str, default: str = "") -> str:
        value = self.spec.get(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {type(value).__name__}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.spec.get(key, default)
        if value is None:
            raise self.error(key, f"is required: one of {', '.join(choices)}")
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def number(self, key: str, default: float | None = None, *, minimum: float = 0.0, maximum: float = limits.MAX_QUANTITY) -> float:
        value = self.spec.get(key, default)
        if value is None:
            raise self.error(key, "is required")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            raise self.error(key, f"must be a number, got {_short(value)}")
        if value < minimum:
            raise self.error(key, f"must be >= {minimum:g}, got {_short(value)}")
        if value > maximum:
            raise self.error(key, f"must be at most {maximum:g}, got {_short(value)}")
        return float(value)

    def whole(self, key: str, default: int | None = None, *, minimum: int = 0, maximum: float = limits.MAX_QUANTITY) -> int:
        value = self.spec.get(key, default)
        if value is None:
            raise self.error(key, "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self.error(key, f"must be a whole number, got {_short(value)}")
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {_short(value)}")
        if value > maximum:
            raise self.error(key, f"must be at most {maximum:g}, got {_short(value)}")
        return value

    def seconds(self, key: str, default: float | None = None) -> float:
        """A duration in seconds: a number with a unit ("500ms", "1s", "2m", "1h", "1d", ...) or a number of seconds."""
        value = self.spec.get(key, default)
        if value is None:
            raise self.error(key, 'is required (a duration such as "1s" or "500ms")')
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match is None:
                raise self.error(key, f"must be a duration such as {_UNITS} or a number of seconds, got {_short(value)}")
            seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
        elif (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
            or value < 0
        ):
            raise self.error(key, f"must be a duration >= 0, got {_short(value)}")
        elif value > limits.MAX_DURATION_S:
            seconds = limits.MAX_DURATION_S + 1  # a huge integer is never converted to float
        else:
            seconds = float(value)
        if seconds and seconds < limits.MIN_DURATION_S:
            raise self.error(key, f"must be 0 or at least {limits.MIN_DURATION_S * 1e6:g} µs, got {_short(value)}")
        if seconds > limits.MAX_DURATION_S:
            raise self.error(key, f"must be at most {limits.MAX_DURATION_S / 86400:g} days, got {_short(value)}")
        return seconds

    def ratio(self, key: str, default: float | None = None) -> float:
        """A ratio in [0, 1]: "60%" or 0.6."""
        value = self.spec.get(key, default)
        if value is None:
            raise self.error(key, 'is required (a ratio such as "60%" or 0.6)')
        if isinstance(value, str):
            match = _PERCENT.match(value)
            if match is None:
                raise self.error(key, f'must be a percentage such as "60%" or a number in [0, 1], got {_short(value)}')
            result = float(match.group(1)) / 100.0
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
            raise self.error(key, f"must be a ratio, got {_short(value)}")
        elif not 0 <= value <= 1:
            raise self.error(key, f"must be between 0 and 1 (0% and 100%), got {_short(value)}")
        else:
            result = float(value)
        if not 0.0 <= result <= 1.0:
            raise self.error(key, f"must be between 0 and 1 (0% and 100%), got {_short(value)}")
        return result

    def selector_app(self) -> str:
        """The app `selector: {app: ...}` names; "" when there is no selector (the rule applies to every service)."""
        selector = self.mapping("selector", ("app",))
        return selector.text("app") if selector is not None else ""

    def mapping(self, key: str, known: tuple[str, ...]) -> SpecFields | None:
        value = self.spec.get(key)
        if value is None:
            return None
        return SpecFields(self.document, value, self.path(key), known)
