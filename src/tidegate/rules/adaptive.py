"""`AdaptiveProtection`: a tidegate kind turning on BBR admission when the process is saturated.

Triggers (any subset, at least one; see `tidegate.core.adaptive` for the algorithm):

```yaml
apiVersion: tidegate.io/v1alpha1
kind: AdaptiveProtection
metadata: {name: protect-orders}
spec:
  selector: {app: orders}   # optional: only the service "orders" applies it
  maxLoopLag: 50ms          # asyncio servers: event-loop lag
  maxCpuUsage: "80%"        # or 0.8: process CPU usage
  maxConcurrency: 200       # inbound calls in flight (thread servers)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.core.adaptive import AdaptiveRule
from tidegate.errors import RuleError
from tidegate.rules.document import check_api_version, register_kind, scoped_app
from tidegate.rules.quantities import SpecFields

API_VERSION = "tidegate.io/v1alpha1"
KIND = "AdaptiveProtection"


@dataclass(frozen=True, slots=True)
class AdaptiveProtection:
    app: str
    rule: AdaptiveRule


def parse(document: Mapping[str, Any]) -> AdaptiveProtection:
    label = check_api_version(document, API_VERSION)
    fields = SpecFields(label, document.get("spec") or {}, "spec", ("selector", "maxLoopLag", "maxCpuUsage", "maxConcurrency"))
    app = scoped_app(document, label, fields.selector_app())
    if not (fields.has("maxLoopLag") or fields.has("maxCpuUsage") or fields.has("maxConcurrency")):
        raise fields.error("maxLoopLag", "set at least one trigger: maxLoopLag, maxCpuUsage or maxConcurrency")
    rule = AdaptiveRule(
        name=str(document["metadata"]["name"]),
        max_loop_lag_s=fields.seconds("maxLoopLag") if fields.has("maxLoopLag") else None,
        max_cpu_usage=fields.ratio("maxCpuUsage") if fields.has("maxCpuUsage") else None,
        max_concurrency=fields.whole("maxConcurrency", minimum=1) if fields.has("maxConcurrency") else None,
    )
    try:
        rule.validate()
    except RuleError as bad:
        field = {"max_loop_lag_s": "maxLoopLag", "max_cpu_usage": "maxCpuUsage", "max_concurrency": "maxConcurrency"}[bad.field]
        raise RuleError(bad.reason, document=label, field=f"spec.{field}") from None
    return AdaptiveProtection(app, rule)


register_kind(KIND, parse)
