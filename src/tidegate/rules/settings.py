"""`ServiceSettings`: per-service knobs pushed live (warm-up, drain, prewarm).

A tidegate kind (OpenSergo has none for these). Unknown keys are refused so a
typo never silently leaves a default in force.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.core.prewarm import PrewarmSpecError, parse_services, parse_warmup_requests
from tidegate.errors import RuleError
from tidegate.rules import limits
from tidegate.rules.document import register_kind

KIND = "ServiceSettings"


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    service: str
    warmup_window_s: float = 120.0
    warmup_curve: float = 2.0
    drain_timeout_s: float = 25.0
    warmup_aggression: float | None = None  # set: Envoy-style slow start instead of the curve
    warmup_min_weight_percent: float | None = None  # default 1 (curve) or 10 (slow start)
    warmup_starvation_threshold: float = 0.5


_FIELDS: dict[str, type] = {
    "service": str,
    "warmupWindowSeconds": float,
    "warmupCurve": float,
    "drainTimeoutSeconds": float,
    "warmupAggression": float,
    "warmupMinWeightPercent": float,
    "warmupStarvationThreshold": float,
    # prewarm (tidegate.core.prewarm reads these from the document's spec)
    "prewarmSqlAlchemy": bool,
    "prewarmRedis": bool,
    "prewarmHttp": bool,
    "prewarmServices": str,
    "warmupRequests": str,
    "registerDelaySeconds": float,
}
#: Upper bounds (inclusive) of the fields that have one; `warmupAggression` must also be above 0.
_MAXIMA: dict[str, float] = {"warmupMinWeightPercent": 100.0, "warmupStarvationThreshold": 1.0}


def parse(document: Mapping[str, Any]) -> ServiceSettings:
    label = f"{KIND}/{document['metadata']['name']}"
    spec = document.get("spec") or {}
    for key, value in spec.items():
        expected = _FIELDS.get(key)
        if expected is None:
            raise RuleError(f"unknown field (known: {', '.join(_FIELDS)})", document=label, field=f"spec.{key}")
        if expected is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise RuleError("must be a non-negative number", document=label, field=f"spec.{key}")
        if expected is str and not isinstance(value, str):
            raise RuleError("must be a string", document=label, field=f"spec.{key}")
        if expected is bool and not isinstance(value, bool):
            raise RuleError("must be true or false", document=label, field=f"spec.{key}")
        if expected is float and isinstance(value, float) and not math.isfinite(value):
            raise RuleError("must be a finite number", document=label, field=f"spec.{key}")
        ceiling = limits.MAX_DURATION_S if key.endswith("Seconds") else limits.MAX_QUANTITY
        if expected is float and value > ceiling:
            raise RuleError(f"must be at most {ceiling:g}", document=label, field=f"spec.{key}")
    for key, maximum in _MAXIMA.items():
        if key in spec and spec[key] > maximum:
            raise RuleError(f"must be at most {maximum:g}", document=label, field=f"spec.{key}")
    if "warmupAggression" in spec and spec["warmupAggression"] <= 0:
        raise RuleError("must be above 0 (1 is linear)", document=label, field="spec.warmupAggression")
    _check_prewarm(spec, label)
    if not spec.get("service"):
        raise RuleError("is required", document=label, field="spec.service")
    return ServiceSettings(
        service=spec["service"],
        warmup_window_s=float(spec.get("warmupWindowSeconds", 120.0)),
        warmup_curve=float(spec.get("warmupCurve", 2.0)),
        drain_timeout_s=float(spec.get("drainTimeoutSeconds", 25.0)),
        warmup_aggression=float(spec["warmupAggression"]) if "warmupAggression" in spec else None,
        warmup_min_weight_percent=float(spec["warmupMinWeightPercent"]) if "warmupMinWeightPercent" in spec else None,
        warmup_starvation_threshold=float(spec.get("warmupStarvationThreshold", 0.5)),
    )


def _check_prewarm(spec: Mapping[str, Any], label: str) -> None:
    try:
        if "warmupRequests" in spec:
            parse_warmup_requests(spec["warmupRequests"], "warmupRequests")
        if "prewarmServices" in spec:
            parse_services(spec["prewarmServices"], "prewarmServices")
    except PrewarmSpecError as bad:
        raise RuleError(str(bad).partition(": ")[2], document=label, field=f"spec.{bad.setting}") from None


register_kind(KIND, parse)
