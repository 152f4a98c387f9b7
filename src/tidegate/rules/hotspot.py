"""`HotspotRule`: a tidegate kind limiting each value of one request parameter separately.

The edge extracts the value and passes it to the core keyed `<source>:<name>`
(`path:id`, `query:user`, `header:x-user-id`; header names lower-case).

```yaml
apiVersion: tidegate.io/v1alpha1
kind: HotspotRule
metadata: {name: hot-items}
spec:
  selector: {app: shop}           # optional: only the service "shop" applies it
  resource: "GET /items/{id}"
  parameter: {source: path, name: id}   # source: path | query | header
  threshold: 20                   # calls per value per duration
  duration: 1s                    # whole seconds
  burst: 5                        # extra calls a quiet value may make at once
  capacity: 4000                  # values tracked (LRU); default min(4000 x duration, 200000)
  exceptions:
    - {value: "bestseller", threshold: 200}
    - {value: "blocked-item", threshold: 0}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.core.hotspot import HotspotRule
from tidegate.rules.document import check_api_version, register_kind, scoped_app
from tidegate.rules.faulttolerance import resource_field
from tidegate.rules.quantities import SpecFields
from tidegate.rules.resources import target_warnings

API_VERSION = "tidegate.io/v1alpha1"
KIND = "HotspotRule"
SOURCES = ("path", "query", "header")


@dataclass(frozen=True, slots=True)
class HotspotDocument:
    app: str
    rule: HotspotRule
    warnings: tuple[str, ...] = ()  # its resource can never match anything tidegate governs


def parse(document: Mapping[str, Any]) -> HotspotDocument:
    label = check_api_version(document, API_VERSION)
    fields = SpecFields(
        label,
        document.get("spec") or {},
        "spec",
        ("selector", "resource", "parameter", "threshold", "duration", "burst", "capacity", "exceptions"),
    )
    app = scoped_app(document, label, fields.selector_app())
    if not fields.text("resource"):
        raise fields.error("resource", "is required: the resource whose parameter is limited")
    resource = resource_field(fields, "resource")
    parameter = fields.mapping("parameter", ("source", "name"))
    if parameter is None:
        raise fields.error("parameter", "is required: {source: path|query|header, name: ...}")
    source = parameter.choice("source", SOURCES)
    param_name = parameter.text("name")
    if not param_name:
        raise parameter.error("name", "is required")
    duration = fields.seconds("duration", 1)
    if duration < 1 or not duration.is_integer():
        raise fields.error("duration", f"must be whole seconds >= 1, got {duration:g}s")
    exceptions_raw = fields.spec.get("exceptions") or []
    if not isinstance(exceptions_raw, list):
        raise fields.error("exceptions", "must be a list of {value: ..., threshold: ...}")
    exceptions: list[tuple[str, int]] = []
    for i, item in enumerate(exceptions_raw):
        exception = SpecFields(label, item, f"spec.exceptions[{i}]", ("value", "threshold"))
        value = exception.required("value")
        if isinstance(value, (dict, list)):
            raise exception.error("value", "must be a string or number")
        exceptions.append((str(value), exception.whole("threshold")))
    rule = HotspotRule(
        resource=resource,
        param=f"{source}:{param_name.lower() if source == 'header' else param_name}",
        threshold=fields.whole("threshold"),
        name=str(document["metadata"]["name"]),
        duration_s=int(duration),
        burst=fields.whole("burst", 0),
        exceptions=tuple(exceptions),
        capacity=fields.whole("capacity", 0, minimum=1) if fields.has("capacity") else 0,
    )
    rule.validate()
    return HotspotDocument(app, rule, tuple(f"{label} field 'spec.resource': {w}" for w in target_warnings(resource)))


register_kind(KIND, parse)
