"""Warm-up settings per service, compiled from `ServiceSettings` documents.

Warm-up is configured on the `ServiceSettings` kind (tidegate's per-service
knobs); consumers use it to ramp new instances of that service (formulas in
`tidegate.core.warmup`). Services without a document get the defaults:
quadratic ramp over 120 s from a 1% floor, starvation guard at 50%.

```yaml
apiVersion: tidegate.io/v1alpha1
kind: ServiceSettings
metadata:
  name: orders
spec:
  service: orders
  warmupWindowSeconds: 120       # 0 turns warm-up off
  warmupCurve: 2                 # weight * (age/window)^curve; 1 = Dubbo's linear
  warmupAggression: 1.5          # optional: Envoy slow start instead of the curve
  warmupMinWeightPercent: 10     # optional floor; default 1 (curve) or 10 (slow start)
  warmupStarvationThreshold: 0.5 # more than this share warming at once: no ramp
```
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tidegate.core.warmup import WarmupSettings
from tidegate.errors import RuleError
from tidegate.rules.document import validate
from tidegate.rules.settings import KIND, ServiceSettings

DEFAULT = WarmupSettings()


def warmup_settings(settings: ServiceSettings) -> WarmupSettings:
    """The warm-up part of one parsed `ServiceSettings`."""
    return WarmupSettings(
        window_s=settings.warmup_window_s,
        curve=settings.warmup_curve,
        aggression=settings.warmup_aggression,
        min_weight_percent=settings.warmup_min_weight_percent,
        starvation_threshold=settings.warmup_starvation_threshold,
    )


def compile_warmup(documents: Iterable[Mapping[str, Any]]) -> tuple[dict[str, WarmupSettings], list[RuleError]]:
    """Warm-up settings by service from `ServiceSettings` documents.

    Invalid documents are left out and returned as errors to log. When two
    documents name the same service, the first by (namespace, name) applies
    and the other is reported. Look up with `.get(service, DEFAULT)`."""
    by_service: dict[str, WarmupSettings] = {}
    owner: dict[str, str] = {}
    problems: list[RuleError] = []
    for document in sorted(documents, key=_order):
        try:
            if not isinstance(document, Mapping) or document.get("kind") != KIND:
                raise RuleError(f"expected a {KIND} document", document=KIND, field="kind")
            settings: ServiceSettings = validate(document)
        except RuleError as bad:
            problems.append(bad)
            continue
        label = f"{KIND}/{document['metadata']['name']}"
        if settings.service in by_service:
            problems.append(
                RuleError(
                    f"service {settings.service!r} is already set by {owner[settings.service]}; ignored",
                    document=label,
                    field="spec.service",
                )
            )
            continue
        by_service[settings.service] = warmup_settings(settings)
        owner[settings.service] = label
    return by_service, problems


def _order(document: Any) -> tuple[str, str]:
    metadata = document.get("metadata") if isinstance(document, Mapping) else None
    if not isinstance(metadata, Mapping):
        return ("", "")
    return (str(metadata.get("namespace") or "default"), str(metadata.get("name") or ""))
